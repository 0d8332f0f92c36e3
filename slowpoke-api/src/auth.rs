//! The bearer-token rules of both HTTP servers: the node agent and `slowpoke serve`.
//!
//! The coordinator's rule is a [`BearerPolicy`]:
//!
//! 1. **Tokens are normalised once**: surrounding whitespace (a token file's newline) is trimmed
//!    and an empty token is no token ([`normalize`], [`read_token_file`]).
//! 2. **Off loopback a token is mandatory** ([`BearerPolicy::for_listen`]): a server reachable
//!    from other machines refuses to start without one, instead of serving everybody.
//! 3. **With a token, the [`Scope`] says which calls carry it**: the coordinator asks it of every
//!    call ([`Scope::Every`]: its results are the user's data). The comparison is constant-time
//!    (`subtle`, [`bearer_matches`]), so the answer's timing does not leak how much of a guess
//!    was right.
//! 4. **Without a token, a server may still insist on a loopback `Host`**
//!    ([`BearerPolicy::loopback_host_only_without_token`]): then a web page of another site cannot
//!    reach it through DNS rebinding (a name it controls pointed at 127.0.0.1).
//!
//! The pieces both servers share besides the policy: [`TokenFile`] / [`TokenSource`] (token
//! files that must be private and are re-read when rotated, `auth/token_file.rs`) and
//! [`HostAllowList`] (the `Host` names a TCP listener answers, `auth/host.rs`). The agent's TCP
//! listener uses them with [`bearer_matches`]: there every call needs the token, loopback
//! included, and `Host` is always checked (its Unix socket needs neither).
//!
//! No HTTP crate is involved: servers pass the method and the two header values as strings and map
//! the [`Verdict`] to their own answers (401 with their message, 403).
//!
//! The browser half of the rule — which names a server answers to ([`HostAllowList`], the
//! `Host` header) and which pages may change something ([`origin_allowed`], the `Origin` header)
//! — is in [`host`]: it holds whether or not a token is set.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq as _;

pub mod host;
mod token_file;

pub use host::{HostAllowList, origin_allowed};
pub use token_file::{TokenFile, TokenSource};

/// The environment variable an agent's token is read from when no token file is given (by the
/// agent itself and by the coordinator's agent client).
pub const AGENT_TOKEN_ENV: &str = "SLOWPOKE_AGENT_TOKEN";

/// Which calls must carry the token when the server has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Calls that change something (any method but GET, HEAD, OPTIONS), for a server whose reads
    /// are public monitoring data. Neither server uses it today: the agent's TCP listener
    /// (`slowpoke-agent/src/http/access.rs`) needs the token on every call but a status-only health.
    Mutations,
    /// Every call. The coordinator's scope: listing experiments shows the user's results.
    Every,
}

impl Scope {
    /// Whether a call with this method must carry the token.
    pub fn covers(self, method: &str) -> bool {
        match self {
            Scope::Every => true,
            Scope::Mutations => !matches!(method, "GET" | "HEAD" | "OPTIONS"),
        }
    }

    fn calls(self) -> &'static str {
        match self {
            Scope::Mutations => "mutating calls need",
            Scope::Every => "every call needs",
        }
    }
}

/// What a server does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Allow,
    /// Missing or wrong `Authorization: Bearer <token>` (answer 401).
    NeedsToken,
    /// No token is set and the `Host` header does not name loopback (answer 403).
    ForeignHost,
}

/// Who may call a server: its token (if any) and the rules around it. Build it with
/// [`BearerPolicy::for_listen`] (servers) or [`BearerPolicy::new`] (a listen address already
/// checked, tests).
#[derive(Clone, PartialEq, Eq)]
pub struct BearerPolicy {
    token: Option<String>,
    scope: Scope,
    loopback_host_without_token: bool,
}

/// Never shows the token: policies end up in logs and panic messages.
impl fmt::Debug for BearerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerPolicy")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("scope", &self.scope)
            .field(
                "loopback_host_without_token",
                &self.loopback_host_without_token,
            )
            .finish()
    }
}

impl BearerPolicy {
    /// A policy enforcing `token` (normalised: trimmed, empty = none) on the calls of `scope`.
    /// Without a token every call is allowed: only right for loopback listeners, which
    /// [`BearerPolicy::for_listen`] checks.
    pub fn new(scope: Scope, token: Option<String>) -> BearerPolicy {
        BearerPolicy {
            token: normalize(token),
            scope,
            loopback_host_without_token: false,
        }
    }

    /// The rule for a listen address: off loopback a token is mandatory (the server must refuse
    /// to start without one); on loopback a token is enforced when given.
    pub fn for_listen(
        listen: SocketAddr,
        token: Option<String>,
        scope: Scope,
    ) -> Result<BearerPolicy, NoTokenError> {
        let policy = BearerPolicy::new(scope, token);
        if policy.token.is_none() && token_required(listen) {
            return Err(NoTokenError { listen, scope });
        }
        Ok(policy)
    }

