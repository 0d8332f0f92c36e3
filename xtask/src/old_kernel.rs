//! `cargo xtask old-kernel`: the agent on Debian 12's own kernel (6.1), for real, under qemu.
//! Not in CI (it downloads ~70 MB, debootstraps ~200 MB and boots a VM for a minute or more):
//! it exists to check what docs/kernel.md#support claims about older kernels, and its output is
//! committed under docs/results/old-kernel-YYYYMMDD/.
//!
//! What it does: installs qemu-system-x86 and debootstrap (apt), downloads the newest
//! `linux-image-6.1.0-*-amd64` package apt offers, debootstraps a minbase bookworm root file
//! system into target/old-kernel/, copies the release agent in, packs the whole root as the
//! initramfs (Debian's kernel has virtio and ext4 as modules; an initramfs root needs neither)
//! with an `/init` script that runs `slowpoke-agent --check-kernel`, `--check-kernel --json` and
//! the agent itself (and, with `--kernel-tests`, the agent's kernel tests), then
//! powers off. The serial console is captured; the relevant part and the
//! JSON report are written to the output directory.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, run, setup::output, target_dir};

/// Options of `cargo xtask old-kernel`.
pub struct Options {
    /// The kernel package (default: the newest `linux-image-6.1.0-N-amd64` apt offers).
    pub package: Option<String>,
    /// `kvm`, `tcg` or `auto` (kvm when /dev/kvm opens, else software emulation).
    pub accel: String,
    /// Where the trimmed console log and the JSON report go.
    pub out: Option<PathBuf>,
    /// Give up on the VM after this long.
    pub timeout: Duration,
    /// Use the release agent already built.
    pub no_build: bool,
    /// Also build the agent's kernel tests (`KERNEL_TESTS`) and run them in the VM (real
    /// servers and exact counts on that kernel).
    pub kernel_tests: bool,
}

/// Printed by the VM's `/init` around the part of the console that is kept.
const BEGIN: &str = "=== slowpoke old-kernel run";
const END: &str = "=== slowpoke old-kernel done";
const JSON_BEGIN: &str = "--- BEGIN check-kernel JSON";
const JSON_END: &str = "--- END check-kernel JSON";

