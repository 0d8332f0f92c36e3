//! Evaluation points, their statistics per family and setting, and the markdown report (pure).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// A point counts only when the optimization really changes throughput: its true gain over the
/// baseline is at least this, %.
pub const MIN_TRUE_GAIN_PCT: f64 = 10.0;

/// One evaluated point: medians of the kept repetitions. `results.json` holds a list of these.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub family: String,
    /// The case: `<family>-<mode>-<role>` or a harder case's name.
    pub topology: String,
    /// sync | async fan-out.
    pub mode: String,
    pub target: String,
    /// leaf | inner.
    pub role: String,
    /// shaped (the target made the bottleneck) | unshaped (the generator's topology) |
    /// hand-built.
    #[serde(default)]
    pub shape: String,
    /// What limited the app in the baseline, as the what-if found it: target, other_service,
    /// node, unsaturated.
    #[serde(default)]
    pub regime: Option<String>,
    /// work | lock | scaling.
    pub kind: String,
    /// Actuator setting (e.g. `pause-10ms`, `spin`, `sync-10ms`).
    pub setting: String,
    /// shared | pinned.
    pub placement: String,
    /// Δ as % of the target's configured per-visit work (for scaling: the new thread count; for
    /// a real saving: % of the target's measured CPU per request).
    pub delta_pct: f64,
    pub delta_us: f64,
    /// A real saving's Δ, measured independently of the product: its 95 % CI half-width, % of Δ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_noise_pct: Option<f64>,
    #[serde(default)]
    pub baseline_rps: Option<f64>,
    #[serde(default)]
    pub predicted_rps: Option<f64>,
    /// The pause experiment alone, without the node-CPU bound.
    #[serde(default)]
    pub pause_predicted_rps: Option<f64>,
    #[serde(default)]
    pub node_bound_rps: Option<f64>,
    #[serde(default)]
    pub truth_rps: Option<f64>,
    /// (predicted − truth)/truth, %.
    #[serde(default)]
    pub error_pct: Option<f64>,
    /// Error of the pause prediction without the node bound, %.
    #[serde(default)]
    pub pause_error_pct: Option<f64>,
    /// The "no change" strawman: (baseline − truth)/truth, %.
    #[serde(default)]
    pub strawman_error_pct: Option<f64>,
    /// (truth − baseline)/baseline, %: a real test has at least [`MIN_TRUE_GAIN_PCT`].
    #[serde(default)]
    pub truth_gain_pct: Option<f64>,
    /// Noise floor of this point: 95 % CI half-width of the kept ground-truth runs, %.
    #[serde(default)]
    pub truth_noise_pct: Option<f64>,
    /// (max − min)/median of all ground-truth repetitions, %.
    #[serde(default)]
    pub truth_spread_pct: Option<f64>,
    /// The prediction's own noise: 95 % CI half-width of the predicted throughput, % (the
    /// slowed-down runs' spread, magnified by the model at large Δ; the node bound's spread
    /// when it binds).
    #[serde(default)]
    pub predicted_noise_pct: Option<f64>,
    /// Median share of the node's CPUs busy in the baseline and ground-truth windows.
    #[serde(default)]
    pub node_busy_base: Option<f64>,
    #[serde(default)]
    pub node_busy_truth: Option<f64>,
    /// The target's CPU use in the slowed-down runs as % of its baseline use (below ~85 % the
    /// virtual speedup breaks: it ran dry or was crowded out).
    #[serde(default)]
    pub target_kept_pct: Option<f64>,
    /// Share of the time the target's threads waited for a CPU (run queue), % of its cores, in
    /// the baseline and the slowed-down runs.
    #[serde(default)]
    pub target_wait_base_pct: Option<f64>,
    #[serde(default)]
    pub target_wait_slow_pct: Option<f64>,
    pub repetitions: usize,
    pub duration_s: f64,
    /// Stored what-if result (`slowpoke results show ID`).
    #[serde(default)]
    pub result_id: Option<String>,
    /// Why the point failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
}

impl Point {
    /// The key a resumed suite skips on.
    pub fn key(&self) -> String {
        point_key(
            &self.topology,
            &self.setting,
            &self.placement,
            self.delta_pct,
        )
    }

    /// A real test: measured, and the true gain is at least [`MIN_TRUE_GAIN_PCT`].
    pub fn is_real_test(&self) -> bool {
        self.error_pct.is_some() && self.truth_gain_pct.is_some_and(|g| g >= MIN_TRUE_GAIN_PCT)
    }
}

pub fn point_key(topology: &str, setting: &str, placement: &str, delta_pct: f64) -> String {
    format!("{topology}|{setting}|{placement}|{delta_pct}")
}

