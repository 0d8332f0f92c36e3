//! The experiment's pod and label selectors: resolved before registration, then followed
//! (`kubernetes::PodWatch`). Before every window the services whose pods changed (a restart, a
//! move, a scale) are registered again with their new pods; a window during which they changed
//! is not kept: a warning says so and the window is measured again.

use std::collections::BTreeMap;

use slowpoke_api::agent as api;

use super::error::RunError;
use crate::agents::{self, Registration, SharedAgent};
use crate::kubernetes::{KubeAccess, Placement, PodWatch, place};

/// How many windows in a row may be lost to pod changes before the experiment gives up: pods
/// that change that often cannot be measured.
pub(super) const MAX_DISCARDED: usize = 5;

/// The placement of the pod and label selectors and their watch.
pub(super) struct Pods {
    placement: Placement,
    watch: Option<PodWatch>,
    /// The watch's generation the agents' registrations reflect.
    applied: u64,
}

impl Pods {
    /// Resolves the pod and label selectors among `services` (none: nothing to do, no
    /// connection made) and places their pods on `agents`.
    pub(super) fn resolve(
        access: &KubeAccess,
        agents: &[SharedAgent],
        services: &BTreeMap<String, api::ServiceSpec>,
    ) -> Result<Pods, RunError> {
        let placement = place(access, agents, services)?;
        Ok(Pods {
            placement,
            watch: None,
            applied: 0,
        })
    }

    pub(super) fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Starts following the pods (after registration succeeded).
    pub(super) fn follow(&mut self, access: &KubeAccess) -> Result<(), RunError> {
        if self.placement.resolved.is_empty() {
            return Ok(());
        }
        let cluster = access.cluster()?;
        self.watch = Some(PodWatch::start(cluster, self.placement.resolved.clone()));
        Ok(())
    }

    /// Where the watch stands: compare before and after a window.
    pub(super) fn generation(&self) -> u64 {
        self.watch.as_ref().map_or(0, PodWatch::generation)
    }

    /// Pods changed since the agents were last told.
    pub(super) fn pending(&self) -> bool {
        self.generation() != self.applied
    }

    /// The services whose pods changed are registered again with their new pods, `reg`
    /// updated; returns what changed, in words (`cart` now ["shop/cart-0", ...]).
    pub(super) fn apply_changes(
        &mut self,
        agents: &[SharedAgent],
        services: &BTreeMap<String, api::ServiceSpec>,
        reg: &mut Registration,
    ) -> Result<String, RunError> {
        let Some(watch) = &self.watch else {
            return Ok(String::new());
        };
        self.applied = watch.generation();
        let mut changed = BTreeMap::new();
        let mut what = Vec::new();
        for (service, set) in watch.sets() {
            let Some((_, old)) = self.placement.resolved.get(&service) else {
                continue;
            };
            if old.membership() == set.membership() {
                continue;
            }
            let names: Vec<&str> = set.pods.iter().map(|p| p.member.name.as_str()).collect();
            what.push(format!("`{service}` now {names:?}"));
            self.placement.update(agents, &service, set)?;
            if let Some(spec) = services.get(&service) {
                changed.insert(service, spec.clone());
            }
        }
        for (service, e) in watch.take_errors() {
            tracing::warn!(service, "following its pods: {e}");
        }
        let placement = &self.placement;
        let again =
            agents::register_placed(agents, &changed, |n, s, i| placement.spec_for(n, s, i))?;
        reg.owners.extend(again.owners);
        reg.listen_ports.extend(again.listen_ports);
        Ok(what.join("; "))
    }
}
