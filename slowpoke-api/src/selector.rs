//! Service selectors as people type them: `port:8080[,8081]`, `pid:123[,124]`, `comm:nginx`,
//! `cgroup:/path`, and `NAME=SELECTOR` (`slowpoke what-if --service cart=port:8080`). The CLI and
//! the coordinator's `POST /v1/experiments` (`"services": {"cart": "port:8080"}`) both parse them
//! here, so a selector means the same thing everywhere; the result is the agent's
//! [`ServiceSpec`].

use crate::agent::ServiceSpec;

/// Parses a CLI selector: `port:8080[,8081]`, `pid:123[,124]`, `comm:nginx`, `cgroup:/path`.
pub fn parse_selector(s: &str) -> Result<ServiceSpec, String> {
    let (kind, value) = s.split_once(':').ok_or_else(|| {
        format!("selector `{s}` has no kind: write port:8080, pid:123, comm:nginx or cgroup:/path")
    })?;
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("selector `{s}` has an empty value"));
    }
    let mut spec = ServiceSpec::default();
    match kind.trim() {
        "port" | "ports" => {
            let ports: Vec<u16> = parse_list(s, value, "TCP port")?;
            if ports.contains(&0) {
                return Err(format!("selector `{s}`: port 0 is not a listening port"));
            }
            spec.ports = Some(ports);
        }
        "pid" | "pids" => {
            let pids: Vec<u32> = parse_list(s, value, "process id")?;
            if pids.contains(&0) {
                return Err(format!("selector `{s}`: pid 0 is not a process"));
            }
            spec.pids = Some(pids);
        }
        "comm" => spec.comm = Some(value.to_owned()),
        "cgroup" => spec.cgroup = Some(value.to_owned()),
        other => {
            return Err(format!(
                "selector `{s}`: unknown kind `{other}` (use port, pid, comm or cgroup)"
            ));
        }
    }
    Ok(spec)
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
}
