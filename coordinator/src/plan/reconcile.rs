//! The reconciliation task: every `[lab] reconcile_interval`, compares the router and MAAS with the last applied
//! plan. A forward that disappeared is re-applied or reported, as the plan says; a DHCP server other than MAAS's
//! own (seen by the probe from MAIN, or in MAAS's `external_dhcp` on the VLAN) raises an event at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::diff::forward_of;
use super::file::ReconcileMode;
use super::{live, store};
use crate::domain::NewEvent;
use crate::maas;
use crate::poller::EventSink;

/// The hostname recorded on lab events.
pub const LAB_EVENT_HOST: &str = "lab";

/// What the task needs.
pub struct Reconciler {
    pub state_dir: PathBuf,
    pub maas: Option<maas::Client>,
    pub events: Arc<dyn EventSink>,
    pub interval: Duration,
    pub timeout: Duration,
}

fn event(kind: &str, message: String) -> NewEvent {
    NewEvent {
        at: Utc::now(),
        machine_id: String::new(),
        hostname: LAB_EVENT_HOST.to_string(),
        kind: kind.to_string(),
        message,
        from_health: None,
        to_health: None,
    }
}

impl Reconciler {
    /// Runs until `stop` is cancelled. Cancel-safe: a pass in flight is dropped.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.once().await,
            }
        }
    }

    /// One pass; its findings become events.
    pub async fn once(&self) {
        let Some(applied) = store::load(&self.state_dir) else { return };
        let mut maas_ip = None;
        if let (Some(client), Some(subnet)) = (&self.maas, &applied.subnet) {
            match client.subnets().await {
                Ok(subnets) => {
                    if let Some(vlan) = subnets.iter().find(|s| s.cidr == subnet.cidr).and_then(|s| s.vlan.clone()) {
                        if let Some(external) = vlan.external_dhcp.filter(|e| !e.is_empty()) {
                            self.events.emit(event(
                                "dhcp_foreign",
                                format!(
                                    "MAAS reports a foreign DHCP server {external} on VLAN {}/{}",
                                    vlan.fabric, vlan.name
                                ),
                            ));
                        }
                        if let Ok(racks) = client.rack_controllers().await {
                            maas_ip = racks
                                .iter()
                                .flat_map(|r| r.ip_addresses.iter())
                                .find(|ip| super::cidr_contains(&subnet.cidr, ip))
                                .cloned();
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "reconcile: MAAS unreachable; trying again next pass"),
            }
        }
        let Some(router) = &applied.router else { return };
        match live::connect_router(router, &self.state_dir, self.timeout).await {
            Ok(mut shim) => match shim.state().await {
                Ok(state) => {
                    for forward in &router.forwards {
                        let want = forward_of(forward);
                        if state.forward(&forward.name).is_some_and(|f| f.same_rule(&want)) {
                            continue;
                        }
                        match forward.reconcile {
                            ReconcileMode::Reapply => match shim.ensure_forwards(std::slice::from_ref(&want)).await {
                                Ok(_) => self.events.emit(event(
                                    "forward_reapplied",
                                    format!("forward {} was missing on the router and was re-applied", forward.name),
                                )),
                                Err(error) => self.events.emit(event(
                                    "forward_missing",
                                    format!("forward {} is missing and re-applying it failed: {error}", forward.name),
                                )),
                            },
                            ReconcileMode::Report => self.events.emit(event(
                                "forward_missing",
                                format!("forward {} is missing on the router (reconcile = report)", forward.name),
                            )),
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "reconcile: cannot read the router"),
            },
            Err(error) => tracing::warn!(%error, "reconcile: router shim unreachable"),
        }
        if let Some(interface) = &router.probe_interface {
            match super::apply::probe_on(interface, router.probe_window).await {
                Ok(report) => {
                    let others: Vec<_> = report
                        .offers
                        .into_iter()
                        .filter(|o| maas_ip.as_deref() != Some(o.server_identifier.to_string().as_str()))
                        .collect();
                    if !others.is_empty() {
                        self.events.emit(event(
                            "dhcp_rogue",
                            format!(
                                "a DHCP server other than MAAS answers on {interface}: {}",
                                super::apply::describe_offers(&others)
                            ),
                        ));
                    }
                }
                Err(reason) => tracing::warn!(%reason, "reconcile: the DHCP probe could not run"),
            }
        }
    }
}
