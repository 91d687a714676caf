//! The heartbeat client against a tiny fake `AgentService` served by tonic on 127.0.0.1.
//!
//! Checks enroll -> inventory -> samples, the SetInterval and SendInventory directives, delivery of samples
//! buffered while the coordinator was down (oldest first), re-enrollment when the coordinator forgets the
//! machine, and TLS with a configured CA.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use agent::buffer::SampleBuffer;
use agent::cli::RunArgs;
use agent::client::{Exit, SharedBuffer};
use agent::config::Config;
use proto::v1 as pb;
use support::{Event, Server, agent_config, taken_at, wait_until};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

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
    // A sample whose acknowledgement was lost with the connection may come again (the coordinator skips
    // it by its seq); everything else arrives oldest first, once.
    let mut last_seq = 0;
    for sample in &backlog.samples {
        assert!(sample.seq > last_seq, "seqs increase within the backlog");
        last_seq = sample.seq;
        let at = taken_at(sample);
        if at > last_seen {
            last_seen = at;
        }
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
