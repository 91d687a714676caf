//! AgentService: Enroll, ReportInventory and the Heartbeat stream, with backpressure directives.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use proto::v1 as pb;
use proto::v1::agent_service_server::AgentService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::{convert, status};
use crate::auth::{EnrollGrant, PeerCert, Security};
use crate::fleet::{AckSink, Fleet};
use crate::store::Takeover;

/// The longest interval backpressure asks for.
const MAX_SLOWED_INTERVAL_MS: u32 = 5 * 60 * 1000;
/// Directives waiting for an agent that does not read them are dropped past this.
const DIRECTIVE_BUFFER: usize = 8;

pub struct AgentApi {
    fleet: Arc<Fleet>,
    /// Cancelled at shutdown: open heartbeat streams end so the server can drain.
    stop: CancellationToken,
    /// Tokens, certificates and revocation; `None` checks nothing (tests of the fleet logic alone).
    security: Option<Arc<Security>>,
}

impl AgentApi {
    pub fn new(fleet: Arc<Fleet>, stop: CancellationToken) -> Self {
        AgentApi { fleet, stop, security: None }
    }

    /// Enforces enrollment tokens, client certificates and revocation (see [`crate::auth`]).
    pub fn with_security(mut self, security: Arc<Security>) -> Self {
        self.security = Some(security);
        self
    }

    fn check_agent(&self, peer: Option<&PeerCert>, machine_id: &str) -> Result<(), Status> {
        match &self.security {
            Some(security) => security.check_agent(peer, machine_id).map_err(super::auth_status),
            None => Ok(()),
        }
    }

    /// Signs the agent's CSR for `machine` and records the certificate.
    async fn issue(
        &self,
        security: &Security,
        machine: &crate::domain::Machine,
        csr_pem: &str,
    ) -> Result<(String, String), Status> {
        let (ca_pem, ca_key, bundle) = security.ca().map_err(super::auth_status)?;
        let mut uris = vec![format!("{}{}", crate::enroll::MACHINE_URI, machine.id)];
        if let Some(system_id) = &machine.system_id {
            uris.push(format!("metalfleet:system:{system_id}"));
        }
        let issued = crate::enroll::sign_client_csr(
            csr_pem,
            ca_pem,
            ca_key,
            &machine.hostname,
            &uris,
            security.config.cert_lifetime,
        )
        .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let record = crate::security_store::AgentCertRecord {
            serial: issued.serial.clone(),
            machine_id: machine.id.clone(),
            issued_at: chrono::Utc::now(),
            expires_at: issued.not_after,
            revoked: false,
        };
        security.store.insert_agent_cert(record).await.map_err(|error| {
            tracing::error!(%error, "cannot record an agent certificate");
            Status::internal("the coordinator cannot record the certificate; see its log")
        })?;
        security.unrevoke_machine(&machine.id);
        tracing::info!(machine_id = %machine.id, serial = %issued.serial, not_after = %issued.not_after, "agent certificate issued");
        Ok((issued.certificate_pem, bundle.to_string()))
    }
}

