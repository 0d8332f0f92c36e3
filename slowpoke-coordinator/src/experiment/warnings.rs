//! The warnings an experiment collects for its result: most are said once however many windows
//! show them, and the unregistered dependencies (there can be hundreds) become one summary line.

use std::collections::BTreeSet;

/// The warnings so far, in the order they were first seen.
#[derive(Debug, Default)]
pub(super) struct Warnings {
    lines: Vec<String>,
    /// Calls to endpoints of no registered service (`from -> addr:port (comm)`), any window.
    unregistered: BTreeSet<String>,
}

impl Warnings {
    /// Adds `line`, even if it was said before (each occurrence means something: another
    /// window, another point).
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

    pub(super) fn unregistered(&mut self, deps: impl IntoIterator<Item = String>) {
        self.unregistered.extend(deps);
    }

    /// Every warning, the unregistered dependencies summarized in one line; empties the list.
    pub(super) fn take(&mut self) -> Vec<String> {
        let mut w = std::mem::take(&mut self.lines);
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(lines[..3], ["a", "b", "b"]);
        assert!(
            lines[3].starts_with("7 unregistered dependencies"),
            "{}",
            lines[3]
        );
        assert!(lines[3].ends_with("10.0.0.4:80 (+2 more)"), "{}", lines[3]);
        assert!(w.take().is_empty());
    }
}