    /// Without a token, answer only requests whose `Host` names loopback ([`loopback_host`]),
    /// so that other web sites cannot drive the server through DNS rebinding.
    #[must_use]
    pub fn loopback_host_only_without_token(mut self) -> BearerPolicy {
        self.loopback_host_without_token = true;
        self
    }

    /// The token enforced, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The verdict on a request with this method and these `Authorization` and `Host` header
    /// values (None when absent or not text).
    pub fn check(&self, method: &str, authorization: Option<&str>, host: Option<&str>) -> Verdict {
        let Some(want) = &self.token else {
            if self.loopback_host_without_token && !loopback_host(host) {
                return Verdict::ForeignHost;
            }
            return Verdict::Allow;
        };
        if !self.scope.covers(method) || bearer_matches(authorization, want) {
            Verdict::Allow
        } else {
            Verdict::NeedsToken
        }
    }
}

/// True when a token is mandatory for this listen address: it is not loopback, so other
/// machines can reach it.
pub fn token_required(listen: SocketAddr) -> bool {
    !listen.ip().is_loopback()
}

/// Trims a token; an empty one is no token.
pub fn normalize(token: Option<String>) -> Option<String> {
    token.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

/// Whether the `Authorization` header value is `Bearer <want>`, compared in constant time.
pub fn bearer_matches(authorization: Option<&str>, want: &str) -> bool {
    authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|got| bool::from(got.trim().as_bytes().ct_eq(want.as_bytes())))
}

/// Whether a `Host` header value names this machine's loopback: `localhost`, `127.0.0.1`,
/// `[::1]` (any port; any 127.0.0.0/8 address).
pub fn loopback_host(host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    // `[v6]` or `[v6]:port`, else `name` or `name:port` with a name or IPv4 address: "[::1",
    // "[::1]x", "[127.0.0.1]" or "::1:80" name no host (found by the fuzz target `auth_header`).
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.starts_with(':') => {
                v6.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback())
            }
            _ => false,
        };
    }
    let name = host.rsplit_once(':').map_or(host, |(n, _)| n);
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// Reads a bearer token from a file (trimmed). An unreadable or empty file is an error: an empty
/// file silently meaning "no token" would leave a server open or a client unauthenticated. So is
/// a file that group or others may read or write ([`TokenFileError::Exposed`], symlinks
/// followed): such a token is no secret. Servers that keep using the file use [`TokenFile`],
/// which also picks up a rotated token.
pub fn read_token_file(path: &Path) -> Result<String, TokenFileError> {
    token_file::read_private_token(path)
}

/// The token from `file` when given, else from the environment variable `var` (normalised;
/// unset or blank = none).
pub fn token_from_file_or_env(
    file: Option<&Path>,
    var: &str,
) -> Result<Option<String>, TokenFileError> {
    match file {
        Some(f) => read_token_file(f).map(Some),
        None => Ok(normalize(std::env::var(var).ok())),
    }
}

/// A server was asked to listen off loopback without a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoTokenError {
    pub listen: SocketAddr,
    pub scope: Scope,
}

impl fmt::Display for NoTokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refusing to listen on {} without a token: off loopback {} `Authorization: Bearer <token>`; \
             give --token-file FILE, or listen on 127.0.0.1",
            self.listen,
            self.scope.calls()
        )
    }
}

impl std::error::Error for NoTokenError {}

/// A token file that cannot serve as one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenFileError {
    Unreadable {
        path: PathBuf,
        reason: String,
    },
    Empty {
        path: PathBuf,
    },
    /// The token holds a character an HTTP header cannot carry (`bad`; only visible ASCII can).
    Unsendable {
        path: PathBuf,
        bad: char,
    },
    /// Group or others may read or write the file (`real`: the file behind any symlinks).
    Exposed {
        path: PathBuf,
        real: PathBuf,
        mode: u32,
    },
}

impl fmt::Display for TokenFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenFileError::Unreadable { path, reason } => write!(
                f,
                "cannot read the token file {}: {reason} (check the path and that this user may read it)",
                path.display()
            ),
            TokenFileError::Empty { path } => write!(
                f,
                "the token file {} is empty: put a long random string in it (e.g. `(umask 077; openssl rand -hex 32 > {})`)",
                path.display(),
                path.display()
            ),
            TokenFileError::Unsendable { path, bad } => write!(
                f,
                "the token in {} holds {bad:?}, which an `Authorization` header cannot carry (only visible ASCII, no spaces): write a new token (e.g. `(umask 077; openssl rand -hex 32 > {})`)",
                path.display(),
                path.display()
            ),
            TokenFileError::Exposed { path, real, mode } => write!(
                f,
                "the token file {} ({}) has mode {mode:04o}: group or others may read or write it, so \
                 it is no secret; make it private with `chmod 600 {}` (a Kubernetes Secret volume: \
                 `defaultMode: 0400`)",
                path.display(),
                if real == path {
                    "no symlink".to_owned()
                } else {
                    format!("really {}", real.display())
                },
                real.display()
            ),
        }
    }
}

