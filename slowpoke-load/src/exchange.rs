//! One HTTP/1.1 exchange on a keep-alive connection, and what its result counts as.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::CONNECTION;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::spec::Target;

#[derive(Debug)]
pub(crate) enum Outcome {
    Ok,
    Non2xx,
    Timeout,
    ConnError,
}

/// What one exchange's result counts as.
pub(crate) fn outcome_of(result: &Result<hyper::StatusCode, Failure>) -> Outcome {
    match result {
        Ok(status) if status.is_success() => Outcome::Ok,
        Ok(_) => Outcome::Non2xx,
        Err(Failure::Timeout) => Outcome::Timeout,
        Err(Failure::Conn(_)) => Outcome::ConnError,
    }
}

#[derive(Debug)]
pub(crate) enum Failure {
    Timeout,
    Conn(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => write!(f, "no response within the timeout"),
            Failure::Conn(e) => write!(f, "{e}"),
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, Failure> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| Failure::Conn(format!("connect to {addr}: {e}")))?;
    stream
        .set_nodelay(true)
        .map_err(|e| Failure::Conn(format!("TCP_NODELAY on {addr}: {e}")))?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Conn(format!("HTTP handshake with {addr}: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request on the connection in `slot` (connecting first if there is none or it closed) and reads
/// the whole response. On a timeout or error the connection is dropped, so the next request reconnects.
///
/// A kept-alive connection the server closed before answering (hyper's "connection closed before message
/// completed", or a reset: it closed the connection as idle while the request was on its way) is retried once
/// on a new connection when the method is idempotent (RFC 9112 §9.3.1), as browsers and proxies do; the
/// retry's time counts in the request's latency, which the caller measures. Without it, a server that closes idle
/// connections after a short timeout (the emulator's `thread-per-request` workers, 50 ms) fails a request
/// now and then, and more often when its threads wait long for a CPU.
pub(crate) async fn one_request(
    slot: &mut Option<SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    target: &Target,
    timeout: Duration,
) -> Result<hyper::StatusCode, Failure> {
    let exchange = async {
        let reused = slot.as_ref().is_some_and(|s| !s.is_closed());
        match send_once(slot, addr, target).await {
            Err((_, true)) if reused && target.method.is_idempotent() => {
                *slot = None;
                send_once(slot, addr, target).await.map_err(|(f, _)| f)
            }
            r => r.map_err(|(f, _)| f),
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok((status, close))) => {
            if close {
                *slot = None;
            }
            Ok(status)
        }
        Ok(Err(f)) => {
            *slot = None;
            Err(f)
        }
        Err(_) => {
            *slot = None;
            Err(Failure::Timeout)
        }
    }
}

/// One exchange on the connection in `slot` (connecting first if needed): the status and whether the
/// server asked to close; on failure, whether the server closed the connection before answering.
async fn send_once(
    slot: &mut Option<SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    target: &Target,
) -> Result<(hyper::StatusCode, bool), (Failure, bool)> {
    if slot.as_ref().is_none_or(SendRequest::is_closed) {
        *slot = Some(connect(addr).await.map_err(|f| (f, false))?);
    }
    let sender = slot.as_mut().expect("connected above");
    sender.ready().await.map_err(|e| {
        (
            Failure::Conn(format!("connection to {addr}: {e}")),
            closed_unanswered(&e),
        )
    })?;
    let resp = sender.send_request(target.request()).await.map_err(|e| {
        (
            Failure::Conn(format!("request to {addr}: {e}")),
            closed_unanswered(&e),
        )
    })?;
    let status = resp.status();
    let close = resp
        .headers()
        .get(CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|e| {
            (
                Failure::Conn(format!("response body from {addr}: {e}")),
                false,
            )
        })?;
    }
    Ok((status, close))
}

/// The server closed the connection before answering: closed while the request was on its way, or reset
/// because it closed with the request unread.
fn closed_unanswered(e: &hyper::Error) -> bool {
    if e.is_closed() || e.is_incomplete_message() || e.is_canceled() {
        return true;
    }
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionReset)
}
