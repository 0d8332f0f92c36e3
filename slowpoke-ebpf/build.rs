//! Fails early with a clear message when bpf-linker is missing (`cargo xtask setup` installs it),
//! and asks bpf-linker for BPF CPU v3: the pause trigger needs the atomic compare-and-swap and
//! fetch-and-add instructions (kernel 5.12+), which older CPU versions lack.
fn main() {
    let bpf_linker = which::which("bpf-linker")
        .expect("bpf-linker not found on PATH: run `cargo xtask setup` first");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
    println!("cargo:rustc-link-arg=--cpu-features=+alu32");
}
