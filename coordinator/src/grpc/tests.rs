//! Service tests: a real tonic server on 127.0.0.1:0, bound before it is spawned.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use proto::v1 as pb;
use proto::v1::agent_service_client::AgentServiceClient;
use proto::v1::fleet_service_client::FleetServiceClient;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::config::{Config, Overrides};
use crate::server::ServeError;

const DEADLINE: Duration = Duration::from_secs(20);

struct Running {
    addr: SocketAddr,
    stop: CancellationToken,
    server: JoinHandle<Result<(), ServeError>>,
    state: tempfile::TempDir,
}

impl Running {
    async fn start(adjust: impl FnOnce(&mut Config)) -> Running {
        let state = tempfile::tempdir().unwrap();
        let overrides = Overrides { listen: None, state_dir: Some(state.path().to_owned()), insecure: true };
        let mut config =
            Config::from_sources(None, &std::collections::HashMap::<String, String>::new(), &overrides).unwrap();
        adjust(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        // Prepared before spawning: the certificates and client.toml exist when start returns.
        let prepared = crate::server::prepare(listener, config, stop.clone()).await.unwrap();
        let server = tokio::spawn(prepared.run());
        Running { addr, stop, server, state }
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr)).unwrap().connect().await.unwrap()
    }

    async fn agent(&self) -> AgentServiceClient<Channel> {
        AgentServiceClient::new(self.channel().await)
    }

    async fn fleet(&self) -> FleetServiceClient<Channel> {
        FleetServiceClient::new(self.channel().await)
    }

    async fn stop(self) {
        self.stop.cancel();
        let result = timeout(Duration::from_secs(5), self.server).await.expect("server drains within 5s");
        result.unwrap().unwrap();
    }
}

fn enroll_request(agent_id: &str, hostname: &str) -> pb::EnrollRequest {
    pb::EnrollRequest {
        agent_id: agent_id.into(),
        hostname: hostname.into(),
        mac_addresses: vec!["52:54:00:12:34:56".into()],
        agent_version: "0.1.0".into(),
        ..Default::default()
    }
}

