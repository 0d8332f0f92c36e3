//! Service selectors as people type them: `port:8080[,8081]`, `pid:123[,124]`, `comm:nginx`,
//! `cgroup:/path`, `pod:NAMESPACE/NAME`, `label:NAMESPACE/key=value[,key=value]` (the last two
//! optionally followed by `+port:8080[,8081]`: the ports inside the pods), and `NAME=SELECTOR`
//! (`slowpoke what-if --service cart=port:8080`). The CLI and the coordinator's
//! `POST /v1/experiments` (`"services": {"cart": "port:8080"}`) both parse them here, so a
//! selector means the same thing everywhere; the result is the agent's [`ServiceSpec`] (for pod
//! and label selectors, its `kubernetes` part, which the coordinator resolves into `pods`).

use std::collections::BTreeMap;

use crate::agent::{KubeSelector, ServiceSpec};

const KINDS: &str = "port:8080, pid:123, comm:nginx, cgroup:/path, pod:NAMESPACE/NAME or \
                     label:NAMESPACE/key=value";

/// Parses a CLI selector: `port:8080[,8081]`, `pid:123[,124]`, `comm:nginx`, `cgroup:/path`,
/// `pod:NS/NAME[+port:P]`, `label:NS/k=v[,k=v][+port:P]`.
pub fn parse_selector(s: &str) -> Result<ServiceSpec, String> {
    let (kind, value) = s
        .split_once(':')
        .ok_or_else(|| format!("selector `{s}` has no kind: write {KINDS}"))?;
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("selector `{s}` has an empty value"));
    }
    let mut spec = ServiceSpec::default();
    match kind.trim() {
        "port" | "ports" => spec.ports = Some(parse_ports(s, value)?),
        "pid" | "pids" => {
            let pids: Vec<u32> = parse_list(s, value, "process id")?;
            if pids.contains(&0) {
                return Err(format!("selector `{s}`: pid 0 is not a process"));
            }
            spec.pids = Some(pids);
        }
        "comm" => spec.comm = Some(value.to_owned()),
        "cgroup" => spec.cgroup = Some(value.to_owned()),
        k @ ("pod" | "label") => {
            // `+port:` is the only suffix: `+` appears in no namespace, name, label key or value.
            let (pods, ports) = match value.split_once('+') {
                Some((pods, port)) => {
                    let p = port.trim().strip_prefix("port:").ok_or_else(|| {
                        format!(
                            "selector `{s}`: after `+` write port:8080 (the port inside the pods)"
                        )
                    })?;
                    (pods.trim(), Some(parse_ports(s, p.trim())?))
                }
                None => (value, None),
            };
            spec.kubernetes = Some(parse_kube(s, k == "pod", pods)?);
            spec.ports = ports;
        }
        other => {
            return Err(format!(
                "selector `{s}`: unknown kind `{other}` (write {KINDS})"
            ));
        }
    }
    Ok(spec)
}

fn parse_ports(s: &str, value: &str) -> Result<Vec<u16>, String> {
    let ports: Vec<u16> = parse_list(s, value, "TCP port")?;
    if ports.contains(&0) {
        return Err(format!("selector `{s}`: port 0 is not a listening port"));
    }
    Ok(ports)
}

/// `NS/NAME` (`by_name`) or `NS/k=v[,k=v]`, checked with Kubernetes' own naming rules so that
/// a typo fails here rather than as an empty list from the API server.
fn parse_kube(s: &str, by_name: bool, value: &str) -> Result<KubeSelector, String> {
    let example = if by_name {
        "pod:shop/cart-0"
    } else {
        "label:shop/app=cart"
    };
    let (ns, rest) = value
        .split_once('/')
        .ok_or_else(|| format!("selector `{s}`: give the namespace first, e.g. {example}"))?;
    let (ns, rest) = (ns.trim(), rest.trim());
    if !dns_label(ns) {
        return Err(format!(
            "selector `{s}`: `{ns}` is not a namespace name (lowercase letters, digits and `-`, \
             at most 63)"
        ));
    }
    let mut sel = KubeSelector {
        namespace: ns.to_owned(),
        ..KubeSelector::default()
    };
    if by_name {
        if !dns_subdomain(rest) {
            return Err(format!(
                "selector `{s}`: `{rest}` is not a pod name (lowercase letters, digits, `-` and \
                 `.`, at most 253)"
            ));
        }
        sel.pod = Some(rest.to_owned());
        return Ok(sel);
    }
    let mut labels = BTreeMap::new();
    for pair in rest.split(',') {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("selector `{s}`: `{pair}` is not key=value (e.g. {example})"))?;
        let (k, v) = (k.trim(), v.trim());
        if !label_key(k) || !label_value(v) {
            return Err(format!(
                "selector `{s}`: `{k}={v}` is not a valid Kubernetes label (see \
                 https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/)"
            ));
        }
        if labels.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(format!("selector `{s}`: label `{k}` given twice"));
        }
    }
    sel.labels = labels;
    Ok(sel)
}

