//! Which processes hold which sockets, kept across the resolver's passes, so that a pass finds
//! the owners of the listening TCP sockets without reading every process's open files again.
//!
//! No kernel interface maps a socket to the processes that hold it: the owners of a port come
//! from reading `/proc/PID/fd` of every process, one `readlink` per descriptor. Done for every
//! port selector, and for every service's members, at every pass (4 a second), that read was
//! most of the agent's own CPU: 2.2 % of a core with the six services of an emulated app
//! (docs/agent.md, "The resolver's cost"), more on a node with many processes or connections.
//!
//! The index reads a process's descriptors (its socket inodes)
//! - when it first sees the process, and at every pass of its first [`YOUNG_PASSES`]: a starting
//!   server opens its listeners after the process appears;
//! - every [`STAGGER`] passes after that, a different slice of the processes at each pass;
//! - all at once when a wanted port has a listening socket no known process holds (a
//!   long-running process opened a new listener), at most every [`FULL_MIN_PASSES`] passes.
//!
//! The listening sockets themselves come from one `sock_diag` query at every pass, so a socket
//! that stops listening, or starts listening on a descriptor already read, counts at once.
//! A process known to hold a socket it has closed since (rare: a process hands its listener to
//! another, or drops it while others keep it) counts as an owner until its next read.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fs,
    path::PathBuf,
};

use crate::sys::procfs;

/// Passes during which a new process is read at every pass (10 s at the default 250 ms).
pub const YOUNG_PASSES: u64 = 40;
/// Every process is read again at least once per this many passes (5 s at 250 ms).
pub const STAGGER: u64 = 20;
/// Fewest passes between two reads of every process for an unowned wanted listener (1 s).
pub const FULL_MIN_PASSES: u64 = 4;

/// What the index knows of one process.
struct Known {
    /// The pass that first saw it.
    seen: u64,
    /// Its socket inodes at its last read.
    sockets: Vec<u64>,
}

#[derive(Default)]
pub struct Listeners {
    /// The agent's own network namespace (`/proc/self/ns/net`), read once.
    own_ns: Option<PathBuf>,
    procs: HashMap<u32, Known>,
    /// Listening socket inode -> port, in the agent's network namespace, at the last pass.
    listening: HashMap<u64, u16>,
    pass: u64,
    /// The pass of the last read of every process for an unowned listener.
    last_full: Option<u64>,
}

impl Listeners {
    pub fn new() -> Listeners {
        Listeners {
            own_ns: fs::read_link("/proc/self/ns/net").ok(),
            ..Listeners::default()
        }
    }

    /// One pass: the listening sockets now, and the descriptors of the processes due (module
    /// docs). `wanted`: the ports the port selectors name.
    pub fn refresh(&mut self, wanted: &[u16]) {
        self.pass += 1;
        self.listening = procfs::own_listening_sockets();
        let pids = procfs::all_pids();
        let alive: HashSet<u32> = pids.iter().copied().collect();
        self.procs.retain(|p, _| alive.contains(p));
        for &pid in &pids {
            let due = self.procs.get(&pid).is_none_or(|k| {
                self.pass - k.seen < YOUNG_PASSES
                    || (u64::from(pid) + self.pass).is_multiple_of(STAGGER)
            });
            if due {
                self.read(pid);
            }
        }
        let may_read_all = self
            .last_full
            .is_none_or(|p| self.pass >= p + FULL_MIN_PASSES);
        if may_read_all && self.unowned(wanted) {
            self.last_full = Some(self.pass);
            for &pid in &pids {
                self.read(pid);
            }
        }
    }

    fn read(&mut self, pid: u32) {
        let seen = self.procs.get(&pid).map_or(self.pass, |k| k.seen);
        let sockets = procfs::socket_inodes(pid);
        self.procs.insert(pid, Known { seen, sockets });
    }

