//! What a request may name, as the server's operator configured it ([`ServePolicy`]), and how
//! much the server keeps.
//!
//! The coordinator may run as root (its agent in-process) and holds an agent token; a request
//! comes from whoever can reach it. So a request chooses only among what the operator allowed:
//!
//! - **agents**: only agents the server was started with (`--agent`, or `--cluster`'s nodes,
//!   which a request may name by node or URL), so the server's agent tokens never travel to a
//!   URL a caller names;
//! - **`entry`**: the load goes only to allowed hosts (`--allow-entry-host`; default loopback),
//!   so the server is no load cannon against arbitrary machines;
//! - **`topology`**: a file inside one directory (`--topology-dir`; default none), so a request
//!   cannot make the server read (and report parts of) any file it can open;
//! - **memory**: the in-memory experiments list keeps the newest [`ServePolicy::keep_experiments`]
//!   (finished results stay in the results directory); running ones are never dropped.

use std::fmt;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use axum::http::Uri;

use super::request::Checked;
use crate::agents::SharedAgent;

/// How many experiments a server keeps in memory by default ([`ServePolicy::keep_experiments`]).
pub const KEEP_EXPERIMENTS: usize = 100;

/// The operator's limits on requests (`slowpoke serve` flags). The default is the strictest:
/// loopback names, loopback entries, no topologies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServePolicy {
    /// Names the server answers to besides loopback and its listen address (`--allowed-host`;
    /// needs a token).
    pub allowed_hosts: Vec<String>,
    /// Hosts a request's `entry` may name (`--allow-entry-host HOST[:PORT]`); empty: loopback
    /// only (`localhost`, 127.0.0.0/8, `[::1]`, any port).
    pub entry_hosts: Vec<EntryHost>,
    /// The directory a request's `topology` must lie in (`--topology-dir`); `None`: requests
    /// naming a topology are refused.
    pub topology_dir: Option<PathBuf>,
    /// Experiments kept in memory, newest first; older finished ones are dropped (their results
    /// stay in the results directory).
    pub keep_experiments: usize,
}

impl Default for ServePolicy {
    fn default() -> ServePolicy {
        ServePolicy {
            allowed_hosts: Vec::new(),
            entry_hosts: Vec::new(),
            topology_dir: None,
            keep_experiments: KEEP_EXPERIMENTS,
        }
    }
}

/// One `--allow-entry-host`: `HOST` (any port) or `HOST:PORT`; an IPv6 address in brackets
/// (`[::1]:8080`) or bare (`::1`, any port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryHost {
    name: String,
    port: Option<u16>,
}

impl FromStr for EntryHost {
    type Err = String;

    fn from_str(s: &str) -> Result<EntryHost, String> {
        let bad = |why: &str| {
            format!(
                "entry host `{s}`: {why}; write HOST or HOST:PORT, e.g. shop.internal:8080 or [::1]:8080"
            )
        };
        let s = s.trim();
        let (name, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, after) = rest.split_once(']').ok_or_else(|| bad("no closing `]`"))?;
            (v6, after.strip_prefix(':'))
        } else if s.matches(':').count() > 1 {
            (s, None)
        } else {
            match s.split_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (s, None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number from 0 to 65535"))
            })
            .transpose()?;
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
        if !valid {
            return Err(bad("not a host name or IP address"));
        }
        Ok(EntryHost { name, port })
    }
}

impl fmt::Display for EntryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.contains(':') {
            format!("[{}]", self.name)
        } else {
            self.name.clone()
        };
        match self.port {
            Some(p) => write!(f, "{name}:{p}"),
            None => write!(f, "{name}"),
        }
    }
}

impl EntryHost {
    fn matches(&self, name: &str, port: u16) -> bool {
        let same_name = match (self.name.parse::<IpAddr>(), name.parse::<IpAddr>()) {
            (Ok(a), Ok(b)) => a == b,
            _ => self.name == name,
        };
        same_name && self.port.is_none_or(|p| p == port)
    }
}