/// Accuracy of a group of points (real tests only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    pub group: String,
    /// Real tests in the group.
    pub points: usize,
    /// Points measured but with a true gain under [`MIN_TRUE_GAIN_PCT`] (not counted).
    pub too_small: usize,
    pub failed: usize,
    pub rmse_pct: Option<f64>,
    pub mean_abs_error_pct: Option<f64>,
    pub max_abs_error_pct: Option<f64>,
    /// Share of points within ±5 %.
    pub within_5_pct: Option<f64>,
    /// The pause prediction alone (no node bound).
    pub pause_rmse_pct: Option<f64>,
    /// The "no change" strawman's RMSE.
    pub strawman_rmse_pct: Option<f64>,
    /// Median noise floor (truth CI half-width) of the points.
    pub noise_floor_pct: Option<f64>,
    /// Median CI half-width of the predictions.
    #[serde(default)]
    pub prediction_noise_pct: Option<f64>,
    /// The RMSE with the ground truth's own noise taken out: √max(0, RMSE² − mean(SE²)), SE
    /// the standard error of each point's truth (its CI half-width over t). What is left is the
    /// prediction's error, its own noise included.
    #[serde(default)]
    pub rmse_without_truth_noise_pct: Option<f64>,
}

/// Standard error of a point's ground truth, %: its 95 % CI half-width over Student's t for
/// the trimmed mean's degrees of freedom (n − 2g − 1, g = ⌊n/5⌋).
fn truth_se_pct(p: &Point) -> Option<f64> {
    let n = p.repetitions;
    let df = n.saturating_sub(2 * (n / 5) + 1);
    let t = slowpoke_coordinator::stats::t975(df);
    p.truth_noise_pct.filter(|_| t.is_finite()).map(|h| h / t)
}

fn rmse(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| (v.iter().map(|e| e * e).sum::<f64>() / v.len() as f64).sqrt())
}

/// Statistics of `points` under the name `group`.
pub fn group_stats(group: &str, points: &[&Point]) -> GroupStats {
    let real: Vec<&&Point> = points.iter().filter(|p| p.is_real_test()).collect();
    let errs: Vec<f64> = real.iter().filter_map(|p| p.error_pct).collect();
    let pause: Vec<f64> = real.iter().filter_map(|p| p.pause_error_pct).collect();
    let straw: Vec<f64> = real.iter().filter_map(|p| p.strawman_error_pct).collect();
    let noise: Vec<f64> = real.iter().filter_map(|p| p.truth_noise_pct).collect();
    let pred_noise: Vec<f64> = real.iter().filter_map(|p| p.predicted_noise_pct).collect();
    let n = errs.len();
    let se: Vec<f64> = real.iter().filter_map(|p| truth_se_pct(p)).collect();
    let denoised = rmse(&errs).map(|r| {
        let var = if se.is_empty() {
            0.0
        } else {
            se.iter().map(|x| x * x).sum::<f64>() / se.len() as f64
        };
        (r * r - var).max(0.0).sqrt()
    });
    GroupStats {
        group: group.to_owned(),
        points: n,
        too_small: points
            .iter()
            .filter(|p| p.error_pct.is_some() && !p.is_real_test())
            .count(),
        failed: points.iter().filter(|p| p.error_pct.is_none()).count(),
        rmse_pct: rmse(&errs),
        mean_abs_error_pct: (n > 0).then(|| errs.iter().map(|e| e.abs()).sum::<f64>() / n as f64),
        max_abs_error_pct: (n > 0).then(|| errs.iter().map(|e| e.abs()).fold(0.0, f64::max)),
        within_5_pct: (n > 0)
            .then(|| errs.iter().filter(|e| e.abs() <= 5.0).count() as f64 / n as f64 * 100.0),
        pause_rmse_pct: rmse(&pause),
        strawman_rmse_pct: rmse(&straw),
        noise_floor_pct: slowpoke_coordinator::stats::median(&noise),
        prediction_noise_pct: slowpoke_coordinator::stats::median(&pred_noise),
        rmse_without_truth_noise_pct: denoised,
    }
}

/// Per setting/placement, per family and overall.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `<setting>/<placement>` → its groups: one per family, then `overall`.
    pub settings: BTreeMap<String, Vec<GroupStats>>,
}

