//! Synchronized pauses between nodes (issue #16, item 4). A synchronized plan already makes
//! every delayed service of one node pay its debt when one of them starts a quantum pause
//! (`dispatch.rs`, `set_sync_hooks`); with `sync_peers` the same moment crosses nodes: the
//! pause thread that starts the quantum pause also sends one UDP datagram to every peer agent,
//! and a peer's datagram makes every delayed service here pay what it owes now.
//!
//! Safety: a datagram only brings forward a pause the local plan's debt already asks for
//! (`PayHandle::pay_now`: the debt owed, under the stopped-share cap); it never adds debt, and
//! with no plan, or no delayed service here, it does nothing. Datagrams are authenticated with
//! the plan's key (HMAC-SHA256, `message.rs`), which travels only inside the token-authenticated
//! plan PUT; replays are refused by per-sender sequence numbers. A received datagram is never
//! forwarded (no storms).
//!
//! Threads: one receiver (`peer-sync`, real-time like the dispatcher) blocks in `recv_from` with
//! a read timeout so it notices shutdown. Sending happens on the pause thread, non-blocking: a
//! full socket buffer drops the datagram (counted), it never delays the pause.

pub mod message;

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use message::{Key, Refused, Replays, Sender};

use super::lock;
use crate::{actuator::PayHandle, api, sys::sched::make_thread_precise};

/// How often the receiver looks at the agent's `stopping` flag.
const READ_TIMEOUT: Duration = Duration::from_millis(200);

/// The most peers a plan may name.
pub const MAX_PEERS: usize = 256;

/// The agent's sync socket and the session of the plan in force.
pub struct PeerSync {
    me: Sender,
    recv: UdpSocket,
    /// Non-blocking (a separate socket, so the receiver's stays blocking).
    send: UdpSocket,
    session: Mutex<Option<Arc<Session>>>,
    /// The next sequence number: raised to the wall clock (ns) at every plan, so a restarted
    /// agent does not reuse its previous run's numbers; one per datagram.
    next_seq: AtomicU64,
    counts: Counts,
}

/// What a synchronized plan with `sync_peers` needs while it is in force.
pub(super) struct Session {
    key: Key,
    peers: Vec<SocketAddr>,
    /// Every delayed service of the plan on this node.
    members: Vec<PayHandle>,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    send_failed: AtomicU64,
    accepted: AtomicU64,
    malformed: AtomicU64,
    no_plan: AtomicU64,
    bad_mac: AtomicU64,
    replayed: AtomicU64,
}