/// The VM's `/init`. pid 1 in an initramfs: mount what the agent reads, run the checks and the
/// agent, power off (sysrq `o`; `panic=-1` and `-no-reboot` end qemu should that fail).
const INIT: &str = r#"#!/bin/sh
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
ip link set lo up
echo "=== slowpoke old-kernel run: $(uname -r) ($(uname -m))"
echo "--- cat /proc/version"; cat /proc/version
echo "--- ls /sys/kernel/tracing/events/sock"; ls /sys/kernel/tracing/events/sock
echo "--- slowpoke-agent --version"; slowpoke-agent --version
echo "--- slowpoke-agent --check-kernel"
slowpoke-agent --check-kernel; echo "exit code: $?"
echo "--- BEGIN check-kernel JSON"
slowpoke-agent --check-kernel --json; rc=$?
echo "--- END check-kernel JSON"; echo "exit code: $rc"
echo "--- timeout 20 slowpoke-agent --state-dir /run/slowpoke (the agent itself; 124: it ran until stopped)"
timeout 20 slowpoke-agent --state-dir /run/slowpoke; echo "exit code: $?"
for t in /usr/local/lib/kernel-tests/*; do
  [ -x "$t" ] || continue
  echo "--- $(basename "$t") --test-threads=1 (the agent's kernel tests, in this VM)"
  (cd /tmp && "$t" --test-threads=1 2>&1); echo "exit code: $?"
done
echo "=== slowpoke old-kernel done"
echo o > /proc/sysrq-trigger
sleep 30
"#;

pub fn run_old_kernel(root: &Path, opts: &Options) -> Result<()> {
    crate::setup::apt_install(&["qemu-system-x86", "debootstrap", "cpio"])?;
    let work = target_dir(root).join("old-kernel");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let (package, vmlinuz) = kernel(&work, opts.package.as_deref())?;
    let rootfs = rootfs(&work)?;
    if !opts.no_build {
        run(cargo(root).args([
            "build",
            "--release",
            "-p",
            "slowpoke-agent",
            "--bin",
            "slowpoke-agent",
        ]))?;
    }
    let agent = target_dir(root).join("release/slowpoke-agent");
    let tests = rootfs.join("usr/local/lib/kernel-tests");
    let _ = std::fs::remove_dir_all(&tests);
    if opts.kernel_tests {
        std::fs::create_dir_all(&tests)?;
        for name in KERNEL_TESTS {
            std::fs::copy(kernel_test_binary(root, name)?, tests.join(name))
                .with_context(|| format!("copying the kernel tests to {}", tests.display()))?;
            // Debug info would fill the VM's memory (the root file system lives in it).
            run(Command::new("strip")
                .arg("--strip-debug")
                .arg(tests.join(name)))?;
        }
    }
    let initrd = initramfs(&work, &rootfs, &agent)?;
    let accel = accel(&opts.accel);
    let console = work.join("console.log");
    let started = Instant::now();
    boot(&vmlinuz, &initrd, &accel, &console, opts.timeout)?;
    let seconds = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&console)
        .with_context(|| format!("reading {}", console.display()))?;
    let out = match &opts.out {
        Some(out) => out.clone(),
        None => root.join(format!("docs/results/old-kernel-{}", today()?)),
    };
    let mut command = format!("cargo xtask old-kernel --package {package} --accel {accel}");
    if opts.kernel_tests {
        command.push_str(" --kernel-tests");
    }
    write_results(&out, &text, &package, &accel, seconds, &command)?;
    eprintln!(
        "xtask: the VM ran in {seconds:.0} s ({accel}); results in {}",
        out.display()
    );
    Ok(())
}

/// The agent's tests of the kernel programs (docs/kernel.md, "Tests"), run in the VM with
/// `--kernel-tests`.
const KERNEL_TESTS: [&str; 3] = ["kernel_visits", "kernel_pause", "kernel_safety"];

/// Builds one of the agent's test binaries and returns its path (cargo prints it as
/// "Executable tests/NAME.rs (PATH)").
fn kernel_test_binary(root: &Path, name: &str) -> Result<PathBuf> {
    let out = cargo(root)
        .args(["test", "-p", "slowpoke-agent", "--test", name, "--no-run"])
        .output()
        .context("building the kernel tests")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("building the {name} tests failed:\n{stderr}");
    }
    stderr
        .lines()
        .find_map(|l| {
            let rest = l
                .trim()
                .strip_prefix(&format!("Executable tests/{name}.rs ("))?;
            Some(root.join(rest.strip_suffix(')')?))
        })
        .with_context(|| format!("cargo did not say where the {name} test binary is"))
}

/// Downloads and unpacks the kernel package once; returns its name and the vmlinuz path.
fn kernel(work: &Path, package: Option<&str>) -> Result<(String, PathBuf)> {
    let package = match package {
        Some(p) => p.to_string(),
        None => newest_6_1_image()?,
    };
    let dir = work.join(&package);
    let boot = dir.join("boot");
    if !boot.is_dir() {
        run(Command::new("apt-get")
            .args(["download", &package])
            .current_dir(work))?;
        let deb = std::fs::read_dir(work)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.extension().is_some_and(|e| e == "deb")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{package}_")))
            })
            .with_context(|| format!("apt-get download {package} left no .deb"))?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
    }
    let vmlinuz = std::fs::read_dir(&boot)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz in {}", boot.display()))?;
    Ok((package, vmlinuz))
}

/// `linux-image-6.1.0-N-amd64` with the largest N apt knows (Debian 12's own kernel).
fn newest_6_1_image() -> Result<String> {
    let list = output(Command::new("apt-cache").args([
        "search",
        "--names-only",
        "^linux-image-6\\.1\\.0-[0-9]+-amd64$",
    ]))?;
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| {
            let n = name.strip_prefix("linux-image-6.1.0-")?.strip_suffix("-amd64")?;
            Some((n.parse::<u32>().ok()?, name.to_string()))
        })
        .max()
        .map(|(_, name)| name)
        .context("apt offers no linux-image-6.1.0-N-amd64 (run apt-get update; Debian 12 sources needed)")
}

/// A minbase bookworm root, debootstrapped once (a marker file says it completed).
fn rootfs(work: &Path) -> Result<PathBuf> {
    let rootfs = work.join("rootfs");
    // Bumped when the package list changes, so an older root is rebuilt.
    let done = work.join("rootfs-python3-nginx-iproute2.done");
    if !done.exists() {
        if rootfs.exists() {
            std::fs::remove_dir_all(&rootfs)
                .with_context(|| format!("removing the unfinished {}", rootfs.display()))?;
        }
        run(Command::new("debootstrap")
            // python3 and nginx: the real servers of the kernel tests (`--kernel-tests`);
            // iproute2 to bring the loopback up.
            .args([
                "--variant=minbase",
                "--include=python3,nginx,iproute2",
                "bookworm",
            ])
            .arg(&rootfs)
            .arg("http://deb.debian.org/debian"))?;
        std::fs::write(&done, "")?;
    }
    Ok(rootfs)
}

/// The root file system plus `/init` and the agent, as one uncompressed cpio archive.
fn initramfs(work: &Path, rootfs: &Path, agent: &Path) -> Result<PathBuf> {
    let bin = rootfs.join("usr/local/bin/slowpoke-agent");
    std::fs::copy(agent, &bin)
        .with_context(|| format!("copying {} (build it first)", agent.display()))?;
    let init = rootfs.join("init");
    std::fs::write(&init, INIT)?;
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    for dir in ["proc", "sys", "run", "tmp"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    let initrd = work.join("initrd.cpio");
    let file = std::fs::File::create(&initrd)?;
    run(Command::new("sh")
        .args([
            "-c",
            "find . -xdev | LC_ALL=C sort | cpio --quiet -o -H newc",
        ])
        .current_dir(rootfs)
        .stdout(file))?;
    Ok(initrd)
}

fn accel(wanted: &str) -> String {
    match wanted {
        "auto" => {
            let kvm = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .is_ok();
            if kvm { "kvm" } else { "tcg" }.into()
        }
        other => other.into(),
    }
}

/// Boots the VM with the console on `console`; kills it after `timeout`.
fn boot(
    vmlinuz: &Path,
    initrd: &Path,
    accel: &str,
    console: &Path,
    timeout: Duration,
) -> Result<()> {
    let _ = std::fs::remove_file(console);
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        accel,
        "-cpu",
        if accel == "kvm" { "host" } else { "max" },
    ])
    .args([
        "-m",
        "2048",
        "-smp",
        "2",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
    ])
    .arg("-serial")
    .arg(format!("file:{}", console.display()))
    .arg("-kernel")
    .arg(vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", "console=ttyS0 rdinit=/init panic=-1 loglevel=4"])
    .stdin(Stdio::null());
    eprintln!("xtask: {cmd:?}");
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!(
                    "qemu exited with {status}; console in {}",
                    console.display()
                );
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the VM did not power off within {} s; console so far in {}",
                timeout.as_secs(),
                console.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn today() -> Result<String> {
    Ok(output(Command::new("date").args(["-u", "+%Y%m%d"]))?
        .trim()
        .to_string())
}

/// Keeps the console from the kernel's banner line and from `BEGIN` to `END`; the JSON report
/// alone in check.json; and what ran where in run.json.
fn write_results(
    out: &Path,
    console: &str,
    package: &str,
    accel: &str,
    seconds: f64,
    command: &str,
) -> Result<()> {
    let text = strip_ansi(&console.replace('\r', ""));
    let Some(begin) = text.find(BEGIN) else {
        bail!("the VM never ran its /init script (no {BEGIN:?} on the console)");
    };
    let end = text[begin..]
        .find(END)
        .map_or(text.len(), |e| begin + e + END.len());
    // The kernel's own banner (printed before /init when the log level lets it through).
    let kept = match text[..begin].lines().find(|l| l.contains("Linux version")) {
        Some(banner) => format!("{banner}\n[...]\n{}\n", &text[begin..end]),
        None => format!("{}\n", &text[begin..end]),
    };
    let json = text
        .find(JSON_BEGIN)
        .and_then(|b| {
            let from = b + JSON_BEGIN.len();
            text[from..]
                .find(JSON_END)
                .map(|e| text[from..from + e].trim())
        })
        .context("no JSON report on the console")?;
    let report: serde_json::Value =
        serde_json::from_str(json).context("the JSON report on the console does not parse")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("console.log"), kept)?;
    std::fs::write(
        out.join("check.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    let run = serde_json::json!({
        "kernel_package": package,
        "qemu_accel": accel,
        "vm_seconds": (seconds * 10.0).round() / 10.0,
        "host_kernel": output(Command::new("uname").arg("-r"))?.trim(),
        "command": command,
    });
    std::fs::write(
        out.join("run.json"),
        serde_json::to_string_pretty(&run)? + "\n",
    )?;
    Ok(())
}

/// Drops the colour codes (`ESC [ ... m`) the agent's log prints on the serial console (a
/// terminal to it).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
