//! A tiny fake `AgentService` on 127.0.0.1 that records every call, shared by the agent's tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use agent::cli::RunArgs;
use agent::config::Config;
use proto::v1 as pb;
use proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

#[derive(Debug)]
pub enum Event {
    Enroll(pb::EnrollRequest),
    Inventory(pb::ReportInventoryRequest),
    Heartbeat(pb::HeartbeatRequest),
}

/// A coordinator stand-in that records every call and forwards test-chosen directives.
pub struct Fake {
    events: mpsc::UnboundedSender<Event>,
    directives: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<pb::Directive>>>,
    /// Heartbeat calls still to refuse with NOT_FOUND (the coordinator "forgot" the machine).
    refuse_heartbeats: AtomicU32,
    stop: CancellationToken,
}

#[tonic::async_trait]
impl AgentService for Fake {
    async fn enroll(&self, request: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let _ = self.events.send(Event::Enroll(request.into_inner()));
        Ok(Response::new(pb::EnrollResponse {
            machine_id: "m-1".into(),
            heartbeat_interval_ms: 0,
            certificate_pem: String::new(),
            ca_pem: String::new(),
            system_id: "abc123".into(),
        }))
    }

    async fn report_inventory(
        &self,
        request: Request<pb::ReportInventoryRequest>,
    ) -> Result<Response<pb::ReportInventoryResponse>, Status> {
        let _ = self.events.send(Event::Inventory(request.into_inner()));
        Ok(Response::new(pb::ReportInventoryResponse { changed: true }))
    }

    type HeartbeatStream = ReceiverStream<Result<pb::Directive, Status>>;

    async fn renew(&self, _request: Request<pb::RenewRequest>) -> Result<Response<pb::RenewResponse>, Status> {
        Err(Status::unimplemented("the fake coordinator issues no certificates"))
    }

    async fn heartbeat(
        &self,
        request: Request<tonic::Streaming<pb::HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        if self.refuse_heartbeats.load(Ordering::SeqCst) > 0 {
            self.refuse_heartbeats.fetch_sub(1, Ordering::SeqCst);
            return Err(Status::not_found("unknown machine m-1; enroll again"));
        }
        let mut inbound = request.into_inner();
        // Like the real coordinator, answer only once the first message has arrived.
        let first = inbound.message().await?.ok_or_else(|| Status::invalid_argument("empty heartbeat stream"))?;
        let _ = self.events.send(Event::Heartbeat(first));
        let (tx, rx) = mpsc::channel(4);
        let events = self.events.clone();
        let directives = self.directives.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let mut directives = directives.lock().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    Some(directive) = directives.recv() => {
                        if tx.send(Ok(directive)).await.is_err() {
                            break;
                        }
                    }
                    message = inbound.message() => match message {
                        Ok(Some(heartbeat)) => {
                            // Like the real coordinator: acknowledge what arrived (this fake stores at once).
                            if let Some(seq) = heartbeat.samples.iter().map(|s| s.seq).max() {
                                let ack = pb::Directive {
                                    kind: Some(pb::directive::Kind::Ack(pb::Ack { stored_through: seq, refused: vec![] })),
                                    issued_at: None,
                                };
                                if tx.send(Ok(ack)).await.is_err() {
                                    break;
                                }
                            }
                            let _ = events.send(Event::Heartbeat(heartbeat));
                        }
                        _ => break,
                    },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

pub struct Server {
    pub events: mpsc::UnboundedReceiver<Event>,
    pub directives: mpsc::UnboundedSender<pb::Directive>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Server {
    /// Serves on `listener`, which is already bound, so the address is known before the server runs.
    pub fn start(listener: TcpListener, refuse_heartbeats: u32) -> Server {
        Self::start_with(listener, refuse_heartbeats, None)
    }

    pub fn start_with(
        listener: TcpListener,
        refuse_heartbeats: u32,
        tls: Option<tonic::transport::ServerTlsConfig>,
    ) -> Server {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (directives, directives_rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let fake = Fake {
            events: events_tx,
            directives: Arc::new(tokio::sync::Mutex::new(directives_rx)),
            refuse_heartbeats: AtomicU32::new(refuse_heartbeats),
            stop: stop.clone(),
        };
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).expect("valid server TLS config");
        }
        let task = tokio::spawn(
            builder
                .add_service(AgentServiceServer::new(fake))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.clone().cancelled_owned()),
        );
        Server { events, directives, stop, task }
    }

    pub async fn next_event(&mut self) -> Event {
        timeout(Duration::from_secs(20), self.events.recv())
            .await
            .expect("the agent called the coordinator within 20 s")
            .expect("the server is running")
    }

    /// The next heartbeat, skipping nothing else: any other call in between fails the test.
    pub async fn next_heartbeat(&mut self) -> pb::HeartbeatRequest {
        match self.next_event().await {
            Event::Heartbeat(heartbeat) => heartbeat,
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }

    /// The next heartbeat that carries samples (the first message of each stream carries none).
    pub async fn next_samples(&mut self) -> pb::HeartbeatRequest {
        loop {
            let heartbeat = self.next_heartbeat().await;
            if !heartbeat.samples.is_empty() {
                return heartbeat;
            }
        }
    }

    pub async fn shut_down(self) {
        self.stop.cancel();
        timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the fake coordinator stops within 10 s")
            .unwrap()
            .unwrap();
    }
}

pub fn agent_config(addr: SocketAddr, state_dir: &std::path::Path, interval: Duration) -> Config {
    let args = RunArgs {
        coordinator: Some(addr.to_string()),
        insecure: true,
        state_dir: Some(state_dir.to_owned()),
        hostname: Some("test-host".into()),
        interval: Some(interval),
        ..RunArgs::default()
    };
    Config::from_sources(None, &HashMap::<String, String>::new(), &args).unwrap()
}

pub fn taken_at(sample: &pb::HealthSample) -> SystemTime {
    SystemTime::try_from(sample.taken_at.unwrap()).unwrap()
}

/// Polls `condition` every 20 ms until it holds or `deadline` passes.
pub async fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) {
    timeout(deadline, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("condition met before the deadline");
}