/// RFC 1123 label: namespaces.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: pod names, label key prefixes.
fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}

/// A label's name part or value: alphanumerics with `-`, `_`, `.` inside, at most 63.
fn label_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
}

fn label_key(k: &str) -> bool {
    match k.split_once('/') {
        Some((prefix, name)) => dns_subdomain(prefix) && label_name(name),
        None => label_name(k),
    }
}

fn label_value(v: &str) -> bool {
    v.is_empty() || label_name(v)
}

/// Parses a comma-separated list of `what`s from selector `s`'s value `v`.
fn parse_list<T: std::str::FromStr>(s: &str, v: &str, what: &str) -> Result<Vec<T>, String> {
    v.split(',')
        .map(|x| {
            x.trim()
                .parse::<T>()
                .map_err(|_| format!("selector `{s}`: `{x}` is not a valid {what}"))
        })
        .collect()
}

/// Parses `NAME=SELECTOR`.
pub fn parse_service_arg(s: &str) -> Result<(String, ServiceSpec), String> {
    let (name, sel) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: write NAME=SELECTOR, e.g. cart=port:8080"))?;
    let name = name.trim();
    if name.is_empty() || name.contains('/') {
        return Err(format!(
            "`{s}`: the service name must be non-empty and have no `/`"
        ));
    }
    Ok((name.to_owned(), parse_selector(sel)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        assert_eq!(parse_selector("port:8080").unwrap().ports, Some(vec![8080]));
        assert_eq!(parse_selector("pid:1,2").unwrap().pids, Some(vec![1, 2]));
        assert_eq!(
            parse_selector("comm:nginx").unwrap().comm.as_deref(),
            Some("nginx")
        );
        assert_eq!(
            parse_selector("cgroup:/sys/fs/cgroup/x")
                .unwrap()
                .cgroup
                .as_deref(),
            Some("/sys/fs/cgroup/x")
        );
        assert!(
            parse_selector("port:http")
                .unwrap_err()
                .contains("not a valid TCP port")
        );
        assert!(parse_selector("port:0").is_err());
        assert!(parse_selector("nginx").unwrap_err().contains("no kind"));
        assert!(
            parse_selector("foo:bar")
                .unwrap_err()
                .contains("unknown kind")
        );
        let (n, s) = parse_service_arg("cart=port:8080").unwrap();
        assert_eq!((n.as_str(), s.ports), ("cart", Some(vec![8080])));
        assert!(parse_service_arg("cart").is_err());
    }

    #[test]
    fn pod_and_label_selectors() {
        let p = parse_selector("pod:shop/cart-0").unwrap();
        let k = p.kubernetes.unwrap();
        assert_eq!(
            (k.namespace.as_str(), k.pod.as_deref()),
            ("shop", Some("cart-0"))
        );
        assert_eq!(k.display(), "pod:shop/cart-0");
        assert_eq!(p.ports, None);
        let (name, l) =
            parse_service_arg("cart=label:shop/app=cart,app.kubernetes.io/part-of=web+port:8080")
                .unwrap();
        assert_eq!(name, "cart");
        let k = l.kubernetes.unwrap();
        assert_eq!(k.labels.len(), 2);
        assert_eq!(k.labels["app.kubernetes.io/part-of"], "web");
        assert_eq!(k.label_selector(), "app=cart,app.kubernetes.io/part-of=web");
        assert_eq!(
            l.ports,
            Some(vec![8080]),
            "+port: is the port inside the pods"
        );
        for (bad, why) in [
            ("pod:cart-0", "namespace first"),
            ("pod:Shop/cart", "not a namespace"),
            ("pod:shop/Cart_0", "not a pod name"),
            ("label:shop/app", "not key=value"),
            ("label:shop/app=-x", "not a valid Kubernetes label"),
            ("label:shop/app=a,app=b", "given twice"),
            ("label:shop/app=a+8080", "after `+`"),
            ("label:shop/app=a+port:0", "port 0"),
        ] {
            let e = parse_selector(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