    /// The listening inodes on `ports`.
    fn inodes_on(&self, ports: &[u16]) -> HashSet<u64> {
        self.listening
            .iter()
            .filter(|(_, p)| ports.contains(p))
            .map(|(&i, _)| i)
            .collect()
    }

    /// A wanted port has a listening socket no known process holds.
    fn unowned(&self, wanted: &[u16]) -> bool {
        let mut inodes = self.inodes_on(wanted);
        if inodes.is_empty() {
            return false;
        }
        for k in self.procs.values() {
            for i in &k.sockets {
                inodes.remove(i);
            }
        }
        !inodes.is_empty()
    }

    /// Processes holding a listening socket on one of `ports` (the agent's network namespace):
    /// what `procfs::pids_listening_on` reads from every process.
    pub fn owners(&self, ports: &[u16]) -> BTreeSet<u32> {
        let inodes = self.inodes_on(ports);
        if inodes.is_empty() {
            return BTreeSet::new();
        }
        self.procs
            .iter()
            .filter(|(_, k)| k.sockets.iter().any(|i| inodes.contains(i)))
            .map(|(&p, _)| p)
            .collect()
    }

    /// The TCP ports `pids` listen on, each in its own network namespace: what
    /// `procfs::listen_ports_of` reads. Processes in the agent's namespace come from the index,
    /// the others (a pod's) are read as before.
    pub fn ports_of(&self, pids: &[u32]) -> Vec<u16> {
        let mut ports = BTreeSet::new();
        let mut elsewhere = Vec::new();
        for &pid in pids {
            let own = self.own_ns.is_some()
                && fs::read_link(format!("/proc/{pid}/ns/net")).ok() == self.own_ns;
            match self.procs.get(&pid) {
                Some(k) if own => {
                    ports.extend(k.sockets.iter().filter_map(|i| self.listening.get(i)));
                }
                _ => elsewhere.push(pid),
            }
        }
        ports.extend(procfs::listen_ports_of(&elsewhere));
        ports.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn listen() -> (TcpListener, u16) {
        let l = TcpListener::bind("127.0.0.1:0").expect("binding a port");
        let port = l.local_addr().expect("its address").port();
        (l, port)
    }

    /// The index answers what the full reads answer, and follows a listener that closes.
    #[test]
    fn owners_and_ports_as_the_full_reads_give_them() {
        let me = std::process::id();
        let (l, port) = listen();
        let mut index = Listeners::new();
        index.refresh(&[port]);
        assert_eq!(index.owners(&[port]), BTreeSet::from([me]));
        assert_eq!(index.owners(&[port]), procfs::pids_listening_on(&[port]));
        assert!(index.ports_of(&[me]).contains(&port));
        assert!(procfs::listen_ports_of(&[me]).contains(&port));
        drop(l);
        index.refresh(&[port]);
        assert!(
            index.owners(&[port]).is_empty(),
            "a closed listener has no owner"
        );
        assert!(!index.ports_of(&[me]).contains(&port));
    }

    /// Past its young passes a process is read once per stagger, yet a listener it opens on a
    /// wanted port is found at the next pass, and one on another port within a stagger. (How
    /// many reads that saves is measured, not asserted: docs/agent.md.)
    #[test]
    fn an_old_process_opening_a_listener_is_found() {
        let me = std::process::id();
        let mut index = Listeners::new();
        let none: [u16; 0] = [];
        for _ in 0..=YOUNG_PASSES {
            index.refresh(&none);
        }
        let (_wanted, port) = listen();
        index.refresh(&[port]);
        assert_eq!(
            index.owners(&[port]),
            BTreeSet::from([me]),
            "a new listener on a wanted port is found at the next pass"
        );

        let (_other, other) = listen();
        let found = (0..STAGGER).any(|_| {
            index.refresh(&none);
            index.ports_of(&[me]).contains(&other)
        });
        assert!(
            found,
            "a new listener on another port is found within {STAGGER} passes"
        );
    }
}
