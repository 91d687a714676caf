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
use crate::fleet::Fleet;

/// The longest interval backpressure asks for.
const MAX_SLOWED_INTERVAL_MS: u32 = 5 * 60 * 1000;
/// Directives waiting for an agent that does not read them are dropped past this.
const DIRECTIVE_BUFFER: usize = 8;

pub struct AgentApi {
    fleet: Arc<Fleet>,
    /// Cancelled at shutdown: open heartbeat streams end so the server can drain.
    stop: CancellationToken,
}

impl AgentApi {
    pub fn new(fleet: Arc<Fleet>, stop: CancellationToken) -> Self {
        AgentApi { fleet, stop }
    }
}

type DirectiveStream = Pin<Box<dyn Stream<Item = Result<pb::Directive, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    #[tracing::instrument(skip_all, fields(agent_id))]
    async fn enroll(&self, request: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let enrollment = convert::enrollment(request.into_inner())?;
        tracing::Span::current().record("agent_id", enrollment.agent_id.as_str());
        let machine = self.fleet.enroll(enrollment).await.map_err(status)?;
        Ok(Response::new(convert::enroll_response(&machine)))
    }

    #[tracing::instrument(skip_all, fields(machine_id))]
    async fn report_inventory(
        &self,
        request: Request<pb::ReportInventoryRequest>,
    ) -> Result<Response<pb::ReportInventoryResponse>, Status> {
        let pb::ReportInventoryRequest { machine_id, inventory } = request.into_inner();
        tracing::Span::current().record("machine_id", machine_id.as_str());
        let inventory =
            inventory.ok_or_else(|| Status::invalid_argument("inventory is missing; send the full inventory"))?;
        let changed = self.fleet.report_inventory(&machine_id, convert::inventory(inventory)).await.map_err(status)?;
        Ok(Response::new(pb::ReportInventoryResponse { changed }))
    }

    type HeartbeatStream = DirectiveStream;

    /// The first message is handled before the call is answered, so an unknown machine gets
    /// NOT_FOUND as the call's status; later failures end the stream with a status.
    async fn heartbeat(
        &self,
        request: Request<Streaming<pb::HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the heartbeat stream ended before its first message"))?;
        let first = convert::heartbeat(first)?;
        let machine_id = first.machine_id.clone();
        self.fleet.heartbeat(first).await.map_err(status)?;
        tracing::debug!(%machine_id, "heartbeat stream opened");

        let (directives, outbound) = mpsc::channel(DIRECTIVE_BUFFER);
        let mut pressure = Pressure::new(self.fleet.clone(), machine_id.clone());
        pressure.check(&directives);
        let fleet = self.fleet.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => break,
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
                let result = match convert::heartbeat(message) {
                    Ok(hb) if hb.machine_id != machine_id => Err(Status::invalid_argument(format!(
                        "this stream belongs to machine {machine_id}, not {}; open one stream per machine",
                        hb.machine_id
                    ))),
                    Ok(hb) => fleet.heartbeat(hb).await.map_err(status),
                    Err(error) => Err(error),
                };
                if let Err(error) = result {
                    let _ = directives.send(Err(error)).await;
                    break;
                }
                pressure.check(&directives);
            }
            tracing::debug!(%machine_id, "heartbeat stream closed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound))))
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

    fn check(&mut self, directives: &mpsc::Sender<Result<pb::Directive, Status>>) {
        let (depth, capacity) = self.fleet.write_queue();
        let configured = self.fleet.settings().heartbeat_interval.as_millis().min(u128::from(u32::MAX)) as u32;
        match decide(depth, capacity, self.original_ms, configured) {
            Some(Decision::SlowDown { interval_ms }) => {
                let directive = convert::set_interval(interval_ms, "coordinator under load");
                if directives.try_send(Ok(directive)).is_ok() {
                    self.fleet.note_interval(&self.machine_id, interval_ms);
                    self.original_ms = Some(configured);
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

/// Above three quarters of the queue, slow down (twice the interval, capped); below a quarter,
/// restore the interval the agent had. Between the two marks nothing changes, so agents do not flap.
fn decide(depth: usize, capacity: usize, slowed_from: Option<u32>, configured_ms: u32) -> Option<Decision> {
    match slowed_from {
        None if depth * 4 >= capacity * 3 => {
            Some(Decision::SlowDown { interval_ms: configured_ms.saturating_mul(2).min(MAX_SLOWED_INTERVAL_MS) })
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