type DirectiveStream = Pin<Box<dyn Stream<Item = Result<pb::Directive, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    #[tracing::instrument(skip_all, fields(agent_id))]
    async fn enroll(&self, request: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let remote = request.remote_addr();
        let peer = Security::peer(request.peer_certs());
        let mut wire = request.into_inner();
        // The token is a secret: it leaves the request here and is only ever hashed.
        let token = crate::secret::Secret::new(std::mem::take(&mut wire.token));
        let csr_pem = std::mem::take(&mut wire.csr_pem);
        let enrollment = convert::agent::enrollment(wire)
            .inspect_err(|refusal| {
                tracing::warn!(peer = ?remote, %refusal, "enrollment refused: bad request");
            })
            .map_err(super::invalid)?;
        tracing::Span::current().record("agent_id", enrollment.agent_id.as_str());
        let Some(security) = self.security.clone() else {
            let machine = self.fleet.enroll(enrollment, Takeover::default()).await.map_err(status)?;
            return Ok(Response::new(convert::enroll_response(&machine)));
        };
        let issue_cert = !security.insecure && !csr_pem.is_empty();
        let has_agent_cert = peer.as_ref().is_some_and(|p| p.machine_id().is_some());
        if !security.insecure && security.config.require_token && csr_pem.is_empty() && !has_agent_cert {
            return Err(Status::invalid_argument("csr_pem is empty; the agent must send a CSR for its key"));
        }
        if issue_cert {
            crate::enroll::check_csr(&csr_pem).map_err(|error| Status::invalid_argument(error.to_string()))?;
        }
        // Checked before anything is stored: a refused agent leaves no trace but the log line.
        let names = vec![enrollment.hostname.clone()];
        let grant = security
            .admit_enroll(remote, peer.as_ref(), token.expose(), names)
            .await
            .inspect_err(|refusal| tracing::warn!(peer = ?remote, %refusal, "enrollment refused"))
            .map_err(super::auth_status)?;
        if let EnrollGrant::Certificate(machine_id) = &grant {
            let own = self
                .fleet
                .machines()
                .into_iter()
                .any(|view| &view.machine.id == machine_id && view.machine.agent_id == enrollment.agent_id);
            if !own {
                return Err(Status::permission_denied(format!(
                    "this certificate belongs to machine {machine_id}, not to agent {}; enroll with a token",
                    enrollment.agent_id
                )));
            }
        }
        let agent_id = enrollment.agent_id.clone();
        // A failure from here on gives the token's use back: the agent may retry with it.
        let refund = |status: Status| {
            let security = security.clone();
            let grant = grant.clone();
            async move {
                if let EnrollGrant::Token(token_id) = grant
                    && let Err(error) = security.store.refund_token(token_id).await
                {
                    tracing::error!(%error, "cannot give an enrollment token its use back");
                }
                status
            }
        };
        // A redeploy token is bound to its MAAS machine: the only way to take that machine's identity over.
        let takeover = match &grant {
            EnrollGrant::Token(token_id) => match security.store.token_system(token_id.clone()).await {
                Ok(system_id) => Takeover { system_id },
                Err(error) => {
                    tracing::error!(%error, "cannot read the token's machine binding");
                    return Err(
                        refund(Status::internal("the coordinator cannot read its token store; see its log")).await
                    );
                }
            },
            _ => Takeover::default(),
        };
        let machine = match self.fleet.enroll(enrollment, takeover.clone()).await {
            Ok(machine) => machine,
            Err(error) => {
                tracing::warn!(peer = ?remote, %error, "enrollment refused");
                return Err(refund(status(error)).await);
            }
        };
        if takeover.system_id.is_some() {
            // The agent from before the redeploy is gone: its certificates must not speak for the machine.
            if let Err(error) = security.revoke_machine(&machine.id).await {
                tracing::error!(%error, machine_id = %machine.id, "cannot revoke the replaced agent's certificates");
            }
        }
        if let EnrollGrant::Token(token_id) = &grant {
            // The redeploy flow recognises the agent it deployed by the token it minted for that deploy.
            let recorded = security.store.record_token_enrollment(
                token_id.clone(),
                machine.id.clone(),
                agent_id,
                chrono::Utc::now(),
            );
            if let Err(error) = recorded.await {
                tracing::error!(%error, "cannot record which token enrolled the machine; a redeploy may wait for it in vain");
            }
        }
        let mut response = convert::enroll_response(&machine);
        if issue_cert {
            let (certificate_pem, ca_pem) = match self.issue(&security, &machine, &csr_pem).await {
                Ok(issued) => issued,
                Err(status) => return Err(refund(status).await),
            };
            response.certificate_pem = certificate_pem;
            response.ca_pem = ca_pem;
        } else if let Ok((_, _, bundle)) = security.ca() {
            // Every enrollment hands out the trust bundle, so agents learn a new CA on reconnect.
            response.ca_pem = bundle.to_string();
        }
        tracing::info!(machine_id = %machine.id, grant = ?grant, "agent enrolled");
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all, fields(machine_id))]
    async fn renew(&self, request: Request<pb::RenewRequest>) -> Result<Response<pb::RenewResponse>, Status> {
        let peer = Security::peer(request.peer_certs());
        let pb::RenewRequest { machine_id, csr_pem } = request.into_inner();
        tracing::Span::current().record("machine_id", machine_id.as_str());
        let Some(security) = self.security.clone().filter(|s| !s.insecure) else {
            return Err(Status::failed_precondition("this coordinator serves plaintext; there is nothing to renew"));
        };
        if peer.is_none() {
            return Err(Status::unauthenticated("renewal needs the current client certificate"));
        }
        self.check_agent(peer.as_ref(), &machine_id)?;
        let machine = self
            .fleet
            .machines()
            .into_iter()
            .map(|view| view.machine)
            .find(|m| m.id == machine_id)
            .ok_or_else(|| Status::not_found(format!("machine {machine_id} is not enrolled; enroll again")))?;
        let (certificate_pem, ca_pem) = self.issue(&security, &machine, &csr_pem).await?;
        Ok(Response::new(pb::RenewResponse { certificate_pem, ca_pem }))
    }

    #[tracing::instrument(skip_all, fields(machine_id))]
    async fn report_inventory(
        &self,
        request: Request<pb::ReportInventoryRequest>,
    ) -> Result<Response<pb::ReportInventoryResponse>, Status> {
        let peer = Security::peer(request.peer_certs());
        let pb::ReportInventoryRequest { machine_id, inventory } = request.into_inner();
        tracing::Span::current().record("machine_id", machine_id.as_str());
        self.check_agent(peer.as_ref(), &machine_id)?;
        let inventory =
            inventory.ok_or_else(|| Status::invalid_argument("inventory is missing; send the full inventory"))?;
        let inventory = convert::agent::inventory(inventory, chrono::Utc::now())
            .inspect_err(|refusal| {
                tracing::warn!(%machine_id, %refusal, "inventory refused");
            })
            .map_err(super::invalid)?;
        let changed = self.fleet.report_inventory(&machine_id, inventory).await.map_err(status)?;
        Ok(Response::new(pb::ReportInventoryResponse { changed }))
    }

    type HeartbeatStream = DirectiveStream;

    /// The first message is handled before the call is answered, so an unknown machine gets
    /// NOT_FOUND as the call's status; later failures end the stream with a status.
    async fn heartbeat(
        &self,
        request: Request<Streaming<pb::HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        let peer_certs = request.peer_certs();
        let peer = Security::peer(peer_certs.clone());
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the heartbeat stream ended before its first message"))?;
        let first = convert::agent::heartbeat(first, chrono::Utc::now()).map_err(super::invalid)?;
        let machine_id = first.heartbeat.machine_id.clone();
        self.check_agent(peer.as_ref(), &machine_id)?;
        // Subscribed before the first write, so a revocation from now on ends the stream.
        let mut revocations = self.security.as_ref().filter(|s| !s.insecure).map(|s| s.revocations());
        let first_interval_ms = first.heartbeat.interval_ms;
        // Acknowledgements: the writer raises it once a message's samples are committed.
        let (acks, mut acked) = tokio::sync::watch::channel(0u64);
        let acks: AckSink = Arc::new(acks);
        let first_refusals = self.accept(first, &acks).await?;
        tracing::debug!(%machine_id, "heartbeat stream opened");

        let (directives, outbound) = mpsc::channel(DIRECTIVE_BUFFER);
        if let Some(refusals) = first_refusals {
            let _ = directives.try_send(Ok(refusals));
        }
        let mut pressure = Pressure::new(self.fleet.clone(), machine_id.clone());
        pressure.check(&directives, first_interval_ms);
        let old_ca = match (&self.security, peer_certs.as_ref().and_then(|certs| certs.first())) {
            (Some(security), Some(der)) => !security.signed_by_current_ca(der),
            _ => false,
        };
        if old_ca {
            tracing::info!(%machine_id, "certificate from the CA being retired; asking the agent to renew");
            let _ = directives.try_send(Ok(pb::Directive {
                kind: Some(pb::directive::Kind::RenewCertificate(pb::RenewCertificate {
                    reason: "CA rotation: renew onto the new CA".into(),
                })),
                issued_at: Some(convert::timestamp(chrono::Utc::now())),
            }));
        }
        let api = AgentApi { fleet: self.fleet.clone(), stop: self.stop.clone(), security: self.security.clone() };
        tokio::spawn(async move {
            let stop = api.stop.clone();
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => break,
                    revoked = next_revocation(&mut revocations) => {
                        if revoked == machine_id {
                            tracing::warn!(%machine_id, "certificate revoked; ending the heartbeat stream");
                            let refusal = Status::unauthenticated("certificate revoked; enroll again with a new token");
                            let _ = directives.send(Err(refusal)).await;
                            break;
                        }
                        continue;
                    }
                    changed = acked.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let stored_through = *acked.borrow_and_update();
                        // Dropped when the agent does not read: the next acknowledgement covers this one.
                        let _ = directives.try_send(Ok(ack_directive(stored_through, Vec::new())));
                        continue;
                    }
                    next = inbound.message() => next,
                };
                let message = match next {
                    Ok(Some(message)) => message,
                    Ok(None) => break,
                    Err(error) => {
                        tracing::debug!(%error, %machine_id, "heartbeat stream broke");
                        break;
                    }
                };
                let reported_ms = message.interval_ms;
                let result = match convert::agent::heartbeat(message, chrono::Utc::now()) {
                    Ok(hb) if hb.heartbeat.machine_id != machine_id => Err(Status::invalid_argument(format!(
                        "this stream belongs to machine {machine_id}, not {}; open one stream per machine",
                        hb.heartbeat.machine_id
                    ))),
                    Ok(hb) => api.accept(hb, &acks).await,
                    Err(refusal) => Err(super::invalid(refusal)),
                };
                match result {
                    Ok(Some(refusals)) => {
                        if directives.send(Ok(refusals)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        let _ = directives.send(Err(error)).await;
                        break;
                    }
                }
                pressure.check(&directives, reported_ms);
            }
            tracing::debug!(%machine_id, "heartbeat stream closed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound))))
    }
}

