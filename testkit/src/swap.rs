//! Real per-request savings in Debian's servers, switched live: a server runs its baseline
//! configuration, a second file holds the optimized one, and a script swaps them in a running
//! server the way an operator reloads it (nginx: SIGHUP to its master; haproxy in master-worker
//! mode: SIGUSR2), returning once the new generation of workers serves and the old one is gone.
//! The evaluation's ground truth for what-ifs that are not scaling questions (`cargo xtask eval
//! --suite real`, cases `nginx-gzip`, `nginx-subfilter`, `haproxy-lua`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Proc, TempDir, children, spawn, start_listening, wait_for};

/// Writes `dir/swap.sh`: `sh swap.sh SRC DEST MASTER SIGNAL` copies SRC over DEST, sends SIGNAL
/// to MASTER and returns once none of MASTER's children from before still runs and at least
/// one new child does (exit 1 after 30 s). A live change for `slowpoke what-if --truth-cmd`.
pub fn swap_script(dir: &Path) -> PathBuf {
    let text = r#"#!/bin/sh
set -e
src=$1; dest=$2; m=$3; sig=$4
old=$(ps --ppid "$m" -o pid= | tr -d ' ')
cp "$src" "$dest"
kill -"$sig" "$m"
i=0
while :; do
  alive=0
  for p in $old; do kill -0 "$p" 2>/dev/null && alive=1; done
  new=0
  for p in $(ps --ppid "$m" -o pid= | tr -d ' '); do
    case " $(echo $old) " in *" $p "*) ;; *) new=1 ;; esac
  done
  [ $alive = 0 ] && [ $new = 1 ] && break
  i=$((i+1)); [ $i -lt 1200 ] || { echo "the server did not reload from $src" >&2; exit 1; }
  sleep 0.025
done
"#;
    let path = dir.join("swap.sh");
    std::fs::write(&path, text).expect("writing swap.sh");
    path
}

/// A server's two configurations and the commands that switch between them live.
pub struct Variants {
    /// Switches to the optimized file (the `--truth-cmd`).
    pub apply: String,
    /// Switches back to the baseline (the `--restore-cmd`).
    pub restore: String,
}

/// Keeps copies of `live` (the file the server reads) as `dir/NAME.base` and, with every
/// `(from, to)` replaced, `dir/NAME.optimized`, and the commands that swap them into `live`
/// and send `signal` to `master`.
///
/// # Panics
/// When a `from` does not occur in the file: the variant would be the baseline.
pub fn variants(
    live: &Path,
    dir: &Path,
    name: &str,
    replace: &[(&str, &str)],
    master: u32,
    signal: &str,
) -> Variants {
    let text =
        std::fs::read_to_string(live).unwrap_or_else(|e| panic!("reading {}: {e}", live.display()));
    let mut optimized = text.clone();
    for (from, to) in replace {
        assert!(
            optimized.contains(from),
            "`{from}` is not in {}",
            live.display()
        );
        optimized = optimized.replace(from, to);
    }
    let base = dir.join(format!("{name}.base"));
    let opt = dir.join(format!("{name}.optimized"));
    std::fs::write(&base, &text).expect("writing the baseline copy");
    std::fs::write(&opt, optimized).expect("writing the optimized copy");
    let script = swap_script(dir);
    let cmd = |src: &Path| {
        format!(
            "sh '{}' '{}' '{}' {master} {signal}",
            script.display(),
            src.display(),
            live.display()
        )
    };
    Variants {
        apply: cmd(&opt),
        restore: cmd(&base),
    }
}

/// Lua run by haproxy on every request: `iterations` rounds of integer hashing over the path
/// (a stand-in for an authentication or routing script).
pub fn lua_work(iterations: u32) -> String {
    format!(
        "core.register_action(\"work\", {{ \"http-req\" }}, function(txn)\n\
         \x20 local p = txn.sf:path()\n\
         \x20 local h = #p\n\
         \x20 for i = 1, {iterations} do h = (h * 31 + i) % 1000000007 end\n\
         \x20 txn:set_var(\"txn.work\", h)\n\
         end)\n"
    )
}

/// Debian's haproxy in master-worker mode (one thread) in front of `backend_port`, running
/// [`lua_work`]`(iterations)` on every request (its result in the response header `x-work`);
/// its Lua file is `dir()/work.lua`.
pub fn haproxy_lua(backend_port: u16, iterations: u32) -> Proc {
    let dir = TempDir::new("haproxy-lua");
    let lua = dir.path().join("work.lua");
    std::fs::write(&lua, lua_work(iterations)).expect("writing work.lua");
    let (child, port) = start_listening("haproxy", |port| {
        let conf = format!(
            "global\n  maxconn 4096\n  nbthread 1\n  hard-stop-after 2s\n  lua-load {lua}\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  http-request lua.work\n\
         \x20 http-response set-header x-work %[var(txn.work)]\n  default_backend be\n\
         backend be\n  http-reuse always\n  server s1 127.0.0.1:{backend_port}\n",
            lua = lua.display()
        );
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, conf).expect("writing haproxy.cfg");
        spawn(
            Command::new("/usr/sbin/haproxy")
                .args(["-W", "-db", "-f"])
                .arg(&cfg),
            "/usr/sbin/haproxy",
        )
    });
    let master = child.id();
    wait_for(
        std::time::Duration::from_secs(15),
        "haproxy's worker",
        || (!children(master).is_empty()).then_some(()),
    );
    Proc {
        child,
        port,
        home: Some(dir),
    }
}
