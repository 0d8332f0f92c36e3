//! The process behind the hidden `slowpoke-emu serve` subcommand: reads its [`ServeSpec`], takes the two
//! listening sockets the runner handed over, and serves them with the service's model — `async`
//! ([`crate::service`]) or `thread-per-request` ([`crate::workers`]).

use std::net::TcpListener as StdListener;
use std::os::fd::FromRawFd as _;
use std::sync::Arc;

use anyhow::{Context as _, Result};

use crate::service::{CONTROL_FD, SERVICE_FD, ServeSpec, build_state, serve_async};
use crate::topology::Serving;

/// Runs a service process until it is killed. Reads the [`ServeSpec`] from stdin.
pub fn serve_main() -> Result<()> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .context("reading the serve spec from stdin")?;
    let spec: ServeSpec = serde_json::from_str(&text).context("parsing the serve spec")?;
    // SAFETY: the runner passes two listening TCP sockets as fds 3 and 4 and nothing else uses them.
    let (svc, ctl) = unsafe {
        (
            StdListener::from_raw_fd(SERVICE_FD),
            StdListener::from_raw_fd(CONTROL_FD),
        )
    };
    serve(&spec, svc, ctl)
}

/// Serves `spec` on the two listeners with its serving model. Never returns Ok.
pub fn serve(spec: &ServeSpec, service: StdListener, control: StdListener) -> Result<()> {
    match spec.serving {
        Serving::Async => serve_async(spec, service, control),
        Serving::ThreadPerRequest => {
            let state = Arc::new(build_state(spec)?);
            crate::workers::serve(spec, state, &service, control)
        }
    }
}