/// The key and peers of a plan's `sync_peers`, or what is wrong with them (a 400 message).
pub(super) fn parse_peers(sp: &api::SyncPeers) -> Result<(Key, Vec<SocketAddr>), String> {
    let key = message::parse_key(&sp.key).ok_or(
        "sync_peers.key must be 64 hex digits (a random 32-byte key shared by the experiment's \
         agents)",
    )?;
    if sp.peers.len() > MAX_PEERS {
        return Err(format!(
            "sync_peers.peers names {} peers, at most {MAX_PEERS} are allowed",
            sp.peers.len()
        ));
    }
    let peers = sp
        .peers
        .iter()
        .map(|p| {
            p.parse::<SocketAddr>().map_err(|_| {
                format!(
                    "sync_peers.peers: {p:?} is not IP:PORT; give each peer agent's sync_addr \
                     from its GET /v1/health"
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((key, peers))
}

impl Session {
    pub(super) fn new(key: Key, peers: Vec<SocketAddr>, members: Vec<PayHandle>) -> Session {
        Session {
            key,
            peers,
            members,
        }
    }
}

impl PeerSync {
    /// Binds the receiving socket on `addr` and a sending one on the same IP.
    pub fn bind(addr: SocketAddr) -> io::Result<PeerSync> {
        let recv = UdpSocket::bind(addr)?;
        recv.set_read_timeout(Some(READ_TIMEOUT))?;
        let local = recv.local_addr()?;
        let send = UdpSocket::bind(SocketAddr::new(local.ip(), 0))?;
        send.set_nonblocking(true)?;
        Ok(PeerSync {
            me: Sender {
                addr: local,
                instance: random_instance(),
            },
            recv,
            send,
            session: Mutex::new(None),
            next_seq: AtomicU64::new(0),
            counts: Counts::default(),
        })
    }

    /// The address peers send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.me.addr
    }

    /// The session of the plan now in force (`None`: datagrams are dropped as `no_plan`).
    pub(super) fn set_session(&self, session: Option<Arc<Session>>) {
        if session.is_some() {
            let wall_ns = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            self.next_seq.fetch_max(wall_ns, Ordering::SeqCst);
        }
        *lock(&self.session) = session;
    }

    /// Tells every peer of `session` "pay now": one datagram each, never waiting.
    pub(super) fn broadcast(&self, session: &Session) {
        for peer in &session.peers {
            let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
            let datagram = message::encode(&session.key, self.me, seq);
            let counter = match self.send.send_to(&datagram, peer) {
                Ok(_) => &self.counts.sent,
                Err(e) => {
                    tracing::debug!(%peer, "synchronized-pause datagram not sent: {e}");
                    &self.counts.send_failed
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The receiver thread's body: until `stopping`, takes datagrams and makes the plan's
    /// delayed services pay.
    pub(super) fn receive_loop(&self, stopping: &AtomicBool) {
        if let Err(why) = make_thread_precise() {
            tracing::debug!("peer-sync receiver: {why}");
        }
        // One byte more than a datagram, so a longer one is seen as such.
        let mut buf = [0u8; message::LEN + 1];
        let mut replays = Replays::default();
        let mut replays_key: Option<Key> = None;
        while !stopping.load(Ordering::SeqCst) {
            let n = match self.recv.recv_from(&mut buf) {
                Ok((n, _)) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    tracing::warn!("peer-sync receiver: {e}");
                    std::thread::sleep(READ_TIMEOUT);
                    continue;
                }
            };
            match self.take(&buf[..n], &mut replays, &mut replays_key) {
                Ok(()) => &self.counts.accepted,
                Err(None) => &self.counts.no_plan,
                Err(Some(Refused::Malformed)) => &self.counts.malformed,
                Err(Some(Refused::BadMac)) => &self.counts.bad_mac,
                Err(Some(Refused::Replayed)) => &self.counts.replayed,
            }
            .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One datagram: checked in the order malformed, no plan, MAC, sequence; a valid one makes
    /// every delayed service here pay what it owes (`Err(None)`: no plan with peers).
    fn take(
        &self,
        datagram: &[u8],
        replays: &mut Replays,
        replays_key: &mut Option<Key>,
    ) -> Result<(), Option<Refused>> {
        if !message::well_formed(datagram) {
            return Err(Some(Refused::Malformed));
        }
        let Some(session) = lock(&self.session).clone() else {
            return Err(None);
        };
        let msg = message::decode(&session.key, datagram).map_err(Some)?;
        if *replays_key != Some(session.key) {
            replays.clear();
            *replays_key = Some(session.key);
        }
        replays.accept(&msg).map_err(Some)?;
        for m in &session.members {
            m.pay_now();
        }
        Ok(())
    }

    pub fn stats(&self) -> api::PeerSyncStats {
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        api::PeerSyncStats {
            addr: self.me.addr.to_string(),
            sent: get(&c.sent),
            send_failed: get(&c.send_failed),
            accepted: get(&c.accepted),
            dropped_malformed: get(&c.malformed),
            dropped_no_plan: get(&c.no_plan),
            dropped_bad_mac: get(&c.bad_mac),
            dropped_replayed: get(&c.replayed),
        }
    }
}

/// 48 random bits naming this agent's run among senders (`getrandom`; the clock if that fails,
/// which still differs between runs).
fn random_instance() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        b = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            .to_le_bytes();
    }
    u64::from_le_bytes(b) & 0xffff_ffff_ffff
}
