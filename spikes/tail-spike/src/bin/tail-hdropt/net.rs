//! The spike's network: a veth pair between the root namespace and a namespace `tailspike`
//! (10.203.0.1 ↔ 10.203.0.2), and a TCP server (echo or sink, chosen by the client's first byte)
//! that can live in either namespace. Everything is torn down on drop.

use std::{
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::Command,
    thread,
};

use anyhow::{Context, Result, bail};

pub const NETNS: &str = "tailspike";
pub const HOST_IP: &str = "10.203.0.1";
pub const PEER_IP: &str = "10.203.0.2";
const HOST_DEV: &str = "tsp0";
const PEER_DEV: &str = "tsp1";

fn sh(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The veth pair and its namespace.
pub struct Veth;

impl Veth {
    pub fn create() -> Result<Veth> {
        // Leftovers of an interrupted run.
        let _ = sh(&["ip", "link", "del", HOST_DEV]);
        let _ = sh(&["ip", "netns", "del", NETNS]);
        sh(&["ip", "netns", "add", NETNS])?;
        sh(&[
            "ip", "link", "add", HOST_DEV, "type", "veth", "peer", "name", PEER_DEV,
        ])?;
        sh(&["ip", "link", "set", PEER_DEV, "netns", NETNS])?;
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{HOST_IP}/24"),
            "dev",
            HOST_DEV,
        ])?;
        sh(&["ip", "link", "set", HOST_DEV, "up"])?;
        sh(&[
            "ip",
            "-n",
            NETNS,
            "addr",
            "add",
            &format!("{PEER_IP}/24"),
            "dev",
            PEER_DEV,
        ])?;
        sh(&["ip", "-n", NETNS, "link", "set", PEER_DEV, "up"])?;
        sh(&["ip", "-n", NETNS, "link", "set", "lo", "up"])?;
        Ok(Veth)
    }

    /// Switches TSO/GSO on the sending side and GRO on the receiving side (needs `ethtool`).
    pub fn offloads(on: bool) -> Result<()> {
        let v = if on { "on" } else { "off" };
        sh(&["ethtool", "-K", HOST_DEV, "tso", v, "gso", v])?;
        sh(&[
            "ip", "netns", "exec", NETNS, "ethtool", "-K", PEER_DEV, "gro", v,
        ])
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = sh(&["ip", "link", "del", HOST_DEV]);
        let _ = sh(&["ip", "netns", "del", NETNS]);
    }
}

/// Moves the calling thread into [`NETNS`].
pub fn enter_netns() -> Result<()> {
    let ns = File::open(format!("/run/netns/{NETNS}"))?;
    // SAFETY: setns on this thread only, with a namespace fd.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Starts a server on `addr` (inside [`NETNS`] when `in_netns`) and returns once it listens.
/// A connection whose first byte is `E` is echoed; `S` is drained to EOF, then answered with 1 byte.
pub fn serve(addr: SocketAddr, in_netns: bool) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let listener = (|| -> Result<TcpListener> {
            if in_netns {
                enter_netns()?;
            }
            Ok(TcpListener::bind(addr)?)
        })();
        let listener = match listener {
            Ok(l) => {
                tx.send(Ok(())).ok();
                l
            }
            Err(e) => {
                tx.send(Err(e)).ok();
                return;
            }
        };
        for conn in listener.incoming().flatten() {
            thread::spawn(move || handle(conn));
        }
    });
    rx.recv().context("server thread")?
}

fn handle(mut conn: TcpStream) {
    conn.set_nodelay(true).ok();
    let mut buf = vec![0u8; 256 * 1024];
    let mut first = [0u8; 1];
    if conn.read_exact(&mut first).is_err() {
        return;
    }
    match first[0] {
        b'E' => {
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
        b'S' => {
            while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            let _ = conn.write_all(b"k");
        }
        _ => {}
    }
}

/// A client connection in echo mode.
pub fn echo_client(addr: SocketAddr) -> Result<TcpStream> {
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    c.write_all(b"E")?;
    Ok(c)
}

/// One round trip of `msg.len()` bytes.
pub fn ping(c: &mut TcpStream, msg: &[u8], buf: &mut [u8]) -> Result<()> {
    c.write_all(msg)?;
    c.read_exact(&mut buf[..msg.len()])?;
    Ok(())
}

/// Sends `bytes` to a sink server and waits for its answer.
pub fn bulk(addr: SocketAddr, bytes: usize) -> Result<()> {
    let mut c = TcpStream::connect(addr)?;
    c.write_all(b"S")?;
    let chunk = vec![7u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        c.write_all(&chunk[..n])?;
        left -= n;
    }
    c.shutdown(std::net::Shutdown::Write)?;
    let mut k = [0u8; 1];
    c.read_exact(&mut k)?;
    Ok(())
}
