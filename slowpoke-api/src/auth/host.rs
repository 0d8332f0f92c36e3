//! The browser half of the servers' rule: which names a server answers to (the `Host` header,
//! [`HostAllowList`]) and which pages may change something on it (the `Origin` header,
//! [`origin_allowed`]). The bearer token (the parent module) stops callers without the secret;
//! these stop a *browser* from being used against a server it can reach, secret or not.
//!
//! - **DNS rebinding.** A page of `evil.example` points `evil.example` at 127.0.0.1 once loaded;
//!   its scripts are then "same origin" with a server on the victim's loopback, and their
//!   requests carry `Host: evil.example:7272`. A server that answers only its own names refuses
//!   them. An IP literal cannot be rebound (the page's origin *is* that address), so when a server
//!   listens on every address (`0.0.0.0`), any IP literal is one of its names; a DNS name must be
//!   listed. (Vite's dev server and Jupyter follow the same idea.)
//! - **Cross-site requests.** A page of another site may still *send* a request to the server's
//!   real address (it cannot read the answer): a form post, or a `fetch` without preflight.
//!   Browsers mark every non-GET request with `Origin`; a mutating call whose `Origin` is not the
//!   address it was sent to (`Host`) is refused. Requests without `Origin` come from programs
//!   (curl, the CLI), which a browser page cannot impersonate.
//!
//! Plain strings in, booleans out: no HTTP crate, as for [`super::BearerPolicy`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The names a server answers to: loopback names (`localhost`, 127.0.0.0/8, `[::1]`), the
/// address it listens on (any IP literal when that is `0.0.0.0` or `[::]`), and the names its
/// operator configured (e.g. `--allowed-host slowpoke.internal`). Ports are not compared: the
/// listener decides which port a request arrived on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAllowList {
    listen: IpAddr,
    names: Vec<String>,
}

impl HostAllowList {
    /// The list of a server listening on `listen`, with these extra names (a `:port` or a
    /// trailing dot in a name is ignored; comparison ignores case).
    pub fn new(listen: SocketAddr, names: impl IntoIterator<Item = String>) -> HostAllowList {
        let mut names: Vec<String> = names
            .into_iter()
            .filter_map(|n| host_name(n.trim()).map(normalize_name))
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        names.dedup();
        HostAllowList {
            listen: listen.ip(),
            names,
        }
    }

    /// Whether a request with this `Host` header value (None: absent or not text) is addressed
    /// to this server.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(name) = host.and_then(host_name).map(normalize_name) else {
            return false;
        };
        if name == "localhost" {
            return true;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            return ip.is_loopback() || self.listen.is_unspecified() || ip == self.listen;
        }
        self.names.contains(&name)
    }

    /// The extra names configured.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Lists the names for error messages: `localhost, 127.0.0.1, [::1], 10.0.0.5, slowpoke.internal`.
impl fmt::Display for HostAllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "localhost, 127.0.0.1, [::1]")?;
        if self.listen.is_unspecified() {
            write!(f, ", any IP address of this machine")?;
        } else if !self.listen.is_loopback() {
            match self.listen {
                IpAddr::V4(ip) => write!(f, ", {ip}")?,
                IpAddr::V6(ip) => write!(f, ", [{ip}]")?,
            }
        }
        for n in &self.names {
            write!(f, ", {n}")?;
        }
        Ok(())
    }
}

/// Whether a mutating request may proceed given its `Origin` and `Host` header values: yes
/// without `Origin` (not sent by a browser page), no for `Origin: null` (sandboxed frames,
/// `file:` pages), else only when the origin's host and port are the ones the request was sent
/// to (same origin; `http` or `https`, so a TLS proxy in front keeps working).
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin.map(str::trim) else {
        return true;
    };
    let (authority, default_port) = if let Some(rest) = strip_prefix_ci(origin, "http://") {
        (rest, 80)
    } else if let Some(rest) = strip_prefix_ci(origin, "https://") {
        (rest, 443)
    } else {
        return false;
    };
    let Some(host) = host else { return false };
    match (
        name_and_port(authority, default_port),
        name_and_port(host.trim(), default_port),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s.is_char_boundary(prefix.len()))
        .then(|| s.split_at(prefix.len()))
        .filter(|(head, _)| head.eq_ignore_ascii_case(prefix))
        .map(|(_, rest)| rest)
}

