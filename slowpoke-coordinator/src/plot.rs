//! The causal profile as an SVG: predicted throughput vs optimization (% of each service's
//! per-visit time), one line per service, with the baseline as a dashed reference.

use std::path::Path;

use plotters::prelude::*;

use crate::experiment::ProfileResult;

/// The series colours, shared with the evaluation plot (`eval::plot`).
pub(crate) const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

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
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

pub(crate) fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e}")
}