fn healthy_sample() -> pb::HealthSample {
    pb::HealthSample {
        cpu_percent: 3.0,
        load1: 0.1,
        memory_total_bytes: 1 << 30,
        memory_used_bytes: 1 << 28,
        memory_available_bytes: 1 << 29,
        logical_cpus: 2,
        filesystems: vec![pb::FilesystemUsage {
            mount_point: "/".into(),
            total_bytes: 1000,
            available_bytes: 500,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn enroll_twice_gives_the_same_machine_which_keeps_its_hostname() {
    let running = Running::start(|_| {}).await;
    timeout(DEADLINE, async {
        let mut agent = running.agent().await;
        let first = agent.enroll(enroll_request("agent-1", "old-name")).await.unwrap().into_inner();
        assert!(!first.machine_id.is_empty());
        assert_eq!(first.heartbeat_interval_ms, 10_000);
        let second = agent.enroll(enroll_request("agent-1", "server1")).await.unwrap().into_inner();
        assert_eq!(second.machine_id, first.machine_id);

        let mut fleet = running.fleet().await;
        let machines = fleet.list_machines(pb::ListMachinesRequest {}).await.unwrap().into_inner().machines;
        assert_eq!(machines.len(), 1);
        assert_eq!(machines[0].hostname, "old-name", "an enrolled agent cannot rename its machine");
        assert_eq!(machines[0].health, pb::Health::Unknown as i32);
        let status = agent.enroll(enroll_request("", "x")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        // Hostnames are unique: another agent cannot take a name that is enrolled.
        let status = agent.enroll(enroll_request("agent-2", "old-name")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
        assert!(status.message().contains("old-name"), "{}", status.message());
        // A hostname with control characters or of 100 KB is refused at enrollment.
        for bad in ["evil\nserver9  healthy".to_string(), "x".repeat(100_000), "\x1b]0;pwn\x07".to_string()] {
            let status = agent.enroll(enroll_request("agent-3", &bad)).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains("hostname") && status.message().len() < 400, "{}", status.message());
        }
        let machines = fleet.list_machines(pb::ListMachinesRequest {}).await.unwrap().into_inner().machines;
        assert_eq!(machines.len(), 1, "nothing refused was stored");
    })
    .await
    .expect("test within its deadline");
    running.stop().await;
}

#[tokio::test]
async fn heartbeat_for_an_unknown_machine_is_not_found() {
    let running = Running::start(|_| {}).await;
    timeout(DEADLINE, async {
        let mut agent = running.agent().await;
        let request = pb::HeartbeatRequest { machine_id: "no-such-machine".into(), ..Default::default() };
        let status = agent.heartbeat(tokio_stream::iter(vec![request])).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "machine no-such-machine is not enrolled; the agent must enroll again");

        let inventory = pb::ReportInventoryRequest {
            machine_id: "no-such-machine".into(),
            inventory: Some(pb::Inventory::default()),
        };
        assert_eq!(agent.report_inventory(inventory).await.unwrap_err().code(), tonic::Code::NotFound);
    })
    .await
    .expect("test within its deadline");
    running.stop().await;
}

#[tokio::test]
async fn an_oversized_message_is_refused_and_the_server_keeps_serving() {
    let running = Running::start(|config| config.max_message_bytes = 64 * 1024).await;
    timeout(DEADLINE, async {
        let mut agent = running.agent().await;
        let machine_id = agent.enroll(enroll_request("agent-1", "server1")).await.unwrap().into_inner().machine_id;
        let huge = pb::Inventory { cpu_model: "x".repeat(256 * 1024), ..Default::default() };
        let status = agent
            .report_inventory(pb::ReportInventoryRequest { machine_id: machine_id.clone(), inventory: Some(huge) })
            .await
            .unwrap_err();
        assert!(
            matches!(status.code(), tonic::Code::ResourceExhausted | tonic::Code::OutOfRange),
            "unexpected status {status:?}"
        );
        // The same connection and a new one both still work.
        let fine = pb::Inventory { cpu_model: "EPYC".into(), logical_cpus: 8, ..Default::default() };
        let changed = agent
            .report_inventory(pb::ReportInventoryRequest { machine_id: machine_id.clone(), inventory: Some(fine) })
            .await
            .unwrap()
            .into_inner()
            .changed;
        assert!(changed);
        let mut fleet = running.fleet().await;
        let machine =
            fleet.get_machine(pb::GetMachineRequest { name: "server1".into(), history: 0 }).await.unwrap().into_inner();
        assert_eq!(machine.inventory.unwrap().cpu_model, "EPYC");
    })
    .await
    .expect("test within its deadline");
    running.stop().await;
}

#[tokio::test]
async fn watch_events_delivers_health_changes_on_the_coordinators_clock() {
    let running = Running::start(|config| {
        config.heartbeat_interval = Duration::from_millis(200);
        config.evaluate_every = Duration::from_millis(50);
    })
    .await;
    timeout(DEADLINE, async {
        let mut fleet = running.fleet().await;
        let mut events = fleet
            .watch_events(pb::WatchEventsRequest { after_id: 0, follow: true, limit: 0 })
            .await
            .unwrap()
            .into_inner();
        let mut agent = running.agent().await;
        let enrolled = agent.enroll(enroll_request("agent-1", "server1")).await.unwrap().into_inner();
        assert_eq!(enrolled.heartbeat_interval_ms, 200);

        let (sender, receiver) = mpsc::channel(4);
        let message = |samples| pb::HeartbeatRequest {
            machine_id: enrolled.machine_id.clone(),
            samples,
            interval_ms: 200,
            dropped_samples: 0,
        };
        sender.send(message(vec![healthy_sample()])).await.unwrap();
        let directives = agent.heartbeat(ReceiverStream::new(receiver)).await.unwrap().into_inner();

        let mut health_changes = Vec::new();
        while health_changes.len() < 2 {
            let event = events.next().await.expect("the event stream stays open").unwrap();
            if event.kind == "health_changed" {
                health_changes.push(event);
            }
        }
        assert_eq!(health_changes[0].from_health, pb::Health::Unknown as i32);
        assert_eq!(health_changes[0].to_health, pb::Health::Healthy as i32);
        assert_eq!(health_changes[1].to_health, pb::Health::Unreachable as i32);

        let machine = fleet
            .get_machine(pb::GetMachineRequest { name: enrolled.machine_id.clone(), history: 5 })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(machine.health, pb::Health::Unreachable as i32);
        assert_eq!(machine.history.len(), 1);
        let last_seen = machine.last_seen.unwrap();
        let at = health_changes[1].at.unwrap();
        let silent_ms = (at.seconds - last_seen.seconds) * 1000 + i64::from(at.nanos - last_seen.nanos) / 1_000_000;
        assert!((600..=1600).contains(&silent_ms), "unreachable {silent_ms} ms after the last heartbeat");
        drop(sender);
        drop(directives);
    })
    .await
    .expect("test within its deadline");
    running.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_heartbeat_streams_and_drains() {
    let running = Running::start(|_| {}).await;
    let mut agent = running.agent().await;
    let enrolled = agent.enroll(enroll_request("agent-1", "server1")).await.unwrap().into_inner();
    let (sender, receiver) = mpsc::channel(4);
    sender
        .send(pb::HeartbeatRequest {
            machine_id: enrolled.machine_id,
            samples: vec![healthy_sample()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut directives = agent.heartbeat(ReceiverStream::new(receiver)).await.unwrap().into_inner();
    running.stop.cancel();
    // The stream ends (cleanly or with a status) instead of holding the server open.
    let end = timeout(Duration::from_secs(5), directives.next()).await.expect("stream ends at shutdown");
    assert!(end.is_none() || end.is_some_and(|item| item.is_err()));
    timeout(Duration::from_secs(5), running.server).await.expect("server drains").unwrap().unwrap();
    drop(sender);
    // The heartbeat accepted before the stop was flushed to the store.
    let store = crate::store::SqliteStore::open(running.state.path(), 10).unwrap();
    let machines = crate::store::Store::machines(&store).await.unwrap();
    assert!(machines[0].last_seen.is_some());
}

#[tokio::test]
async fn tls_works_with_the_generated_ca_and_fails_without_it() {
    let running = Running::start(|config| config.insecure = false).await;
    timeout(DEADLINE, async {
        let ca = std::fs::read_to_string(running.state.path().join("ca.pem")).unwrap();
        let client_toml = std::fs::read_to_string(running.state.path().join("client.toml")).unwrap();
        assert!(
            client_toml.contains(&format!("coordinator = \"https://127.0.0.1:{}\"", running.addr.port())),
            "{client_toml}"
        );

        // Operator calls need an operator credential: the local admin's, which the server wrote.
        let admin_dir = running.state.path().join("operators/admin");
        let admin_cert = std::fs::read_to_string(admin_dir.join("admin.pem")).unwrap();
        let admin_key = std::fs::read_to_string(admin_dir.join("admin.key")).unwrap();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca))
            .domain_name("localhost")
            .identity(tonic::transport::Identity::from_pem(&admin_cert, &admin_key));
        let channel = Endpoint::from_shared(format!("https://{}", running.addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut fleet = FleetServiceClient::new(channel);
        assert!(fleet.list_machines(pb::ListMachinesRequest {}).await.unwrap().into_inner().machines.is_empty());

        // A client that trusts another CA cannot complete the handshake.
        let other = tempfile::tempdir().unwrap();
        let other_ca = crate::pki::ensure(other.path(), &[]).unwrap().ca_pem;
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&other_ca)).domain_name("localhost");
        let result = Endpoint::from_shared(format!("https://{}", running.addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await;
        match result {
            Err(_) => {}
            Ok(channel) => {
                let status =
                    FleetServiceClient::new(channel).list_machines(pb::ListMachinesRequest {}).await.unwrap_err();
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            }
        }

        // The operator client reports the address it tried.
        let settings = fleetctl::client::ClientSettings {
            url: format!("https://{}", running.addr),
            ca_pem: Some(ca),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            identity: Some((admin_cert.clone(), crate::secret::Secret::new(admin_key.clone()))),
            bearer: None,
        };
        let client = fleetctl::client::connect(&settings).await.unwrap();
        assert!(client.list_machines().await.unwrap().is_empty());
    })
    .await
    .expect("test within its deadline");
    running.stop().await;
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let running = Running::start(|_| {}).await;
    timeout(DEADLINE, async {
        let mut health = tonic_health::pb::health_client::HealthClient::new(running.channel().await);
        let response = health
            .check(tonic_health::pb::HealthCheckRequest { service: "metalfleet.v1.AgentService".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
        let response = health
            .check(tonic_health::pb::HealthCheckRequest { service: "metalfleet.v1.FleetService".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    })
    .await
    .expect("test within its deadline");
    running.stop().await;
}

/// A store whose heartbeat writes wait for permits, so the write queue can be filled on purpose.
struct GatedStore {
    inner: crate::store::SqliteStore,
    gate: std::sync::Arc<tokio::sync::Semaphore>,
}

#[async_trait::async_trait]
impl crate::store::Store for GatedStore {
    async fn enroll(
        &self,
        enrollment: crate::domain::Enrollment,
        interval_ms: u32,
        now: chrono::DateTime<chrono::Utc>,
        takeover: crate::store::Takeover,
    ) -> Result<crate::store::Enrolled, crate::store::StoreError> {
        self.inner.enroll(enrollment, interval_ms, now, takeover).await
    }
    async fn machine(&self, id: &str) -> Result<Option<crate::domain::Machine>, crate::store::StoreError> {
        self.inner.machine(id).await
    }
    async fn machines(&self) -> Result<Vec<crate::domain::Machine>, crate::store::StoreError> {
        self.inner.machines().await
    }
    async fn put_inventory(
        &self,
        id: &str,
        inventory: crate::domain::Inventory,
    ) -> Result<bool, crate::store::StoreError> {
        self.inner.put_inventory(id, inventory).await
    }
    async fn inventory(&self, id: &str) -> Result<Option<crate::domain::Inventory>, crate::store::StoreError> {
        self.inner.inventory(id).await
    }
    async fn record_samples(&self, writes: Vec<crate::store::SampleWrite>) -> Result<(), crate::store::StoreError> {
        self.gate.acquire().await.expect("gate open").forget();
        self.inner.record_samples(writes).await
    }
    async fn latest_sample(&self, id: &str) -> Result<Option<crate::domain::Sample>, crate::store::StoreError> {
        self.inner.latest_sample(id).await
    }
    async fn history(&self, id: &str, limit: u32) -> Result<Vec<crate::domain::Sample>, crate::store::StoreError> {
        self.inner.history(id, limit).await
    }
    async fn set_health(
        &self,
        id: &str,
        health: crate::domain::Health,
        reasons: Vec<String>,
    ) -> Result<(), crate::store::StoreError> {
        self.inner.set_health(id, health, reasons).await
    }
    async fn append_event(
        &self,
        event: crate::domain::NewEvent,
    ) -> Result<crate::domain::Event, crate::store::StoreError> {
        self.inner.append_event(event).await
    }
    async fn events(
        &self,
        after_id: u64,
        limit: Option<u32>,
    ) -> Result<Vec<crate::domain::Event>, crate::store::StoreError> {
        self.inner.events(after_id, limit).await
    }
}

#[tokio::test]
async fn a_full_write_queue_slows_agents_down_and_a_drained_one_restores_them() {
    let state = tempfile::tempdir().unwrap();
    let overrides = Overrides { listen: None, state_dir: Some(state.path().to_owned()), insecure: true };
    let mut config =
        Config::from_sources(None, &std::collections::HashMap::<String, String>::new(), &overrides).unwrap();
    config.write_queue = 16;
    config.heartbeat_interval = Duration::from_secs(5);
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let store = GatedStore { inner: crate::store::SqliteStore::open(state.path(), 100).unwrap(), gate: gate.clone() };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let prepared =
        crate::server::prepare_with_store(listener, config, std::sync::Arc::new(store), stop.clone()).await.unwrap();
    let server = tokio::spawn(prepared.run());
    let running = Running { addr, stop, server, state };

    timeout(DEADLINE, async {
        let mut agent = running.agent().await;
        let machine_id = agent.enroll(enroll_request("agent-1", "server1")).await.unwrap().into_inner().machine_id;
        let message = || pb::HeartbeatRequest {
            machine_id: machine_id.clone(),
            samples: vec![healthy_sample()],
            // The agent runs at its own interval, not the configured 5 s: backpressure doubles its own.
            interval_ms: 2000,
            dropped_samples: 0,
        };
        let (sender, receiver) = mpsc::channel(32);
        sender.send(message()).await.unwrap();
        let mut directives = agent.heartbeat(ReceiverStream::new(receiver)).await.unwrap().into_inner();
        // The writer holds the first heartbeat at the closed gate; the rest fill the queue.
        for _ in 0..13 {
            sender.send(message()).await.unwrap();
        }
        let slow = directives.next().await.expect("a directive").unwrap();
        let Some(pb::directive::Kind::SetInterval(slow)) = slow.kind else { panic!("not SetInterval: {slow:?}") };
        assert_eq!(slow.interval_ms, 4000);
        assert_eq!(slow.reason, "coordinator under load");

        gate.add_permits(1000);
        // Once the queue has drained, the next heartbeat brings the interval back.
        let restored = loop {
            sender.send(message()).await.unwrap();
            let next = timeout(Duration::from_millis(200), directives.next()).await;
            if let Ok(Some(Ok(directive))) = next {
                break directive;
            }
        };
        let Some(pb::directive::Kind::SetInterval(restored)) = restored.kind else { panic!("not SetInterval") };
        assert_eq!(restored.interval_ms, 2000);
        drop(sender);
    })
    .await
    .expect("test within its deadline");
    running.stop().await;
}

#[tokio::test]
async fn a_heartbeat_stream_without_a_first_message_times_out() {
    let running = Running::start(|config| config.request_timeout = Duration::from_millis(300)).await;
    timeout(DEADLINE, async {
        let mut agent = running.agent().await;
        let (sender, receiver) = mpsc::channel::<pb::HeartbeatRequest>(1);
        let status = agent.heartbeat(ReceiverStream::new(receiver)).await.unwrap_err();
        assert!(
            matches!(status.code(), tonic::Code::Cancelled | tonic::Code::DeadlineExceeded),
            "unexpected status {status:?}"
        );
        drop(sender);
        // The server still answers.
        let mut fleet = running.fleet().await;
        fleet.list_machines(pb::ListMachinesRequest {}).await.unwrap();
    })
    .await
    .expect("test within its deadline");
    running.stop().await;
}
