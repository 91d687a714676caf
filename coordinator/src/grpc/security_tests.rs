//! Security service tests over real TLS on 127.0.0.1:0: enrollment refusals, identity checks,
//! revocation (including an open heartbeat stream), operator roles and the audit log.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fleetctl::GlobalArgs;
use fleetctl::client::FleetClient;
use proto::v1 as pb;
use proto::v1::agent_service_client::AgentServiceClient;
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::{Config, Overrides};
use crate::security_store::{SecurityStore, TokenRecord};
use crate::server::ServeError;

const DEADLINE: Duration = Duration::from_secs(30);

struct Secured {
    addr: SocketAddr,
    stop: CancellationToken,
    server: JoinHandle<Result<(), ServeError>>,
    state: tempfile::TempDir,
    ca_pem: String,
}

impl Secured {
    async fn start() -> Secured {
        Self::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut Config)) -> Secured {
        let state = tempfile::tempdir().unwrap();
        let overrides = Overrides { listen: None, state_dir: Some(state.path().to_owned()), insecure: false };
        let mut config =
            Config::from_sources(None, &std::collections::HashMap::<String, String>::new(), &overrides).unwrap();
        adjust(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let prepared = crate::server::prepare(listener, config, stop.clone()).await.unwrap();
        let server = tokio::spawn(prepared.run());
        let ca_pem = std::fs::read_to_string(::store::StateDir::new(state.path()).ca_cert()).unwrap();
        Secured { addr, stop, server, state, ca_pem }
    }

    /// fleetctl's client, configured by the client.toml at `path` (the server's own: the local admin).
    async fn operator(&self, client_toml: &Path) -> FleetClient {
        let args = GlobalArgs { config: Some(client_toml.to_owned()), ..GlobalArgs::default() };
        let target = fleetctl::resolve_target(&args, &std::collections::HashMap::<String, String>::new()).unwrap();
        fleetctl::client::connect(&fleetctl::client_settings(&target).unwrap()).await.unwrap()
    }

    async fn admin(&self) -> FleetClient {
        self.operator(&self.state.path().join(crate::client_config::FILE_NAME)).await
    }

    async fn channel(&self, identity: Option<(&str, &str)>, ca_pem: &str) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Endpoint::from_shared(format!("https://{}", self.addr)).unwrap().tls_config(tls)?.connect().await
    }

    async fn anonymous_agent(&self) -> AgentServiceClient<Channel> {
        AgentServiceClient::new(self.channel(None, &self.ca_pem).await.unwrap())
    }

    fn security_store(&self) -> SecurityStore {
        SecurityStore::open(self.state.path()).unwrap()
    }

    async fn machine_count(&self) -> usize {
        self.admin().await.list_machines().await.unwrap().len()
    }

    async fn stop(self) {
        self.stop.cancel();
        let result = timeout(Duration::from_secs(10), self.server).await.expect("server drains within 10s");
        result.unwrap().unwrap();
    }
}

/// An agent's key and the enrollment request for it.
struct TestAgent {
    key: KeyPair,
    agent_id: String,
    hostname: String,
}

impl TestAgent {
    fn new(hostname: &str) -> TestAgent {
        TestAgent {
            key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
            agent_id: uuid::Uuid::new_v4().to_string(),
            hostname: hostname.to_string(),
        }
    }

    fn request(&self, token: &str) -> pb::EnrollRequest {
        let csr = CertificateParams::default().serialize_request(&self.key).unwrap().pem().unwrap();
        pb::EnrollRequest {
            agent_id: self.agent_id.clone(),
            hostname: self.hostname.clone(),
            mac_addresses: vec![],
            agent_version: "test".into(),
            token: token.to_string(),
            csr_pem: csr,
        }
    }

    /// Enrolls with `token`; returns the machine id and an mTLS client with the issued certificate.
    async fn enroll(&self, server: &Secured, token: &str) -> (String, AgentServiceClient<Channel>) {
        let response = server.anonymous_agent().await.enroll(self.request(token)).await.unwrap().into_inner();
        assert!(response.certificate_pem.contains("BEGIN CERTIFICATE"));
        let key = self.key.serialize_pem();
        let channel = server.channel(Some((&response.certificate_pem, &key)), &response.ca_pem).await.unwrap();
        (response.machine_id, AgentServiceClient::new(channel))
    }
}

