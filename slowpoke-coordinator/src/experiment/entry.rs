//! Which service owns the entry: its visits are the end-to-end requests every model parameter is
//! relative to (r_s = visits_s / visits_entry), so a wrong guess makes every number wrong.

use super::error::RunError;
use crate::agents::Registration;

/// The entry service: the one named (by the spec, or by the app that knows it), else the one
/// service listening on the entry URL's port. `registered` lists the app's services for the
/// error when the named one is not among them.
pub(super) fn find_entry(
    named: Option<String>,
    reg: &Registration,
    registered: &[String],
    entry_url: &str,
) -> Result<String, RunError> {
    if let Some(e) = named {
        if !reg.owners.contains_key(&e) {
            return Err(RunError::BadSpec(format!(
                "the entry service `{e}` is not one of the app's services ({})",
                registered.join(", ")
            )));
        }
        return Ok(e);
    }
    let port = url_port(entry_url).ok_or_else(|| {
        RunError::BadSpec(format!(
            "the entry URL `{entry_url}` is not an http://host:port/ URL"
        ))
    })?;
    if let Some(s) = reg.owner_of_port(port) {
        return Ok(s.to_owned());
    }
    let candidates: Vec<&str> = reg
        .listen_ports
        .iter()
        .filter(|(_, p)| p.contains(&port))
        .map(|(n, _)| n.as_str())
        .collect();
    Err(RunError::UnknownEntry {
        url: entry_url.to_owned(),
        port,
        candidates: if candidates.is_empty() {
            "none".into()
        } else {
            candidates.join(", ")
        },
    })
}

/// The port of an `http://host:port/...` URL (80/443 by default).
pub fn url_port(url: &str) -> Option<u16> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit('@').next()?;
    let port_str = if let Some(end) = hostport.strip_prefix('[') {
        end.split_once(']')?.1.strip_prefix(':')
    } else {
        hostport.rsplit_once(':').map(|(_, p)| p)
    };
    match port_str {
        Some(p) => p.parse().ok(),
        None => match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_of_urls() {
        assert_eq!(url_port("http://127.0.0.1:8080/x"), Some(8080));
        assert_eq!(url_port("http://localhost/"), Some(80));
        assert_eq!(url_port("https://h"), Some(443));
        assert_eq!(url_port("http://[::1]:9000/a"), Some(9000));
        assert_eq!(url_port("localhost:80"), None);
    }

    fn registration(listening: &[(&str, &[u16])]) -> Registration {
        let mut reg = Registration::default();
        for (name, ports) in listening {
            reg.owners.insert((*name).to_owned(), vec![0]);
            reg.listen_ports.insert((*name).to_owned(), ports.to_vec());
        }
        reg
    }

    #[test]
    fn the_entry_is_named_or_the_one_listener_on_the_port() {
        let reg = registration(&[("front", &[8080]), ("cart", &[8081])]);
        let names = ["cart".to_owned(), "front".to_owned()];
        let url = "http://127.0.0.1:8080/";
        assert_eq!(find_entry(None, &reg, &names, url).unwrap(), "front");
        assert_eq!(
            find_entry(Some("cart".into()), &reg, &names, url).unwrap(),
            "cart"
        );
        let e = find_entry(Some("db".into()), &reg, &names, url).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the entry service `db` is not one of the app's services (cart, front)"
        );
    }

    #[test]
    fn two_listeners_on_the_entry_port_ask_for_the_entry_service() {
        let reg = registration(&[("a", &[8080]), ("b", &[8080])]);
        let e = find_entry(None, &reg, &[], "http://h:8080/").unwrap_err();
        assert!(
            matches!(e, RunError::UnknownEntry { port: 8080, ref candidates, .. } if candidates == "a, b"),
            "{e}"
        );
        assert!(e.to_string().contains("`entry_service`"), "{e}");
    }
}
