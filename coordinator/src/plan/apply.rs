//! Runs a plan's steps in order with progress, stopping at the first failure with what failed, why, and what is left.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use proto::v1 as pb;
use router_shim_api::client::Client as ShimClient;
use router_shim_api::dhcp_off;
pub use router_shim_api::probe::describe_offers;
use router_shim_api::probe::{self, ProbeRequest};
use tokio::sync::mpsc;

use super::diff::Op;
use super::{Plan, PlanStep};
use crate::maas::{self, CommissionOptions, DnssecValidation, NodeStatus, SubnetRef, VlanUpdate};

/// One thing `apply` tells its caller while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// The plan about to be applied (every step, unchanged ones included).
    Planned(Plan),
    Started {
        index: usize,
        total: usize,
        step: PlanStep,
    },
    /// A long step's progress: `current` of `goal` (percent for images, machines Ready for commissioning).
    Working {
        index: usize,
        current: u64,
        goal: u64,
        message: String,
    },
    Done {
        index: usize,
        step: PlanStep,
    },
    /// The apply stopped at this step; `left` are the steps not done.
    Failed {
        index: usize,
        step: PlanStep,
        reason: String,
        left: Vec<PlanStep>,
    },
    Finished {
        changes: usize,
    },
}

/// Why a step of the plan failed, with its cause kept. Its `Display` is the reason the apply reports
/// ([`Progress::Failed`]): what failed, why, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// MAAS refused or failed the call; the message names MAAS's own words when it gave some.
    #[error("{}", maas_words(.0))]
    Maas(#[source] maas::Error),
    #[error("the plan has no [router] shim to talk to")]
    NoRouter,
    /// The router shim refused or could not be reached.
    #[error("{0}")]
    Router(#[source] router_shim_api::client::ClientError),
    /// A router call without the typed client's wrapper.
    #[error("{0}")]
    RouterCall(#[source] tonic::Status),
    /// Someone still serves DHCP with the router's off, or the probe could not run.
    #[error("{}", no_dhcp_words(.interface, .error))]
    StillDhcp { interface: String, error: dhcp_off::ProofError },
    #[error("the DHCP probe on {interface} could not run: {source}")]
    Probe {
        interface: String,
        #[source]
        source: probe::ProbeError,
    },
    /// After MAAS DHCP is on, a server other than MAAS answers.
    #[error(
        "a DHCP server other than MAAS ({maas}) answers on {interface}: {}; stop it, then apply again",
        describe_offers(.others)
    )]
    OtherDhcp { interface: String, maas: String, others: Vec<probe::DhcpOffer> },
    #[error("machine {name} is {status} ({message}); fix it in MAAS, then apply again")]
    MachineFailed { name: String, status: String, message: String },
    #[error("{what} within {timeout:?}; {hint}")]
    Timeout { what: &'static str, timeout: Duration, hint: &'static str },
}

impl StepError {
    /// True when applying again later may succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            StepError::Maas(error) => error.is_retryable(),
            StepError::RouterCall(status) => status.code() == tonic::Code::Unavailable,
            StepError::Timeout { .. } => true,
            _ => false,
        }
    }
}

fn maas_words(error: &maas::Error) -> String {
    match error.maas_message() {
        Some(message) => format!("{error} (MAAS said: {message})"),
        None => error.to_string(),
    }
}

/// What `apply` needs: MAAS, the router when the plan has one, and how to wait.
pub struct Context<'a> {
    pub maas: &'a maas::Client,
    pub router: Option<&'a mut ShimClient>,
    pub probe_window: Duration,
    pub wait_timeout: Duration,
    pub wait_poll: Duration,
}

/// Applies every changing or checking step of `plan` in order.
///
/// # Errors
/// The first failing step's error (its words are also sent as [`Progress::Failed`]).
pub async fn apply(ctx: &mut Context<'_>, plan: &Plan, progress: &mpsc::Sender<Progress>) -> Result<usize, StepError> {
    let todo: Vec<&PlanStep> =
        plan.steps.iter().filter(|s| s.op.is_some() && s.action != super::Action::Unchanged).collect();
    let total = todo.len();
    let mut changes = 0;
    for (index, step) in todo.iter().enumerate() {
        let _ = progress.send(Progress::Started { index, total, step: (*step).clone() }).await;
        let op = step.op.as_ref().expect("filtered on op.is_some()");
        match run(ctx, op, index, progress).await {
            Ok(()) => {
                changes += usize::from(step.action.is_change());
                let _ = progress.send(Progress::Done { index, step: (*step).clone() }).await;
            }
            Err(error) => {
                let left = todo[index + 1..].iter().map(|s| (*s).clone()).collect();
                let reason = error.to_string();
                let _ = progress.send(Progress::Failed { index, step: (*step).clone(), reason, left }).await;
                return Err(error);
            }
        }
    }
    let _ = progress.send(Progress::Finished { changes }).await;
    Ok(changes)
}