async fn token(server: &Secured, uses: u32) -> String {
    let (_, secret) = server.admin().await.create_token(3600, None, uses).await.unwrap();
    secret.expose().to_string()
}

fn inventory(machine_id: &str) -> pb::ReportInventoryRequest {
    pb::ReportInventoryRequest { machine_id: machine_id.to_string(), inventory: Some(pb::Inventory::default()) }
}

#[tokio::test]
async fn enrollment_is_refused_without_a_valid_token_and_stores_nothing() {
    let server = Secured::start().await;
    timeout(DEADLINE, async {
        let agent = TestAgent::new("host-a");
        let mut client = server.anonymous_agent().await;

        let status = client.enroll(agent.request("")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("token is required"), "{status:?}");

        let status = client.enroll(agent.request("mf1.nope.nope")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("unknown enrollment token"), "{status:?}");

        // An expired token (written straight into the store, an hour in the past).
        let (id, secret) = crate::enroll::new_token();
        let past = chrono::Utc::now() - chrono::Duration::hours(1);
        let record = TokenRecord {
            id,
            machine: None,
            uses_left: 1,
            expires_at: past,
            created_at: past,
            created_by: "test".into(),
            revoked: false,
        };
        server.security_store().insert_token(record, crate::enroll::hash_secret(secret.expose())).await.unwrap();
        let status = client.enroll(agent.request(secret.expose())).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("expired"), "{status:?}");
        assert_eq!(server.machine_count().await, 0, "refused agents leave no machine behind");

        // A single-use token works once.
        let single = token(&server, 1).await;
        agent.enroll(&server, &single).await;
        let other = TestAgent::new("host-b");
        let status = client.enroll(other.request(&single)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("already used"), "{status:?}");
        assert_eq!(server.machine_count().await, 1);
        assert_eq!(server.admin().await.list_agents().await.unwrap().len(), 1, "one certificate issued");

        // A token bound to another machine.
        let (_, bound) = server.admin().await.create_token(3600, Some("host-z"), 1).await.unwrap();
        let status = client.enroll(other.request(bound.expose())).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert_eq!(server.machine_count().await, 1);
    })
    .await
    .expect("test within its deadline");
    server.stop().await;
}

