//! Live configuration swaps of real servers (the real-server evaluation's ground truth): the
//! server reloads, its workers are new, and what it serves shows the new configuration.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use slowpoke_testkit::swap::{haproxy_lua, variants};
use slowpoke_testkit::{Nginx, NginxMemcached, TempDir, children};

/// One HTTP/1.1 GET (then close) with `Accept-Encoding: gzip`: (status line, headers and body as text, bytes).
fn get(port: u16, path: &str) -> (String, String, usize) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("reading");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    (status, text, out.len())
}

fn sh(cmd: &str) {
    let st = Command::new("sh").args(["-c", cmd]).status().unwrap();
    assert!(st.success(), "`{cmd}`: {st}");
}

#[test]
fn nginx_changes_its_gzip_level_live() {
    let app = NginxMemcached::with_location(
        1,
        64 * 1024,
        "gzip on; gzip_comp_level 9; gzip_min_length 0; gzip_types text/plain;",
    );
    let master = app.nginx.pid();
    let conf = app.nginx.dir().unwrap().join("nginx.conf");
    let dir = TempDir::new("swap-nginx");
    let v = variants(
        &conf,
        dir.path(),
        "nginx",
        &[("gzip_comp_level 9", "gzip_comp_level 1")],
        master,
        "HUP",
    );
    let (status, _, level9) = get(app.nginx.port, "/item");
    assert!(status.contains("200"), "{status}");
    let before = children(master);
    sh(&v.apply);
    let after = children(master);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} → {after:?}"
    );
    let (_, _, level1) = get(app.nginx.port, "/item");
    // Level 1 compresses the same page less well than level 9.
    assert!(level1 > level9, "level 1: {level1} B, level 9: {level9} B");
    sh(&v.restore);
    assert_eq!(get(app.nginx.port, "/item").2, level9);
}

#[test]
fn haproxy_reloads_its_lua_live() {
    let nginx = Nginx::default().start();
    let proxy = haproxy_lua(nginx.port, 1000);
    let master = proxy.pid();
    let header = || {
        let (status, text, _) = get(proxy.port, "/hello.txt");
        assert!(status.contains("200"), "{status}");
        text.lines()
            .find_map(|l| l.strip_prefix("x-work: ").map(str::to_owned))
            .expect("the Lua action's header")
    };
    let before_value = header();
    let lua = proxy.dir().unwrap().join("work.lua");
    let dir = TempDir::new("swap-haproxy");
    let v = variants(
        &lua,
        dir.path(),
        "lua",
        &[("for i = 1, 1000 ", "for i = 1, 10 ")],
        master,
        "USR2",
    );
    let before = children(master);
    sh(&v.apply);
    assert!(children(master).iter().all(|p| !before.contains(p)));
    assert_ne!(header(), before_value, "the new Lua computes another value");
    sh(&v.restore);
    assert_eq!(header(), before_value);
}
