//! The workspace's one SVG stack (plotters): a causal profile as predicted throughput vs
//! optimization (% of each service's per-visit time), one line per service, with the baseline as
//! a dashed reference; a what-if as bars (baseline, slowed down, predicted and, when measured,
//! truth) with their 95 % intervals. The CLI writes them to files, the server answers
//! `GET /v1/experiments/{id}/plot.svg` with [`result_svg`], the evaluation draws its own chart
//! with [`COLORS`] and [`err`]; a tail comparison as each arm's latency CDF
//! ([`tail_cdf_svg`], also the tail suite's plot).

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::experiment::{ProfileResult, WhatIfResult};
use crate::results::StoredResult;
use slowpoke_api::coordinator::TailResult;

/// The series colours, shared with the evaluation plot.
pub const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// The chart of any stored result: a what-if's bars or a profile's curves.
pub fn result_svg(r: &StoredResult) -> anyhow::Result<String> {
    match r {
        StoredResult::WhatIf(w) => what_if_svg(w),
        StoredResult::Profile(p) => profile_svg(p),
        StoredResult::Tail(t) => tail_cdf_svg(t),
    }
}

/// The tail's y axis: "nines" of the CDF, −log10(1 − F): 1 is p90, 2 p99, 3 p99.9. A plain
/// 0–1 axis squeezes the tail, where the arms differ, into its top pixels.
fn nines(fraction: f64) -> f64 {
    -(1.0 - fraction.min(0.9999)).log10()
}

/// A tail comparison's latency distributions: one line per arm that ran, latency (ms, log
/// scale) against the percentile (on a "nines" scale: p50, p90, p99, p99.9, p99.99).
pub fn tail_cdf_svg(r: &TailResult) -> anyhow::Result<String> {
    let ran: Vec<_> = r.arms.iter().filter(|a| !a.cdf.is_empty()).collect();
    let (lo, hi) = ran
        .iter()
        .flat_map(|a| a.cdf.iter().map(|p| p.latency_us / 1e3))
        .filter(|x| *x > 0.0)
        .fold((f64::INFINITY, 0.0_f64), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
    let (lo, hi) = if lo.is_finite() {
        (lo * 0.8, hi * 1.25)
    } else {
        (0.01, 1.0)
    };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "End-to-end latency at {:.0} req/s (open loop), per arm",
                    r.rate_rps
                ),
                ("sans-serif", 20),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..4.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("latency from the intended send time (ms, log scale)")
            .y_desc("percentile")
            .y_labels(5)
            .y_label_formatter(&|y: &f64| match y.round() as i64 {
                0 => "p0".into(),
                1 => "p90".into(),
                2 => "p99".into(),
                3 => "p99.9".into(),
                _ => "p99.99".into(),
            })
            .draw()
            .map_err(err)?;
        for (i, a) in ran.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<(f64, f64)> = a
                .cdf
                .iter()
                .filter(|p| p.latency_us > 0.0)
                .map(|p| (p.latency_us / 1e3, nines(p.fraction)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(err)?
                .label(a.arm.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        if !ran.is_empty() {
            legend(&mut chart)?;
        }
        root.present().map_err(err)?;
    }
    Ok(out)
}

/// Writes the profile plot to `path` (SVG).
pub fn write_profile_svg(result: &ProfileResult, path: &Path) -> anyhow::Result<()> {
    let svg = profile_svg(result)?;
    std::fs::write(path, svg).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// The profile plot as SVG text.
pub fn profile_svg(result: &ProfileResult) -> anyhow::Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let max_pct = result
            .curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.percent))
            .fold(0.0_f64, f64::max)
            .max(10.0);
        let max_y = result
            .curves
            .iter()
            .flat_map(|c| c.points.iter().filter_map(|p| p.predicted_rps))
            .fold(result.baseline_rps, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "Causal profile: predicted throughput (baseline {:.0} req/s)",
                    result.baseline_rps
                ),
                ("sans-serif", 20),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..max_pct * 1.05, 0.0..max_y.max(1.0))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("optimization of the service (% of its per-visit CPU time)")
            .y_desc("predicted end-to-end throughput (req/s)")
            .draw()
            .map_err(err)?;
        let base = result.baseline_rps;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, base), (max_pct * 1.05, base)],
                6,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(err)?
            .label("baseline")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        for (i, c) in result.curves.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<(f64, f64)> = std::iter::once((0.0, base))
                .chain(
                    c.points
                        .iter()
                        .filter_map(|p| p.predicted_rps.map(|y| (p.percent, y))),
                )
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(c.service.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(err)?;
        }
        legend(&mut chart)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

