//! Rail 2: no product source file over [`MAX_LINES`] lines.
//!
//! Product code is every `src/**/*.rs` of a workspace member; `tests/`, `examples/` and `benches/`
//! are not, and neither is the test kit (`testkit/src`, see [`TEST_KIT_PACKAGES`]). Files that may
//! still exceed the limit until a named issue splits them are listed, with the reason, in
//! [`ALLOW_LIST`]; a listed file that now fits (or is gone) is itself a finding, so the list only
//! shrinks. Why: a file this long holds several concerns, and nobody reads it whole before
//! changing it.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use serde::Deserialize;

use super::{
    Finding, Rail,
    workspace::{TEST_KIT_PACKAGES, Workspace, rust_files},
};

pub const MAX_LINES: usize = 800;
/// Workspace-relative path of the allow-list.
pub const ALLOW_LIST: &str = "xtask/rails-allow.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowList {
    #[serde(default)]
    pub oversize: Vec<Allowed>,
}

/// A file that may exceed the limit for now.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowed {
    /// Workspace-relative, e.g. `slowpoke-coordinator/src/experiment.rs`.
    pub path: String,
    /// Why it is still this long.
    pub reason: String,
    /// The issue whose work brings it under the limit.
    pub issue: String,
}

impl AllowList {
    pub fn parse(text: &str) -> Result<Self> {
        toml::from_str(text).with_context(|| {
            format!(
                "{ALLOW_LIST} is not a valid allow-list: it holds [[oversize]] tables with \
                 path, reason and issue"
            )
        })
    }
}

pub fn check(ws: &Workspace) -> Result<Vec<Finding>> {
    let allow = match std::fs::read_to_string(ws.root.join(ALLOW_LIST)) {
        Ok(text) => AllowList::parse(&text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => AllowList::default(),
        Err(e) => return Err(e).with_context(|| format!("reading {ALLOW_LIST}")),
    };
    let mut lines = BTreeMap::new();
    for member in &ws.members {
        if TEST_KIT_PACKAGES.contains(&member.name.as_str()) {
            continue;
        }
        for file in rust_files(&member.dir.join("src"))? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            lines.insert(ws.relative(&file), text.lines().count());
        }
    }
    Ok(judge(&lines, &allow))
}

/// The findings for these line counts (workspace-relative path → lines) against the allow-list.
pub fn judge(lines: &BTreeMap<String, usize>, allow: &AllowList) -> Vec<Finding> {
    let listed: BTreeMap<&str, &Allowed> = allow
        .oversize
        .iter()
        .map(|a| (a.path.as_str(), a))
        .collect();
    let mut findings = Vec::new();
    for (path, &n) in lines {
        if n > MAX_LINES && !listed.contains_key(path.as_str()) {
            findings.push(Finding {
                rail: Rail::FileSize,
                subject: path.clone(),
                count: n as u64,
                limit: MAX_LINES as u64,
                message: format!(
                    "{n} lines, over the limit of {MAX_LINES} for a product source file"
                ),
                fix: "split it by concern into a folder of smaller modules (one job each); only \
                      if a planned issue splits it, list it in xtask/rails-allow.toml with the \
                      reason and the issue"
                    .to_owned(),
            });
        }
    }
    for entry in &allow.oversize {
        let empty = |s: &str| s.trim().is_empty();
        let (count, message) = match lines.get(&entry.path) {
            _ if empty(&entry.reason) || empty(&entry.issue) => (
                0,
                "the allow-list entry needs a reason and the issue that removes it".to_owned(),
            ),
            Some(&n) if n > MAX_LINES => continue,
            Some(&n) => (
                n,
                format!(
                    "{n} lines: within the limit of {MAX_LINES} now, yet still on the allow-list"
                ),
            ),
            None => (
                0,
                "not a product source file (any more), yet on the allow-list".to_owned(),
            ),
        };
        findings.push(Finding {
            rail: Rail::FileSize,
            subject: entry.path.clone(),
            count: count as u64,
            limit: MAX_LINES as u64,
            message,
            fix: format!(
                "remove it from {ALLOW_LIST} (the list only shrinks), or give it a reason and an issue"
            ),
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(paths: &[&str]) -> AllowList {
        AllowList {
            oversize: paths
                .iter()
                .map(|p| Allowed {
                    path: (*p).to_owned(),
                    reason: "split later".to_owned(),
                    issue: "#99".to_owned(),
                })
                .collect(),
        }
    }

    fn counts(files: &[(&str, usize)]) -> BTreeMap<String, usize> {
        files.iter().map(|(p, n)| ((*p).to_owned(), *n)).collect()
    }

    #[test]
    fn a_file_over_the_limit_is_a_finding_unless_listed() {
        let lines = counts(&[
            ("a/src/big.rs", 801),
            ("a/src/ok.rs", 800),
            ("b/src/huge.rs", 2000),
        ]);
        let findings = judge(&lines, &allow(&["b/src/huge.rs"]));
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].subject, "a/src/big.rs");
        assert_eq!((findings[0].count, findings[0].limit), (801, 800));
    }

    #[test]
    fn a_listed_file_that_fits_or_is_gone_must_leave_the_list() {
        let lines = counts(&[("a/src/was_big.rs", 700)]);
        let findings = judge(&lines, &allow(&["a/src/was_big.rs", "a/src/deleted.rs"]));
        let subjects: Vec<&str> = findings.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(subjects, ["a/src/was_big.rs", "a/src/deleted.rs"]);
        assert!(findings.iter().all(|f| f.fix.contains("remove it")));
    }

    #[test]
    fn an_entry_needs_a_reason_and_an_issue() {
        let lines = counts(&[("a/src/big.rs", 900)]);
        let mut list = allow(&["a/src/big.rs"]);
        list.oversize[0].issue = " ".to_owned();
        assert_eq!(judge(&lines, &list).len(), 1);
    }

    #[test]
    fn the_allow_list_is_parsed_strictly() {
        let list = AllowList::parse(
            "[[oversize]]\npath = \"x/src/a.rs\"\nreason = \"r\"\nissue = \"#1\"\n",
        )
        .expect("valid list");
        assert_eq!(list.oversize.len(), 1);
        assert!(AllowList::parse("[[oversize]]\npath = \"x\"\nreasn = \"typo\"\n").is_err());
    }

    #[test]
    fn the_repositorys_allow_list_parses() {
        let text = include_str!("../../rails-allow.toml");
        let list = AllowList::parse(text).expect("xtask/rails-allow.toml parses");
        assert!(
            list.oversize
                .iter()
                .all(|a| !a.reason.is_empty() && !a.issue.is_empty())
        );
    }
}