fn router<'b>(ctx: &'b mut Context<'_>) -> Result<&'b mut ShimClient, StepError> {
    ctx.router.as_deref_mut().ok_or(StepError::NoRouter)
}

async fn run(ctx: &mut Context<'_>, op: &Op, index: usize, progress: &mpsc::Sender<Progress>) -> Result<(), StepError> {
    let maas_reason = StepError::Maas;
    let m = ctx.maas;
    match op {
        Op::RouterDhcpOff => {
            dhcp_off::switch_off(router(ctx)?).await.map_err(StepError::Router)?;
        }
        Op::ProveNoDhcp { interface } => {
            dhcp_off::prove(interface, ctx.probe_window)
                .await
                .map_err(|error| StepError::StillDhcp { interface: interface.clone(), error })?;
        }
        Op::CreateRange(new) => {
            m.create_ip_range(new).await.map_err(maas_reason)?;
        }
        Op::DeleteRange { id } => m.delete_ip_range(*id).await.map_err(maas_reason)?,
        Op::SubnetDns { subnet, servers } => {
            m.update_subnet_dns_servers(&SubnetRef::Id(*subnet), servers).await.map_err(maas_reason)?;
        }
        Op::MaasDhcpOn { fabric_id, vid, rack } => {
            let update = VlanUpdate { dhcp_on: Some(true), primary_rack: Some(rack.clone()), ..VlanUpdate::default() };
            m.update_vlan(*fabric_id, *vid, &update).await.map_err(maas_reason)?;
        }
        Op::ProveOnlyMaas { interface, maas_ip } => {
            let request = ProbeRequest { interface: interface.clone(), window: ctx.probe_window, stop_at_first: false };
            let report = probe::probe(&request)
                .await
                .map_err(|source| StepError::Probe { interface: interface.clone(), source })?;
            only_maas_answers(interface, &report.offers, maas_ip.as_slice())?;
        }
        Op::UpstreamDns(servers) => m.set_upstream_dns(servers).await.map_err(maas_reason)?,
        Op::Dnssec(value) => {
            m.set_dnssec_validation(&DnssecValidation::from(value.as_str())).await.map_err(maas_reason)?
        }
        Op::CreateSelection { source, selection } => {
            m.create_boot_source_selection(*source, selection).await.map_err(maas_reason)?;
        }
        Op::SelectionArches { source, selection, arches } => {
            m.update_boot_source_selection_arches(*source, *selection, arches).await.map_err(maas_reason)?;
        }
        Op::ImportImages { images } => {
            m.import_boot_resources().await.map_err(maas_reason)?;
            let deadline = Instant::now() + ctx.wait_timeout;
            loop {
                let resources = m.boot_resources(None).await.map_err(maas_reason)?;
                let mut total = 0.0;
                let mut all = true;
                for (name, arch) in images {
                    let found =
                        resources.iter().find(|r| &r.name == name && r.architecture.split('/').next() == Some(arch));
                    let (done, pct) = match found {
                        Some(r) => {
                            let full = m.boot_resource(r.id).await.map_err(maas_reason)?;
                            (full.is_synced(), if full.is_synced() { 100.0 } else { full.progress().unwrap_or(0.0) })
                        }
                        None => (false, 0.0),
                    };
                    all &= done;
                    total += pct;
                }
                let pct = (total / images.len().max(1) as f64) as u64;
                let message = format!("images {pct}% synced");
                let _ = progress.send(Progress::Working { index, current: pct, goal: 100, message }).await;
                if all {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(StepError::Timeout {
                        what: "images not synced",
                        timeout: ctx.wait_timeout,
                        hint: "check MAAS's Images page",
                    });
                }
                tokio::time::sleep(ctx.wait_poll).await;
            }
        }
        Op::CreateSshKey(key) => {
            m.create_ssh_key(key).await.map_err(maas_reason)?;
        }
        Op::DeleteSshKey { id } => m.delete_ssh_key(*id).await.map_err(maas_reason)?,
        Op::KernelOpts(opts) => m.set_kernel_opts(opts).await.map_err(maas_reason)?,
        Op::CreateMachine(new) => {
            m.create_machine(new).await.map_err(maas_reason)?;
        }
        Op::Commission { system_id } => {
            m.commission(system_id, &CommissionOptions::default()).await.map_err(maas_reason)?;
        }
        Op::WaitReady { hostnames } => {
            let deadline = Instant::now() + ctx.wait_timeout;
            loop {
                let machines = m.machines(&maas::MachineFilter::default()).await.map_err(maas_reason)?;
                let mut ready = 0u64;
                for name in hostnames {
                    match machines.iter().find(|x| &x.hostname == name) {
                        Some(x) if x.status.is_failed() => {
                            return Err(StepError::MachineFailed {
                                name: name.clone(),
                                status: x.status.label().to_string(),
                                message: x.status_message.clone().unwrap_or_default(),
                            });
                        }
                        Some(x) if !x.status.is_transient() && x.status != NodeStatus::New => ready += 1,
                        _ => {}
                    }
                }
                let goal = hostnames.len() as u64;
                let message = format!("{ready}/{goal} machines Ready");
                let _ = progress.send(Progress::Working { index, current: ready, goal, message }).await;
                if ready == goal {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(StepError::Timeout {
                        what: "machines not Ready",
                        timeout: ctx.wait_timeout,
                        hint: "see `fleetctl machines list`",
                    });
                }
                tokio::time::sleep(ctx.wait_poll).await;
            }
        }
        Op::CreateDevice { hostname, mac } => {
            m.create_device(hostname, std::slice::from_ref(mac)).await.map_err(maas_reason)?;
        }
        Op::Forward(forward) => {
            router(ctx)?.ensure_forwards(std::slice::from_ref(forward)).await.map_err(StepError::Router)?;
        }
        Op::RemoveForward { name } => {
            let request = pb::RemovePortForwardRequest { name: name.clone() };
            let result = router(ctx)?.raw().remove_port_forward(request).await.map_err(StepError::RouterCall)?;
            confirm(router(ctx)?, &result.into_inner().pending_change_id).await?;
        }
        Op::RemoteManagement { enabled, from } => {
            let request = pb::SetRemoteManagementRequest { enabled: *enabled, allowed_from: from.clone() };
            let result = router(ctx)?.raw().set_remote_management(request).await.map_err(StepError::RouterCall)?;
            confirm(router(ctx)?, &result.into_inner().pending_change_id).await?;
        }
        Op::Release { system_id } => {
            m.release(system_id, &maas::ReleaseOptions::default()).await.map_err(maas_reason)?;
        }
        Op::MaasDhcpOff { fabric_id, vid } => {
            let update = VlanUpdate { dhcp_on: Some(false), ..VlanUpdate::default() };
            m.update_vlan(*fabric_id, *vid, &update).await.map_err(maas_reason)?;
        }
        Op::RouterReset => {
            let result = router(ctx)?.raw().reset(pb::ResetRequest {}).await.map_err(StepError::RouterCall)?;
            confirm(router(ctx)?, &result.into_inner().pending_change_id).await?;
        }
    }
    Ok(())
}

