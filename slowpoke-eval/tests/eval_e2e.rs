//! The evaluation runner end to end (real agent, load generator and emulator), on the paper's
//! two harder cases cut to one point each: the mutex case (its ground truth lowers `lock_us`
//! live) and the scaling case (its ground truth adds a worker thread live). Checks what the
//! suite writes (results.json, report.md, plot.svg, the topologies), that `--resume` skips
//! measured points, and that a directory with results is never overwritten silently.
//!
//! Needs root and the release emulator (`cargo xtask test` provides both).

use std::sync::Arc;

use slowpoke_coordinator::agents::SharedAgent;
use slowpoke_coordinator::experiment::Monitor;
use slowpoke_coordinator::real::InProcessAgent;
use slowpoke_coordinator::results::ResultStore;
use slowpoke_eval::runner::{self, EvalOptions, Placement, Setting};
use slowpoke_eval::suite::{self, CaseKind, SuiteName};

#[test]
fn eval_runs_the_harder_cases_writes_its_report_and_resumes() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("slowpoke-eval-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = slowpoke_agent::AgentConfig {
        state_dir: dir.join("agent"),
        max_stopped_share: 0.95,
        ..slowpoke_agent::AgentConfig::default()
    };
    let agent = rt
        .block_on(InProcessAgent::start(cfg))
        .expect("start the in-process agent (root and the kernel programs are needed)");
    let inner = agent.agent().clone();
    let agents = vec![Arc::new(agent) as SharedAgent];

    let mut cases = suite::cases(SuiteName::Full, &["mutex".into(), "scaling".into()])
        .expect("the harder cases");
    assert_eq!(cases.len(), 2);
    for c in &mut cases {
        c.points.truncate(1);
    }
    let opts = EvalOptions {
        suite: "e2e".into(),
        out_dir: dir.join("out"),
        resume: false,
        settings: vec![Setting::default()],
        placements: vec![Placement::Shared],
        repetitions: 1,
        window_s: 1.0,
        // Out of reach on purpose: the zero budget must stop it after the one repetition.
        precision_pct: Some(0.001),
        budget_s: 0.0,
        connections: 32,
    };
    let store = ResultStore::new(dir.join("results"));
    let monitor = Monitor::new();
    let lines = std::sync::Mutex::new(Vec::<String>::new());
    let say = |l: &str| lines.lock().unwrap().push(l.to_owned());

    let file =
        runner::run(&cases, &opts, &agents, None, &store, &monitor, &say).expect("the suite");
    assert_eq!(file.points.len(), 2, "{:#?}", file.points);
    assert_eq!(file.precision_pct, Some(0.001));
    for p in &file.points {
        assert_eq!(p.repetitions, 1, "the budget ends the repeats: {p:#?}");
    }
    for p in &file.points {
        assert!(p.error.is_none(), "{p:#?}");
        assert!(p.baseline_rps.unwrap() > 0.0, "{p:#?}");
        assert!(p.truth_rps.unwrap() > 0.0, "{p:#?}");
        assert!(p.predicted_rps.unwrap() > 0.0, "{p:#?}");
        assert!(p.error_pct.unwrap().is_finite(), "{p:#?}");
        assert!(p.result_id.is_some());
    }
    let mutex = file.points.iter().find(|p| p.family == "mutex").unwrap();
    assert_eq!(mutex.kind, "lock");
    // Δ = 20 % of the 900 µs critical section.
    assert!((mutex.delta_us - 180.0).abs() < 1e-9, "{mutex:#?}");
    let scaling = file.points.iter().find(|p| p.family == "scaling").unwrap();
    assert_eq!(scaling.kind, "scaling");
    assert!((scaling.delta_pct - 2.0).abs() < 1e-9);
    for f in [
        "results.json",
        "report.md",
        "plot.svg",
        "topologies/mutex.json",
    ] {
        assert!(opts.out_dir.join(f).is_file(), "{f} missing");
    }
    let report = std::fs::read_to_string(opts.out_dir.join("report.md")).unwrap();
    assert!(report.contains("| mutex |"), "{report}");
    assert!(report.contains("2 threads"), "{report}");
    let svg = std::fs::read_to_string(opts.out_dir.join("plot.svg")).unwrap();
    assert!(svg.contains("<svg"), "{svg}");
    assert!(cases.iter().any(|c| c.kind == CaseKind::Lock));

    // Without --resume an existing results directory is refused, untouched.
    let before = std::fs::read_to_string(opts.out_dir.join("results.json")).unwrap();
    let e = runner::run(&cases, &opts, &agents, None, &store, &monitor, &say).unwrap_err();
    assert!(format!("{e:#}").contains("--resume"), "{e:#}");
    assert_eq!(
        std::fs::read_to_string(opts.out_dir.join("results.json")).unwrap(),
        before
    );

    // --resume: every point is measured already, so nothing runs and nothing changes.
    let n_lines = lines.lock().unwrap().len();
    let resumed = runner::run(
        &cases,
        &EvalOptions {
            resume: true,
            ..opts.clone()
        },
        &agents,
        None,
        &store,
        &monitor,
        &say,
    )
    .expect("resume");
    assert_eq!(lines.lock().unwrap().len(), n_lines, "no point ran again");
    // The same points (read back from results.json: compare what identifies them).
    let ids = |f: &runner::ResultsFile| {
        f.points
            .iter()
            .map(|p| (p.key(), p.result_id.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&resumed), ids(&file));

    rt.block_on(inner.shutdown());
    let _ = std::fs::remove_dir_all(&dir);
}