pub fn summarize(points: &[Point]) -> Summary {
    let mut by_setting: BTreeMap<String, Vec<&Point>> = BTreeMap::new();
    for p in points {
        by_setting
            .entry(format!("{}/{}", p.setting, p.placement))
            .or_default()
            .push(p);
    }
    let settings = by_setting
        .into_iter()
        .map(|(setting, ps)| {
            let mut fams: BTreeMap<&str, Vec<&Point>> = BTreeMap::new();
            for p in &ps {
                fams.entry(p.family.as_str()).or_default().push(p);
            }
            let mut groups: Vec<GroupStats> = fams.iter().map(|(f, v)| group_stats(f, v)).collect();
            // The same points by shape and by the regime the what-ifs found.
            let mut by: BTreeMap<String, Vec<&Point>> = BTreeMap::new();
            for p in &ps {
                if !p.shape.is_empty() {
                    by.entry(format!("shape:{}", p.shape)).or_default().push(p);
                }
                if let Some(r) = &p.regime {
                    by.entry(format!("regime:{r}")).or_default().push(p);
                }
            }
            groups.extend(by.iter().map(|(g, v)| group_stats(g, v)));
            groups.push(group_stats("overall", &ps));
            (setting, groups)
        })
        .collect();
    Summary { settings }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:.1} %"))
}

fn signed(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:+.1} %"))
}

fn rps(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:.0}"))
}

