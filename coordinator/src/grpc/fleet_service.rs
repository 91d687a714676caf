//! FleetService: the operators' read API (machines, events).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use proto::v1 as pb;
use proto::v1::fleet_service_server::FleetService;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{convert, status};
use crate::domain::Event;
use crate::fleet::Fleet;
use crate::poller::MaasView;

/// Events buffered per WatchEvents caller; a slow reader holds its own task back, nobody else.
const WATCH_BUFFER: usize = 256;
/// GetMachine returns at most this many stored samples.
const MAX_HISTORY: u32 = 10_000;

pub struct FleetApi {
    fleet: Arc<Fleet>,
    stop: CancellationToken,
    /// The poller's view of MAAS; `None` when the coordinator runs without `[maas]`.
    maas: Option<MaasView>,
}

impl FleetApi {
    pub fn new(fleet: Arc<Fleet>, stop: CancellationToken) -> Self {
        FleetApi { fleet, stop, maas: None }
    }

    /// Serves ListMaasMachines from `maas`.
    pub fn with_maas(mut self, maas: MaasView) -> Self {
        self.maas = Some(maas);
        self
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl FleetService for FleetApi {
    async fn list_machines(
        &self,
        _request: Request<pb::ListMachinesRequest>,
    ) -> Result<Response<pb::ListMachinesResponse>, Status> {
        let machines = self.fleet.machines().iter().map(convert::machine_to_wire).collect();
        let coordinator = Some(convert::coordinator_status_to_wire(&self.fleet.status()));
        Ok(Response::new(pb::ListMachinesResponse { machines, coordinator }))
    }

    async fn get_machine(&self, request: Request<pb::GetMachineRequest>) -> Result<Response<pb::Machine>, Status> {
        let pb::GetMachineRequest { name, history } = request.into_inner();
        if name.is_empty() {
            return Err(Status::invalid_argument("name is empty; give a machine id, hostname or system_id"));
        }
        let view = self.fleet.machine(&name, history.min(MAX_HISTORY)).await.map_err(status)?;
        Ok(Response::new(convert::machine_to_wire(&view)))
    }

    async fn list_maas_machines(
        &self,
        _request: Request<pb::ListMaasMachinesRequest>,
    ) -> Result<Response<pb::ListMaasMachinesResponse>, Status> {
        let Some(maas) = &self.maas else {
            return Ok(Response::new(pb::ListMaasMachinesResponse::default()));
        };
        let (machines, sync) = maas.snapshot(chrono::Utc::now()).await.map_err(|error| status(error.into()))?;
        Ok(Response::new(pb::ListMaasMachinesResponse {
            configured: true,
            sync: Some(convert::maas::sync_to_wire(&sync)),
            machines: machines.iter().map(convert::maas::machine_to_wire).collect(),
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let pb::WatchEventsRequest { after_id, follow, limit } = request.into_inner();
        // Subscribe before reading the store, so an event stored in between is not missed.
        let live = follow.then(|| self.fleet.subscribe());
        let stored = self.fleet.stored_events(after_id, (limit > 0).then_some(limit)).await.map_err(status)?;
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(forward_events(self.fleet.clone(), stored, after_id, live, sender, self.stop.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

async fn forward_events(
    fleet: Arc<Fleet>,
    stored: Vec<Event>,
    after_id: u64,
    live: Option<broadcast::Receiver<Event>>,
    sender: mpsc::Sender<Result<pb::Event, Status>>,
    stop: CancellationToken,
) {
    let mut last_id = after_id;
    for event in stored {
        last_id = last_id.max(event.id);
        if sender.send(Ok(convert::event_to_wire(&event))).await.is_err() {
            return;
        }
    }
    let Some(mut live) = live else { return };
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            _ = sender.closed() => return,
            received = live.recv() => received,
        };
        let batch = match received {
            Ok(event) => vec![event],
            Err(broadcast::error::RecvError::Lagged(_)) => match fleet.stored_events(last_id, None).await {
                Ok(events) => events,
                Err(error) => {
                    let _ = sender.send(Err(status(error))).await;
                    return;
                }
            },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for event in batch {
            if event.id <= last_id {
                continue;
            }
            last_id = event.id;
            if sender.send(Ok(convert::event_to_wire(&event))).await.is_err() {
                return;
            }
        }
    }
}
