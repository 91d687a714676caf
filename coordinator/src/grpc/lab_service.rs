//! LabService: plan, apply, export, destroy and report over [`crate::plan`].
//!
//! One apply or destroy runs at a time (a second waits), so two operators cannot interleave steps.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use proto::v1 as pb;
use proto::v1::lab_service_server::LabService;
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert::lab as wire;
use super::culprit;
use crate::fleet::Fleet;
use crate::maas;
use crate::plan::apply::{self, Progress};
use crate::plan::{self, LabConfig, LabFile, PlanError, live};
use crate::poller::MaasView;

/// The calls that change MAAS or the router (the operator gate refuses them to read-only operators).
pub const STATE_CHANGING: &[&str] = &["Apply", "Destroy"];

/// The LabService implementation.
#[derive(Clone)]
pub struct LabApi {
    maas: Option<maas::Client>,
    view: Option<MaasView>,
    fleet: Arc<Fleet>,
    state_dir: PathBuf,
    config: LabConfig,
    router_timeout: Duration,
    running: Arc<Mutex<()>>,
    /// Where the applied plan's expected spec profiles go for verification; `None` without verification.
    verify: Option<Arc<dyn crate::verify::VerifySources>>,
}

/// The gRPC status for a plan error. A failure of MAAS or the router names that service as the
/// [culprit](culprit) so the operator is not told the coordinator is unreachable: `UNAVAILABLE` when it may answer
/// later (no connection, a timeout, a 503), `FAILED_PRECONDITION` when it refused (a bad API key, say).
pub fn status(error: PlanError) -> Status {
    match &error {
        PlanError::File(_) => Status::invalid_argument(error.to_string()),
        PlanError::NoMaas => Status::failed_precondition(error.to_string()),
        PlanError::Maas { url, source, .. } => {
            let status = if source.is_retryable() {
                Status::unavailable(error.to_string())
            } else {
                Status::failed_precondition(error.to_string())
            };
            culprit::attach(status, culprit::Service::Maas, url)
        }
        PlanError::Router { address, .. } => {
            culprit::attach(Status::unavailable(error.to_string()), culprit::Service::Router, address)
        }
        PlanError::NoSubnet { .. } | PlanError::NoRack { .. } => Status::failed_precondition(error.to_string()),
        PlanError::Store { .. } => Status::internal(error.to_string()),
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::LabProgress, Status>> + Send>>;

impl LabApi {
    pub fn new(
        maas: Option<maas::Client>,
        view: Option<MaasView>,
        fleet: Arc<Fleet>,
        state_dir: PathBuf,
        config: LabConfig,
    ) -> Self {
        LabApi {
            maas,
            view,
            fleet,
            state_dir,
            config,
            router_timeout: Duration::from_secs(10),
            running: Arc::new(Mutex::new(())),
            verify: None,
        }
    }

    /// Hands each applied plan's machine profiles to spec verification.
    pub fn with_verify(mut self, store: Option<Arc<dyn crate::verify::VerifySources>>) -> Self {
        self.verify = store;
        self
    }

    /// Records the plan's expected profiles (hostname, profile name, profile) for verification.
    async fn record_profiles(&self, lab: &LabFile) {
        let Some(store) = &self.verify else { return };
        if lab.machines.is_empty() {
            return;
        }
        let Ok(profiles) = lab.profiles() else { return };
        let expected: Vec<_> = lab
            .machines
            .iter()
            .filter_map(|m| {
                let name = m.profile.clone()?;
                let profile = profiles.get(&name)?.clone();
                Some((m.hostname.clone(), name, profile))
            })
            .collect();
        if let Err(error) = crate::verify::set_expected_profiles(&**store, expected).await {
            tracing::error!(%error, "the lab was applied but its expected profiles could not be stored");
        }
    }

    fn parse(text: &str) -> Result<LabFile, Status> {
        LabFile::parse(Path::new("lab.toml"), text).map_err(|e| status(e.into()))
    }

    fn maas(&self) -> Result<&maas::Client, Status> {
        self.maas.as_ref().ok_or_else(|| status(PlanError::NoMaas))
    }

    /// The poller's last known state when MAAS cannot be read now.
    async fn stale(&self, reason: &PlanError) -> pb::LabStale {
        let mut stale = pb::LabStale { reason: reason.to_string(), age_seconds: -1.0, ..pb::LabStale::default() };
        if let Some(view) = &self.view
            && let Ok((machines, sync)) = view.snapshot(chrono::Utc::now()).await
        {
            stale.age_seconds = sync.age_seconds.unwrap_or(-1.0);
            stale.last_success_at = sync.last_success_at.map(|t| t.to_rfc3339()).unwrap_or_default();
            stale.machines = machines.iter().map(|m| format!("{} {}", m.hostname, m.status_name)).collect();
        }
        stale
    }

    async fn read(&self, lab: &LabFile) -> Result<(live::Live, Option<router_shim_api::client::Client>), PlanError> {
        let client = self.maas.as_ref().ok_or(PlanError::NoMaas)?;
        let mut live = live::read_maas(client).await?;
        let mut shim = None;
        if let Some(router) = &lab.router {
            let mut connected = live::connect_router(router, &self.state_dir, self.router_timeout).await?;
            live.router = Some(live::read_router(&mut connected, &router.shim).await?);
            shim = Some(connected);
        }
        Ok((live, shim))
    }

    /// Why a change is refused while MAAS is unreachable, with the age of what we last knew.
    async fn refusal(&self, error: PlanError) -> Status {
        if let PlanError::Maas { url, .. } = &error {
            let stale = self.stale(&error).await;
            let age = if stale.age_seconds < 0.0 {
                "never read".to_string()
            } else {
                format!("{:.0}s old", stale.age_seconds)
            };
            let status = Status::unavailable(format!(
                "apply refused: {error}; the last known MAAS state is {age}; run it again once MAAS answers"
            ));
            return culprit::attach(status, culprit::Service::Maas, url);
        }
        status(error)
    }

    fn stream(rx: mpsc::Receiver<Progress>) -> ProgressStream {
        use futures::StreamExt;
        Box::pin(ReceiverStream::new(rx).map(|p| Ok(wire::progress_to_wire(&p))))
    }
}

#[tonic::async_trait]
impl LabService for LabApi {
    async fn plan(&self, request: Request<pb::LabPlanRequest>) -> Result<Response<pb::LabPlanResponse>, Status> {
        let pb::LabPlanRequest { lab_toml, prune } = request.into_inner();
        let lab = Self::parse(&lab_toml)?;
        self.maas()?;
        match self.read(&lab).await {
            Ok((live, _)) => {
                let plan = plan::plan(&lab, &live, prune).map_err(status)?;
                Ok(Response::new(pb::LabPlanResponse {
                    steps: plan.steps.iter().map(wire::step_to_wire).collect(),
                    stale: None,
                }))
            }
            Err(error @ PlanError::Maas { .. }) => {
                Ok(Response::new(pb::LabPlanResponse { steps: Vec::new(), stale: Some(self.stale(&error).await) }))
            }
            Err(error) => Err(status(error)),
        }
    }

    type ApplyStream = ProgressStream;

    async fn apply(&self, request: Request<pb::LabApplyRequest>) -> Result<Response<Self::ApplyStream>, Status> {
        let pb::LabApplyRequest { lab_toml, prune } = request.into_inner();
        let lab = Self::parse(&lab_toml)?;
        self.maas()?;
        let guard = self.running.clone().lock_owned().await;
        let (live, shim) = match self.read(&lab).await {
            Ok(read) => read,
            Err(error) => return Err(self.refusal(error).await),
        };
        let plan = plan::plan(&lab, &live, prune).map_err(status)?;
        // Bounded: progress is small and the client reads it as it comes; a slow client slows the apply, never memory.
        let (tx, rx) = mpsc::channel(64);
        let api = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let _ = tx.send(Progress::Planned(plan.clone())).await;
            let mut shim = shim;
            let mut ctx = apply::Context {
                maas: api.maas.as_ref().expect("checked above"),
                router: shim.as_mut(),
                probe_window: lab.router.as_ref().map(|r| r.probe_window).unwrap_or(Duration::from_secs(5)),
                wait_timeout: api.config.wait_timeout,
                wait_poll: api.config.wait_poll,
            };
            if apply::apply(&mut ctx, &plan, &tx).await.is_ok() {
                if let Err(error) = plan::store::save(&api.state_dir, &lab) {
                    tracing::error!(%error, "the lab was applied but the plan could not be stored");
                }
                api.record_profiles(&lab).await;
                api.fleet.publish(crate::domain::NewEvent {
                    at: chrono::Utc::now(),
                    machine_id: String::new(),
                    hostname: plan::reconcile::LAB_EVENT_HOST.to_string(),
                    kind: "lab_applied".to_string(),
                    message: format!("lab plan applied: {} change(s)", plan.changes()),
                    from_health: None,
                    to_health: None,
                });
            }
        });
        Ok(Response::new(Self::stream(rx)))
    }

    async fn export(&self, _request: Request<pb::LabExportRequest>) -> Result<Response<pb::LabExportResponse>, Status> {
        let applied = plan::store::load(&self.state_dir);
        let probe_lab = LabFile { router: applied.as_ref().and_then(|a| a.router.clone()), ..LabFile::default() };
        self.maas()?;
        let (live, _) = self.read(&probe_lab).await.map_err(status)?;
        let lab = plan::export::export(&live, applied.as_ref());
        Ok(Response::new(pb::LabExportResponse { lab_toml: lab.to_toml() }))
    }

    type DestroyStream = ProgressStream;

    async fn destroy(&self, request: Request<pb::LabApplyRequest>) -> Result<Response<Self::DestroyStream>, Status> {
        let pb::LabApplyRequest { lab_toml, prune: _ } = request.into_inner();
        let lab = Self::parse(&lab_toml)?;
        self.maas()?;
        let guard = self.running.clone().lock_owned().await;
        let (live, shim) = match self.read(&lab).await {
            Ok(read) => read,
            Err(error) => return Err(self.refusal(error).await),
        };
        let plan = plan::destroy::plan(&lab, &live);
        let (tx, rx) = mpsc::channel(64);
        let api = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let _ = tx.send(Progress::Planned(plan.clone())).await;
            let mut shim = shim;
            let mut ctx = apply::Context {
                maas: api.maas.as_ref().expect("checked above"),
                router: shim.as_mut(),
                probe_window: Duration::from_secs(5),
                wait_timeout: api.config.wait_timeout,
                wait_poll: api.config.wait_poll,
            };
            if apply::apply(&mut ctx, &plan, &tx).await.is_ok() {
                plan::store::clear(&api.state_dir);
            }
        });
        Ok(Response::new(Self::stream(rx)))
    }

    async fn report(&self, _request: Request<pb::LabReportRequest>) -> Result<Response<pb::LabReportResponse>, Status> {
        let applied = plan::store::load(&self.state_dir);
        let client = self.maas()?;
        let mut live = live::read_maas(client).await.map_err(status)?;
        let mut router_error = None;
        let router_plan = applied.as_ref().and_then(|a| a.router.clone());
        if let Some(router) = &router_plan {
            match live::connect_router(router, &self.state_dir, self.router_timeout).await {
                Ok(mut shim) => match live::read_router(&mut shim, &router.shim).await {
                    Ok(state) => live.router = Some(state),
                    Err(error) => router_error = Some(error.to_string()),
                },
                Err(error) => router_error = Some(error.to_string()),
            }
        }
        let probe = match router_plan.as_ref().and_then(|r| r.probe_interface.clone().map(|i| (i, r.probe_window))) {
            Some((interface, window)) => Some(
                apply::probe_on(&interface, window)
                    .await
                    .map(|report| serde_json::to_value(report).unwrap_or_default()),
            ),
            None => None,
        };
        let cidr = applied.as_ref().and_then(|a| a.subnet.as_ref().map(|s| s.cidr.clone())).or_else(|| {
            live.subnets.iter().find(|s| s.vlan.as_ref().is_some_and(|v| v.dhcp_on)).map(|s| s.cidr.clone())
        });
        let fleet = self.fleet.machines();
        let mut events = self.fleet.stored_events(0, None).await.map_err(super::status)?;
        let keep = events.len().saturating_sub(20);
        events.drain(..keep);
        let inputs = plan::report::Inputs {
            at: chrono::Utc::now(),
            live: &live,
            cidr,
            router_shim: router_plan.map(|r| r.shim),
            router_error,
            probe,
            fleet: &fleet,
            events: &events,
        };
        let json = plan::report::json(&inputs);
        let markdown = plan::report::markdown(&json);
        Ok(Response::new(pb::LabReportResponse { json: json.to_string(), markdown }))
    }
}