#[tokio::test]
async fn calls_need_the_certificate_of_the_machine_they_name() {
    let server = Secured::start().await;
    timeout(DEADLINE, async {
        let two = token(&server, 2).await;
        let (a_id, mut a) = TestAgent::new("host-a").enroll(&server, &two).await;
        let (b_id, _b) = TestAgent::new("host-b").enroll(&server, &two).await;
        assert!(a.report_inventory(inventory(&a_id)).await.is_ok());

        // A valid agent reporting as another machine.
        let status = a.report_inventory(inventory(&b_id)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

        // No certificate at all.
        let status = server.anonymous_agent().await.report_inventory(inventory(&a_id)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");

        // A certificate from another CA naming a real machine: refused at the handshake.
        let other = tempfile::tempdir().unwrap();
        crate::pki::ensure(other.path(), &[]).unwrap();
        let (other_ca, other_key) = crate::enroll::load_ca(other.path()).unwrap();
        let uri = format!("{}{a_id}", crate::enroll::MACHINE_URI);
        let (forged, key) =
            crate::enroll::issue_client_cert(&other_ca, &other_key, "forged", &[uri], Duration::from_secs(600))
                .unwrap();
        match server.channel(Some((&forged.certificate_pem, key.expose())), &server.ca_pem).await {
            Err(_) => {}
            Ok(channel) => {
                // With TLS 1.3 the client learns of the refusal at its first request.
                let status = AgentServiceClient::new(channel).report_inventory(inventory(&a_id)).await.unwrap_err();
                assert!(matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown), "{status:?}");
                assert!(status.message().contains("transport error"), "{status:?}");
            }
        }
        assert_eq!(server.machine_count().await, 2);
    })
    .await
    .expect("test within its deadline");
    server.stop().await;
}

#[tokio::test]
async fn a_revoked_certificate_ends_the_heartbeat_stream_and_is_refused_after() {
    let server = Secured::start().await;
    timeout(DEADLINE, async {
        let one = token(&server, 1).await;
        let (id, mut agent) = TestAgent::new("host-r").enroll(&server, &one).await;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let hello =
            pb::HeartbeatRequest { machine_id: id.clone(), samples: vec![], interval_ms: 1000, dropped_samples: 0 };
        tx.send(hello).await.unwrap();
        let mut stream = agent.heartbeat(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();

        let (revoked_id, count) = server.admin().await.revoke_agent("host-r").await.unwrap();
        assert_eq!((revoked_id.as_str(), count), (id.as_str(), 1));

        let status = loop {
            match stream.message().await {
                Ok(Some(_directive)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("certificate revoked"), "{status:?}");
        let status = agent.report_inventory(inventory(&id)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("certificate revoked"), "{status:?}");
        // Enroll with the revoked certificate is refused too.
        let status = agent.enroll(TestAgent::new("host-r").request("")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        let listed = server.admin().await.list_agents().await.unwrap();
        assert!(listed.iter().all(|c| c.revoked), "{listed:?}");
        drop(tx);
    })
    .await
    .expect("test within its deadline");
    server.stop().await;
}

#[tokio::test]
async fn read_only_operators_are_refused_changes_and_both_roles_are_audited() {
    let server = Secured::start().await;
    timeout(DEADLINE, async {
        let store = server.security_store();
        // Give the read-only operator a config pointing at this server (the server's client.toml has the address).
        let viewer =
            crate::operators::add(server.state.path(), &store, "viewer", "read-only", true, None).await.unwrap();
        let viewer_client = server.operator(&viewer.client_config).await;
        assert!(viewer_client.list_machines().await.is_ok(), "read-only may read");
        let refused = viewer_client.create_token(60, None, 1).await.unwrap_err();
        assert!(
            refused.to_string().contains("PermissionDenied") || refused.to_string().contains("permission"),
            "{refused}"
        );

        // The bearer token alone (no certificate) works as well.
        let settings = fleetctl::client::ClientSettings {
            url: format!("https://{}", server.addr),
            ca_pem: Some(server.ca_pem.clone()),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            identity: None,
            bearer: Some(viewer.bearer.clone().unwrap()),
        };
        let bearer_client = fleetctl::client::connect(&settings).await.unwrap();
        assert!(bearer_client.list_machines().await.is_ok());

        // Nobody: refused.
        let anonymous = fleetctl::client::ClientSettings { bearer: None, ..settings.clone() };
        let error = fleetctl::client::connect(&anonymous).await.unwrap().list_machines().await.unwrap_err();
        assert!(error.to_string().contains("Unauthenticated") || error.to_string().contains("credential"), "{error}");

        let admin = server.admin().await;
        admin.create_token(60, Some("server1"), 1).await.unwrap();
        let audit = admin.audit(0).await.unwrap();
        let lines: Vec<_> = audit.iter().map(|e| (e.operator.as_str(), e.action.as_str(), e.result.as_str())).collect();
        assert!(lines.contains(&("viewer", "CreateToken", "permission_denied")), "{lines:?}");
        assert!(lines.contains(&("admin", "CreateToken", "ok")), "{lines:?}");
        let admin_line = audit.iter().find(|e| e.operator == "admin").unwrap();
        assert!(admin_line.args.contains("server1"), "{admin_line:?}");
        // The audit log never holds a token secret.
        assert!(audit.iter().all(|e| !e.args.contains("mf1.")), "{audit:?}");
    })
    .await
    .expect("test within its deadline");
    server.stop().await;
}

#[tokio::test]
async fn enroll_is_rate_limited_per_source_address() {
    let server = Secured::start_with(|config| config.enroll.enroll_per_minute = 3).await;
    timeout(DEADLINE, async {
        let mut client = server.anonymous_agent().await;
        let agent = TestAgent::new("noisy");
        for _ in 0..3 {
            let status = client.enroll(agent.request("")).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        }
        let status = client.enroll(agent.request("")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("127.0.0.1"), "{status:?}");
    })
    .await
    .expect("test within its deadline");
    server.stop().await;
}
