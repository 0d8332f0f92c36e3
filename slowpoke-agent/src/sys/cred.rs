//! Who is on the other end of a Unix socket, and group names: what the agent's socket needs to
//! decide who may call it.
//!
//! The peer's credentials come from the kernel (`SO_PEERCRED`: pid, uid, primary gid;
//! `SO_PEERGROUPS`: supplementary groups), captured when the peer connected: a caller cannot
//! change them afterwards, and nothing is read from `/proc`, where the pid may already belong to
//! another process.

use std::{io, os::fd::RawFd};

/// A Unix socket peer as the kernel saw it at `connect(2)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCred {
    /// `None` when the peer is in a pid namespace the agent cannot see.
    pub pid: Option<u32>,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (empty when the kernel cannot tell, before Linux 4.13).
    pub groups: Vec<u32>,
}

impl PeerCred {
    /// Whether the peer is in group `gid` (primary or supplementary).
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// The credentials of the peer of a connected Unix stream socket.
pub fn peer_cred(fd: RawFd) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is that large.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &raw mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        pid: u32::try_from(cred.pid).ok().filter(|p| *p != 0),
        uid: cred.uid,
        gid: cred.gid,
        groups: peer_groups(fd).unwrap_or_default(),
    })
}

/// `SO_PEERGROUPS`: the peer's supplementary groups at `connect(2)`.
fn peer_groups(fd: RawFd) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the vector's buffer, which is that
        // large; on ERANGE it writes nothing and sets `len` to the size needed.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        let n = len as usize / size_of::<libc::gid_t>();
        if r == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65_536 {
            groups.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}

/// The id of a group given by name or number (`slowpoke`, `1001`).
pub fn group_id(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!(
            "no group named {group:?} on this node (create it with `groupadd {group}`, or give a numeric gid)"
        )),
        Err(e) => Err(format!("cannot look up the group {group:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::os::{fd::AsRawFd as _, unix::net::UnixStream};

    use super::*;

    #[test]
    fn a_socket_pair_shows_this_process_as_the_peer() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let c = peer_cred(a.as_raw_fd()).expect("SO_PEERCRED");
        assert_eq!(c.pid, Some(std::process::id()));
        // SAFETY: plain getters.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        assert_eq!((c.uid, c.gid), (uid, gid));
        assert!(c.in_group(gid));
    }

    #[test]
    fn groups_by_name_or_number() {
        assert_eq!(group_id("0"), Ok(0));
        assert_eq!(group_id("root"), Ok(0));
        let e = group_id("no-such-group-zz").unwrap_err();
        assert!(e.contains("groupadd"), "{e}");
    }
}