/// The markdown report: per setting, a family table beside the anchors, then every point.
pub fn markdown(title: &str, context: &str, points: &[Point]) -> String {
    let summary = summarize(points);
    let mut s = String::new();
    let _ = writeln!(s, "# {title}\n");
    let _ = writeln!(s, "{context}\n");
    let _ = writeln!(
        s,
        "Anchors (published Slowpoke): RMSE 2.07 % on four real apps; ≈ 3.3 % on its synthetic \
         suite, 93 % of points within 5 %, width-10 fan-outs 9.5 %. Only real tests count: a \
         point whose true gain is under {MIN_TRUE_GAIN_PCT:.0} % is listed but not scored. \
         \"pause only\" is the prediction without the node-CPU bound; \"no change\" is the \
         baseline used as the prediction; the noise floor is the median 95 % CI half-width of \
         the repeated ground-truth runs; \"prediction CI\" the median 95 % CI half-width of the \
         predictions (an error within it is measurement noise, not a bias of the model).\n"
    );
    for (setting, groups) in &summary.settings {
        let _ = writeln!(s, "## Setting `{setting}`\n");
        let _ = writeln!(
            s,
            "| group | points | RMSE | RMSE less truth noise | mean \\|err\\| | max \\|err\\| | within 5 % | pause only RMSE | \"no change\" RMSE | noise floor | prediction CI | not scored (gain < {MIN_TRUE_GAIN_PCT:.0} %) | failed |"
        );
        let _ = writeln!(
            s,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for g in groups {
            let name = if g.group == "overall" {
                "**overall**".to_owned()
            } else {
                g.group.clone()
            };
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | ±{} | {} | {} |",
                g.points,
                pct(g.rmse_pct),
                pct(g.rmse_without_truth_noise_pct),
                pct(g.mean_abs_error_pct),
                pct(g.max_abs_error_pct),
                pct(g.within_5_pct),
                pct(g.pause_rmse_pct),
                pct(g.strawman_rmse_pct),
                pct(g.noise_floor_pct),
                pct(g.prediction_noise_pct),
                g.too_small,
                g.failed
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## Every point\n");
    let _ = writeln!(
        s,
        "| case | target | setting | Δ | baseline | predicted | prediction CI | pause only | node bound | truth | error | \"no change\" | true gain | truth noise | node busy base/truth | target kept | target waits base/slow |"
    );
    let _ = writeln!(
        s,
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for p in points {
        let delta = if p.kind == "scaling" {
            format!("{} threads", p.delta_pct)
        } else {
            format!("{:.0} % ({:.0} µs)", p.delta_pct, p.delta_us)
        };
        let busy = match (p.node_busy_base, p.node_busy_truth) {
            (Some(b), Some(t)) => format!("{:.0}/{:.0} %", b * 100.0, t * 100.0),
            _ => "–".into(),
        };
        let waits = match (p.target_wait_base_pct, p.target_wait_slow_pct) {
            (Some(b), Some(w)) => format!("{b:.0}/{w:.0} %"),
            _ => "–".into(),
        };
        let mut err = signed(p.error_pct);
        if p.error_pct.is_some() && !p.is_real_test() {
            err.push_str(" (not scored)");
        }
        if let Some(e) = &p.error {
            err = format!("failed: {}", e.replace('|', "/"));
        }
        let _ = writeln!(
            s,
            "| {} | {} ({}) | {}/{} | {delta} | {} | {} | ±{} | {} | {} | {} | {err} | {} | {} | {} | {busy} | {} | {waits} |",
            p.topology,
            p.target,
            p.role,
            p.setting,
            p.placement,
            rps(p.baseline_rps),
            rps(p.predicted_rps),
            pct(p.predicted_noise_pct),
            rps(p.pause_predicted_rps),
            rps(p.node_bound_rps),
            rps(p.truth_rps),
            signed(p.strawman_error_pct),
            signed(p.truth_gain_pct),
            pct(p.truth_noise_pct),
            pct(p.target_kept_pct),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn point(family: &str, err: Option<f64>, gain: f64) -> Point {
        Point {
            family: family.into(),
            topology: format!("{family}-sync-leaf"),
            mode: "sync".into(),
            target: "s1".into(),
            role: "leaf".into(),
            shape: "shaped".into(),
            regime: Some("target".into()),
            kind: "work".into(),
            setting: "pause-10ms".into(),
            placement: "shared".into(),
            delta_pct: 50.0,
            delta_us: 500.0,
            delta_noise_pct: None,
            baseline_rps: Some(100.0),
            predicted_rps: err.map(|e| 150.0 * (1.0 + e / 100.0)),
            pause_predicted_rps: None,
            node_bound_rps: None,
            truth_rps: Some(100.0 * (1.0 + gain / 100.0)),
            error_pct: err,
            pause_error_pct: err.map(|e| e * 2.0),
            strawman_error_pct: Some(-gain / (1.0 + gain / 100.0)),
            truth_gain_pct: Some(gain),
            truth_noise_pct: Some(1.0),
            truth_spread_pct: Some(2.0),
            predicted_noise_pct: Some(3.0),
            node_busy_base: Some(0.7),
            node_busy_truth: Some(0.9),
            target_kept_pct: Some(97.0),
            target_wait_base_pct: Some(5.0),
            target_wait_slow_pct: Some(8.0),
            repetitions: 5,
            duration_s: 40.0,
            result_id: None,
            error: None,
        }
    }

    #[test]
    fn stats_by_hand() {
        let ps = [
            point("chain", Some(3.0), 50.0),
            point("chain", Some(-4.0), 50.0),
            point("chain", Some(20.0), 5.0), // not a real test
            point("chain", None, 50.0),      // failed
        ];
        let refs: Vec<&Point> = ps.iter().collect();
        let g = group_stats("chain", &refs);
        assert_eq!(g.points, 2);
        assert_eq!(g.too_small, 1);
        assert_eq!(g.failed, 1);
        assert!((g.rmse_pct.unwrap() - (12.5_f64).sqrt()).abs() < 1e-9);
        assert!((g.mean_abs_error_pct.unwrap() - 3.5).abs() < 1e-9);
        assert!((g.max_abs_error_pct.unwrap() - 4.0).abs() < 1e-9);
        assert!((g.within_5_pct.unwrap() - 100.0).abs() < 1e-9);
        assert!((g.pause_rmse_pct.unwrap() - 2.0 * (12.5_f64).sqrt()).abs() < 1e-9);
        assert!((g.noise_floor_pct.unwrap() - 1.0).abs() < 1e-9);
        assert!((g.prediction_noise_pct.unwrap() - 3.0).abs() < 1e-9);
        // 5 repetitions keep 3: df 2, t 4.303 (the table's 3 decimals); SE 1/4.303 %, taken
        // out of the RMSE.
        let se: f64 = 1.0 / 4.303;
        let want = (12.5 - se * se).sqrt();
        assert!((g.rmse_without_truth_noise_pct.unwrap() - want).abs() < 1e-5);
    }

    #[test]
    fn summary_groups_by_setting_and_family_and_the_report_lists_every_point() {
        let mut ps = vec![
            point("chain", Some(1.0), 40.0),
            point("fanout", Some(-6.0), 40.0),
        ];
        let mut spin = point("chain", Some(9.0), 40.0);
        spin.setting = "spin".into();
        ps.push(spin);
        let s = summarize(&ps);
        assert_eq!(s.settings.len(), 2);
        let pause = &s.settings["pause-10ms/shared"];
        // chain, fanout, then the same points by shape and by regime, overall.
        let groups: Vec<&str> = pause.iter().map(|g| g.group.as_str()).collect();
        assert_eq!(
            groups,
            [
                "chain",
                "fanout",
                "regime:target",
                "shape:shaped",
                "overall"
            ]
        );
        let overall = pause.last().unwrap();
        assert_eq!(overall.points, 2);
        assert!((overall.within_5_pct.unwrap() - 50.0).abs() < 1e-9);
        assert_eq!(pause[2].points, 2);
        let md = markdown("t", "c", &ps);
        assert!(md.contains("## Setting `spin/shared`"), "{md}");
        assert_eq!(md.matches("| chain-sync-leaf |").count(), 2, "{md}");
        assert!(md.contains("+9.0 %"), "{md}");
    }

    #[test]
    fn points_round_trip_and_keys() {
        let p = point("chain", Some(1.0), 40.0);
        let back: Point = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert_eq!(p.key(), "chain-sync-leaf|pause-10ms|shared|50");
    }
}
