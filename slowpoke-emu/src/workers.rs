//! The `thread-per-request` serving model: a pool of worker threads, each serving one connection at a time
//! and each of its requests start to finish on that one thread — the socket reads, the work, every
//! downstream call and the reply — the way Apache's worker MPM or `PostgreSQL`'s backends do. Tail-latency
//! scheduling (issue #18) reorders *threads*, so it needs a server where a thread stands for a request; the
//! default `async` model multiplexes many requests per thread and moves a visit between threads.
//!
//! Each worker runs a current-thread tokio runtime (so nothing it starts runs elsewhere) that accepts on the
//! shared listening socket only while it is free. So that a closed-loop client with more connections than
//! there are workers is not starved by keep-alive connections that never end, a connection is closed after
//! [`REQUESTS_PER_CONNECTION`] requests (`Connection: close`, as Apache's `MaxKeepAliveRequests`) or when
//! idle for [`IDLE_CLOSE`] (its `KeepAliveTimeout`); the client reconnects and queues for a free worker.

use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use hyper::header::{CONNECTION, HeaderValue};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::service::{
    ServeSpec, State, accept_loop, handle_control, handle_visit, runtime_threads,
};

/// Requests served on one connection before the worker closes it and takes the next waiting one.
pub const REQUESTS_PER_CONNECTION: u32 = 100;

/// A connection idle this long (no next request) is closed, so its worker can take a waiting one.
pub const IDLE_CLOSE: Duration = Duration::from_millis(50);

// A caller's worker drops its idle pooled connections before a callee closes them.
const _: () = assert!(crate::service::WORKER_POOL_IDLE.as_millis() * 2 <= IDLE_CLOSE.as_millis());

/// Serves `spec` with `max_threads` workers (at most `threads` of them doing visits' work at once, as in the
/// async model); the control port runs on this thread. Never returns Ok.
pub(crate) fn serve(
    spec: &ServeSpec,
    state: Arc<State>,
    service: &StdListener,
    control: StdListener,
) -> Result<()> {
    service.set_nonblocking(true)?;
    control.set_nonblocking(true)?;
    for i in 0..runtime_threads(spec) {
        let listener = service
            .try_clone()
            .context("sharing the service socket with a worker")?;
        let st = state.clone();
        std::thread::Builder::new()
            .name(format!("{}-w{i}", spec.name))
            .spawn(move || worker(&st, listener))
            .context("starting a worker thread")?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the control port's runtime")?;
    rt.block_on(async move {
        let ctl = tokio::net::TcpListener::from_std(control)?;
        let label = format!("control port of service {}", spec.name);
        tokio::spawn(accept_loop(ctl, label, move |req| {
            handle_control(state.clone(), req)
        }));
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            writeln!(out, "ready")?;
            out.flush()?;
        }
        std::future::pending::<Result<()>>().await
    })
}

/// One worker: takes a connection, serves it until it ends, takes the next.
fn worker(st: &Arc<State>, listener: StdListener) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("worker thread: building its runtime: {e}");
            return;
        }
    };
    rt.block_on(async {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("worker thread: registering the service socket: {e}");
                return;
            }
        };
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("worker accept: {e}; retrying in 10 ms");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let served = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let st = st.clone();
            let svc = hyper::service::service_fn(move |req| {
                let n = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                let st = st.clone();
                async move {
                    let mut resp = handle_visit(st, req).await?;
                    if n >= REQUESTS_PER_CONNECTION {
                        resp.headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .timer(TokioTimer::new())
                .header_read_timeout(IDLE_CLOSE)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    });
}
