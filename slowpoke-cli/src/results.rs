//! `slowpoke results`: list or show stored results.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use slowpoke_coordinator::report;
use slowpoke_coordinator::results::{self, ResultStore, StoredResult};

#[derive(Args, Debug)]
pub(crate) struct ResultsArgs {
    #[command(subcommand)]
    pub(crate) action: ResultsAction,
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) results_dir: Option<PathBuf>,
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ResultsAction {
    /// Every stored result, oldest first.
    List,
    /// One result (an id or a unique prefix of one).
    Show { id: String },
}

pub(crate) fn results_cmd(a: &ResultsArgs) -> anyhow::Result<()> {
    let store = ResultStore::new(
        a.results_dir
            .clone()
            .unwrap_or_else(ResultStore::default_dir),
    );
    match &a.action {
        ResultsAction::List => {
            let list = store.list()?;
            if a.json {
                println!("{}", serde_json::to_string(&list)?);
            } else if list.is_empty() {
                println!("no results in {}", store.dir().display());
            } else {
                for r in list {
                    println!("{:<44} {:<8} {}", r.id, r.kind, r.summary);
                }
            }
        }
        ResultsAction::Show { id } => {
            let r = store.load(id)?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                match &r {
                    StoredResult::WhatIf(w) => print!("{}", report::what_if_table(w)),
                    StoredResult::Profile(p) => print!("{}", report::profile_table(p)),
                    StoredResult::Tail(t) => print!("{}", report::tail_table(t)),
                }
                println!("({})", results::summarize(&r).created);
            }
        }
    }
    Ok(())
}