/// `name[:port]` or `[v6][:port]` → (lower-case name without brackets, port or the default).
fn name_and_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let name = host_name(authority)?;
    let after = &authority[authority.len() - port_suffix(authority).len()..];
    let port = match after.strip_prefix(':') {
        Some(p) => p.parse().ok()?,
        None if after.is_empty() => default_port,
        None => return None,
    };
    Some((normalize_name(name), port))
}

/// The `:port` part of an authority (empty when there is none).
fn port_suffix(authority: &str) -> &str {
    if authority.starts_with('[') {
        authority.find(']').map_or("", |i| &authority[i + 1..])
    } else {
        authority.rfind(':').map_or("", |i| &authority[i..])
    }
}

/// The name of a `Host` value: `[::1]:7272` → `::1`, `example:80` → `example`. None when it is
/// malformed (an unclosed bracket, an empty name, characters no host name has).
pub fn host_name(host: &str) -> Option<&str> {
    let name = if let Some(rest) = host.strip_prefix('[') {
        let (v6, _) = rest.split_once(']')?;
        v6
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '%'));
    ok.then_some(name)
}

fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(listen: &str, names: &[&str]) -> HostAllowList {
        HostAllowList::new(
            listen.parse().expect("address"),
            names.iter().map(|n| (*n).to_owned()),
        )
    }

    #[test]
    fn a_loopback_server_answers_loopback_names_only() {
        let l = list("127.0.0.1:7272", &[]);
        for host in [
            "localhost",
            "localhost:7272",
            "LOCALHOST.",
            "127.0.0.1:7272",
            "127.0.0.2",
            "[::1]:7272",
        ] {
            assert!(l.allows(Some(host)), "{host}");
        }
        for host in [
            None,
            Some("evil.example"),
            Some("evil.example:7272"),
            Some("10.0.0.1:7272"),
            Some("localhost.evil.example"),
            Some("[::1"),
            Some(""),
            Some("a b"),
        ] {
            assert!(!l.allows(host), "{host:?}");
        }
        assert_eq!(l.to_string(), "localhost, 127.0.0.1, [::1]");
    }

    #[test]
    fn the_listen_address_and_configured_names_are_answered() {
        let l = list("10.0.0.5:7272", &["Slowpoke.Internal:7272", " ", "x."]);
        assert!(l.allows(Some("10.0.0.5:7272")));
        assert!(l.allows(Some("slowpoke.internal")));
        assert!(l.allows(Some("X")));
        assert!(!l.allows(Some("10.0.0.6:7272")), "another address");
        assert!(!l.allows(Some("evil.example")));
        assert_eq!(
            l.to_string(),
            "localhost, 127.0.0.1, [::1], 10.0.0.5, slowpoke.internal, x"
        );
        let any = list("0.0.0.0:7272", &[]);
        assert!(any.allows(Some("192.168.1.20:7272")) && any.allows(Some("[fe80::1]")));
        assert!(
            !any.allows(Some("evil.example:7272")),
            "a name is not an IP"
        );
        assert!(any.to_string().contains("any IP address"));
    }

    #[test]
    fn only_same_origin_pages_may_change_things() {
        let host = Some("127.0.0.1:7272");
        assert!(origin_allowed(None, host), "curl sends no Origin");
        assert!(origin_allowed(Some("http://127.0.0.1:7272"), host));
        assert!(origin_allowed(Some("HTTP://127.0.0.1:7272"), host));
        assert!(origin_allowed(
            Some("http://localhost"),
            Some("localhost:80")
        ));
        assert!(origin_allowed(
            Some("https://x.example"),
            Some("X.example:443")
        ));
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:7273",
            "http://127.0.0.1",
            "https://127.0.0.1:7272x",
            "null",
            "file://",
            "",
        ] {
            assert!(!origin_allowed(Some(origin), host), "{origin}");
        }
        assert!(!origin_allowed(Some("http://127.0.0.1:7272"), None));
    }
}