impl AgentApi {
    /// Hands a checked heartbeat to the fleet (acknowledged through `acks` once stored) and notes its
    /// refusals; returns the directive that tells the agent which samples were refused, if any.
    async fn accept(
        &self,
        checked: convert::agent::CheckedHeartbeat,
        acks: &AckSink,
    ) -> Result<Option<pb::Directive>, Status> {
        let convert::agent::CheckedHeartbeat { heartbeat, refused, clock_ahead } = checked;
        let machine_id = heartbeat.machine_id.clone();
        let noted: Vec<(u64, String)> = refused.iter().map(|(seq, r)| (*seq, r.to_string())).collect();
        self.fleet.heartbeat(heartbeat, Some(acks.clone())).await.map_err(status)?;
        self.fleet.note_refusals(&machine_id, &noted, clock_ahead);
        if refused.is_empty() {
            return Ok(None);
        }
        let refused =
            refused.into_iter().map(|(seq, r)| pb::Refusal { seq, field: r.field, reason: r.reason }).collect();
        Ok(Some(ack_directive(0, refused)))
    }
}

/// An acknowledgement: everything up to `stored_through` is stored (0: nothing new), and these samples never will be.
fn ack_directive(stored_through: u64, refused: Vec<pb::Refusal>) -> pb::Directive {
    pb::Directive {
        kind: Some(pb::directive::Kind::Ack(pb::Ack { stored_through, refused })),
        issued_at: Some(convert::timestamp(chrono::Utc::now())),
    }
}

