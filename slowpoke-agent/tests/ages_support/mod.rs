//! Request ages on real processes (issue #18 item 1): emulated apps whose services serve each
//! request on one thread, the kernels that track them, and the check that the age a callee saw
//! is the one its caller's request had. Run as root (the tests load eBPF programs).
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use slowpoke_agent::kernel::{Kernel, RequestEvents, ServiceId};
use slowpoke_common::{REQUEST_DROPPED, REQUEST_END, REQUEST_START, RequestEvent};
use slowpoke_emu::{RunningApp, StartOptions, Topology};

pub mod real;

/// A request as a service served it: one thread, from its visit's start to its first response
/// send, in the clock of the kernel that saw it (its offset removed).
#[derive(Clone, Copy, Debug)]
pub struct Served {
    pub tid: u32,
    pub start_ns: u64,
    pub end_ns: u64,
    pub origin_ns: u64,
}

/// Pairs each thread's START with its next END, per service (a START then DROPPED is no
/// request); `offset_ns` is subtracted.
pub fn served(events: &[RequestEvent], offset_ns: u64) -> BTreeMap<u32, Vec<Served>> {
    let mut out: BTreeMap<u32, Vec<Served>> = BTreeMap::new();
    pair_requests(events, |s, e| {
        out.entry(s.service).or_default().push(Served {
            tid: s.tid,
            start_ns: s.at_ns.wrapping_sub(offset_ns),
            end_ns: e.at_ns.wrapping_sub(offset_ns),
            origin_ns: s.origin_ns.wrapping_sub(offset_ns),
        });
    });
    out
}

/// Walks the events per thread: each START with its next END goes to `ended`; a DROPPED
/// closes the START it names. Returns the starts left open.
pub fn pair_requests(
    events: &[RequestEvent],
    mut ended: impl FnMut(&RequestEvent, &RequestEvent),
) -> BTreeMap<u32, RequestEvent> {
    let mut open: BTreeMap<u32, RequestEvent> = BTreeMap::new();
    for e in events {
        match e.kind {
            REQUEST_START => {
                open.insert(e.tid, *e);
            }
            REQUEST_END => {
                if let Some(s) = open.remove(&e.tid) {
                    ended(&s, e);
                }
            }
            // A worker woken for a fresh connection that another thread read: no request
            // (reported by that thread, so maybe after the worker's next start).
            REQUEST_DROPPED
                if open
                    .get(&e.tid)
                    .is_some_and(|s| s.arrival_ns == e.arrival_ns) =>
            {
                open.remove(&e.tid);
            }
            _ => {}
        }
    }
    open
}

/// How the origins a callee saw compare with its callers' requests.
#[derive(Debug, Default)]
pub struct Exactness {
    pub callee_requests: usize,
    /// The callee's origin is within the tolerance of the origin of a caller request that was
    /// being served (start ≤ the callee's start ≤ end) when the callee's request started.
    pub matching: usize,
    /// Of the matching, requests for which more than one caller request was within tolerance.
    pub ambiguous: usize,
    /// |callee origin − the matching caller origin|, ns, sorted.
    pub errors_ns: Vec<u64>,
}

impl Exactness {
    pub fn share(&self) -> f64 {
        if self.callee_requests == 0 {
            return 0.0;
        }
        self.matching as f64 / self.callee_requests as f64
    }

    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.errors_ns.is_empty() {
            return 0;
        }
        let i = ((self.errors_ns.len() - 1) as f64 * q).round() as usize;
        self.errors_ns[i]
    }
}

/// Compares a callee's requests with the caller's (both as [`served`] them).
pub fn exactness(caller: &[Served], callee: &[Served], tolerance_ns: u64) -> Exactness {
    let mut by_start = caller.to_vec();
    by_start.sort_by_key(|s| s.start_ns);
    let mut out = Exactness {
        callee_requests: callee.len(),
        ..Exactness::default()
    };
    for c in callee {
        // Caller requests being served when the callee's started.
        let upto = by_start.partition_point(|s| s.start_ns <= c.start_ns);
        let mut best: Option<u64> = None;
        let mut within = 0;
        for s in by_start[..upto].iter().rev().take(4096) {
            if s.end_ns < c.start_ns {
                continue;
            }
            let err = s.origin_ns.abs_diff(c.origin_ns);
            if err <= tolerance_ns {
                within += 1;
                best = Some(best.map_or(err, |b: u64| b.min(err)));
            }
        }
        if let Some(err) = best {
            out.matching += 1;
            out.errors_ns.push(err);
            if within > 1 {
                out.ambiguous += 1;
            }
        }
    }
    out.errors_ns.sort_unstable();
    out
}

