//! The warnings an experiment collects for its result, each said once: the same line from
//! many windows or points becomes one line with its count, lines that differ only in their
//! numbers (an agent's cumulative dropped debt, one per window) become one line with each
//! number's range, the safety cap's dropped debt becomes one line naming the windows, and the
//! unregistered dependencies (there can be hundreds) one summary line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// The warnings so far, in the order they were first seen.
#[derive(Debug, Default)]
pub(super) struct Warnings {
    lines: Vec<String>,
    /// Calls to endpoints of no registered service (`from -> addr:port (comm)`), any window.
    unregistered: BTreeSet<String>,
    /// Windows in which the agents' safety cap dropped pause debt, per set of services
    /// (`` `a`, `b` ``): their phases in order.
    cap_drops: BTreeMap<String, Vec<String>>,
}

impl Warnings {
    /// Adds `line`, even if it was said before (each occurrence means something: another
    /// window, another point; [`Warnings::take`] counts them).
    pub(super) fn push(&mut self, line: String) {
        self.lines.push(line);
    }

    /// Adds `line` unless it was said before.
    pub(super) fn once(&mut self, line: String) {
        if !self.lines.contains(&line) {
            self.lines.push(line);
        }
    }

    /// True when a line starting with `prefix` was said (for warnings whose numbers vary).
    pub(super) fn said(&self, prefix: &str) -> bool {
        self.lines.iter().any(|w| w.starts_with(prefix))
    }

    /// Forgets the lines starting with `prefix`: a later, more specific warning says the same.
    pub(super) fn forget(&mut self, prefix: &str) {
        self.lines.retain(|w| !w.starts_with(prefix));
    }

    pub(super) fn unregistered(&mut self, deps: impl IntoIterator<Item = String>) {
        self.unregistered.extend(deps);
    }

    /// The agents' safety cap dropped pause debt of `services` in the window `phase`.
    pub(super) fn cap_dropped(&mut self, services: String, phase: &str) {
        self.cap_drops
            .entry(services)
            .or_default()
            .push(phase.to_owned());
    }

    /// Every warning, collapsed (see the module's doc); empties the list.
    pub(super) fn take(&mut self) -> Vec<String> {
        let mut w = collapse(&std::mem::take(&mut self.lines));
        for (services, phases) in std::mem::take(&mut self.cap_drops) {
            let n = phases.len();
            let mut counted: Vec<(String, usize)> = Vec::new();
            for p in phases {
                match counted.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, k)) => *k += 1,
                    None => counted.push((p, 1)),
                }
            }
            let list: Vec<String> = counted
                .into_iter()
                .map(|(p, k)| if k > 1 { format!("{p} ×{k}") } else { p })
                .collect();
            let windows = if n == 1 { "window" } else { "windows" };
            w.push(format!(
                "the agents' safety cap dropped pause debt of {services} in {n} {windows} ({}): those windows paused less than planned",
                list.join(", ")
            ));
        }
        let deps = std::mem::take(&mut self.unregistered);
        if !deps.is_empty() {
            let n = deps.len();
            let shown: Vec<&str> = deps.iter().take(5).map(String::as_str).collect();
            let more = if n > 5 {
                format!(" (+{} more)", n - 5)
            } else {
                String::new()
            };
            w.push(format!(
                "{n} unregistered dependencies (calls to endpoints of no registered service: not paused, they bias the prediction; register them as services of the app): {}{more}",
                shown.join(", ")
            ));
        }
        w
    }
}

/// A line cut into its text and its numbers: `text[0] num[0] text[1] num[1] ... text[n]`.
/// Numbers inside backticks (service names) or glued to a name (`s1`, `chain-6`, `10.0.0.4`)
/// are text, so lines about different services never merge.
struct Shape<'a> {
    text: Vec<&'a str>,
    nums: Vec<&'a str>,
}

impl<'a> Shape<'a> {
    fn of(line: &'a str) -> Shape<'a> {
        let b = line.as_bytes();
        let glued = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':');
        let (mut text, mut nums) = (Vec::new(), Vec::new());
        let (mut start, mut i, mut quoted) = (0, 0, false);
        while i < b.len() {
            if b[i] == b'`' {
                quoted = !quoted;
            }
            if quoted || !b[i].is_ascii_digit() || (i > 0 && glued(b[i - 1])) {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j + 1 < b.len() && b[j] == b'.' && b[j + 1].is_ascii_digit() {
                j += 1;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
            }
            if j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                i = j;
                continue;
            }
            text.push(&line[start..i]);
            nums.push(&line[i..j]);
            start = j;
            i = j;
        }
        text.push(&line[start..]);
        Shape { text, nums }
    }
}