/// Confirms a commit-confirm change at once: this call reaching the shim is the proof that access survived.
async fn confirm(shim: &mut ShimClient, pending: &str) -> Result<(), StepError> {
    if !pending.is_empty() {
        shim.confirm(pending).await.map_err(StepError::Router)?;
    }
    Ok(())
}

/// The plan's words for a failed proof that nobody serves DHCP once the router's is off: they name what the plan
/// keeps off (MAAS DHCP) and how to go on.
fn no_dhcp_words(interface: &str, error: &dhcp_off::ProofError) -> String {
    match error {
        dhcp_off::ProofError::Probe(e) => format!("the DHCP probe on {interface} could not run: {e}"),
        dhcp_off::ProofError::StillAnswered { interface, offers } => format!(
            "DHCP is still answered on {interface} with the router's DHCP off, so MAAS DHCP stays off: {}; \
             find and stop that server, then apply again",
            describe_offers(offers)
        ),
    }
}

/// Probes on MAIN's interface.
///
/// # Errors
/// The probe could not run (no such interface, no privileges), in words.
pub async fn probe_on(interface: &str, window: Duration) -> Result<probe::ProbeReport, String> {
    let request = ProbeRequest { interface: interface.to_string(), window, stop_at_first: false };
    probe::probe(&request).await.map_err(|e| format!("the DHCP probe on {interface} could not run: {e}"))
}

/// The offers from servers other than MAAS's own: an offer is MAAS's when its server identifier is one of
/// `maas_ips` (the rack controller's addresses on the subnet). With no MAAS address known, every offer is another's.
pub fn offers_not_from(offers: &[probe::DhcpOffer], maas_ips: &[String]) -> Vec<probe::DhcpOffer> {
    let ours = |o: &probe::DhcpOffer| {
        maas_ips.iter().any(|ip| {
            let ip = ip.trim();
            ip.parse::<Ipv4Addr>().map_or(ip == o.server_identifier.to_string(), |ip| ip == o.server_identifier)
        })
    };
    offers.iter().filter(|o| !ours(o)).cloned().collect()
}

