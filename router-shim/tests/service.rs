//! The gRPC service over a real tonic server on 127.0.0.1:0: commit-confirm through `Confirm`,
//! the typed client, and the `serve` binary's readiness line and health service.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use router_shim::backend::{Backend, BackendError};
use router_shim::client::Client;
use router_shim::model::{PortForward, Protocol, RemoteManagement, RouterState};
use router_shim::shim::{Shim, ShimSettings};
use router_shim_api::dhcp_off;
use tokio_util::sync::CancellationToken;

/// A router in memory.
#[derive(Default)]
struct FakeRouter {
    state: Mutex<(bool, Vec<PortForward>, RemoteManagement)>,
}

#[async_trait]
impl Backend for FakeRouter {
    fn name(&self) -> &'static str {
        "fake"
    }
    async fn state(&self) -> Result<RouterState, BackendError> {
        let s = self.state.lock().unwrap();
        Ok(RouterState {
            backend: "fake".into(),
            dhcp_enabled: s.0,
            dhcp_pool: String::new(),
            forwards: s.1.clone(),
            remote_management: s.2.clone(),
        })
    }
    async fn set_dhcp(&self, enabled: bool) -> Result<(), BackendError> {
        self.state.lock().unwrap().0 = enabled;
        Ok(())
    }
    async fn add_forward(&self, forward: &PortForward) -> Result<(), BackendError> {
        let mut s = self.state.lock().unwrap();
        s.1.retain(|f| f.name != forward.name);
        s.1.push(PortForward { protected: false, ..forward.clone() });
        Ok(())
    }
    async fn remove_forward(&self, name: &str) -> Result<(), BackendError> {
        self.state.lock().unwrap().1.retain(|f| f.name != name);
        Ok(())
    }
    async fn set_remote_management(&self, management: &RemoteManagement) -> Result<(), BackendError> {
        self.state.lock().unwrap().2 = management.clone();
        Ok(())
    }
    async fn reset(&self, _: Option<bool>) -> Result<(), BackendError> {
        self.state.lock().unwrap().1.clear();
        Ok(())
    }
}

fn ssh() -> PortForward {
    PortForward {
        name: "main-ssh".into(),
        protocol: Protocol::Tcp,
        external_port: 22,
        target: "172.16.0.3:22".parse().unwrap(),
        protected: true,
    }
}

struct Server {
    address: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    shim: Arc<Shim>,
    _dir: tempfile::TempDir,
}

async fn start(router: Arc<FakeRouter>, confirm_timeout: Duration) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let settings = ShimSettings {
        lan_prefix: "172.16.0.0/20".parse().unwrap(),
        protected_forwards: vec!["main-ssh".into()],
        confirm_timeout,
        dhcp_found_file: dir.path().join("dhcp-found.json"),
        auto_rollback: true,
    };
    let shim = Shim::new(router, settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let task =
        tokio::spawn(router_shim::grpc::serve(listener, shim.clone(), None, Duration::from_secs(10), stop.clone()));
    Server { address, stop, task, shim, _dir: dir }
}

impl Server {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task).await.expect("drains in 5s").unwrap().unwrap();
    }
}

async fn wait_until<F: std::future::Future<Output = bool>>(deadline: Duration, mut check: impl FnMut() -> F) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn unconfirmed_protected_removal_is_rolled_back_within_the_timeout() {
    let outer = async {
        let router = Arc::new(FakeRouter::default());
        let server = start(router.clone(), Duration::from_secs(2)).await;
        let mut client = Client::connect(&server.address, None, Duration::from_secs(5)).await.unwrap();
        assert!(client.ensure_forwards(&[ssh()]).await.unwrap());
        assert!(!client.ensure_forwards(&[ssh()]).await.unwrap(), "second time is a no-op");

        let request = proto::v1::RemovePortForwardRequest { name: "main-ssh".into() };
        let result = client.raw().remove_port_forward(request).await.unwrap().into_inner();
        assert!(result.changed);
        assert!(!result.pending_change_id.is_empty());
        let deadline: SystemTime = result.confirm_deadline.unwrap().try_into().unwrap();
        assert!(deadline > SystemTime::now() && deadline <= SystemTime::now() + Duration::from_secs(2));
        assert!(client.state().await.unwrap().forwards.is_empty(), "applied at once");

        let started = Instant::now();
        let restored = wait_until(Duration::from_secs(6), || {
            let mut client = client.clone();
            async move { client.state().await.unwrap().forwards.len() == 1 }
        })
        .await;
        assert!(restored, "rolled back");
        assert!(started.elapsed() < Duration::from_secs(4), "within the timeout, took {:?}", started.elapsed());
        assert!(!client.confirm(&result.pending_change_id).await.unwrap(), "too late to confirm");
        server.stop().await;
    };
    tokio::time::timeout(Duration::from_secs(30), outer).await.expect("test deadline");
}

