//! Registering, replacing, forgetting and listing services, and listing their members in the
//! state file (every member of every service, before the kernel learns it).

use std::{
    path::PathBuf,
    sync::{Arc, PoisonError},
};

use super::{
    Agent, Service,
    dispatch::KernelDebt,
    lock,
    resolver::{apply_resolution, listed_cgroups},
    unknown_service,
};
use crate::{
    actuator::{Actuator, ActuatorConfig},
    api::{ServiceInfo, ServiceList, ServiceSpec},
    error::AgentError,
    kernel::{MAX_SERVICES, ServiceId},
    registry::{self, CpuAccount, Resolved, SchedAccount, Selector},
    safety::protect::OUTSIDE_ALLOWED_CGROUPS,
};

impl Agent {
    /// Registers (or replaces) a service. Its selector must match at least one process now,
    /// unless the spec says the service `may_be_absent` from this node and nothing it matches
    /// is refused for another reason than lying outside `--allow-cgroup`.
    pub fn put_service(&self, name: &str, spec: ServiceSpec) -> Result<ServiceInfo, AgentError> {
        self.check_running()?;
        registry::validate_name(name)?;
        let selector = Selector::from_spec(&spec, &self.inner.cfg.pod_cgroup_roots)?;
        selector.check_process_ids()?;
        if let Selector::Pods(pods) = &selector {
            // The coordinator sends each agent its node's pods: one not found here is a
            // mismatch (another node, a restarted container) to report, not to wait for.
            let (_, missing) = registry::pods::dirs(pods);
            if !missing.is_empty() {
                return Err(registry::pods::not_found(pods, &missing));
            }
        }
        let protection = self.protection();
        let resolved = selector.resolve(spec.listen_ports.as_deref(), &protection, None)?;
        let elsewhere = resolved
            .excluded
            .iter()
            .all(|e| e.reason == OUTSIDE_ALLOWED_CGROUPS);
        if resolved.pids.is_empty() && !(spec.may_be_absent && elsewhere) {
            return Err(selector.nothing_matched(&resolved.excluded));
        }
        if !resolved.excluded.is_empty() {
            tracing::info!(service = name, excluded = ?resolved.excluded, "protected processes left out");
        }
        let mut st = lock(&self.inner.state);
        let st = &mut *st;
        // Listed before the kernel learns them (`apply_resolution` below): the kernel may stop a
        // member as soon as it knows it and a delay is set. The old members stay listed until
        // the kernel has forgotten them.
        if !st.services.contains_key(name) && st.services.len() >= MAX_SERVICES as usize {
            return Err(AgentError::Conflict(format!(
                "this agent tracks at most {MAX_SERVICES} services; delete one first"
            )));
        }
        let cgroups = listed_cgroups(&selector);
        let old: &[u32] = st.services.get(name).map_or(&[], |s| &s.resolved.pids);
        self.record_members(name, old, &resolved.pids, &cgroups)?;
        let svc = if let Some(svc) = st.services.get_mut(name) {
            svc.spec = spec;
            svc.selector = selector;
            svc.generation += 1;
            svc
        } else {
            let used: Vec<ServiceId> = st.services.values().map(|s| s.id).collect();
            let id = (0..MAX_SERVICES)
                .find(|i| !used.contains(i))
                .ok_or_else(|| {
                    AgentError::Conflict(format!(
                        "this agent tracks at most {MAX_SERVICES} services; delete one first"
                    ))
                })?;
            let actuator = Arc::new(Actuator::spawn(
                name,
                self.inner.state_file.clone(),
                Box::new(KernelDebt {
                    kernel: self.inner.kernel.clone(),
                    id,
                }),
                ActuatorConfig {
                    quantum_ns: st.quantum_ns,
                    max_stopped_share: st.max_stopped_share,
                    window_ns: self.inner.cfg.stop_window.as_nanos() as u64,
                    idle_ns: self.inner.cfg.idle_interval.as_nanos() as u64,
                },
            ));
            self.inner
                .by_id
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, actuator.clone());
            let threads = registry::thread_count(&resolved.pids);
            let cores = spec.cores.unwrap_or_else(|| {
                registry::effective_cores(registry::usable_cpus(&resolved.pids), 0, threads)
            });
            st.services.entry(name.to_string()).or_insert(Service {
                id,
                spec,
                selector,
                generation: 0,
                resolved: Resolved::default(),
                actuator,
                cpu: CpuAccount::default(),
                sched: SchedAccount::default(),
                cores,
            })
        };
        if let Some(c) = svc.spec.cores {
            svc.cores = c;
        }
        apply_resolution(&self.inner.kernel, svc, resolved)?;
        self.record_members(name, &[], &svc.resolved.pids, &cgroups)?;
        svc.cpu.update(&svc.resolved.pids);
        svc.sched.update(&svc.resolved.pids);
        tracing::info!(service = name, pids = ?svc.resolved.pids, ports = ?svc.resolved.listen_ports, "service registered");
        let info = svc.info(name);
        self.protect_in_kernel(st, &protection);
        Ok(info)
    }

    /// Forgets a service (removing its delay first, paying its leftover debt).
    pub fn delete_service(&self, name: &str) -> Result<(), AgentError> {
        self.check_running()?;
        let mut st = lock(&self.inner.state);
        if !st.services.contains_key(name) {
            return Err(unknown_service(name));
        }
        self.unschedule_service(&mut st, name);
        if st.plan.services.contains_key(name) {
            let mut plan = st.plan.clone();
            plan.services.remove(name);
            self.apply_plan(&mut st, plan)?;
        }
        let svc = st.services.remove(name).expect("checked above");
        drop(st);
        self.inner
            .by_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&svc.id);
        if let Some(k) = lock(&self.inner.kernel).as_mut() {
            k.remove_service(svc.id)?;
        }
        // The kernel no longer knows them: they leave the list.
        self.record_members(name, &[], &[], &[])?;
        tracing::info!(service = name, "service deleted");
        Ok(())
    }

    pub fn service(&self, name: &str) -> Result<ServiceInfo, AgentError> {
        let st = lock(&self.inner.state);
        st.services
            .get(name)
            .map(|s| s.info(name))
            .ok_or_else(|| unknown_service(name))
    }

    pub fn services(&self) -> ServiceList {
        let st = lock(&self.inner.state);
        ServiceList {
            services: st
                .services
                .iter()
                .map(|(n, s)| (n.clone(), s.info(n)))
                .collect(),
        }
    }
}

impl Agent {
    /// Lists the members of service `name` in the state file: `old` ∪ `new` processes and the
    /// cgroup directories. Returns once the file on disk lists them.
    pub(super) fn record_members(
        &self,
        name: &str,
        old: &[u32],
        new: &[u32],
        cgroups: &[PathBuf],
    ) -> Result<(), AgentError> {
        let mut pids = old.to_vec();
        pids.extend_from_slice(new);
        pids.sort_unstable();
        pids.dedup();
        let file = &self.inner.state_file;
        file.set(&format!("members:{name}"), &pids)
            .and_then(|()| file.set_cgroups(&format!("cgroups:{name}"), cgroups))
            .map_err(|e| {
                AgentError::Internal(format!(
                    "cannot write the state file {}: {e}; nothing is stopped without it (check \
                     the state directory: free space, permissions)",
                    file.path().display()
                ))
            })
    }
}

impl Service {
    fn info(&self, name: &str) -> ServiceInfo {
        ServiceInfo {
            name: name.to_string(),
            spec: self.spec.clone(),
            pids: self.resolved.pids.clone(),
            listen_ports: self.resolved.listen_ports.clone(),
            excluded: self.resolved.excluded.clone(),
        }
    }
}
