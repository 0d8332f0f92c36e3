//! The agent's doors: its Unix socket (always) and a TCP listener (only with `--listen`), and
//! serving the router on them with the caller's identity attached ([`Caller`]).
//!
//! The socket file never exists with a mode wider than asked: it is bound inside a fresh
//! directory only root can enter, given its mode and group there, and renamed into place. The
//! rename also replaces a stale socket left by an agent that was killed (`SIGKILL` leaves the
//! file behind); a socket something still answers on is refused instead, so a second agent
//! with another state directory cannot steal a running agent's socket. [`SocketFile`] removes
//! the file when the agent exits.

use std::{
    future::Future,
    io,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use axum::Router;
use tokio::net::{TcpListener, UnixListener};

use super::access::Caller;

/// The socket's file name inside the state directory (`/run/slowpoke/agent.sock`).
pub const SOCKET_FILE: &str = "agent.sock";

/// The socket file this agent bound; removed on drop if it is still this agent's.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    ino: u64,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the agent's socket at `path`: mode 0600, or 0660 with `group` as its group (see the
/// module doc for how, and why a stale socket is replaced). Call it once the agent holds its
/// state directory's lock.
pub fn bind_socket(path: &Path, group: Option<u32>) -> io::Result<(UnixListener, SocketFile)> {
    let context = |what: &str, e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("{what} {}: {e} (use --socket PATH)", path.display()),
        )
    };
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--socket {} is not a file path", path.display()),
        ));
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::create_dir_all(dir).map_err(|e| context("cannot create the directory of", e))?;
    refuse_live_or_foreign(path)?;
    let private = dir.join(format!(".agent-sock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| context("cannot prepare the socket", e))?;
    let staged = private.join(name);
    let bound = (|| {
        let listener = UnixListener::bind(&staged)?;
        let mode = if group.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        if let Some(gid) = group {
            std::os::unix::fs::chown(&staged, None, Some(gid))?;
        }
        let ino = std::fs::symlink_metadata(&staged)?.ino();
        std::fs::rename(&staged, path)?;
        Ok::<_, io::Error>((listener, ino))
    })();
    let _ = std::fs::remove_dir_all(&private);
    let (listener, ino) = bound.map_err(|e| context("cannot create the socket", e))?;
    Ok((
        listener,
        SocketFile {
            path: path.to_owned(),
            ino,
        },
    ))
}

/// Refuses a path that holds something other than a socket, or a socket a live process
/// answers on (another agent).
fn refuse_live_or_foreign(path: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket: remove it or give --socket another path",
                path.display()
            ),
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another process answers on the socket {} (another agent?): stop it, or give \
                 this one its own --socket or --state-dir",
                path.display()
            ),
        ));
    }
    tracing::info!(
        "replacing the stale socket {} (no agent answers on it)",
        path.display()
    );
    Ok(())
}

/// Serves `app` on the Unix socket until `shutdown` completes; each request knows its caller's
/// credentials.
pub async fn serve_unix(
    listener: UnixListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<Caller>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Serves `app` on a TCP listener until `shutdown` completes; each request knows its caller's
/// address.
pub async fn serve_tcp(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<Caller>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
