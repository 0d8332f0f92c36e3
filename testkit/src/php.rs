//! A fan-out app of Debian's servers that serve each request start to finish on one process: four
//! apache2 instances with the prefork MPM and `mod_php` (a process per request, PHP running inside
//! it). The front's script burns CPU, then calls the three leaves at once with `curl_multi`
//! (a fresh connection per call) and answers with their answers (200 bytes each) when all three
//! have, or 502 when one failed; each leaf's script burns CPU.
//! CPU times are drawn from an exponential distribution and burnt as the process's own CPU time
//! (`getrusage`), so a request preempted half-way still costs what it drew. The tail suite's real
//! app (`cargo xtask eval --suite tail-real`, docs/tail.md): real servers, a real interpreter and
//! real connections, with the work itself synthetic, like the emulator's.

use std::{path::Path, time::Duration};

use crate::{Proc, TempDir, children, spawn_apache, start_listening, wait_for};

/// How the fan-out runs.
#[derive(Clone, Debug)]
pub struct PhpFanout {
    /// apache2 processes per instance (prefork: requests served at once).
    pub workers: u32,
    /// The front's mean CPU per request, µs (exponential).
    pub front_us: f64,
    /// Each leaf's mean CPU per request, µs (exponential).
    pub leaf_us: f64,
    /// Number of leaves the front calls at once.
    pub leaves: usize,
}

impl Default for PhpFanout {
    /// The emulator's `tail-fanout-3-ms-exp`: 0.5 ms at the front, 1.5 ms at each of 3 leaves,
    /// 32 workers per service.
    fn default() -> PhpFanout {
        PhpFanout {
            workers: 32,
            front_us: 500.0,
            leaf_us: 1500.0,
            leaves: 3,
        }
    }
}

/// The running fan-out: the front and its leaves (every [`Proc::pids`] is an apache2 parent and
/// its prefork children, all of them started before this returns).
pub struct RunningPhpFanout {
    pub front: Proc,
    pub leaves: Vec<Proc>,
    /// The front's URL, the one to load.
    pub entry: String,
}

/// Shared by every script: CPU burnt as this process's own time, exponential draws.
const COMMON_PHP: &str = r"<?php
function cpu_us() {
    $r = getrusage();
    return ($r['ru_utime.tv_sec'] + $r['ru_stime.tv_sec']) * 1e6
        + $r['ru_utime.tv_usec'] + $r['ru_stime.tv_usec'];
}
function burn($us) {
    $end = cpu_us() + $us;
    $x = 0;
    while (cpu_us() < $end) {
        for ($i = 0; $i < 100; $i++) { $x += $i; }
    }
    return $x;
}
function exp_us($mean) {
    return -log(1.0 - mt_rand() / (mt_getrandmax() + 1.0)) * $mean;
}
";

impl PhpFanout {
    /// Starts the leaves, then the front (Debian's apache2 and libapache2-mod-php, which
    /// `cargo xtask setup` installs).
    pub fn start(&self) -> RunningPhpFanout {
        let leaf_script = format!(
            "{COMMON_PHP}burn(exp_us({}));\necho str_repeat('l', 200);\n",
            self.leaf_us
        );
        let leaves: Vec<Proc> = (0..self.leaves)
            .map(|_| apache_php("leaf.php", &leaf_script, self.workers))
            .collect();
        let urls: Vec<String> = leaves
            .iter()
            .map(|l| format!("'http://127.0.0.1:{}/leaf.php'", l.port))
            .collect();
        let front_script = format!(
            r"{COMMON_PHP}burn(exp_us({front_us}));
$mh = curl_multi_init();
$handles = [];
foreach ([{urls}] as $url) {{
    $h = curl_init($url);
    curl_setopt($h, CURLOPT_RETURNTRANSFER, true);
    curl_setopt($h, CURLOPT_TIMEOUT_MS, 10000);
    curl_multi_add_handle($mh, $h);
    $handles[] = $h;
}}
do {{
    $status = curl_multi_exec($mh, $active);
    if ($active) {{ curl_multi_select($mh, 1.0); }}
}} while ($active && $status == CURLM_OK);
$ok = true;
$body = '';
foreach ($handles as $h) {{
    if (curl_getinfo($h, CURLINFO_HTTP_CODE) != 200) {{ $ok = false; }}
    $body .= curl_multi_getcontent($h);
    curl_multi_remove_handle($mh, $h);
}}
if (!$ok) {{ http_response_code(502); }}
echo $body;
",
            front_us = self.front_us,
            urls = urls.join(", ")
        );
        let front = apache_php("front.php", &front_script, self.workers);
        let entry = format!("http://127.0.0.1:{}/front.php", front.port);
        RunningPhpFanout {
            front,
            leaves,
            entry,
        }
    }
}

/// apache2's `mod_php` module as Debian installs it (`libphp<version>.so`).
fn mod_php() -> String {
    let dir = Path::new("/usr/lib/apache2/modules");
    std::fs::read_dir(dir)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libphp"))
                && p.extension().is_some_and(|e| e == "so")
        })
        .unwrap_or_else(|| {
            panic!(
                "no libphp*.so in {} (Debian's libapache2-mod-php; cargo xtask setup installs it)",
                dir.display()
            )
        })
        .display()
        .to_string()
}

/// One apache2 instance, prefork MPM with `workers` processes kept for its whole life, serving
/// `script` as `/NAME` with `mod_php`; kept-alive connections idle 50 ms are closed.
fn apache_php(name: &str, script: &str, workers: u32) -> Proc {
    let dir = TempDir::new("apache2-php");
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).expect("creating the document root");
    std::fs::write(www.join(name), script).expect("writing the script");
    let php = mod_php();
    let (child, port) = start_listening("apache2", |port| {
        let d = dir.path().display();
        let modules = "/usr/lib/apache2/modules";
        let conf = format!(
            "LoadModule mpm_prefork_module {modules}/mod_mpm_prefork.so\n\
             LoadModule authz_core_module {modules}/mod_authz_core.so\n\
             LoadModule php_module {php}\n\
             ServerName localhost\nListen 127.0.0.1:{port}\nPidFile {d}/httpd.pid\n\
             ErrorLog {d}/error.log\nDefaultRuntimeDir {d}\nMutex posixsem\n\
             User www-data\nGroup www-data\nDocumentRoot {d}/www\n\
             <FilesMatch \"\\.php$\">\n  SetHandler application/x-httpd-php\n</FilesMatch>\n\
             StartServers {workers}\nServerLimit {workers}\nMaxRequestWorkers {workers}\n\
             MinSpareServers 1\nMaxSpareServers {workers}\nMaxConnectionsPerChild 0\n\
             ListenBacklog 4096\nKeepAlive On\nKeepAliveTimeout 50ms\nMaxKeepAliveRequests 0\n"
        );
        spawn_apache(dir.path(), &conf)
    });
    let parent = child.id();
    wait_for(
        Duration::from_secs(30),
        "apache2's prefork children",
        || (children(parent).len() >= workers as usize).then_some(()),
    );
    Proc {
        child,
        port,
        home: Some(dir),
    }
}
