//! `slowpoke tail enable | status | disable`: a schedule on the agents of an app, by hand.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use slowpoke_api::agent::{self as api, SchedulingPlan, SchedulingPolicy};
use slowpoke_api::coordinator::TailSchedule;
use slowpoke_coordinator::agents::{
    self, HttpAgent, SharedAgent, clear_scheduling_everywhere, set_scheduling_everywhere,
};
use slowpoke_coordinator::experiment::Monitor;
use slowpoke_coordinator::experiment::tail::check_schedule;
use slowpoke_coordinator::lease::Lease;
use slowpoke_coordinator::schedule::ScheduleGuard;

use crate::common::{AgentArgs, lease_arg};
use crate::connect::{connect, named_agents};
use crate::progress::{cancel_on_signal, runtime};

/// Who holds a schedule put by hand, unless --owner says otherwise.
const DEFAULT_OWNER: &str = "slowpoke-tail";

/// The schedule's knobs (the agents' defaults when not given).
#[derive(Args, Debug, Default)]
pub(crate) struct ScheduleArgs {
    /// Requests run first at once, in their order (the oldest at --priority, each younger one
    /// a level lower), 1 to 64 (agent default 1).
    #[arg(long, value_name = "N")]
    pub(crate) k: Option<u32>,
    /// Real-time priority of the oldest request's threads, 1 to 19, below the agent's 20
    /// (default 10).
    #[arg(long, value_name = "P")]
    pub(crate) priority: Option<u8>,
    /// A request older than this is no longer promoted, ms (default 1000).
    #[arg(long, value_name = "MS")]
    pub(crate) age_cap_ms: Option<u64>,
    /// Share of each CPU the promoted threads may hold, above 0 up to 0.9 (default 0.5).
    #[arg(long, value_name = "SHARE", allow_negative_numbers = true)]
    pub(crate) max_share: Option<f64>,
}

impl ScheduleArgs {
    pub(crate) fn schedule(&self) -> anyhow::Result<TailSchedule> {
        let s = TailSchedule {
            k: self.k,
            priority: self.priority,
            age_cap_ms: self.age_cap_ms,
            max_share: self.max_share,
        };
        check_schedule(&s)
            .map_err(|e| anyhow::anyhow!("{e} (--k, --priority, --age-cap-ms, --max-share)"))?;
        Ok(s)
    }
}

#[derive(Args, Debug)]
pub(crate) struct EnableArgs {
    /// A service to schedule: NAME=SELECTOR (registered on every agent first: port:8080,
    /// pid:123, comm:nginx, cgroup:/path) or NAME alone (already registered). Repeatable.
    #[arg(long = "service", value_name = "NAME[=SELECTOR]", required = true)]
    pub(crate) service: Vec<String>,
    /// `oldest-first` (by the age carried from the entry) or `per-service-fifo`.
    #[arg(long, default_value = "oldest-first", value_parser = parse_policy)]
    pub(crate) policy: SchedulingPolicy,
    #[command(flatten)]
    pub(crate) knobs: ScheduleArgs,
    #[command(flatten)]
    pub(crate) to: AgentArgs,
    /// Lease on the agents, seconds (default 15): renewed while this command runs; after it
    /// ends (or with --detach, after this long) every thread gets its policy back.
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub(crate) lease: Option<f64>,
    /// Who holds the schedule (default slowpoke-tail): `disable --owner` names it.
    #[arg(long, value_name = "ID", default_value = DEFAULT_OWNER)]
    pub(crate) owner: String,
    /// Put the schedule and exit: it lapses after --lease (nothing renews it).
    #[arg(long)]
    pub(crate) detach: bool,
    #[arg(long)]
    pub(crate) json: bool,
}

fn parse_policy(s: &str) -> Result<SchedulingPolicy, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("`{s}` is not a policy: oldest-first or per-service-fifo"))
}

