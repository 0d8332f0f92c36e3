//! The evaluation plot (`plot.svg` of `slowpoke eval`). It lives with the evaluation, drawing
//! with the profile plot's colours, so that `plot` need not know the evaluation's points (which
//! made the two modules import each other).

use plotters::prelude::*;

use crate::summary::Point;
use slowpoke_coordinator::plot::{COLORS, err, legend};

/// The evaluation plot: predicted vs true throughput, one colour per family, the diagonal and
/// ±5 % lines; hollow marks are points not scored (true gain under 10 %).
pub fn eval_svg(points: &[Point]) -> anyhow::Result<String> {
    let measured: Vec<_> = points
        .iter()
        .filter_map(|p| Some((p, p.predicted_rps?, p.truth_rps?)))
        .collect();
    let max = measured
        .iter()
        .map(|&(_, a, b)| a.max(b))
        .fold(100.0, f64::max)
        * 1.08;
    let mut families: Vec<&str> = measured.iter().map(|(p, _, _)| p.family.as_str()).collect();
    families.sort_unstable();
    families.dedup();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (820, 720)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Predicted vs true throughput ({} points)", measured.len()),
                ("sans-serif", 20),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..max, 0.0..max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("true throughput, ground truth (req/s)")
            .y_desc("predicted throughput (req/s)")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(vec![(0.0, 0.0), (max, max)], BLACK))
            .map_err(err)?
            .label("prediction = truth")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        for k in [0.95, 1.05] {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.0, 0.0), (max, max * k)],
                    5,
                    4,
                    RGBColor(150, 150, 150).stroke_width(1),
                ))
                .map_err(err)?;
        }
        for (i, fam) in families.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let mine: Vec<_> = measured
                .iter()
                .filter(|(p, _, _)| p.family == *fam)
                .collect();
            chart
                .draw_series(mine.iter().map(|&&(p, pred, truth)| {
                    let style = if p.is_real_test() {
                        color.filled()
                    } else {
                        color.stroke_width(1)
                    };
                    Circle::new((truth, pred), 4, style)
                }))
                .map_err(err)?
                .label(*fam)
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
        }
        legend(&mut chart)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}
