//! The bearer rule of both servers (`slowpoke_api::auth::BearerPolicy::check`) against an
//! independent statement of it, on arbitrary methods, tokens and `Authorization` / `Host` values.
//!
//! Input: lines `OPTIONS`, `METHOD`, `TOKEN`, `AUTHORIZATION`, `HOST` (a missing line is an
//! absent value). OPTIONS containing `E` is scope `Every` (else `Mutations`), containing `L`
//! asks for a loopback `Host` without a token. Readable seeds: `fuzz/seeds/auth_header/`.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use slowpoke_api::auth::{BearerPolicy, Scope, Verdict, loopback_host, normalize};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let options = lines.next().unwrap_or("");
    let method = lines.next().unwrap_or("GET");
    let token = lines.next().map(str::to_owned);
    let authorization = lines.next();
    let host = lines.next();

    let scope = if options.contains('E') {
        Scope::Every
    } else {
        Scope::Mutations
    };
    let loopback_only = options.contains('L');
    let mut policy = BearerPolicy::new(scope, token.clone());
    if loopback_only {
        policy = policy.loopback_host_only_without_token();
    }
    let want = normalize(token);
    assert_eq!(
        policy.token(),
        want.as_deref(),
        "the token is normalised once"
    );
    assert_eq!(normalize(want.clone()), want, "normalising is idempotent");

    let verdict = policy.check(method, authorization, host);
    let expected = match &want {
        None if loopback_only && !loopback_host(host) => Verdict::ForeignHost,
        None => Verdict::Allow,
        Some(t) => {
            let covered = scope == Scope::Every || !matches!(method, "GET" | "HEAD" | "OPTIONS");
            let sent = authorization
                .and_then(|a| a.strip_prefix("Bearer "))
                .map(str::trim);
            if !covered || sent == Some(t.as_str()) {
                Verdict::Allow
            } else {
                Verdict::NeedsToken
            }
        }
    };
    assert_eq!(
        verdict, expected,
        "{policy:?} on {method:?} with Authorization {authorization:?}, Host {host:?}"
    );
    if let Some(t) = &want {
        let right = format!("Bearer {t}");
        assert_eq!(
            policy.check(method, Some(&right), host),
            Verdict::Allow,
            "the right token is refused"
        );
    }
    if loopback_host(host) {
        let host = host.expect("an absent Host is not loopback");
        assert!(
            names_loopback(host),
            "Host {host:?} is taken for loopback, but a browser sends it for another name"
        );
    }
});

/// The name a browser puts in `Host` (RFC 9110 `uri-host [":" port]`): inside `[...]` for IPv6,
/// else everything before the first `:` (a reg-name or IPv4 address has none). Only that part
/// is chosen by whoever made the page's URL: it must be loopback for the host to count as such.
fn names_loopback(host: &str) -> bool {
    if let Some(rest) = host.strip_prefix('[') {
        // "[::1" (no closing bracket) is no host a browser sends.
        return rest.split_once(']').is_some_and(|(inside, _)| {
            inside.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback())
        });
    }
    let name = host.split_once(':').map_or(host, |(name, _)| name);
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}
