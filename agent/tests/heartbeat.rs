//! The heartbeat client against a tiny fake `AgentService` served by tonic on 127.0.0.1.
//!
//! Checks enroll -> inventory -> samples, the SetInterval and SendInventory directives, delivery of samples buffered while
//! the coordinator was down (oldest first), and re-enrollment when the coordinator forgets the machine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use agent::buffer::SampleBuffer;
use agent::cli::RunArgs;
use agent::client::{Exit, SharedBuffer};
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
enum Event {
    Enroll(pb::EnrollRequest),
    Inventory(pb::ReportInventoryRequest),
    Heartbeat(pb::HeartbeatRequest),
}

/// A coordinator stand-in that records every call and forwards test-chosen directives.
struct Fake {
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
                        Ok(Some(heartbeat)) => { let _ = events.send(Event::Heartbeat(heartbeat)); }
                        _ => break,
                    },
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Server {
    events: mpsc::UnboundedReceiver<Event>,
    directives: mpsc::UnboundedSender<pb::Directive>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Server {
    /// Serves on `listener`, which is already bound, so the address is known before the server runs.
    fn start(listener: TcpListener, refuse_heartbeats: u32) -> Server {
        Self::start_with(listener, refuse_heartbeats, None)
    }

    fn start_with(
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

    async fn next_event(&mut self) -> Event {
        timeout(Duration::from_secs(20), self.events.recv())
            .await
            .expect("the agent called the coordinator within 20 s")
            .expect("the server is running")
    }

    /// The next heartbeat, skipping nothing else: any other call in between fails the test.
    async fn next_heartbeat(&mut self) -> pb::HeartbeatRequest {
        match self.next_event().await {
            Event::Heartbeat(heartbeat) => heartbeat,
            other => panic!("expected a heartbeat, got {other:?}"),
        }
    }

    /// The next heartbeat that carries samples (the first message of each stream carries none).
    async fn next_samples(&mut self) -> pb::HeartbeatRequest {
        loop {
            let heartbeat = self.next_heartbeat().await;
            if !heartbeat.samples.is_empty() {
                return heartbeat;
            }
        }
    }

    async fn shut_down(self) {
        self.stop.cancel();
        timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the fake coordinator stops within 10 s")
            .unwrap()
            .unwrap();
    }
}

fn agent_config(addr: SocketAddr, state_dir: &std::path::Path, interval: Duration) -> Config {
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

fn taken_at(sample: &pb::HealthSample) -> SystemTime {
    SystemTime::try_from(sample.taken_at.unwrap()).unwrap()
}

/// Polls `condition` every 20 ms until it holds or `deadline` passes.
async fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) {
    timeout(deadline, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("condition met before the deadline");
}

#[tokio::test]
async fn enrolls_streams_obeys_directives_and_delivers_buffered_samples() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut server = Server::start(listener, 0);
    let state = tempfile::tempdir().unwrap();
    let buffer: SharedBuffer = Arc::new(Mutex::new(SampleBuffer::new(360)));
    let stop = CancellationToken::new();
    let config = agent_config(addr, state.path(), Duration::from_millis(200));
    let agent = tokio::spawn(agent::client::run_with_buffer(config, stop.clone(), buffer.clone()));

    // Enroll, then the inventory, then heartbeats.
    let Event::Enroll(enroll) = server.next_event().await else { panic!("the first call must be Enroll") };
    assert_eq!(enroll.hostname, "test-host");
    assert!(uuid::Uuid::parse_str(&enroll.agent_id).is_ok(), "agent_id {:?}", enroll.agent_id);
    assert!(enroll.mac_addresses.iter().all(|m| m == &m.to_lowercase()));
    let stored_id = std::fs::read_to_string(state.path().join("agent-id")).unwrap();
    assert_eq!(stored_id.trim(), enroll.agent_id);
    let Event::Inventory(inventory) = server.next_event().await else {
        panic!("the second call must be ReportInventory")
    };
    assert_eq!(inventory.machine_id, "m-1");
    assert!(inventory.inventory.unwrap().logical_cpus >= 1);
    let hello = server.next_heartbeat().await;
    assert_eq!((hello.machine_id.as_str(), hello.interval_ms, hello.samples.len()), ("m-1", 200, 0));
    let first = server.next_samples().await;
    assert_eq!(first.machine_id, "m-1");
    assert_eq!(first.interval_ms, 200);

    // A SetInterval directive changes the tick and the interval reported.
    server
        .directives
        .send(pb::Directive {
            kind: Some(pb::directive::Kind::SetInterval(pb::SetInterval { interval_ms: 300, reason: "test".into() })),
            issued_at: None,
        })
        .unwrap();
    let mut seen = 0;
    loop {
        let heartbeat = server.next_heartbeat().await;
        if heartbeat.interval_ms == 300 {
            break;
        }
        seen += 1;
        assert!(seen < 20, "the interval never changed");
    }
    // A SendInventory directive makes the agent report its inventory again.
    server
        .directives
        .send(pb::Directive {
            kind: Some(pb::directive::Kind::SendInventory(pb::SendInventory { reason: "test".into() })),
            issued_at: None,
        })
        .unwrap();
    loop {
        match server.next_event().await {
            Event::Inventory(again) => {
                assert_eq!(again.machine_id, "m-1");
                break;
            }
            Event::Heartbeat(_) => {}
            Event::Enroll(_) => panic!("no re-enrollment expected"),
        }
    }
    let mut last_seen = taken_at(server.next_samples().await.samples.last().unwrap());

    // The coordinator goes away; the agent keeps sampling into its buffer.
    server.shut_down().await;
    let down_at = SystemTime::now();
    wait_until(Duration::from_secs(20), || buffer.lock().unwrap().len() >= 3).await;
    let up_at = SystemTime::now();

    // It comes back on the same address: the backlog arrives, oldest first, in one batched message.
    let listener = TcpListener::bind(addr).await.unwrap();
    let mut server = Server::start(listener, 0);
    let backlog = server.next_samples().await;
    assert_eq!(backlog.machine_id, "m-1", "the machine id is kept across reconnects");
    assert!(backlog.samples.len() >= 3, "only {} samples in the first message", backlog.samples.len());
    assert_eq!(backlog.dropped_samples, 0);
    assert!(backlog.samples.iter().any(|s| (down_at..up_at).contains(&taken_at(s))), "no sample from the outage");
    for sample in &backlog.samples {
        let at = taken_at(sample);
        assert!(at > last_seen, "samples arrive oldest first and never twice");
        last_seen = at;
    }
    let next = server.next_samples().await;
    assert!(taken_at(&next.samples[0]) > last_seen);

    stop.cancel();
    let exit = timeout(Duration::from_secs(10), agent).await.expect("the agent stops within 10 s").unwrap().unwrap();
    assert_eq!(exit, Exit::Stopped);
    server.shut_down().await;
}

#[tokio::test]
async fn re_enrolls_when_the_coordinator_does_not_know_the_machine() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut server = Server::start(listener, 1);
    let state = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let config = agent_config(addr, state.path(), Duration::from_millis(200));
    let agent = tokio::spawn(agent::client::run(config, stop.clone()));

    let mut enrolls = 0;
    loop {
        match server.next_event().await {
            Event::Enroll(_) => enrolls += 1,
            Event::Inventory(_) => {}
            Event::Heartbeat(heartbeat) => {
                assert_eq!(heartbeat.machine_id, "m-1");
                break;
            }
        }
    }
    assert_eq!(enrolls, 2, "NOT_FOUND on the stream makes the agent enroll again");

    stop.cancel();
    let exit = timeout(Duration::from_secs(10), agent).await.expect("the agent stops within 10 s").unwrap().unwrap();
    assert_eq!(exit, Exit::Stopped);
    server.shut_down().await;
}

#[tokio::test]
async fn talks_tls_to_a_coordinator_signed_by_the_configured_ca() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A CA, and a server certificate for 127.0.0.1 signed by it.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();
    let identity = tonic::transport::Identity::from_pem(server_cert.pem(), server_key.serialize_pem());
    let tls = tonic::transport::ServerTlsConfig::new().identity(identity);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut server = Server::start_with(listener, 0, Some(tls));
    let state = tempfile::tempdir().unwrap();
    let ca_file = state.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let args = RunArgs {
        coordinator: Some(addr.to_string()),
        ca_file: Some(ca_file),
        state_dir: Some(state.path().to_owned()),
        hostname: Some("tls-host".into()),
        interval: Some(Duration::from_millis(200)),
        ..RunArgs::default()
    };
    let config = Config::from_sources(None, &HashMap::<String, String>::new(), &args).unwrap();
    assert_eq!(config.coordinator.as_deref(), Some(format!("https://{addr}").as_str()));
    let stop = CancellationToken::new();
    let agent = tokio::spawn(agent::client::run(config, stop.clone()));

    let Event::Enroll(enroll) = server.next_event().await else { panic!("the first call must be Enroll") };
    assert_eq!(enroll.hostname, "tls-host");
    assert!(matches!(server.next_event().await, Event::Inventory(_)));
    assert_eq!(server.next_samples().await.machine_id, "m-1");

    stop.cancel();
    let exit = timeout(Duration::from_secs(10), agent).await.expect("the agent stops within 10 s").unwrap().unwrap();
    assert_eq!(exit, Exit::Stopped);
    server.shut_down().await;
}
