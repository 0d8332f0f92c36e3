// Built and run by hand for docs/model.md: `rustc -O pingpong.rs && ./pingpong > pingpong.json`.
// CPU cost of one wake-up on this node: two threads hand a byte back and forth over pipes,
// either on the same CPU or on two CPUs; prints CPU time per hand-off (both threads' CPU /
// hand-offs), wall time per hand-off.
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

fn cpu_ns() -> u64 {
    let mut ts = libc_ts { tv_sec: 0, tv_nsec: 0 };
    unsafe { clock_gettime(2, &mut ts) }; // CLOCK_PROCESS_CPUTIME_ID
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
#[repr(C)]
struct libc_ts { tv_sec: i64, tv_nsec: i64 }
extern "C" { fn clock_gettime(clk: i32, ts: *mut libc_ts) -> i32; fn sched_setaffinity(pid: i32, size: usize, mask: *const u64) -> i32; }
fn pin(cpu: u32) { let m: u64 = 1 << cpu; unsafe { sched_setaffinity(0, 8, &m) }; }

fn run(n: u64, cpus: (u32, u32)) -> (f64, f64) {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let t = std::thread::spawn(move || {
        pin(cpus.1);
        let mut buf = [0u8; 1];
        for _ in 0..n { b.read_exact(&mut buf).unwrap(); b.write_all(&buf).unwrap(); }
    });
    pin(cpus.0);
    let (c0, w0) = (cpu_ns(), Instant::now());
    let mut buf = [0u8; 1];
    for _ in 0..n { a.write_all(&buf).unwrap(); a.read_exact(&mut buf).unwrap(); }
    t.join().unwrap();
    let (c, w) = (cpu_ns() - c0, w0.elapsed().as_nanos() as f64);
    (c as f64 / (2 * n) as f64 / 1e3, w / (2 * n) as f64 / 1e3)
}
fn main() {
    let n = 100_000;
    for _ in 0..3 {
        let (c1, w1) = run(n, (0, 0));
        let (c2, w2) = run(n, (0, 1));
        println!("{{\"same_cpu_cpu_us\":{c1:.2},\"same_cpu_wall_us\":{w1:.2},\"cross_cpu_cpu_us\":{c2:.2},\"cross_cpu_wall_us\":{w2:.2}}}");
    }
}