#[tokio::test]
async fn confirmed_remote_management_disable_stays() {
    let outer = async {
        let router = Arc::new(FakeRouter::default());
        let server = start(router.clone(), Duration::from_secs(1)).await;
        let mut client = Client::connect(&server.address, None, Duration::from_secs(5)).await.unwrap();
        let enable = proto::v1::SetRemoteManagementRequest { enabled: true, allowed_from: vec!["0.0.0.0/0".into()] };
        let result = client.raw().set_remote_management(enable).await.unwrap().into_inner();
        assert!(result.pending_change_id.is_empty(), "enabling cannot cut anyone off");
        let disable = proto::v1::SetRemoteManagementRequest { enabled: false, allowed_from: vec![] };
        let result = client.raw().set_remote_management(disable).await.unwrap().into_inner();
        assert!(server.shim.pending_ids().contains(&result.pending_change_id));
        assert!(client.confirm(&result.pending_change_id).await.unwrap());
        // Nothing is left to roll back: the timer finds no pending change (timing itself is covered
        // with a paused clock in `shim::tests::confirmed_remote_management_disable_stays`).
        assert!(server.shim.pending_ids().is_empty());
        assert!(!client.confirm(&result.pending_change_id).await.unwrap(), "confirmed once only");
        assert!(!client.state().await.unwrap().remote_management.enabled);
        assert!(!router.state.lock().unwrap().2.enabled);
        server.stop().await;
    };
    tokio::time::timeout(Duration::from_secs(30), outer).await.expect("test deadline");
}

