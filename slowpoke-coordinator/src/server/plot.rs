//! SVG charts of results for the API: a what-if as bars with 95 % intervals (self-contained, no
//! fonts, no scripts); a profile through the library's [`crate::plot::profile_svg`].

use std::fmt::Write as _;

use crate::experiment::WhatIfResult;
use crate::results::StoredResult;

const W: f64 = 640.0;
const H: f64 = 360.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// The chart of any stored result.
pub fn svg(r: &StoredResult) -> anyhow::Result<String> {
    match r {
        StoredResult::WhatIf(w) => Ok(what_if(w)),
        StoredResult::Profile(p) => crate::plot::profile_svg(p),
    }
}

/// Escapes text for SVG/XML (service names come from users).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A "nice" tick step (1, 2 or 5 × 10^k) giving about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let raw = span / n;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.abs() >= 100.0 || v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

struct Frame {
    out: String,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn new(title: &str, y_label: &str, y0: f64, y1: f64) -> Frame {
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12"><rect width="{W}" height="{H}" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
            W / 2.0,
            escape(title)
        );
        let _ = write!(
            out,
            r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + (H - TOP - BOTTOM) / 2.0,
            escape(y_label)
        );
        let mut f = Frame { out, y0, y1 };
        let step = nice_step(y1 - y0, 5.0);
        let mut t = (y0 / step).ceil() * step;
        while t <= y1 + step * 1e-9 {
            let y = f.y(t);
            let _ = write!(
                f.out,
                r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                W - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                fmt_num(t)
            );
            t += step;
        }
        let _ = write!(
            f.out,
            r#"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{}" stroke="black"/><line x1="{LEFT}" x2="{}" y1="{}" y2="{}" stroke="black"/>"#,
            H - BOTTOM,
            W - RIGHT,
            H - BOTTOM,
            H - BOTTOM
        );
        f
    }

    fn y(&self, v: f64) -> f64 {
        let frac = (v - self.y0) / (self.y1 - self.y0);
        H - BOTTOM - frac.clamp(-0.05, 1.05) * (H - TOP - BOTTOM)
    }

    fn finish(mut self) -> String {
        self.out.push_str("</svg>\n");
        self.out
    }
}

/// Bars: baseline, slowed down, predicted and (when measured) truth, each with its interval.
pub fn what_if(r: &WhatIfResult) -> String {
    let mut bars: Vec<(&str, f64, f64, f64, &str)> = vec![
        (
            "baseline",
            r.baseline_rps,
            r.baseline_ci_low,
            r.baseline_ci_high,
            "#7f7f7f",
        ),
        (
            "slowed down",
            r.slow_rps,
            r.slow_ci_low,
            r.slow_ci_high,
            "#bcbd22",
        ),
        (
            "predicted",
            r.predicted_rps,
            r.predicted_ci_low,
            r.predicted_ci_high,
            "#1f77b4",
        ),
    ];
    if let Some(t) = r.truth_rps {
        bars.push((
            "truth",
            t,
            r.truth_ci_low.unwrap_or(t),
            r.truth_ci_high.unwrap_or(t),
            "#2ca02c",
        ));
    }
    let top = bars
        .iter()
        .flat_map(|b| [b.1, b.3])
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let title = format!("what if {}: {}", r.target, r.optimization);
    let mut f = Frame::new(&title, "throughput (req/s)", 0.0, top);
    let slot = (W - LEFT - RIGHT) / bars.len() as f64;
    for (i, (label, v, lo, hi, color)) in bars.iter().enumerate() {
        let x = LEFT + slot * (i as f64 + 0.2);
        let bw = slot * 0.6;
        let y = f.y(*v);
        let _ = write!(
            f.out,
            r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{:.1}" fill="{color}"><title>{label}: {v:.0} req/s</title></rect>"#,
            (H - BOTTOM - y).max(0.0)
        );
        let cx = x + bw / 2.0;
        // An open-ended interval (null top) is drawn up to the frame.
        let hi = if hi.is_finite() { *hi } else { top };
        if lo.is_finite() && (hi - lo) > 0.0 {
            let (ylo, yhi) = (f.y(*lo), f.y(hi));
            let _ = write!(
                f.out,
                r#"<path d="M{cx:.1} {ylo:.1}V{yhi:.1}M{:.1} {ylo:.1}h12M{:.1} {yhi:.1}h12" stroke="black" fill="none"/>"#,
                cx - 6.0,
                cx - 6.0
            );
        }
        let _ = write!(
            f.out,
            r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text>"#,
            H - BOTTOM + 16.0,
            label,
            (y - 6.0).max(TOP - 4.0),
            fmt_num(*v)
        );
    }
    f.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert!((nice_step(6000.0, 5.0) - 2000.0).abs() < 1e-9);
        assert!((nice_step(5000.0, 5.0) - 1000.0).abs() < 1e-9);
        assert!((nice_step(7.0, 5.0) - 2.0).abs() < 1e-9);
        assert!((nice_step(0.0, 5.0) - 1.0).abs() < 1e-9);
        assert_eq!(escape("<a&'b\">"), "&lt;a&amp;&#39;b&quot;&gt;");
    }
}
