//! Test servers on 127.0.0.1 with ephemeral ports. Each owns its runtime; dropping it stops the server.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Method, `x-test` header and body of a request.
pub type LastRequest = (String, Option<String>, Bytes);

/// A hyper server counting requests per path: `/fail` answers 500, `/hang` never answers, `/gated` answers
/// once the gate is open ([`TestServer::close_gate`]), anything else 200.
pub struct TestServer {
    pub addr: SocketAddr,
    gate: tokio::sync::watch::Sender<bool>,
    counts: Arc<Mutex<HashMap<String, u64>>>,
    /// Method, `x-test` header and body of the last request.
    last: Arc<Mutex<Option<LastRequest>>>,
    _rt: tokio::runtime::Runtime,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("test server runtime")
}

impl TestServer {
    pub fn start() -> TestServer {
        let rt = runtime();
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind test server");
        let addr = listener.local_addr().unwrap();
        let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let last: Arc<Mutex<Option<LastRequest>>> = Arc::default();
        let c = Arc::clone(&counts);
        let l = Arc::clone(&last);
        let (gate, gate_rx) = tokio::sync::watch::channel(true);
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let c = Arc::clone(&c);
                let l = Arc::clone(&l);
                let gate_rx = gate_rx.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let c = Arc::clone(&c);
                        let l = Arc::clone(&l);
                        let mut gate_rx = gate_rx.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let method = req.method().to_string();
                            let x_test = req
                                .headers()
                                .get("x-test")
                                .map(|v| v.to_str().unwrap_or_default().to_string());
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(http_body_util::Collected::to_bytes)
                                .unwrap_or_default();
                            *l.lock().unwrap() = Some((method, x_test, body));
                            *c.lock().unwrap().entry(path.clone()).or_default() += 1;
                            match path.as_str() {
                                "/hang" => std::future::pending::<()>().await,
                                "/gated" => {
                                    let _ = gate_rx.wait_for(|open| *open).await;
                                }
                                "/fail" => {
                                    let mut r =
                                        Response::new(Full::new(Bytes::from_static(b"fail")));
                                    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                                    return Ok::<_, Infallible>(r);
                                }
                                _ => {}
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        TestServer {
            addr,
            gate,
            counts,
            last,
            _rt: rt,
        }
    }

    /// From now on, `/gated` requests wait until [`TestServer::open_gate`].
    pub fn close_gate(&self) {
        self.gate.send_replace(false);
    }

    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn last_request(&self) -> Option<LastRequest> {
        self.last.lock().unwrap().clone()
    }

    pub fn count(&self, path: &str) -> u64 {
        self.counts.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// A raw server that answers the very first request (the probe) and then closes every connection as soon as
/// it has read a request head ([`ClosingServer::start`]), or that answers the first request of every
/// connection and closes it unanswered at its second, as a server closing a kept-alive connection as idle
/// does when the client's next request crosses the close ([`ClosingServer::start_idle_closing`]). Counts
/// request heads read.
pub struct ClosingServer {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<u64>>,
    _rt: tokio::runtime::Runtime,
}

impl ClosingServer {
    pub fn start() -> ClosingServer {
        ClosingServer::serve(false)
    }

    pub fn start_idle_closing() -> ClosingServer {
        ClosingServer::serve(true)
    }

    fn serve(first_per_connection: bool) -> ClosingServer {
        let rt = runtime();
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind closing server");
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<u64>> = Arc::default();
        let s = Arc::clone(&seen);
        rt.spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    let mut on_this_connection = 0u64;
                    loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            on_this_connection += 1;
                            let first = {
                                let mut seen = s.lock().unwrap();
                                *seen += 1;
                                if first_per_connection {
                                    on_this_connection == 1
                                } else {
                                    *seen == 1
                                }
                            };
                            if !first {
                                return; // drop: close without answering
                            }
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await;
                        }
                    }
                });
            }
        });
        ClosingServer {
            addr,
            seen,
            _rt: rt,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

/// A loopback URL where nothing listens (bound, then released).
pub fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/")
}