#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) to: AgentArgs,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct DisableArgs {
    #[command(flatten)]
    pub(crate) to: AgentArgs,
    /// Whose schedule to remove (default slowpoke-tail; a comparison's is its result id).
    #[arg(long, value_name = "ID", default_value = DEFAULT_OWNER)]
    pub(crate) owner: String,
}

/// `--service` values: the selectors to register, and every name to schedule.
fn services(args: &[String]) -> anyhow::Result<(BTreeMap<String, api::ServiceSpec>, Vec<String>)> {
    let mut register = BTreeMap::new();
    let mut names = Vec::new();
    for s in args {
        let name = if s.contains('=') {
            let (name, spec) = slowpoke_api::selector::parse_service_arg(s)
                .map_err(|e| anyhow::anyhow!("--service {e}"))?;
            register.insert(name.clone(), spec);
            name
        } else if s.is_empty() {
            bail!("--service needs a name: NAME or NAME=SELECTOR");
        } else {
            s.clone()
        };
        if names.contains(&name) {
            bail!("--service `{name}` is given twice");
        }
        names.push(name);
    }
    Ok((register, names))
}

/// The agents `to` names, else the daemon on this node (never one in this process: a schedule
/// it held would end with the command).
fn remote_agents(to: &AgentArgs) -> anyhow::Result<Vec<SharedAgent>> {
    let named = named_agents(to)?;
    if !named.is_empty() {
        return Ok(named);
    }
    let state_dir = to.agent_state_dir.as_deref();
    let _ = agents::local_daemon(state_dir)?;
    let socket = format!("unix:{}", agents::local_socket(state_dir).display());
    Ok(vec![Arc::new(HttpAgent::new(&socket, None)) as SharedAgent])
}

fn describe(p: &SchedulingPlan) -> String {
    let policy = serde_json::to_value(p.policy)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut knobs = Vec::new();
    if let Some(k) = p.k {
        knobs.push(format!("k {k}"));
    }
    if let Some(pr) = p.priority {
        knobs.push(format!("priority {pr}"));
    }
    if let Some(c) = p.age_cap_ms {
        knobs.push(format!("age cap {c} ms"));
    }
    if let Some(m) = p.max_share {
        knobs.push(format!("share {m}"));
    }
    let lease = p
        .lease_remaining_ms
        .map(|ms| format!(", lease {:.1} s left", ms as f64 / 1e3))
        .unwrap_or_default();
    let owner = p.owner.as_deref().unwrap_or("anonymous");
    format!(
        "{policy} on {}{} (owner {owner}{lease})",
        p.services.join(", "),
        if knobs.is_empty() {
            String::new()
        } else {
            format!(" [{}]", knobs.join(", "))
        }
    )
}

pub(crate) fn enable(a: &EnableArgs) -> anyhow::Result<()> {
    let knobs = a.knobs.schedule()?;
    let (register, names) = services(&a.service)?;
    let lease_len = a
        .lease
        .map_or(Ok(slowpoke_coordinator::lease::DEFAULT_LEASE), lease_arg)?;
    let lease = Lease::new(&a.owner, lease_len);
    if lease.owner() != a.owner {
        bail!("--owner may hold letters, digits and . _ : @ - only (at most 128)");
    }
    let rt = runtime()?;
    let set = if a.detach {
        crate::connect::AgentSet::remote(remote_agents(&a.to)?)
    } else {
        connect(&rt, &a.to, None, None)?
    };
    let list = set.agents.clone();
    let r = enable_on(a, &list, &register, names, &knobs, lease, &rt);
    set.shutdown(&rt);
    r
}

