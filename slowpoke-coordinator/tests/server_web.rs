//! The web page, as a user sees it: headless Chromium loads `/` from a real server, runs its
//! JavaScript, and the rendered DOM must show the experiments and their numbers.

#![allow(clippy::many_single_char_names)]

mod server_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use server_common::{APP, Server, call, cli_what_if, config, quick, temp_dir};
use slowpoke_coordinator::experiment::{Monitor, ProfileSpec, run_profile};
use slowpoke_coordinator::fake::FakeWorld;
use slowpoke_coordinator::results::{ResultStore, StoredResult};

/// The headless browser the page is checked with; a missing one fails the test (`cargo xtask
/// setup` installs it), it does not skip it.
fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect(
            "no /usr/bin/chromium: `cargo xtask setup` installs it (apt-get install -y chromium)",
        )
}

/// Runs headless Chromium on `url`; `--dump-dom` prints the DOM after the page's scripts ran
/// (with up to 3 s of virtual time), `--screenshot=FILE` saves a PNG.
fn chromium_run(browser: &Path, url: &str, mode: &str) -> String {
    let profile = temp_dir("chromium-profile");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1200,1400",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(url)
        .output()
        .expect("cannot run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `5000.4` as the page prints it (en-US, no decimals): `5,000`.
fn shown(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

#[test]
fn the_page_shows_a_stored_result_with_its_numbers_and_plot() {
    let browser = chromium();
    let w = FakeWorld::chain();
    let dir = temp_dir("web");
    let r = cli_what_if(&w);
    ResultStore::new(&dir)
        .save(&StoredResult::WhatIf(r.clone()))
        .unwrap();
    let prof = run_profile(
        &ProfileSpec {
            timing: quick(),
            repetitions: 2,
            percents: vec![30.0, 60.0],
            ..ProfileSpec::default()
        },
        &mut w.backends(),
        &Monitor::new(),
    )
    .unwrap();
    ResultStore::new(&dir)
        .save(&StoredResult::Profile(prof.clone()))
        .unwrap();
    let s = Server::start(config(&w, dir));
    // The what-if, selected through the address (the newest is selected by default).
    let dom = chromium_run(&browser, &s.url(&format!("/#{}", r.id)), "--dump-dom");

    // The list, with the stored experiment (selected automatically as the newest).
    assert!(dom.contains(&r.id), "the experiment is not listed:\n{dom}");
    assert!(dom.contains("status-done"), "{dom}");
    assert!(dom.contains("what-if"), "{dom}");
    // The result's table: baseline, predicted with its CI, truth and error.
    for (label, v) in [
        ("baseline", r.baseline_rps),
        ("predicted", r.predicted_rps),
        ("truth", r.truth_rps.unwrap()),
    ] {
        let row = format!(
            r#"<tr data-row="{label}"><th>{label}</th><td class="num">{}</td>"#,
            shown(v)
        );
        assert!(dom.contains(&row), "no `{row}` in:\n{dom}");
    }
    let ci = format!(
        "[{}, {}]",
        shown(r.predicted_ci_low),
        shown(r.predicted_ci_high)
    );
    assert!(dom.contains(&ci), "no predicted CI {ci}:\n{dom}");
    let err = format!("error {:+.1} %", r.error_pct.unwrap());
    assert!(dom.contains(&err), "no `{err}`:\n{dom}");
    // Per-service r/p/c/d: db has r = 2, p = 50 µs, c = 1 and a pause of d_s = δ/r_s.
    let db = r.services.iter().find(|s| s.name == "db").unwrap();
    let db_row = format!(
        r#"<tr data-service="db"><td>db</td><td class="num">2.000</td><td class="num">50.0</td><td class="num">1.00</td><td class="num">{:.1}</td>"#,
        db.d_us.unwrap()
    );
    assert!(dom.contains(&db_row), "no `{db_row}`:\n{dom}");
    assert!(
        dom.contains(r#"<tr data-service="cart"><td>cart</td>"#),
        "{dom}"
    );
    // The plot, inlined from plot.svg.
    assert!(
        dom.contains("<svg") && dom.contains("class=\"bar\""),
        "no plot:\n{dom}"
    );
    // The agents' health.
    assert!(dom.contains("<td>fake</td>"), "{dom}");

    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("server_web_result.png");
    chromium_run(
        &browser,
        &s.url(&format!("/#{}", r.id)),
        &format!("--screenshot={}", png.display()),
    );
    assert!(png.exists());
    eprintln!("screenshot: {}", png.display());

    // The profile (the newest, selected by default): ranked curves, their numbers, the plot.
    let dom = chromium_run(&browser, &s.url("/"), "--dump-dom");
    assert!(dom.contains(&prof.id), "{dom}");
    let best = &prof.curves[0];
    assert_eq!(best.service, "cart");
    let p60 = best
        .points
        .iter()
        .find(|p| (p.percent - 60.0).abs() < 1e-9)
        .unwrap();
    let row = format!(
        r#"<tr data-service="cart"><td>cart</td><td class="num">{:+.1} %</td>"#,
        best.max_gain_pct.unwrap()
    );
    assert!(dom.contains(&row), "no `{row}`:\n{dom}");
    assert!(dom.contains(&shown(p60.predicted_rps.unwrap())), "{dom}");
    assert!(dom.contains("<svg"), "no plot:\n{dom}");
    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("server_web_profile.png");
    chromium_run(
        &browser,
        &s.url("/"),
        &format!("--screenshot={}", png.display()),
    );
    eprintln!("screenshot: {}", png.display());
}

#[test]
fn the_page_shows_a_tail_comparison_with_its_latency_cdf() {
    let browser = chromium();
    let w = FakeWorld::chain();
    let dir = temp_dir("web-tail");
    let t = server_common::tail_result("20261206T120000-000-tail-app");
    ResultStore::new(&dir)
        .save(&StoredResult::Tail(t.clone()))
        .unwrap();
    let s = Server::start(config(&w, dir));
    let dom = chromium_run(&browser, &s.url(&format!("/#{}", t.id)), "--dump-dom");
    assert!(dom.contains(&t.id), "{dom}");
    // Each arm that ran: its p50 and p99 (ms), the p99's interval and its change vs default.
    let of = |arm: &str| t.arms.iter().find(|a| a.arm.as_str() == arm).unwrap();
    for arm in ["default", "oldest-first"] {
        let a = of(arm);
        let row = format!(
            r#"<tr data-arm="{arm}"><th>{arm}</th><td class="num">{:.2}</td><td class="num">{:.2}</td>"#,
            a.p50_us.unwrap().value / 1e3,
            a.p99_us.unwrap().value / 1e3
        );
        assert!(dom.contains(&row), "no `{row}` in:\n{dom}");
    }
    assert!(dom.contains("-50.6 % [-51, -50]"), "no p99 change:\n{dom}");
    // How the load generator ran, as in the CLI's table.
    assert!(
        dom.contains("load generator at real-time priority 30."),
        "{dom}"
    );
    assert!(
        slowpoke_coordinator::report::tail_table(&t)
            .lines()
            .next()
            .is_some_and(|l| l.ends_with("; load generator at real-time priority 30")),
        "{}",
        slowpoke_coordinator::report::tail_table(&t)
    );
    // The arm that could not run says why.
    assert!(
        dom.contains("not run: agent fake refused tail scheduling"),
        "{dom}"
    );
    // The form that starts one.
    assert!(
        dom.contains(r#"<form id="tail-form""#) && dom.contains(r#"name="rate""#),
        "no form to start a tail comparison:\n{dom}"
    );
    // The latency CDF, one line per arm that ran.
    assert!(
        dom.contains("<svg") && dom.contains("p99.9"),
        "no CDF plot:\n{dom}"
    );
    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("server_web_tail.png");
    chromium_run(
        &browser,
        &s.url(&format!("/#{}", t.id)),
        &format!("--screenshot={}", png.display()),
    );
    eprintln!("screenshot: {}", png.display());
}

#[test]
fn the_page_shows_a_running_experiment_and_its_progress() {
    let browser = chromium();
    let w = FakeWorld::chain();
    let s = Server::start(config(&w, temp_dir("web-running")));
    let a = call(
        "POST",
        &s.url("/v1/experiments"),
        Some(&format!(
            r#"{{{APP}, "target": "cart", "speedup": 2, "warmup": 0, "settle": 0, "window": 0.5, "repetitions": 100, "precision": 0}}"#
        )),
        None,
    );
    assert_eq!(a.status, 202, "{}", a.text);
    let id = a.json()["id"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(300));
    let dom = chromium_run(&browser, &s.url("/"), "--dump-dom");
    assert!(dom.contains(&id), "{dom}");
    assert!(dom.contains(r#"class="status-running">running"#), "{dom}");
    assert!(dom.contains("<progress"), "no progress bar:\n{dom}");
    assert!(
        dom.contains("/100: "),
        "no phase (`rep k/100: ...`):\n{dom}"
    );
    assert!(dom.contains("Cancel"), "no cancel button:\n{dom}");
    // Auto-refresh is on while something runs.
    assert!(
        dom.contains(r#"<span id="refreshing" class="refreshing">"#),
        "{dom}"
    );
    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("server_web_running.png");
    chromium_run(
        &browser,
        &s.url("/"),
        &format!("--screenshot={}", png.display()),
    );
    eprintln!("screenshot: {}", png.display());
    let d = call(
        "DELETE",
        &s.url(&format!("/v1/experiments/{id}")),
        None,
        None,
    );
    assert_eq!(d.status, 200, "{}", d.text);
    assert!(w.plan().is_empty());
}
