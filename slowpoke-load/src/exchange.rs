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
pub(crate) async fn one_request(
    slot: &mut Option<SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    target: &Target,
    timeout: Duration,
) -> Result<hyper::StatusCode, Failure> {
    let exchange = async {
        if slot.as_ref().is_none_or(SendRequest::is_closed) {
            *slot = Some(connect(addr).await?);
        }
        let sender = slot.as_mut().expect("connected above");
        sender
            .ready()
            .await
            .map_err(|e| Failure::Conn(format!("connection to {addr}: {e}")))?;
        let resp = sender
            .send_request(target.request())
            .await
            .map_err(|e| Failure::Conn(format!("request to {addr}: {e}")))?;
        let status = resp.status();
        let close = resp
            .headers()
            .get(CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| Failure::Conn(format!("response body from {addr}: {e}")))?;
        }
        Ok((status, close))
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