fn enable_on(
    a: &EnableArgs,
    list: &[SharedAgent],
    register: &BTreeMap<String, api::ServiceSpec>,
    names: Vec<String>,
    knobs: &TailSchedule,
    lease: Lease,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    if !register.is_empty() {
        agents::register_services(list, register)?;
    }
    let plan = SchedulingPlan {
        policy: a.policy,
        services: names,
        k: knobs.k,
        priority: knobs.priority,
        age_cap_ms: knobs.age_cap_ms,
        max_share: knobs.max_share,
        owner: Some(lease.owner().to_owned()),
        lease_ms: Some(lease.millis()),
        lease_remaining_ms: None,
    };
    let report = |answers: &[SchedulingPlan]| -> anyhow::Result<()> {
        if a.json {
            println!("{}", serde_json::to_string(answers)?);
        } else {
            for (ag, p) in list.iter().zip(answers) {
                println!("{:<28} {}", agents::label(ag.as_ref()), describe(p));
            }
        }
        Ok(())
    };
    if a.detach {
        let answers = match set_scheduling_everywhere(list, &plan) {
            Ok(answers) => answers,
            Err(e) => {
                for e in clear_scheduling_everywhere(list, lease.owner()) {
                    eprintln!("warning: could not remove the schedule again: {e}");
                }
                return Err(e).context("the schedule was not put in force");
            }
        };
        report(&answers)?;
        eprintln!(
            "in force for {:.0} s (nothing renews it); `slowpoke tail disable --owner {}` removes it sooner",
            lease.duration().as_secs_f64(),
            lease.owner()
        );
        return Ok(());
    }
    let mut guard = ScheduleGuard::new(list, lease);
    let answers = guard
        .put(&plan)
        .context("the schedule was not put in force")?;
    report(&answers)?;
    eprintln!("holding the schedule (renewed every third of the lease); Ctrl-C removes it");
    let monitor = Monitor::new();
    cancel_on_signal(rt, &monitor);
    while !monitor.is_cancelled() {
        if let Some(lost) = guard.lost() {
            bail!(
                "the schedule's lease on agent {} could not be renewed ({}); it may have lapsed there",
                lost.agent,
                lost.detail
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let failures = guard.clear();
    for e in &failures {
        eprintln!("warning: could not remove the schedule: {e}");
    }
    if !register.is_empty() {
        agents::unregister_services(list, &register.keys().cloned().collect::<Vec<_>>());
    }
    if failures.is_empty() {
        eprintln!("schedule removed from every agent");
    }
    Ok(())
}

pub(crate) fn status(a: &StatusArgs) -> anyhow::Result<()> {
    let list = remote_agents(&a.to)?;
    let answers = agents::on_every_agent(&list, |ag| ag.scheduling());
    if a.json {
        let rows: Vec<serde_json::Value> = list
            .iter()
            .zip(&answers)
            .map(|(ag, r)| match r {
                Ok(p) => serde_json::json!({"agent": ag.name(), "url": ag.url(), "schedule": p}),
                Err(e) => {
                    serde_json::json!({"agent": ag.name(), "url": ag.url(), "error": e.to_string()})
                }
            })
            .collect();
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        for (ag, r) in list.iter().zip(&answers) {
            let line = match r {
                Ok(Some(p)) => describe(p),
                Ok(None) => "no schedule".into(),
                Err(e) => format!("error: {e}"),
            };
            println!("{:<28} {line}", agents::label(ag.as_ref()));
        }
    }
    let failed = answers.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        bail!("{failed} of {} agents did not answer", list.len());
    }
    Ok(())
}

pub(crate) fn disable(a: &DisableArgs) -> anyhow::Result<()> {
    let list = remote_agents(&a.to)?;
    let failures: Vec<_> = agents::on_every_agent(&list, |ag| ag.clear_scheduling(&a.owner))
        .into_iter()
        .zip(&list)
        .filter_map(|(r, ag)| r.err().map(|e| (ag.name(), e)))
        .collect();
    for (name, e) in &failures {
        eprintln!("{name}: {e}");
    }
    if failures.is_empty() {
        println!(
            "no schedule of {} left on any of the {} agent(s)",
            a.owner,
            list.len()
        );
        Ok(())
    } else {
        bail!(
            "the schedule could not be removed from {} of {} agents",
            failures.len(),
            list.len()
        )
    }
}