/// The lines grouped by shape (same text, numbers aside), in the order first seen: one line per
/// group, each number that varies shown as its range (`12.5–80.1`), and `(said N times)` when
/// the group has more than one line.
fn collapse(lines: &[String]) -> Vec<String> {
    let shapes: Vec<Shape<'_>> = lines.iter().map(|l| Shape::of(l)).collect();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, s) in shapes.iter().enumerate() {
        match groups.iter_mut().find(|g| shapes[g[0]].text == s.text) {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups
        .into_iter()
        .map(|g| {
            let first = &shapes[g[0]];
            let mut out = String::new();
            for (k, t) in first.text.iter().enumerate() {
                out.push_str(t);
                let Some(&n0) = first.nums.get(k) else { break };
                let value = |n: &str| n.parse::<f64>().unwrap_or(0.0);
                let all = g.iter().map(|&i| shapes[i].nums[k]);
                let lo = all.clone().min_by(|a, b| value(a).total_cmp(&value(b)));
                let hi = all.max_by(|a, b| value(a).total_cmp(&value(b)));
                match (lo, hi) {
                    (Some(lo), Some(hi)) if value(lo) < value(hi) => {
                        let _ = write!(out, "{lo}–{hi}");
                    }
                    _ => out.push_str(n0),
                }
            }
            if g.len() > 1 {
                let _ = write!(out, " (said {} times)", g.len());
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_line_is_gone_and_the_others_stay() {
        let mut w = Warnings::default();
        w.push("a node's CPUs were over 90 % busy".into());
        w.push("b".into());
        w.forget("a node's CPUs");
        assert!(!w.said("a node") && w.said("b"));
        assert_eq!(w.take(), ["b"]);
    }

    #[test]
    fn lines_said_once_stay_once_and_dependencies_are_summarized() {
        let mut w = Warnings::default();
        w.once("a".into());
        w.once("a".into());
        w.push("b".into());
        w.push("b".into());
        assert!(w.said("b") && !w.said("c"));
        w.unregistered((0..7).map(|i| format!("front -> 10.0.0.{i}:80")));
        w.unregistered(["front -> 10.0.0.0:80".to_owned()]);
        let lines = w.take();
        assert_eq!(lines[..2], ["a", "b (said 2 times)"]);
        assert!(
            lines[2].starts_with("7 unregistered dependencies"),
            "{}",
            lines[2]
        );
        assert!(lines[2].ends_with("10.0.0.4:80 (+2 more)"), "{}", lines[2]);
        assert!(w.take().is_empty());
    }

    #[test]
    fn lines_that_differ_in_their_numbers_collapse_into_one_with_ranges() {
        let mut w = Warnings::default();
        // An agent's cumulative dropped debt, one line per window.
        for ms in ["12.5", "80.1", "40.0"] {
            w.once(format!(
                "`db`: safety cap reached: {ms} ms of pause debt dropped (a service may be stopped at most 50 % of any 1000 ms)"
            ));
        }
        // Another service, numbers in names: never merged with `db` nor with each other.
        w.once("`s1`: safety cap reached: 3.0 ms of pause debt dropped (a service may be stopped at most 50 % of any 1000 ms)".into());
        w.once("`s2`: safety cap reached: 3.0 ms of pause debt dropped (a service may be stopped at most 50 % of any 1000 ms)".into());
        w.push("the entry URL answered HTTP 503 to a probe".into());
        assert_eq!(
            w.take(),
            [
                "`db`: safety cap reached: 12.5–80.1 ms of pause debt dropped (a service may be stopped at most 50 % of any 1000 ms) (said 3 times)",
                "`s1`: safety cap reached: 3.0 ms of pause debt dropped (a service may be stopped at most 50 % of any 1000 ms)",
                "`s2`: safety cap reached: 3.0 ms of pause debt dropped (a service may be stopped at most 50 % of any 1000 ms)",
                "the entry URL answered HTTP 503 to a probe",
            ]
        );
    }

    #[test]
    fn the_safety_caps_drops_become_one_line_per_services_naming_the_windows() {
        let mut w = Warnings::default();
        for phase in ["slow", "slow", "slow:web:50", "slow:web:70", "slow:web:70"] {
            w.cap_dropped("`db`".into(), phase);
        }
        w.cap_dropped("`cache`, `db`".into(), "slow:web:90");
        assert_eq!(
            w.take(),
            [
                "the agents' safety cap dropped pause debt of `cache`, `db` in 1 window (slow:web:90): those windows paused less than planned",
                "the agents' safety cap dropped pause debt of `db` in 5 windows (slow ×2, slow:web:50, slow:web:70 ×2): those windows paused less than planned",
            ]
        );
    }
}
