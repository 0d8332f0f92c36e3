//! Fails early with a clear message when bpf-linker is missing (`cargo xtask setup` installs it).
fn main() {
    let bpf_linker = which::which("bpf-linker")
        .expect("bpf-linker not found on PATH: run `cargo xtask setup` first");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