impl ServePolicy {
    /// Refuses, before the server starts, a policy it cannot keep: `--allowed-host` without a
    /// token (a token-less server answers only loopback names), a topology directory that is not
    /// one.
    pub fn check_start(&self, has_token: bool) -> anyhow::Result<()> {
        if !self.allowed_hosts.is_empty() && !has_token {
            anyhow::bail!(
                "--allowed-host {} needs --token-file: a server without a token answers only localhost, 127.0.0.1 and [::1], so that no other name can reach it",
                self.allowed_hosts.join(", ")
            );
        }
        if let Some(d) = &self.topology_dir {
            topology_dir(d).map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    /// Checks what `checked` names against the policy, replacing its topology by the resolved
    /// file; the agents it runs on: `server`'s own, or the ones it names among them.
    pub(super) fn admit(
        &self,
        checked: &mut Checked,
        server: &[SharedAgent],
    ) -> Result<Vec<SharedAgent>, String> {
        let agents = choose_agents(&checked.agents, server)?;
        if let Some(entry) = &checked.app.entry {
            self.entry(entry)?;
        }
        if let Some(t) = &checked.app.topology {
            checked.app.topology = Some(self.topology(t)?);
        }
        Ok(agents)
    }

    fn entry(&self, url: &str) -> Result<(), String> {
        let (name, port) = entry_host_port(url)?;
        let allowed = if self.entry_hosts.is_empty() {
            name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        } else {
            self.entry_hosts.iter().any(|h| h.matches(&name, port))
        };
        if allowed {
            return Ok(());
        }
        let list = if self.entry_hosts.is_empty() {
            "loopback only: localhost, 127.0.0.1, [::1]".to_owned()
        } else {
            self.entry_hosts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(format!(
            "`entry` host `{name}:{port}` is not allowed on this server (allowed: {list}); its operator allows more with --allow-entry-host HOST[:PORT]"
        ))
    }

    fn topology(&self, asked: &Path) -> Result<PathBuf, String> {
        let Some(dir) = &self.topology_dir else {
            return Err("this server starts no emulated apps: `topology` needs the server started with --topology-dir DIR (then name a file in DIR); or give `services` and `entry` of a running app".into());
        };
        let dir = &topology_dir(dir)?;
        if asked
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(format!(
                "`topology` `{}` contains `..`: name a file inside the topology directory {}",
                asked.display(),
                dir.display()
            ));
        }
        if asked.is_absolute() && !asked.starts_with(dir) {
            return Err(format!(
                "`topology` `{}` is outside the topology directory {}: name a file inside it (a path relative to it is enough)",
                asked.display(),
                dir.display()
            ));
        }
        let path = dir.join(asked);
        let Ok(real) = std::fs::canonicalize(&path) else {
            return Err(format!(
                "no topology `{}` in {} (it has: {})",
                asked.display(),
                dir.display(),
                listing(dir)
            ));
        };
        if !real.starts_with(dir) {
            return Err(format!(
                "`topology` `{}` leads outside the topology directory {} (a symbolic link): name a file inside it",
                asked.display(),
                dir.display()
            ));
        }
        if !real.is_file() {
            return Err(format!(
                "`topology` `{}` is not a file in {} (it has: {})",
                asked.display(),
                dir.display(),
                listing(dir)
            ));
        }
        Ok(real)
    }
}

/// The topology directory, resolved (symbolic links followed), or why it is unusable.
fn topology_dir(dir: &Path) -> Result<PathBuf, String> {
    std::fs::canonicalize(dir)
        .ok()
        .filter(|c| c.is_dir())
        .ok_or_else(|| {
            format!(
                "the server's --topology-dir {} is not a directory: give the directory holding the topology files (e.g. testkit/topologies of a checkout)",
                dir.display()
            )
        })
}

/// The agents of an experiment: every agent of the server when the request names none, else
/// the named ones, each of which must be the server's own (by its node's name from `--cluster`,
/// or its URL).
fn choose_agents(named: &[String], server: &[SharedAgent]) -> Result<Vec<SharedAgent>, String> {
    if named.is_empty() {
        return Ok(server.to_vec());
    }
    let mut chosen: Vec<SharedAgent> = Vec::new();
    for url in named {
        let want = url.trim().trim_end_matches('/');
        let Some(a) = server.iter().find(|a| a.name() == want || a.url() == want) else {
            let names = server.iter().map(|a| a.name()).collect::<Vec<_>>();
            return Err(format!(
                "agent `{url}` is not one of this server's agents ({}): a request may only choose among the agents the server was started with (--agent or --cluster), so that the server's agent token goes nowhere else; leave `agents` out to use them all",
                if names.is_empty() {
                    "it has none".to_owned()
                } else {
                    names.join(", ")
                }
            ));
        };
        if !chosen.iter().any(|c| std::sync::Arc::ptr_eq(c, a)) {
            chosen.push(std::sync::Arc::clone(a));
        }
    }
    Ok(chosen)
}

/// The host (lower case, IPv6 without brackets) and port of an entry URL, read by the same
/// parser as the load generator's (`http::Uri`), so that both agree on where the load goes.
fn entry_host_port(url: &str) -> Result<(String, u16), String> {
    let bad = |why: &str| format!("`entry` `{url}` {why}: write it as http://HOST:PORT/PATH");
    let uri: Uri = url.parse().map_err(|_| bad("is not a URL"))?;
    let default_port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        _ => return Err(bad("is not http://")),
    };
    let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("has user info (`@`)"));
    }
    let name = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    Ok((name, authority.port_u16().unwrap_or(default_port)))
}