#[tokio::test]
async fn bad_input_over_grpc_is_invalid_argument_and_applies_nothing() {
    let router = Arc::new(FakeRouter::default());
    let server = start(router.clone(), Duration::from_secs(60)).await;
    let mut client = Client::connect(&server.address, None, Duration::from_secs(5)).await.unwrap();
    let mut outside = ssh();
    outside.target = "10.1.1.1:22".parse().unwrap();
    let mut spaced = ssh();
    spaced.name = "main ssh".into();
    for forward in [outside, spaced] {
        let request = proto::v1::AddPortForwardRequest {
            forward: Some(router_shim::grpc::convert::forward_to_wire(&forward)),
            replace: false,
        };
        let status = client.raw().add_port_forward(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }
    let mut wire = router_shim::grpc::convert::forward_to_wire(&ssh());
    wire.external_port = 0;
    let request = proto::v1::AddPortForwardRequest { forward: Some(wire), replace: false };
    let status = client.raw().add_port_forward(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("out of range"), "{}", status.message());
    assert!(router.state.lock().unwrap().1.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_request_is_refused_and_the_shim_keeps_serving() {
    let router = Arc::new(FakeRouter::default());
    let server = start(router.clone(), Duration::from_secs(60)).await;
    let mut client = Client::connect(&server.address, None, Duration::from_secs(5)).await.unwrap();
    let mut huge = router_shim::grpc::convert::forward_to_wire(&ssh());
    huge.name = "x".repeat(router_shim::grpc::MAX_MESSAGE_BYTES + 1);
    let request = proto::v1::AddPortForwardRequest { forward: Some(huge), replace: false };
    let status = client.raw().add_port_forward(request).await.unwrap_err();
    // tonic answers OUT_OF_RANGE for a message over the decoding limit.
    assert!(matches!(status.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted), "{status:?}");
    assert!(router.state.lock().unwrap().1.is_empty(), "nothing applied");
    // The next, normal call is served.
    client.raw().get_state(proto::v1::GetStateRequest {}).await.expect("still serving");
    server.stop().await;
}

#[test]
fn serve_binary_prints_readiness_and_answers_health() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shim.toml");
    std::fs::write(
        &config,
        format!(
            "backend = \"manual\"\nlan_prefix = \"172.16.0.0/20\"\nstate_dir = \"{}\"\n[manual]\nwan_address = \"127.0.0.1\"\nprobe_interface = \"lo\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_router-shim"))
        .args(["--config", config.to_str().unwrap(), "serve", "--insecure", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = metalfleet_common::readiness::parse(&line).expect("readiness line");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let request = tonic_health::pb::HealthCheckRequest { service: "metalfleet.v1.RouterShim".into() };
        let response = health.check(request).await.unwrap().into_inner();
        assert_eq!(response.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
        let mut client = Client::connect(&format!("http://{addr}"), None, Duration::from_secs(5)).await.unwrap();
        let state = client.state().await.unwrap();
        assert_eq!(state.backend, "manual");
    });
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

/// A CA, a server certificate for `localhost`, and a client certificate, all PEM.
fn pki() -> (String, (String, String), (String, String)) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()]).unwrap().signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    (ca.pem(), leaf("localhost"), leaf("coordinator"))
}

#[tokio::test]
async fn mutual_tls_admits_the_coordinator_and_refuses_a_client_without_certificate() {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
    let outer = async {
        let (ca, (server_cert, server_key), (client_cert, client_key)) = pki();
        let dir = tempfile::tempdir().unwrap();
        let settings = ShimSettings {
            lan_prefix: "172.16.0.0/20".parse().unwrap(),
            protected_forwards: vec![],
            confirm_timeout: Duration::from_secs(60),
            dhcp_found_file: dir.path().join("dhcp-found.json"),
            auto_rollback: true,
        };
        let shim = Shim::new(Arc::new(FakeRouter::default()), settings);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&server_cert, &server_key))
            .client_ca_root(Certificate::from_pem(&ca));
        let stop = CancellationToken::new();
        let task =
            tokio::spawn(router_shim::grpc::serve(listener, shim, Some(tls), Duration::from_secs(10), stop.clone()));
        let address = format!("https://localhost:{port}");

        let good = ClientTlsConfig::new()
            .domain_name("localhost")
            .ca_certificate(Certificate::from_pem(&ca))
            .identity(Identity::from_pem(&client_cert, &client_key));
        let mut client = Client::connect(&address, Some(good), Duration::from_secs(5)).await.unwrap();
        assert_eq!(client.state().await.unwrap().backend, "fake");

        let anonymous = ClientTlsConfig::new().domain_name("localhost").ca_certificate(Certificate::from_pem(&ca));
        let refused = match Client::connect(&address, Some(anonymous), Duration::from_secs(5)).await {
            Err(_) => true,
            Ok(mut client) => client.state().await.is_err(),
        };
        assert!(refused, "a client without a certificate signed by the CA is refused");

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap().unwrap();
    };
    tokio::time::timeout(Duration::from_secs(30), outer).await.expect("test deadline");
}

#[tokio::test]
async fn probe_over_grpc_and_the_coordinator_proof_on_loopback() {
    let outer = async {
        let router = Arc::new(FakeRouter::default());
        router.state.lock().unwrap().0 = true;
        let server = start(router.clone(), Duration::from_secs(60)).await;
        let mut client = Client::connect(&server.address, None, Duration::from_secs(5)).await.unwrap();
        let request = proto::v1::ProbeDhcpRequest { interface: String::new(), window_ms: 500, stop_at_first: false };
        let status = client.raw().probe_dhcp(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        // The probe part: binding the DHCP client port needs root.
        metalfleet_skip::require!(metalfleet_skip::root());
        // Nobody serves DHCP on loopback: the shim's probe sees nobody, and so does the local proof.
        let report = client.probe_dhcp_remote("lo", Duration::from_millis(600)).await.unwrap();
        assert!(report.discovers_sent >= 3, "{report:?}");
        assert!(report.offers.is_empty());
        assert_eq!(report.interface, "lo");
        let proof = dhcp_off::switch_off_and_prove(&mut client, "lo", Duration::from_millis(600)).await.unwrap();
        assert!(proof.offers.is_empty() && proof.discovers_sent >= 3);
        assert!(!router.state.lock().unwrap().0, "the shim switched DHCP off first");
        server.stop().await;
    };
    tokio::time::timeout(Duration::from_secs(30), outer).await.expect("test deadline");
}
