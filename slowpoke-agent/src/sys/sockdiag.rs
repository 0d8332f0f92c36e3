//! The listening TCP sockets of the agent's network namespace, from the kernel's `sock_diag`
//! netlink interface (what `ss -l` uses).
//!
//! Why not `/proc/net/tcp`: that table lists every TCP socket of the namespace, `TIME_WAIT` ones
//! included, and the kernel formats it line by line on every read. An app that opens a
//! connection per request (nginx's `memcached_pass`, no upstream keep-alive) leaves tens of
//! thousands of them; re-resolving port selectors every 250 ms from that table cost the agent
//! most of a core (docs/agent.md, "Resolving selectors"). Asked for LISTEN sockets only, the
//! kernel walks its listening hash and nothing else.

use std::collections::HashMap;
use std::io;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

/// Listening TCP sockets (IPv4 and IPv6) of this process's network namespace: socket inode ->
/// local port.
pub fn listening_sockets() -> io::Result<HashMap<u64, u16>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut out = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    for (family, socket_id) in [
        (AF_INET, SocketId::new_v4()),
        (AF_INET6, SocketId::new_v6()),
    ] {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: IPPROTO_TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::LISTEN,
                socket_id,
            })
            .into(),
        );
        request.finalize();
        let mut bytes = vec![0u8; request.buffer_len()];
        request.serialize(&mut bytes);
        socket.send(&bytes, 0)?;
        read_dump(&socket, &mut buf, &mut out)?;
    }
    Ok(out)
}

/// Reads one dump's replies until the kernel says it is done.
fn read_dump(socket: &Socket, buf: &mut [u8], out: &mut HashMap<u64, u16>) -> io::Result<()> {
    let bad = |e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag reply: {e}"))
    };
    loop {
        let n = socket.recv(&mut &mut buf[..], 0)?;
        let mut offset = 0;
        while offset < n {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[offset..n])
                .map_err(|e| bad(&e))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r))
                    if r.header.inode != 0 =>
                {
                    out.insert(u64::from(r.header.inode), r.header.socket_id.source_port);
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return Err(e.code.map_or_else(
                        || bad(&"an error without a code"),
                        |c| io::Error::from_raw_os_error(-c.get()),
                    ));
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}
