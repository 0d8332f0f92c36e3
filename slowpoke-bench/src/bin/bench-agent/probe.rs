//! The pause-precision probe: this binary re-run with `--probe MIN_GAP_NS`, one thread spinning
//! on `CLOCK_MONOTONIC` that records every gap between two consecutive readings longer than the
//! minimum (the moments it did not run) and prints them when its stdin closes. What a paused
//! process experiences, measured from inside it.

use std::{
    io::{Read, Write},
    process::{Child, Command, Stdio},
};

use slowpoke_agent::sys::clock::monotonic_ns;

/// A moment the probe did not run: `(start_ns, gap_ns)` on `CLOCK_MONOTONIC`.
pub(crate) type Gap = (u64, u64);

/// Most gaps the probe keeps (pauses plus scheduling noise).
const PROBE_CAPACITY: usize = 1 << 18;

/// The probe (child process mode): spins on `CLOCK_MONOTONIC` and records every gap longer than
/// `min_gap_ns` (the moments it was not running) until its stdin reaches EOF, then prints one
/// `start_ns gap_ns` line per gap (and `overflow N` if it ran out of room).
pub(crate) fn run(min_gap_ns: u64) {
    // Touched up front: no page fault while spinning.
    let mut gaps = vec![(u64::MAX, u64::MAX); PROBE_CAPACITY];
    let mut len = 0;
    let mut overflow = 0u64;
    {
        let mut out = std::io::stdout().lock();
        out.write_all(b"ready\n").unwrap();
        out.flush().unwrap();
    }
    let mut stdin = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut last = monotonic_ns();
    let mut next_check = last;
    loop {
        let now = monotonic_ns();
        if now - last > min_gap_ns {
            if len < PROBE_CAPACITY {
                gaps[len] = (last, now - last);
                len += 1;
            } else {
                overflow += 1;
            }
        }
        last = now;
        if now >= next_check {
            next_check = now + 5_000_000;
            // SAFETY: one valid pollfd, no wait (about 1 µs, well below the gap threshold).
            if unsafe { libc::poll(&raw mut stdin, 1, 0) } != 0 {
                break;
            }
        }
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (start, gap) in &gaps[..len] {
        writeln!(out, "{start} {gap}").unwrap();
    }
    writeln!(out, "overflow {overflow}").unwrap();
}

/// The probe child; killed on drop.
pub(crate) struct ProbeProcess(pub(crate) Child);

impl Drop for ProbeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this binary as the probe child and waits for its `ready` line.
pub(crate) fn start_probe(min_gap_ns: u64) -> ProbeProcess {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--probe", &min_gap_ns.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the probe process");
    let mut ready = [0u8; 6];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut ready)
        .expect("probe ready line");
    ProbeProcess(child)
}

/// Ends the probe (EOF on its stdin) and reads its gaps, sorted by start: `(start_ns, gap_ns)`
/// and the number it could not keep.
pub(crate) fn finish_probe(mut probe: ProbeProcess) -> (Vec<Gap>, u64) {
    drop(probe.0.stdin.take());
    let mut text = String::new();
    probe
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .expect("probe output");
    let mut gaps = Vec::new();
    let mut overflow = 0;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match (f.next(), f.next()) {
            (Some("overflow"), Some(n)) => overflow = n.parse().unwrap(),
            (Some(a), Some(b)) => gaps.push((a.parse().unwrap(), b.parse().unwrap())),
            _ => {}
        }
    }
    gaps.sort_unstable();
    (gaps, overflow)
}