/// The next revoked machine id; pending forever without a revocation feed. Cancel safe.
async fn next_revocation(feed: &mut Option<tokio::sync::broadcast::Receiver<String>>) -> String {
    let Some(receiver) = feed else { return std::future::pending().await };
    loop {
        match receiver.recv().await {
            Ok(machine_id) => return machine_id,
            // Missed some (64 revocations at once): the next RPC of a revoked agent is refused anyway.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

/// Per-stream backpressure: above three quarters of the write queue the agent is asked to sample
/// half as often; below a quarter it gets its original interval back.
struct Pressure {
    fleet: Arc<Fleet>,
    machine_id: String,
    /// The interval before slowing down, while slowed.
    original_ms: Option<u32>,
}

impl Pressure {
    fn new(fleet: Arc<Fleet>, machine_id: String) -> Self {
        Pressure { fleet, machine_id, original_ms: None }
    }

    /// `reported_ms` is the interval the agent says it samples at (0: it did not say, so the
    /// configured one is assumed).
    fn check(&mut self, directives: &mpsc::Sender<Result<pb::Directive, Status>>, reported_ms: u32) {
        let (depth, capacity) = self.fleet.write_queue();
        let configured = self.fleet.settings().heartbeat_interval.as_millis().min(u128::from(u32::MAX)) as u32;
        let current = if reported_ms > 0 { reported_ms } else { configured };
        match decide(depth, capacity, self.original_ms, current) {
            Some(Decision::SlowDown { interval_ms }) => {
                let directive = convert::set_interval(interval_ms, "coordinator under load");
                if directives.try_send(Ok(directive)).is_ok() {
                    self.fleet.note_interval(&self.machine_id, interval_ms);
                    self.original_ms = Some(current);
                    tracing::info!(machine_id = %self.machine_id, interval_ms, depth, "slowing agent down");
                }
            }
            Some(Decision::Restore { interval_ms }) => {
                let directive = convert::set_interval(interval_ms, "coordinator load back to normal");
                if directives.try_send(Ok(directive)).is_ok() {
                    self.original_ms = None;
                    tracing::info!(machine_id = %self.machine_id, interval_ms, "restoring agent interval");
                }
            }
            None => {}
        }
    }
}

/// What backpressure asks of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    SlowDown { interval_ms: u32 },
    Restore { interval_ms: u32 },
}

/// Above three quarters of the queue, slow down (twice the agent's current interval, capped);
/// below a quarter, restore the interval it had. Between the two marks nothing changes, so agents
/// do not flap.
fn decide(depth: usize, capacity: usize, slowed_from: Option<u32>, current_ms: u32) -> Option<Decision> {
    match slowed_from {
        None if depth * 4 >= capacity * 3 => {
            Some(Decision::SlowDown { interval_ms: current_ms.saturating_mul(2).min(MAX_SLOWED_INTERVAL_MS) })
        }
        Some(original) if depth * 4 <= capacity => Some(Decision::Restore { interval_ms: original }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(depth: usize, slowed_from: Option<u32>, expected: Option<Decision>) {
        assert_eq!(decide(depth, 100, slowed_from, 5000), expected, "depth {depth}, slowed from {slowed_from:?}");
    }

    #[test]
    fn slows_down_above_the_high_water_mark_and_restores_below_the_low_one() {
        check(0, None, None);
        check(74, None, None);
        check(75, None, Some(Decision::SlowDown { interval_ms: 10_000 }));
        check(100, Some(5000), None);
        check(50, Some(5000), None);
        check(26, Some(5000), None);
        check(25, Some(5000), Some(Decision::Restore { interval_ms: 5000 }));
    }

    #[test]
    fn the_slowed_interval_is_capped() {
        assert_eq!(decide(100, 100, None, 4_000_000), Some(Decision::SlowDown { interval_ms: MAX_SLOWED_INTERVAL_MS }));
    }
}