/// The rule applied after MAAS DHCP is switched on: no offer, or offers from MAAS's own servers only, is fine;
/// any other server stops the apply.
///
/// # Errors
/// Why the apply stops, naming every other server's identifier, source IP and MAC as evidence.
pub fn only_maas_answers(interface: &str, offers: &[probe::DhcpOffer], maas_ips: &[String]) -> Result<(), StepError> {
    let others = offers_not_from(offers, maas_ips);
    if others.is_empty() {
        return Ok(());
    }
    let maas = if maas_ips.is_empty() { "address unknown".to_string() } else { maas_ips.join(", ") };
    Err(StepError::OtherDhcp { interface: interface.to_string(), maas, others })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(server: &str, mac: &str) -> probe::DhcpOffer {
        let server: Ipv4Addr = server.parse().unwrap();
        probe::DhcpOffer {
            server_identifier: server,
            source_ip: server,
            source_mac: mac.to_string(),
            offered_ip: Ipv4Addr::new(172, 16, 11, 1),
            next_server: String::new(),
            boot_file: String::new(),
            xid: 0x1234,
        }
    }

    fn check(offers: &[probe::DhcpOffer], maas_ips: &[&str], expected: Result<(), &[&str]>) {
        let maas_ips: Vec<String> = maas_ips.iter().map(|s| s.to_string()).collect();
        let got = only_maas_answers("lan0", offers, &maas_ips).map_err(|e| e.to_string());
        match (got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(reason), Err(evidence)) => {
                assert!(reason.contains("lan0") && reason.contains("apply again"), "{reason}");
                for word in evidence {
                    assert!(reason.contains(word), "{word:?} missing from {reason}");
                }
            }
            (got, expected) => panic!("got {got:?}, expected {expected:?}"),
        }
    }

    const MAAS: &str = "172.16.0.3";
    const MAAS_MAC: &str = "52:54:00:00:00:03";
    const ROGUE_MAC: &str = "52:54:00:00:00:60";

    #[test]
    fn a_failed_no_dhcp_proof_says_maas_dhcp_stays_off_and_quotes_the_evidence() {
        let offers = vec![offer("172.16.0.60", ROGUE_MAC)];
        let reason = no_dhcp_words("main0", &dhcp_off::ProofError::StillAnswered { interface: "main0".into(), offers });
        assert_eq!(
            reason,
            "DHCP is still answered on main0 with the router's DHCP off, so MAAS DHCP stays off: server 172.16.0.60 \
             (from 172.16.0.60 mac 52:54:00:00:00:60) offered 172.16.11.1 xid 0x00001234; find and stop that server, \
             then apply again"
        );
        let window = Duration::from_millis(10);
        let reason = no_dhcp_words("main0", &dhcp_off::ProofError::Probe(probe::ProbeError::Window(window)));
        assert_eq!(reason, "the DHCP probe on main0 could not run: window 10ms is too short; give at least 300ms");
    }

    #[test]
    fn no_offers_is_ok() {
        check(&[], &[MAAS], Ok(()));
        check(&[], &[], Ok(()));
    }

    #[test]
    fn only_maas_is_ok() {
        check(&[offer(MAAS, MAAS_MAC)], &[MAAS], Ok(()));
        check(&[offer(MAAS, MAAS_MAC)], &["10.0.0.9", " 172.16.0.3 "], Ok(()));
    }

    #[test]
    fn maas_and_another_stops_naming_the_other() {
        let offers = [offer(MAAS, MAAS_MAC), offer("172.16.0.60", ROGUE_MAC)];
        check(&offers, &[MAAS], Err(&["172.16.0.60", ROGUE_MAC]));
        let reason = only_maas_answers("lan0", &offers, &[MAAS.to_string()]).unwrap_err().to_string();
        assert!(!reason.contains(MAAS_MAC), "MAAS's own offer is not evidence against it: {reason}");
    }

    #[test]
    fn only_another_stops() {
        check(&[offer("172.16.0.1", ROGUE_MAC)], &[MAAS], Err(&["172.16.0.1", ROGUE_MAC]));
    }

    #[test]
    fn with_no_maas_address_known_every_offer_is_another() {
        check(&[offer(MAAS, MAAS_MAC)], &[], Err(&[MAAS, "address unknown"]));
    }
}