/// Reads request events until `ends` `REQUEST_END` events arrived (the last responses' ends are
/// submitted right after their sends, so they may trail the client by microseconds), or 10 s.
pub fn drain_events(events: &mut RequestEvents, ends: usize) -> Vec<RequestEvent> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        events.drain(&mut out);
        let seen = out.iter().filter(|e| e.kind == REQUEST_END).count();
        if seen >= ends || Instant::now() >= deadline {
            return out;
        }
        let mut fds = [libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(events),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) };
    }
}

/// Starts `topology` with the release-built emulator (`SLOWPOKE_EMU_BIN`) or the one next to
/// the test binaries.
pub fn start_app(topology: &str) -> RunningApp {
    let t: Topology = slowpoke_emu::topology::parse(topology, "inline").expect("topology");
    t.validate().expect("valid topology");
    let mut o = StartOptions::new(t);
    o.binary = Some(slowpoke_emu::client::find_binary());
    RunningApp::start_with(&o).expect("starting the emulated app")
}

/// Tracks `service` of `app` in `kernel` under `id`, ages on.
pub fn track(kernel: &mut Kernel, app: &RunningApp, service: &str, id: ServiceId) {
    let info = &app.services[service];
    kernel.set_members(id, &info.pids).unwrap();
    kernel
        .set_server_ports(id, &[info.port], &[info.control_port])
        .unwrap();
    kernel.set_track_ages(id, true).unwrap();
}

/// `clients` closed-loop keep-alive clients, `requests` GETs each, on `url`'s host and path;
/// returns how many answers were not 200 (an emulated caller answers an error when one of its
/// calls fails: seen once in about twenty runs of these tests, not traced further).
pub fn load(url: &str, clients: usize, requests: usize) -> usize {
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = format!("/{path}");
    std::thread::scope(|scope| {
        for _ in 0..clients {
            scope.spawn(|| {
                let mut done = 0;
                while done < requests {
                    let stream = TcpStream::connect(host).expect("connecting to the entry");
                    stream.set_nodelay(true).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    // The emulator closes a connection after 100 requests: reconnect then.
                    while done < requests {
                        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
                        if writer.write_all(request.as_bytes()).is_err() {
                            break;
                        }
                        let Some((status, close)) = read_response(&mut reader) else {
                            break;
                        };
                        if status != 200 {
                            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        done += 1;
                        if close {
                            break;
                        }
                    }
                }
            });
        }
    });
    failed.into_inner()
}

/// One response: its status, and whether the server closes after it.
fn read_response(reader: &mut BufReader<TcpStream>) -> Option<(u16, bool)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
    let (mut length, mut close) = (0usize, false);
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        if h == "\r\n" || h.is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
        if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((status, close))
}

/// One keep-alive connection to an emulated entry (`url`: `http://host:port/path`).
pub struct KeepAlive {
    host: String,
    path: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl KeepAlive {
    pub fn connect(url: &str) -> KeepAlive {
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let stream = TcpStream::connect(host).expect("connecting to the entry");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        KeepAlive {
            host: host.to_string(),
            path: format!("/{path}"),
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// One GET on this connection (which must stay open).
    pub fn get(&mut self) {
        self.send();
        self.receive();
    }

    /// Sends one GET.
    pub fn send(&mut self) {
        let request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", self.path, self.host);
        self.writer
            .write_all(request.as_bytes())
            .expect("sending the request");
    }

    /// Reads one response: 200, and the connection stays open.
    pub fn receive(&mut self) {
        let (status, close) = read_response(&mut self.reader).expect("a response");
        assert_eq!(status, 200, "the entry's answer");
        assert!(!close, "the server closed the keep-alive connection");
    }
}
