//! Who may call the agent, through which door (docs/security/transport.md).
//!
//! The agent stops other users' processes as root, so calling it is as powerful as root:
//!
//! - **The Unix socket** (default, `/run/slowpoke/agent.sock`): the file is root's, mode 0600
//!   (0660 and the group with `--socket-group`), so the kernel refuses everybody else at
//!   `connect(2)`. Every request is checked again against the peer's credentials the kernel
//!   captured at connect ([`Caller::Socket`]): root, the agent's own user, or a member of the
//!   socket group. A file mode loosened by mistake still admits nobody else. No token, no
//!   `Host` check: a web page cannot reach a Unix socket.
//! - **TCP** (only with `--listen`): the network cannot show who calls, so every call needs the
//!   bearer token, loopback included (any local user can connect to 127.0.0.1), except
//!   `GET /v1/health`, which then answers the status only ([`Disclosure::StatusOnly`]) so that
//!   probes need no secret. The `Host` header must name this agent (DNS rebinding,
//!   [`HostAllowList`]). The token file is re-read when it changes ([`TokenSource`]).

use std::{fmt, net::SocketAddr, os::fd::AsRawFd as _, sync::Arc};

use axum::{
    Json,
    extract::connect_info::Connected,
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
    serve::IncomingStream,
};
use slowpoke_api::auth::{AGENT_TOKEN_ENV, HostAllowList, TokenSource, bearer_matches};
use tokio::net::{TcpListener, UnixListener};

use crate::{
    api::ErrorBody,
    error::AgentError,
    sys::cred::{self, PeerCred},
};

/// Who is calling, as the connection shows it (axum's `ConnectInfo`, set by
/// [`super::serve_unix`] and [`super::serve_tcp`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A process on this node, through the Unix socket.
    Socket(PeerCred),
    /// Someone at this address, over TCP.
    Tcp(SocketAddr),
    /// Served without connection info, or the kernel could not tell: refused.
    Unknown,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Socket(c) => match c.pid {
                Some(pid) => write!(f, "uid {} gid {} pid {pid} (socket)", c.uid, c.gid),
                None => write!(f, "uid {} gid {} (socket)", c.uid, c.gid),
            },
            Caller::Tcp(addr) => write!(f, "{addr} (tcp)"),
            Caller::Unknown => f.write_str("unknown caller"),
        }
    }
}

impl Connected<IncomingStream<'_, UnixListener>> for Caller {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Caller {
        match cred::peer_cred(stream.io().as_raw_fd()) {
            Ok(c) => {
                tracing::debug!(uid = c.uid, gid = c.gid, pid = ?c.pid, "socket connection");
                Caller::Socket(c)
            }
            Err(e) => {
                tracing::warn!("a socket caller's credentials are unknown ({e}): refused");
                Caller::Unknown
            }
        }
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Caller {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Caller {
        Caller::Tcp(*stream.remote_addr())
    }
}

/// How much an admitted caller may see of `GET /v1/health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Disclosure {
    Full,
    /// A TCP caller without the token: the status only (no version, no guardian pid).
    StatusOnly,
}

/// A request the agent does not serve: its status and what to do (`{"error": ...}`).
#[derive(Debug)]
pub(super) struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// Who may call the agent: the socket's group and, when the agent listens on TCP, the token and
/// the `Host` names (module doc). `Default`: the socket for root only, no TCP.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    socket_group: Option<u32>,
    tcp: Option<Arc<TcpRules>>,
}

#[derive(Debug)]
struct TcpRules {
    listen: SocketAddr,
    token: TokenSource,
    hosts: HostAllowList,
}

impl Auth {
    /// Socket callers only: root, the agent's own user and, when given, members of this group.
    pub fn socket(group: Option<u32>) -> Auth {
        Auth {
            socket_group: group,
            tcp: None,
        }
    }

    /// TCP callers too, on `listen`: a token is mandatory (refused without one, loopback
    /// included); `allowed_hosts` are `Host` names accepted besides the listen address and
    /// `localhost`.
    pub fn with_tcp(
        mut self,
        listen: SocketAddr,
        token: Option<TokenSource>,
        allowed_hosts: Vec<String>,
    ) -> Result<Auth, AgentError> {
        let Some(token) = token else {
            return Err(AgentError::BadRequest(format!(
                "refusing to listen on {listen} without a token: over TCP every call needs \
                 `Authorization: Bearer <token>`, loopback included (any local user can connect \
                 there); give --token-file FILE (mode 0600) or ${AGENT_TOKEN_ENV}, or use the Unix \
                 socket (the default) instead of --listen"
            )));
        };
        self.tcp = Some(Arc::new(TcpRules {
            listen,
            token,
            hosts: HostAllowList::new(listen, allowed_hosts),
        }));
        Ok(self)
    }

    /// Socket callers (root) and TCP callers on `listen` with this fixed token: what tests and
    /// embedders use.
    pub fn for_listen(listen: SocketAddr, token: Option<&str>) -> Result<Auth, AgentError> {
        Auth::socket(None).with_tcp(listen, token.and_then(TokenSource::fixed), Vec::new())
    }