/// The series' legend, the same on every plot: upper left, on a translucent white box.
pub fn legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)
}

/// A plotters error as the reason a plot could not be drawn.
pub fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e}")
}

/// The class of a what-if's bars in the SVG: the web page and its tests find the bars by it.
const BAR_CLASS: &str = r#"class="bar""#;

/// One bar of a what-if chart: its label, value, interval and colour.
struct Bar {
    label: &'static str,
    value: f64,
    low: f64,
    high: f64,
    color: RGBColor,
}

/// The what-if as bars: baseline, slowed down, predicted and (when measured) truth, each with
/// its 95 % interval (an open-ended interval is drawn up to the frame).
pub fn what_if_svg(r: &WhatIfResult) -> anyhow::Result<String> {
    let mut bars = vec![
        Bar {
            label: "baseline",
            value: r.baseline_rps,
            low: r.baseline_ci_low,
            high: r.baseline_ci_high,
            color: COLORS[7],
        },
        Bar {
            label: "slowed down",
            value: r.slow_rps,
            low: r.slow_ci_low,
            high: r.slow_ci_high,
            color: RGBColor(188, 189, 34),
        },
        Bar {
            label: "predicted",
            value: r.predicted_rps,
            low: r.predicted_ci_low,
            high: r.predicted_ci_high,
            color: COLORS[0],
        },
    ];
    if let Some(t) = r.truth_rps {
        bars.push(Bar {
            label: "truth",
            value: t,
            low: r.truth_ci_low.unwrap_or(t),
            high: r.truth_ci_high.unwrap_or(t),
            color: COLORS[2],
        });
    }
    let top = bars
        .iter()
        .flat_map(|b| [b.value, b.high])
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let labels: Vec<&str> = bars.iter().map(|b| b.label).collect();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (640, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("what if {}: {}", r.target, r.optimization),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            // A discrete range includes its end: bars 0..=n-1, one segment each.
            .build_cartesian_2d((0..bars.len() - 1).into_segmented(), 0.0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    labels.get(*i).copied().unwrap_or_default().to_owned()
                }
                SegmentValue::Last => String::new(),
            })
            .y_desc("throughput (req/s)")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                let mut rect = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), b.value.max(0.0)),
                    ],
                    b.color.filled(),
                );
                rect.set_margin(0, 0, 20, 20);
                rect
            }))
            .map_err(err)?;
        for (i, b) in bars.iter().enumerate() {
            let high = if b.high.is_finite() { b.high } else { top };
            if b.low.is_finite() && high > b.low {
                let x = SegmentValue::CenterOf(i);
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x.clone(), b.low), (x, high)],
                        BLACK.stroke_width(1),
                    )))
                    .map_err(err)?;
            }
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{:.0}", b.value),
                    (SegmentValue::CenterOf(i), b.value.max(0.0)),
                    ("sans-serif", 13)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(mark_bars(&out, &bars))
}

/// Gives the bars' rectangles their class: plotters writes each filled rectangle as one
/// `<rect .../>` line with its `fill`, and no other rectangle has a bar's colour.
fn mark_bars(svg: &str, bars: &[Bar]) -> String {
    let fills: Vec<String> = bars
        .iter()
        .map(|b| {
            let RGBColor(r, g, bl) = b.color;
            format!(r##"fill="#{r:02X}{g:02X}{bl:02X}""##)
        })
        .collect();
    let mut out = String::with_capacity(svg.len() + 16 * bars.len());
    for line in svg.lines() {
        match line.strip_prefix("<rect ") {
            Some(rest) if fills.iter().any(|f| rest.contains(f.as_str())) => {
                out.push_str("<rect ");
                out.push_str(BAR_CLASS);
                out.push(' ');
                out.push_str(rest);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_marked_by_their_colour_only() {
        let bars = [Bar {
            label: "predicted",
            value: 1.0,
            low: 1.0,
            high: 1.0,
            color: COLORS[0],
        }];
        let svg =
            "<svg>\n<rect x=\"0\" fill=\"#FFFFFF\"/>\n<rect x=\"1\" fill=\"#1F77B4\"/>\n</svg>\n";
        assert_eq!(
            mark_bars(svg, &bars),
            "<svg>\n<rect x=\"0\" fill=\"#FFFFFF\"/>\n<rect class=\"bar\" x=\"1\" fill=\"#1F77B4\"/>\n</svg>\n"
        );
    }
}
