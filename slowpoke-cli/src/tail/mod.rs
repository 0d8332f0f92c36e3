//! `slowpoke tail`: the agents' tail-latency scheduling (docs/tail.md) across the agents of an
//! app: `enable` puts a schedule on them and holds it, `status` shows what is in force,
//! `disable` removes it, `compare` measures the app's latency with and without it.

mod compare;
mod schedule;

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub(crate) struct TailArgs {
    #[command(subcommand)]
    pub(crate) action: TailAction,
}

#[derive(Subcommand, Debug)]
pub(crate) enum TailAction {
    /// Put a tail schedule on every agent and hold it (renewed) until Ctrl-C, or --detach.
    Enable(schedule::EnableArgs),
    /// The schedule in force on each agent.
    Status(schedule::StatusArgs),
    /// Remove a schedule from every agent.
    Disable(schedule::DisableArgs),
    /// Latency under open-loop load: default scheduling vs oldest-first vs per-service FIFO.
    Compare(Box<compare::CompareArgs>),
}

pub(crate) fn tail(a: TailArgs) -> anyhow::Result<()> {
    match a.action {
        TailAction::Enable(e) => schedule::enable(&e),
        TailAction::Status(s) => schedule::status(&s),
        TailAction::Disable(d) => schedule::disable(&d),
        TailAction::Compare(c) => compare::compare(&c),
    }
}