    /// The verdict on one request: what the caller may see, or why it is refused.
    pub(super) fn admit(
        &self,
        caller: &Caller,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Disclosure, Refusal> {
        match caller {
            Caller::Socket(peer) => self.admit_peer(peer),
            Caller::Tcp(_) => {
                let Some(tcp) = &self.tcp else {
                    return Err(Refusal::new(
                        StatusCode::FORBIDDEN,
                        "this agent takes no calls over TCP: use its Unix socket, or start it with --listen ADDR --token-file FILE",
                    ));
                };
                tcp.admit(method, path, headers)
            }
            Caller::Unknown => Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "the caller is unknown (a router served without connection info: serve it with \
                 slowpoke_agent::http::serve_unix or serve_tcp)",
            )),
        }
    }

    fn admit_peer(&self, peer: &PeerCred) -> Result<Disclosure, Refusal> {
        let own_uid = nix::unistd::geteuid().as_raw();
        if peer.uid == 0
            || peer.uid == own_uid
            || self.socket_group.is_some_and(|g| peer.in_group(g))
        {
            return Ok(Disclosure::Full);
        }
        let who = match self.socket_group {
            Some(g) => format!("root and members of group {g}"),
            None => "root".to_owned(),
        };
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "uid {} may not call the agent: its socket is for {who}; ask the node's admin \
                 (slowpoke-agent --socket-group GROUP lets a group in)",
                peer.uid
            ),
        ))
    }
}

impl TcpRules {
    fn admit(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Disclosure, Refusal> {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let host = header(header::HOST);
        if !self.hosts.allows(host) {
            return Err(Refusal::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "Host {:?} is not this agent's address: call it as {} or localhost, or start \
                     the agent with --allowed-host NAME (a defence against DNS rebinding)",
                    host.unwrap_or(""),
                    self.listen
                ),
            ));
        }
        let want = self.token.current().map_err(|e| {
            tracing::error!("refusing TCP calls: {e}");
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the agent's token file is unusable (its log says why): TCP calls are refused until it is fixed",
            )
        })?;
        if bearer_matches(header(header::AUTHORIZATION), &want) {
            Ok(Disclosure::Full)
        } else if *method == Method::GET && path == "/v1/health" {
            Ok(Disclosure::StatusOnly)
        } else {
            Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "over TCP every call needs `Authorization: Bearer <token>` with the agent's token \
                 (only GET /v1/health answers without it, with the status only)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), v.parse().expect("header value"));
        }
        h
    }

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller::Socket(PeerCred {
            pid: Some(42),
            uid,
            gid,
            groups: groups.to_vec(),
        })
    }

    #[test]
    fn socket_callers_are_root_or_members_of_the_socket_group() {
        let none = HeaderMap::new();
        let root_only = Auth::socket(None);
        let put = |a: &Auth, c: &Caller| a.admit(c, &Method::PUT, "/v1/slowdown", &none);
        assert_eq!(
            put(&root_only, &peer(0, 0, &[])).ok(),
            Some(Disclosure::Full)
        );
        let e = put(&root_only, &peer(1000, 1000, &[])).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(e.message.contains("uid 1000") && e.message.contains("--socket-group"));
        let group = Auth::socket(Some(77));
        assert!(put(&group, &peer(1000, 77, &[])).is_ok());
        assert!(put(&group, &peer(1000, 1000, &[5, 77])).is_ok());
        assert!(put(&group, &peer(1000, 1000, &[5])).is_err());
        assert!(put(&group, &Caller::Unknown).is_err());
        // No TCP configured: a TCP caller is refused outright.
        let tcp: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert_eq!(
            put(&root_only, &Caller::Tcp(tcp)).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn tcp_needs_the_token_everywhere_but_health_and_a_host_of_its_own() {
        let listen: SocketAddr = "127.0.0.1:7171".parse().expect("addr");
        let e = Auth::for_listen(listen, None).unwrap_err().to_string();
        assert!(
            e.contains("without a token") && e.contains("--token-file"),
            "{e}"
        );
        assert!(Auth::for_listen(listen, Some(" \n")).is_err());
        let a = Auth::for_listen(listen, Some("s3cret\n")).expect("token");
        let c = Caller::Tcp("127.0.0.1:5555".parse().expect("addr"));
        let host = (header::HOST, "127.0.0.1:7171");
        let good = (header::AUTHORIZATION, "Bearer s3cret");
        let check = |m: Method, p: &str, h: &[(header::HeaderName, &str)]| {
            a.admit(&c, &m, p, &headers(h)).map_err(|r| r.status)
        };
        for (m, p) in [
            (Method::GET, "/v1/stats"),
            (Method::GET, "/v1/services"),
            (Method::PUT, "/v1/slowdown"),
            (Method::GET, "/metrics"),
        ] {
            assert_eq!(
                check(m.clone(), p, std::slice::from_ref(&host)),
                Err(StatusCode::UNAUTHORIZED),
                "{m} {p}"
            );
            assert_eq!(
                check(
                    m.clone(),
                    p,
                    &[host.clone(), (header::AUTHORIZATION, "Bearer nope")]
                ),
                Err(StatusCode::UNAUTHORIZED)
            );
            assert_eq!(
                check(m, p, &[host.clone(), good.clone()]),
                Ok(Disclosure::Full)
            );
        }
        assert_eq!(
            check(Method::GET, "/v1/health", std::slice::from_ref(&host)),
            Ok(Disclosure::StatusOnly)
        );
        assert_eq!(
            check(Method::GET, "/v1/health", &[host, good.clone()]),
            Ok(Disclosure::Full)
        );
        // DNS rebinding: the right token does not help a foreign Host.
        assert_eq!(
            check(
                Method::GET,
                "/v1/stats",
                &[(header::HOST, "attacker.example:7171"), good]
            ),
            Err(StatusCode::MISDIRECTED_REQUEST)
        );
        assert!(!format!("{a:?}").contains("s3cret"), "{a:?}");
    }
}
