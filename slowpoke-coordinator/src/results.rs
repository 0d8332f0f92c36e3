//! Results persist as one JSON file per experiment under a results directory, and can be listed
//! and read back.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::experiment::{ProfileResult, WhatIfResult};
use slowpoke_api::coordinator::{TailArm, TailResult};

/// Anything stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // one per experiment: boxing buys nothing
pub enum StoredResult {
    WhatIf(WhatIfResult),
    Profile(ProfileResult),
    /// A tail comparison (`slowpoke tail compare`).
    Tail(TailResult),
}

impl StoredResult {
    pub fn id(&self) -> &str {
        match self {
            StoredResult::WhatIf(r) => &r.id,
            StoredResult::Profile(r) => &r.id,
            StoredResult::Tail(r) => &r.id,
        }
    }
}

/// One line of `results list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultSummary {
    pub id: String,
    pub kind: String,
    pub created: String,
    /// e.g. `cart 2x speedup: 5990 req/s predicted (+135 %)`.
    pub summary: String,
}

/// A directory of results.
#[derive(Debug, Clone)]
pub struct ResultStore {
    dir: PathBuf,
}

impl ResultStore {
    pub fn new(dir: impl Into<PathBuf>) -> ResultStore {
        ResultStore { dir: dir.into() }
    }

    /// `$SLOWPOKE_RESULTS_DIR`, else `$XDG_STATE_HOME/slowpoke/results`, else `./results`.
    pub fn default_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("SLOWPOKE_RESULTS_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
            return Path::new(&d).join("slowpoke").join("results");
        }
        PathBuf::from("results")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the result (atomically: temp file + rename); returns its path.
    pub fn save(&self, r: &StoredResult) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir).with_context(|| {
            format!("cannot create the results directory {}", self.dir.display())
        })?;
        let path = self.dir.join(format!("{}.json", r.id()));
        let tmp = self.dir.join(format!(".{}.json.tmp", r.id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(r)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// Reads one result by id (or a unique prefix of one).
    pub fn load(&self, id: &str) -> anyhow::Result<StoredResult> {
        let exact = self.dir.join(format!("{id}.json"));
        let path = if exact.is_file() {
            exact
        } else {
            let ids = self.ids()?;
            let matches: Vec<&String> = ids.iter().filter(|i| i.starts_with(id)).collect();
            match matches.as_slice() {
                [one] => self.dir.join(format!("{one}.json")),
                [] => anyhow::bail!(
                    "no result `{id}` in {} (see `slowpoke results list`)",
                    self.dir.display()
                ),
                _ => anyhow::bail!(
                    "`{id}` matches {} results: give more of the id",
                    matches.len()
                ),
            }
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a slowpoke result", path.display()))
    }

    fn ids(&self) -> anyhow::Result<Vec<String>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", self.dir.display())),
        };
        let mut ids: Vec<String> = rd
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                if name.starts_with('.') {
                    return None;
                }
                name.strip_suffix(".json").map(str::to_owned)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Every result, oldest first (unreadable files are skipped).
    pub fn list(&self) -> anyhow::Result<Vec<ResultSummary>> {
        Ok(self
            .ids()?
            .into_iter()
            .filter_map(|id| self.load(&id).ok())
            .map(|r| summarize(&r))
            .collect())
    }
}

/// `at 400 req/s p99: default 8.4 ms, oldest-first 4.1 ms (-51 %), per-service-fifo not run`.
fn tail_summary(t: &TailResult) -> String {
    let arms: Vec<String> = t
        .arms
        .iter()
        .map(|a| match (&a.p99_us, &a.p99_vs_default) {
            (Some(p), Some(r)) if a.arm != TailArm::Default => format!(
                "{} {:.2} ms ({:+.0} %)",
                a.arm,
                p.value / 1e3,
                (r.value - 1.0) * 100.0
            ),
            (Some(p), _) => format!("{} {:.2} ms", a.arm, p.value / 1e3),
            (None, _) => format!("{} not run", a.arm),
        })
        .collect();
    format!("at {:.0} req/s p99: {}", t.rate_rps, arms.join(", "))
}

/// A one-line summary of a result.
pub fn summarize(r: &StoredResult) -> ResultSummary {
    match r {
        StoredResult::WhatIf(w) => ResultSummary {
            id: w.id.clone(),
            kind: "what-if".into(),
            created: w.created.clone(),
            summary: format!(
                "{} {}: {:.0} -> {:.0} req/s predicted ({:+.1} %){}",
                w.target,
                w.optimization,
                w.baseline_rps,
                w.predicted_rps,
                w.predicted_gain_pct,
                w.error_pct
                    .map(|e| format!(", truth {:.0}, error {e:+.1} %", w.truth_rps.unwrap_or(0.0)))
                    .unwrap_or_default()
            ),
        },
        StoredResult::Profile(p) => ResultSummary {
            id: p.id.clone(),
            kind: "profile".into(),
            created: p.created.clone(),
            summary: format!(
                "{} services, baseline {:.0} req/s, best: {}",
                p.curves.len(),
                p.baseline_rps,
                p.curves.first().map_or_else(
                    || "none".into(),
                    |c| format!("{} ({:+.1} %)", c.service, c.max_gain_pct.unwrap_or(0.0))
                )
            ),
        },
        StoredResult::Tail(t) => ResultSummary {
            id: t.id.clone(),
            kind: "tail".into(),
            created: t.created.clone(),
            summary: tail_summary(t),
        },
    }
}