impl std::error::Error for TokenFileError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn off_loopback_a_token_is_mandatory() {
        assert!(!token_required(addr("127.0.0.1:1")) && !token_required(addr("[::1]:1")));
        assert!(token_required(addr("0.0.0.0:1")) && token_required(addr("10.1.2.3:1")));
        for token in [None, Some(String::new()), Some(" \n".into())] {
            let e = BearerPolicy::for_listen(addr("0.0.0.0:7272"), token, Scope::Every)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("refusing to listen on 0.0.0.0:7272 without a token")
                    && e.contains("every call needs"),
                "{e}"
            );
        }
        let p = BearerPolicy::for_listen(addr("0.0.0.0:1"), Some(" s3cret\n".into()), Scope::Every)
            .expect("a token is given");
        assert_eq!(p.token(), Some("s3cret"));
        assert!(
            !format!("{p:?}").contains("s3cret"),
            "Debug shows the token: {p:?}"
        );
        let open = BearerPolicy::for_listen(addr("127.0.0.1:1"), None, Scope::Mutations)
            .expect("loopback needs no token");
        assert_eq!(open.token(), None);
    }

    #[test]
    fn mutations_scope_leaves_reads_open() {
        let p = BearerPolicy::new(Scope::Mutations, Some("s3cret".into()));
        assert_eq!(p.check("GET", None, None), Verdict::Allow);
        assert_eq!(p.check("HEAD", None, None), Verdict::Allow);
        for m in ["PUT", "DELETE", "POST"] {
            assert_eq!(p.check(m, None, None), Verdict::NeedsToken, "{m}");
            assert_eq!(
                p.check(m, Some("Bearer wrong"), None),
                Verdict::NeedsToken,
                "{m}"
            );
            assert_eq!(p.check(m, Some("s3cret"), None), Verdict::NeedsToken, "{m}");
            assert_eq!(p.check(m, Some("Bearer s3cret"), None), Verdict::Allow);
        }
        // Without a token (loopback) everything is open.
        let open = BearerPolicy::new(Scope::Mutations, None);
        assert_eq!(
            open.check("PUT", None, Some("evil.example")),
            Verdict::Allow
        );
    }

    #[test]
    fn every_scope_guards_reads_and_checks_the_host_without_a_token() {
        let p = BearerPolicy::new(Scope::Every, Some("s3cret".into()))
            .loopback_host_only_without_token();
        assert_eq!(p.check("GET", None, Some("localhost")), Verdict::NeedsToken);
        assert_eq!(
            p.check("GET", Some("Bearer s3cre"), None),
            Verdict::NeedsToken
        );
        assert_eq!(
            p.check("GET", Some("Bearer s3cret "), Some("evil.example")),
            Verdict::Allow,
            "with a token any Host may call"
        );
        let open = BearerPolicy::new(Scope::Every, None).loopback_host_only_without_token();
        for host in [
            "localhost:7272",
            "127.0.0.1",
            "127.0.0.2:80",
            "[::1]:7272",
            "LOCALHOST",
        ] {
            assert_eq!(
                open.check("POST", None, Some(host)),
                Verdict::Allow,
                "{host}"
            );
        }
        for host in [
            Some("evil.example"),
            Some("10.0.0.1:7272"),
            Some("[::2]"),
            Some("[::1"),
            Some("[::1]evil.example"),
            Some("[127.0.0.1]"),
            Some("::1:7272"),
            None,
        ] {
            assert_eq!(
                open.check("GET", None, host),
                Verdict::ForeignHost,
                "{host:?}"
            );
        }
    }

    #[test]
    fn token_files() {
        let dir = std::env::temp_dir().join(format!("slowpoke-api-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let f = dir.join("token");
        std::fs::write(&f, "  s3cret\n").expect("write");
        // A token file must be private (token_file.rs tests the refusals).
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        assert_eq!(read_token_file(&f).as_deref(), Ok("s3cret"));
        std::fs::write(&f, "\n").expect("write");
        let e = read_token_file(&f).unwrap_err().to_string();
        assert!(e.contains("is empty") && e.contains("openssl rand"), "{e}");
        let e = read_token_file(&dir.join("nope")).unwrap_err().to_string();
        assert!(e.contains("cannot read the token file"), "{e}");
        let var = "SLOWPOKE_API_TEST_TOKEN_UNSET";
        assert_eq!(token_from_file_or_env(None, var), Ok(None));
        std::fs::write(&f, "t\n").expect("write");
        assert_eq!(token_from_file_or_env(Some(&f), var), Ok(Some("t".into())));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
