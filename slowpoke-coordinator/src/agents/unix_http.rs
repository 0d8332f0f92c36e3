//! Blocking HTTP/1.1 over the agent's Unix socket (`unix:/run/slowpoke/agent.sock`): one
//! request per connection (`Connection: close`), the answer read to the end.
//!
//! The HTTP client of the other agents (ureq 2) speaks TCP only; the agent's API needs no more
//! than this: a request line, three headers, a JSON body, and an answer with `Content-Length`
//! or chunked encoding. Keeping it blocking keeps [`super::AgentClient`] blocking, as the
//! experiment runner expects. No token is ever sent here: the socket's file mode and the peer
//! credentials the agent checks are the authentication.

use std::{
    io::{self, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Largest answer read (a stats snapshot of 64 services is a few hundred KiB).
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// The socket path of an agent URL `unix:/path` or `unix:///path`; `None` for other URLs.
pub fn socket_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("unix:")?;
    let path = match rest.strip_prefix("//") {
        Some(p) if p.starts_with('/') => p,
        Some(_) => return None,
        None => rest,
    };
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// One request: `(status, body)`. An `Err` means no HTTP answer (the agent is unreachable).
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    let deadline = Instant::now() + timeout;
    let mut stream = UnixStream::connect(socket)?;
    stream.set_write_timeout(Some(timeout))?;
    let length = body.map_or(String::new(), |b| {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        )
    });
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept: application/json\r\n{length}\r\n"
    );
    stream.write_all(head.as_bytes())?;
    if let Some(b) = body {
        stream.write_all(b)?;
    }
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))?;
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() as u64 > MAX_ANSWER_BYTES {
            return Err(invalid("the answer is larger than 64 MiB"));
        }
    }
    parse_answer(&raw)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Status and body of a complete HTTP/1.1 answer.
fn parse_answer(raw: &[u8]) -> io::Result<(u16, String)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("the answer ended inside its headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| invalid("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid("no HTTP status line"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| invalid("bad Content-Length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or_else(|| invalid("the answer is shorter than its Content-Length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    let body = String::from_utf8(body).map_err(|_| invalid("the body is not UTF-8"))?;
    Ok((status, body))
}

/// The body of a chunked answer (extensions and trailers ignored).
fn dechunk(mut rest: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("a chunk size line is cut"))?;
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| invalid("bad chunk size"))?;
        let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid("bad chunk size"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or_else(|| invalid("a chunk is cut"))?;
        out.extend_from_slice(chunk);
        rest = rest
            .get(size + 2..)
            .ok_or_else(|| invalid("a chunk is cut"))?;
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn urls() {
        let p = |u: &str| socket_path(u).map(|p| p.display().to_string());
        assert_eq!(
            p("unix:/run/slowpoke/agent.sock").as_deref(),
            Some("/run/slowpoke/agent.sock")
        );
        assert_eq!(
            p("unix:///run/slowpoke/agent.sock").as_deref(),
            Some("/run/slowpoke/agent.sock")
        );
        assert_eq!(p("unix:agent.sock").as_deref(), Some("agent.sock"));
        for bad in ["unix:", "unix://host/x", "http://127.0.0.1:7171", "/run/x"] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn answers_with_length_chunks_or_neither() {
        let plain =
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}";
        assert_eq!(parse_answer(plain).unwrap(), (200, "{}".to_owned()));
        let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(
            parse_answer(chunked).unwrap(),
            (404, "{\"a\":1}".to_owned())
        );
        let closed = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_answer(closed).unwrap(), (204, String::new()));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_err());
        assert!(parse_answer(b"garbage").is_err());
    }

    /// A real exchange with a one-shot server thread: the request it saw, the answer we got.
    #[test]
    fn a_request_over_a_socket() {
        let dir = std::env::temp_dir().join(format!("slowpoke-unix-http-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let sock = dir.join("s.sock");
        let listener = UnixListener::bind(&sock).expect("bind");
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"{\"x\":1}") {
                let n = s.read(&mut buf).expect("read");
                assert!(n > 0, "request cut: {}", String::from_utf8_lossy(&req));
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")
                .expect("write");
            String::from_utf8(req).expect("utf-8")
        });
        let (status, body) = request(
            &sock,
            "PUT",
            "/v1/services/web",
            Some(b"{\"x\":1}"),
            Duration::from_secs(5),
        )
        .expect("answer");
        assert_eq!((status, body.as_str()), (200, "{\"ok\":true}"));
        let seen = server.join().expect("server");
        assert!(
            seen.starts_with("PUT /v1/services/web HTTP/1.1\r\n"),
            "{seen}"
        );
        assert!(
            seen.contains("Content-Type: application/json\r\n"),
            "{seen}"
        );
        assert!(!seen.contains("Authorization"), "{seen}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