/// Up to 20 file names of a directory, for messages.
fn listing(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    match names.len() {
        0 => "no files".into(),
        n if n > 20 => format!("{}, ... ({n} files)", names[..20].join(", ")),
        _ => names.join(", "),
    }
}

/// Drops the oldest entries that `active` says are finished until at most `keep` remain
/// (fewer only if that many are active; active ones are never dropped). `list` is oldest first.
pub(super) fn evict_finished<T>(list: &mut Vec<T>, keep: usize, active: impl Fn(&T) -> bool) {
    let mut excess = list.len().saturating_sub(keep);
    list.retain(|e| {
        if excess > 0 && !active(e) {
            excess -= 1;
            false
        } else {
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_a_cluster_agent_by_its_node_or_its_url() {
        let n1: SharedAgent = std::sync::Arc::new(
            crate::agents::HttpAgent::new("http://10.0.0.1:7171", None).on_node("n1"),
        );
        let server = [n1];
        for name in ["n1", "http://10.0.0.1:7171/"] {
            let chosen = choose_agents(&[name.to_owned()], &server).unwrap();
            assert!(std::sync::Arc::ptr_eq(&chosen[0], &server[0]), "{name}");
        }
        let Err(e) = choose_agents(&["n2".to_owned()], &server) else {
            panic!("an agent the server does not have was chosen")
        };
        assert!(
            e.contains("agent `n2` is not one of this server's agents (n1)"),
            "{e}"
        );
    }

    #[test]
    fn entry_hosts_parse_and_match() {
        let h: EntryHost = "Shop.Internal:8080".parse().unwrap();
        assert_eq!(h.to_string(), "shop.internal:8080");
        assert!(h.matches("shop.internal", 8080) && !h.matches("shop.internal", 8081));
        let any: EntryHost = "10.0.0.7".parse().unwrap();
        assert!(any.matches("10.0.0.7", 1) && !any.matches("10.0.0.8", 1));
        let v6: EntryHost = "[::1]:80".parse().unwrap();
        assert_eq!(v6.to_string(), "[::1]:80");
        assert!(v6.matches("0:0::1", 80));
        let bare: EntryHost = "fe80::1".parse().unwrap();
        assert!(bare.matches("fe80::1", 9));
        for bad in ["", ":80", "a:b", "[::1", "a/b", "x@y", "h:70000"] {
            assert!(bad.parse::<EntryHost>().is_err(), "{bad}");
        }
    }

    #[test]
    fn entry_urls_are_read_like_the_load_generator_reads_them() {
        assert_eq!(
            entry_host_port("http://LocalHost:8080/x").unwrap(),
            ("localhost".into(), 8080)
        );
        assert_eq!(
            entry_host_port("http://[::1]/").unwrap(),
            ("::1".into(), 80)
        );
        for bad in [
            "http://127.0.0.1@evil.example/",
            "ftp://x/",
            "http:///x",
            "nope",
        ] {
            assert!(entry_host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn eviction_keeps_the_newest_and_every_active_one() {
        // (id, active)
        let mut list = vec![(1, true), (2, false), (3, false), (4, false), (5, false)];
        evict_finished(&mut list, 3, |e| e.1);
        assert_eq!(list, vec![(1, true), (4, false), (5, false)]);
        let mut all_active = vec![(1, true), (2, true)];
        evict_finished(&mut all_active, 1, |e| e.1);
        assert_eq!(all_active.len(), 2, "active entries are never dropped");
        let mut short = vec![(1, false)];
        evict_finished(&mut short, 3, |e| e.1);
        assert_eq!(short, vec![(1, false)]);
    }
}
