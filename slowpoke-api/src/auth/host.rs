//! Which `Host` header values a TCP listener answers: a defence against DNS rebinding.
//!
//! A web page on `attacker.example` can point its own name at 127.0.0.1 (or at a node's address)
//! and have the victim's browser call the server as a "same-origin" site, reading the answers.
//! The browser then sends `Host: attacker.example`: a server that answers only its own address,
//! `localhost` and names its operator configured (`--allowed-host`) gives such a page nothing.
//! IP literals cannot be rebound (the page's origin would be the address itself), so when the
//! server listens on every address (`0.0.0.0`, `::`) any IP literal is accepted. The port is not
//! compared: rebinding is about names, and proxies may rewrite ports.

use std::net::{IpAddr, SocketAddr};

/// The `Host` names a listener on `listen` answers (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHosts {
    listen: SocketAddr,
    /// Lower-case names without port.
    names: Vec<String>,
}

impl AllowedHosts {
    /// The listen address and `localhost`, plus `names` (host names or addresses, a `:port`
    /// suffix is ignored, case does not matter).
    pub fn new(listen: SocketAddr, names: impl IntoIterator<Item = String>) -> AllowedHosts {
        AllowedHosts {
            listen,
            names: names
                .into_iter()
                .map(|n| host_name(&n).to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect(),
        }
    }

    /// Whether a request with this `Host` header value (None: absent or not text) is for this
    /// server.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return false };
        let name = host_name(host);
        if name.eq_ignore_ascii_case("localhost")
            || self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
        {
            return true;
        }
        match name.parse::<IpAddr>() {
            Ok(ip) => self.listen.ip().is_unspecified() || ip == self.listen.ip(),
            Err(_) => false,
        }
    }
}

/// The name part of a `Host` value: `[::1]:80` → `::1`, `a.example:80` → `a.example`.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match host.rsplit_once(':') {
        // One colon: name:port. More: a bare IPv6 address.
        Some((name, _)) if !name.contains(':') => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(listen: &str, names: &[&str]) -> AllowedHosts {
        AllowedHosts::new(
            listen.parse().expect("address"),
            names.iter().map(|n| (*n).to_owned()),
        )
    }

    #[test]
    fn own_address_localhost_and_configured_names_only() {
        let h = hosts("127.0.0.1:7171", &["Agent.Example:443"]);
        for ok in [
            "127.0.0.1:7171",
            "127.0.0.1",
            "localhost:7171",
            "LOCALHOST",
            "agent.example",
            "agent.EXAMPLE:7171",
        ] {
            assert!(h.allows(Some(ok)), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:7171",
            "127.0.0.2:7171",
            "10.0.0.1",
            "[::1]:7171",
            "localhost.attacker.example",
            "",
        ] {
            assert!(!h.allows(Some(bad)), "{bad}");
        }
        assert!(!h.allows(None));
    }

    #[test]
    fn every_address_listener_accepts_ip_literals_but_no_foreign_name() {
        let h = hosts("0.0.0.0:7171", &[]);
        for ok in ["10.1.2.3:7171", "[fe80::1]:7171", "::1", "localhost"] {
            assert!(h.allows(Some(ok)), "{ok}");
        }
        assert!(!h.allows(Some("attacker.example:7171")));
        let v6 = hosts("[::1]:7171", &[]);
        assert!(v6.allows(Some("[::1]:7171")) && !v6.allows(Some("127.0.0.1")));
    }
}
