//! Counting the tests a `cargo test` run executed. Cargo prints one `test result:` line per test
//! binary and no total. The test run's output is passed through unchanged while its `test
//! result:` lines are summed; the fuzz and schemathesis runs after it write their own chatter
//! (libFuzzer's progress, schemathesis's pytest-like report) to log files under `target/`, and
//! `xtask test` closes with one plain line, `tests: N passed, N failed, N skipped`, that anyone
//! (and CI) can read. An unfiltered run that passed no test fails.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{Context as _, Result};

/// The sum of the `test result:` lines of one or more test binaries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// Test binaries that reported (one `test result:` line each).
    pub binaries: u64,
}

impl Tally {
    /// Adds one libtest summary line (`test result: ok. 3 passed; 0 failed; 1 ignored; ...`);
    /// any other line is ignored.
    pub(crate) fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result:") else {
            return;
        };
        self.binaries += 1;
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = count.parse::<u64>() else {
                continue;
            };
            match kind {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }

    /// The closing line: `tests: N passed, N failed, N skipped`.
    pub(crate) fn closing_line(&self) -> String {
        format!(
            "tests: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.ignored
        )
    }
}

/// Runs `cmd` with its standard output passed through line by line, counting its test results.
pub(crate) fn run_counting(cmd: &mut Command) -> Result<(ExitStatus, Tally)> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: {shown}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let mut tally = Tally::default();
    if let Some(out) = child.stdout.take() {
        let mut stdout = std::io::stdout();
        for line in BufReader::new(out).lines() {
            // A test may print bytes that are not UTF-8: pass on what can be read, keep going.
            let Ok(line) = line else { continue };
            tally.add_line(&line);
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for {shown}"))?;
    Ok((status, tally))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines_are_summed_and_other_lines_ignored() {
        let mut t = Tally::default();
        for line in [
            "running 3 tests",
            "test a ... ok",
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test result: FAILED. 5 passed; 2 failed; 0 ignored; 0 measured; 4 filtered out; finished in 9.20s",
            "   test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            "some output mentioning 7 passed",
        ] {
            t.add_line(line);
        }
        assert_eq!(
            t,
            Tally {
                passed: 8,
                failed: 2,
                ignored: 1,
                binaries: 3
            }
        );
        assert_eq!(t.closing_line(), "tests: 8 passed, 2 failed, 1 skipped");
    }
}
