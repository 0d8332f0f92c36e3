//! A service's downstream call, and when to retry it: a `thread-per-request` callee closes a
//! kept-alive connection idle for [`crate::workers::IDLE_CLOSE`], and a call sent on a pooled
//! connection at that moment is closed unanswered (docs/emu.md, "Serving models").

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

/// The body of a downstream call (every service sends its calls this way).
pub(crate) type Body = Full<Bytes>;

/// POSTs `body` to `uri` through `client` (a service's or a worker's pool) and reads the whole
/// answer: true for a 2xx. Up to two retries when a pooled connection was closed by the callee
/// before it answered (see [`closed_before_answer`]): the next pooled one may have been closed
/// as well. Any other failure is logged with its causes, as `caller`'s.
pub(crate) async fn call(
    client: &Client<HttpConnector, Body>,
    uri: &Uri,
    body: &Bytes,
    caller: &str,
) -> bool {
    for attempt in 0..3 {
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .body(Full::new(body.clone()));
        let Ok(req) = req else { return false };
        match client.request(req).await {
            Ok(resp) => {
                let good = resp.status().is_success();
                return resp.into_body().collect().await.is_ok() && good;
            }
            Err(e) if attempt < 2 && closed_before_answer(&e) => {}
            Err(e) => {
                tracing::warn!("service {caller}: call {uri}: {}", cause_chain(&e));
                return false;
            }
        }
    }
    false
}

/// The callee closed a kept-alive connection before it answered (hyper's "connection closed
/// before message completed", or a reset when it closed with the request unread): a
/// `thread-per-request` callee closes a connection idle for [`crate::workers::IDLE_CLOSE`], and
/// a worker kept off its CPU for longer (by a real-time thread of a tail schedule) finds that
/// timer expired before it reads the request already waiting, so it never served it. Retrying on a new connection is what HTTP clients do for a
/// reused connection closed this way (RFC 9112 §9.3.1); the retry's time counts in the
/// caller's latency.
fn closed_before_answer(e: &hyper_util::client::legacy::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled())
        {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionReset;
        }
        src = s.source();
    }
    false
}

/// An error with its causes: hyper's own text (`client error (SendRequest)`) names only the
/// stage, its sources say what went wrong (closed, reset, refused).
fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut why = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        why = format!("{why}: {s}");
        src = s.source();
    }
    why
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;

    /// A raw callee on loopback that answers the first request of each connection and closes the
    /// connection when its second request arrives, unanswered (what a worker whose idle timer
    /// fired before it read the request does); returns its address and the requests it saw.
    async fn idle_closing_callee() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicU64>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let (mut buf, mut chunk, mut on_this) = (Vec::new(), [0u8; 1024], 0);
                    while let Ok(n) = stream.read(&mut chunk).await {
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        // The emulator's calls carry a body: the head, then content-length bytes.
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse().unwrap());
                            if buf.len() < end + 4 + len {
                                break;
                            }
                            buf.drain(..end + 4 + len);
                            s.fetch_add(1, Relaxed);
                            on_this += 1;
                            if on_this > 1 {
                                return; // closed unanswered
                            }
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await;
                        }
                    }
                });
            }
        });
        (addr, seen)
    }

    fn test_client() -> Client<HttpConnector, Body> {
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new())
    }

    #[tokio::test]
    async fn a_pooled_connection_closed_unanswered_is_recognised_for_a_retry() {
        let (addr, seen) = idle_closing_callee().await;
        let client = test_client();
        let uri: Uri = format!("http://{addr}/work").parse().unwrap();
        let send = || {
            let req = Request::builder()
                .method(Method::POST)
                .uri(uri.clone())
                .body(Full::new(Bytes::from_static(b"x")))
                .unwrap();
            client.request(req)
        };
        // First request: a new connection, answered; it goes back to the pool.
        let first = send().await.unwrap();
        first.into_body().collect().await.unwrap();
        // Second, on the pooled connection: closed unanswered, and recognised as such.
        let e = send()
            .await
            .expect_err("the callee closes at a connection's second request");
        assert!(closed_before_answer(&e), "{}", cause_chain(&e));
        assert!(
            cause_chain(&e).contains("closed before message completed"),
            "{}",
            cause_chain(&e)
        );
        assert_eq!(seen.load(Relaxed), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_a_close_before_the_answer() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}/work"))
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap();
        let e = test_client()
            .request(req)
            .await
            .expect_err("nothing listens");
        assert!(!closed_before_answer(&e), "{}", cause_chain(&e));
    }
}
