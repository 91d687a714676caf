//! `coordinator serve`: the store, the fleet tasks, TLS, and the tonic server, with a graceful drain.

use std::net::SocketAddr;
use std::sync::Arc;

use ::store::StateDir;
use proto::v1::agent_service_server::AgentServiceServer;
use proto::v1::fleet_service_server::FleetServiceServer;
use proto::v1::security_service_server::SecurityServiceServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::auth::Security;
use crate::client_config::ClientConfig;
use crate::config::Config;
use crate::fleet::{Fleet, FleetError, FleetSettings};
use crate::grpc::agent_service::AgentApi;
use crate::grpc::fleet_service::FleetApi;
use crate::grpc::gate::OperatorGate;
use crate::grpc::security_service::{self, SecurityApi};
use crate::listener::{self, Listener};
use crate::pki::{self, PkiError};
use crate::poller::{self, EventSink};
use crate::store::{MaasStore, SqliteStore, Store, StoreError};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the state directory {path}: {source}; create it or pass --state-dir")]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("cannot write {path}: {source}; check the state directory's permissions")]
    ClientConfig {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot read the listener's address: {0}")]
    Listener(std::io::Error),
    #[error(transparent)]
    Tls(#[from] listener::Error),
    #[error("cannot create the local admin credential: {0}")]
    Operators(#[from] crate::operators::OperatorError),
    #[error(transparent)]
    Poller(#[from] crate::poller::StartError),
    #[error(
        "the store {store} is {why}, but a coordinator has run in this state directory: \
         its machines, certificates, revocations and operators would be lost (found {ca}); restore the store from a backup \
         (`coordinator restore BACKUP_DIR --state-dir {state_dir}`), or start with an empty store on purpose \
         with `coordinator serve --new-store`"
    )]
    StoreMissing { store: std::path::PathBuf, why: &'static str, ca: std::path::PathBuf, state_dir: std::path::PathBuf },
}

/// Refuses to start over a missing or empty store next to an existing CA (a deleted or truncated
/// database would otherwise be replaced by an empty one without a word). `new_store` says the operator
/// wants a fresh store on purpose.
///
/// # Errors
/// [`ServeError::StoreMissing`], or the store file cannot be read.
pub fn guard_store(state_dir: &std::path::Path, new_store: bool) -> Result<(), ServeError> {
    // A coordinator has run here when its CA (TLS) or its client.toml (any mode) exists.
    let state = StateDir::new(state_dir);
    let ca = [state.ca_cert(), state.client_config()].into_iter().find(|p| p.exists());
    let store = state.database();
    let Some(ca) = ca.filter(|_| !new_store) else {
        return Ok(());
    };
    let why = if !store.exists() {
        "missing"
    } else if !SqliteStore::has_schema(state_dir)? {
        "empty (no schema: truncated or replaced)"
    } else {
        return Ok(());
    };
    Err(ServeError::StoreMissing { store, why, ca, state_dir: state_dir.to_owned() })
}

/// Serves on `listener` (already bound) until `stop` is cancelled, then drains for
/// `config.grace_period` and flushes the write queue. See [`prepare`] and [`Prepared::run`].
///
/// # Errors
/// Set-up failures (state directory, store, certificates) and transport failures.
pub async fn serve(listener: TcpListener, config: Config, stop: CancellationToken) -> Result<(), ServeError> {
    prepare(listener, config, stop).await?.run().await
}

/// A server whose store, certificates and `client.toml` exist, ready to [`run`](Prepared::run).
pub struct Prepared {
    router: tonic::transport::server::Router,
    /// Our own accept loop (connection limits, TLS, preface timeout); tonic serves what it lets through.
    listener: Listener,
    bound: SocketAddr,
    config: Config,
    stop: CancellationToken,
    fleet_stop: CancellationToken,
    tasks: crate::fleet::FleetTasks,
    health: tonic_health::server::HealthReporter,
    /// The MAAS poller's own stop token and task, when `[maas]` is configured.
    poller: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    /// The redeploy engine, joined within the grace period so no step is left half-written.
    ops: crate::operations::Operations,
}

/// Opens the store, starts the fleet's tasks, creates the certificates and writes `client.toml`.
///
/// # Errors
/// The state directory, store or certificates cannot be set up.
pub async fn prepare(listener: TcpListener, config: Config, stop: CancellationToken) -> Result<Prepared, ServeError> {
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|source| ServeError::StateDir { path: config.state_dir.clone(), source })?;
    let store = Arc::new(SqliteStore::open(&config.state_dir, config.history_samples)?);
    let verify_store: Arc<dyn crate::verify::VerifySources> = store.clone();
    prepare_inner(listener, config, store.clone(), Some(store), Some(verify_store), stop).await
}

/// Like [`prepare`], with a store chosen by the caller (another backend, or a test double).
///
/// # Errors
/// The state directory or certificates cannot be set up.
pub async fn prepare_with_store(
    listener: TcpListener,
    config: Config,
    store: Arc<dyn Store>,
    stop: CancellationToken,
) -> Result<Prepared, ServeError> {
    prepare_with_stores(listener, config, store, None, stop).await
}

/// Like [`prepare_with_store`], with the store the MAAS poller keeps its view in (needed when `[maas]` is set).
///
/// # Errors
/// The state directory or certificates cannot be set up, or the MAAS poller cannot start (key file, store).
pub async fn prepare_with_stores(
    listener: TcpListener,
    config: Config,
    store: Arc<dyn Store>,
    maas_store: Option<Arc<dyn MaasStore>>,
    stop: CancellationToken,
) -> Result<Prepared, ServeError> {
    prepare_inner(listener, config, store, maas_store, None, stop).await
}

/// The fleet's state and its tasks. They outlive the server by a little (their own stop token): they flush what
/// the last calls queued.
async fn start_fleet(
    config: &Config,
    store: Arc<dyn Store>,
) -> Result<(Arc<Fleet>, crate::fleet::FleetTasks, CancellationToken), ServeError> {
    let settings = FleetSettings {
        thresholds: config.health,
        heartbeat_interval: config.heartbeat_interval,
        write_queue: config.write_queue,
        evaluate_every: config.evaluate_every,
        history_samples: config.history_samples,
    };
    let fleet_stop = CancellationToken::new();
    let (fleet, tasks) = Fleet::start(store, settings, fleet_stop.clone()).await?;
    Ok((fleet, tasks, fleet_stop))
}

type PollerTask = (CancellationToken, tokio::task::JoinHandle<()>);

/// The MAAS poller, when `[maas]` is set and the store keeps a MAAS view: its view for the operators and its task.
async fn start_poller(
    config: &Config,
    client: Option<&crate::maas::Client>,
    maas_store: Option<Arc<dyn MaasStore>>,
    fleet: &Arc<Fleet>,
    stop: &CancellationToken,
) -> Result<(Option<poller::MaasView>, Option<PollerTask>), ServeError> {
    match (&config.maas, client, maas_store) {
        (Some(maas), Some(client), Some(maas_store)) => {
            let poller_stop = stop.child_token();
            let events: Arc<dyn EventSink> = fleet.clone();
            let (view, handle) = poller::start(client.clone(), maas, maas_store, events, poller_stop.clone()).await?;
            Ok((Some(view), Some((poller_stop, handle))))
        }
        (Some(_), _, _) => {
            tracing::warn!("[maas] is set but this store keeps no MAAS view; the MAAS poller is not started");
            Ok((None, None))
        }
        (None, _, _) => Ok((None, None)),
    }
}

/// How the gRPC port talks: plaintext with `--insecure`, else TLS with the coordinator's own CA and server
/// certificate (created at the first start); with the CA file operators trust.
fn transport(config: &Config) -> Result<(Option<std::path::PathBuf>, listener::Mode), ServeError> {
    if config.insecure {
        tracing::warn!(
            "serving plaintext gRPC (--insecure): NO enrollment tokens, NO client certificates, NO operator \
             authentication; anyone who reaches this port controls the fleet; use it for local experiments only"
        );
        return Ok((None, listener::Mode::Plain));
    }
    let pki = pki::ensure(&config.state_dir, &config.tls.extra_sans)?;
    // Client certificates are optional at the handshake (Enroll with a token has none yet); when
    // one is presented rustls verifies it against our CA, and each RPC says what it needs.
    // During a CA rotation client certificates of both CAs are trusted (see crate::rotation).
    let bundle = crate::rotation::trust_bundle(&config.state_dir).unwrap_or_else(|_| pki.ca_pem.clone());
    let mode = listener::Mode::tls(&pki.cert_pem, &pki.key_pem, &bundle)?;
    if !config.enroll.require_token {
        tracing::warn!("[enroll] require_token = false: any agent that reaches this port may enroll");
    }
    Ok((Some(pki.ca_path), mode))
}

/// Writes `client.toml` (address, CA and, with TLS, the local admin's credential), so a bare `fleetctl status`
/// on this host works.
async fn write_client_config(
    config: &Config,
    bound: SocketAddr,
    ca_file: Option<std::path::PathBuf>,
    security: &Security,
) -> Result<(), ServeError> {
    let client_path = StateDir::new(&config.state_dir).client_config();
    let mut client = ClientConfig::for_listener(bound, ca_file, config.insecure);
    if !config.insecure {
        let admin = crate::operators::ensure_local_admin(&config.state_dir, &security.store).await?;
        client.cert_file = Some(admin.cert_file);
        client.key_file = Some(admin.key_file);
    }
    client.write(&client_path).map_err(|source| ServeError::ClientConfig { path: client_path.clone(), source })
}

/// The server, with spec verification and lost-node verdicts (VerifyService) when `verify_store` is given.
async fn prepare_inner(
    listener: TcpListener,
    config: Config,
    store: Arc<dyn Store>,
    maas_store: Option<Arc<dyn MaasStore>>,
    verify_store: Option<Arc<dyn crate::verify::VerifySources>>,
    stop: CancellationToken,
) -> Result<Prepared, ServeError> {
    let bound = listener.local_addr().map_err(ServeError::Listener)?;
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|source| ServeError::StateDir { path: config.state_dir.clone(), source })?;
    // The order matters: the fleet first (everything publishes events through it), then MAAS, then the
    // transport's certificates, the credentials that need them, and last the services over all of it.
    let (fleet, tasks, fleet_stop) = start_fleet(&config, store).await?;
    // One MAAS client for the poller, the lab plan and the operations.
    let maas_client =
        config.maas.as_ref().map(crate::maas::Client::new).transpose().map_err(poller::StartError::from)?;
    let (maas_view, poller) = start_poller(&config, maas_client.as_ref(), maas_store, &fleet, &stop).await?;
    let (ca_file, mode) = transport(&config)?;
    let security_store = crate::security_store::SecurityStore::open(&config.state_dir)?;
    let security =
        Security::load(security_store, config.enroll.clone(), config.insecure, config.state_dir.clone()).await?;
    write_client_config(&config, bound, ca_file, &security).await?;

    // TLS is not tonic's here: crate::listener does it, with the handshake timeout and the caps.
    let limits = &config.limits;
    let mut builder = tonic::transport::Server::builder()
        .timeout(config.request_timeout)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_concurrent_streams(limits.max_concurrent_streams);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AgentServiceServer<AgentApi>>().await;
    health.set_serving::<FleetServiceServer<FleetApi>>().await;
    tokio::spawn(mirror_store_health(fleet.watch_status(), health.clone(), stop.clone()));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|error| ServeError::Listener(std::io::Error::other(error.to_string())))?;

    let limit = config.max_message_bytes;
    let agents = AgentServiceServer::new(AgentApi::new(fleet.clone(), stop.clone()).with_security(security.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let mut fleet_api = FleetApi::new(fleet.clone(), stop.clone());
    let lab_view = maas_view.clone();
    if let Some(view) = maas_view {
        fleet_api = fleet_api.with_maas(view);
    }
    let operators =
        FleetServiceServer::new(fleet_api).max_decoding_message_size(limit).max_encoding_message_size(limit);
    let operators = OperatorGate::new(operators, security.clone(), crate::grpc::gate::FLEET_STATE_CHANGING);
    // The lab plan (issue 6), and the reconciliation task against the last applied plan.
    let lab_maas = maas_client.clone();
    let reconciler = crate::plan::reconcile::Reconciler {
        state_dir: config.state_dir.clone(),
        maas: lab_maas.clone(),
        events: fleet.clone(),
        interval: config.lab.reconcile_interval,
        timeout: std::time::Duration::from_secs(10),
    };
    tokio::spawn(reconciler.run(stop.child_token()));
    let lab =
        crate::grpc::lab_service::LabApi::new(lab_maas, lab_view, fleet.clone(), config.state_dir.clone(), config.lab)
            .with_verify(verify_store.clone());
    let lab = proto::v1::lab_service_server::LabServiceServer::new(lab)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let lab = OperatorGate::new(lab, security.clone(), crate::grpc::lab_service::STATE_CHANGING);
    let admin = SecurityServiceServer::new(SecurityApi::new(fleet.clone(), security.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let admin = OperatorGate::new(admin, security.clone(), security_service::STATE_CHANGING);
    // Spec verification and lost-node verdicts (issue 7): the loop, and VerifyService behind the gate.
    let ops_verify = verify_store.clone();
    let verify = verify_store.map(|store| {
        let handle = crate::verify::task::VerifyHandle::new(fleet.clone(), store, config.verify.clone());
        crate::verify::task::spawn(handle.clone(), stop.child_token());
        let service = proto::v1::verify_service_server::VerifyServiceServer::new(
            crate::grpc::verify_service::VerifyApi::new(handle),
        )
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
        OperatorGate::new(service, security.clone(), crate::grpc::verify_service::STATE_CHANGING)
    });
    // Redeploy operations and machine lifecycle (issue 7), resumed from the store, behind the gate.
    let engine =
        start_operations(&config, maas_client, bound, fleet.clone(), security.clone(), ops_verify, stop.child_token())
            .await?;
    let ops = proto::v1::operations_service_server::OperationsServiceServer::new(
        crate::grpc::operations_service::OperationsApi::new(engine.clone()),
    )
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    let ops = OperatorGate::new(ops, security.clone(), crate::grpc::operations_service::STATE_CHANGING);
    let router = builder
        .add_service(health_service)
        .add_service(ops)
        .add_service(reflection)
        .add_service(agents)
        .add_service(operators)
        .add_service(admin)
        .add_service(lab)
        .add_optional_service(verify);

    let listener = Listener::new(listener, config.limits.clone(), mode);
    Ok(Prepared { router, listener, bound, config, stop, fleet_stop, tasks, health, poller, ops: engine })
}

/// Sets up the redeploy engine: with TLS and MAAS, the artifacts listener and the
/// deploy context; then resumes unfinished operations. Problems that only stop deploys are logged, not fatal.
/// `verify` is the store spec verification reads (the one VerifyService uses); without it the verify step only
/// waits for the new agent's inventory.
///
/// # Errors
/// The operations store cannot be opened.
async fn start_operations(
    server: &Config,
    maas: Option<crate::maas::Client>,
    bound: std::net::SocketAddr,
    fleet: Arc<Fleet>,
    security: Arc<Security>,
    verify: Option<Arc<dyn crate::verify::VerifySources>>,
    stop: CancellationToken,
) -> Result<crate::operations::Operations, StoreError> {
    use crate::operations::{Operations, OperationsStore};
    let store = OperationsStore::open(&server.state_dir)?;
    let mut deploy = None;
    if !server.insecure && maas.is_some() {
        deploy = deploy_context(server, bound, stop.clone()).await;
    }
    let mut ops = Operations::new(store, maas, security, fleet, server.operations.clone(), deploy, stop);
    if let Some(verify) = verify {
        ops = ops.with_verify(verify, server.verify.tolerance);
    }
    let resumed = ops.resume().await?;
    if resumed > 0 {
        tracing::info!(resumed, "unfinished operations resumed");
    }
    Ok(ops)
}

async fn deploy_context(
    server: &Config,
    bound: std::net::SocketAddr,
    stop: CancellationToken,
) -> Option<crate::operations::DeployContext> {
    let pki = crate::pki::ensure(&server.state_dir, &server.tls.extra_sans)
        .inspect_err(|error| tracing::warn!(%error, "redeploys are off: no server certificate"))
        .ok()?;
    let Some(agent) = server.artifacts.agent_path() else {
        tracing::warn!("redeploys are off: cannot find the agent binary; set [artifacts] agent_binary");
        return None;
    };
    let listen = server.artifacts.listen.unwrap_or_else(|| std::net::SocketAddr::new(bound.ip(), 0));
    let served = crate::artifacts::start(listen, &agent, &pki.cert_pem, &pki.key_pem, stop)
        .await
        .inspect_err(|error| tracing::warn!(%error, "redeploys are off: the artifacts listener did not start"))
        .ok()?;
    let host = |addr: std::net::SocketAddr| {
        if addr.ip().is_unspecified() {
            let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
            format!("{}:{}", name.trim(), addr.port())
        } else {
            addr.to_string()
        }
    };
    Some(crate::operations::DeployContext {
        coordinator_url: server
            .operations
            .coordinator_url
            .clone()
            .unwrap_or_else(|| format!("https://{}", host(bound))),
        artifacts_url: server
            .operations
            .artifacts_url
            .clone()
            .unwrap_or_else(|| format!("https://{}", host(served.addr))),
        agent_sha256: served.agent_sha256,
        ca_pem: pki.ca_pem,
        token_ttl: server.operations.enroll_timeout + server.operations.deploy_timeout,
    })
}

/// The gRPC health service's name for the store; NOT_SERVING while it cannot write.
pub const STORE_HEALTH_SERVICE: &str = "metalfleet.v1.Store";

/// Mirrors the coordinator's condition into the gRPC health service: while the store cannot write, the
/// whole server ("") and [`STORE_HEALTH_SERVICE`] answer NOT_SERVING, so health probes see it degraded.
async fn mirror_store_health(
    mut status: tokio::sync::watch::Receiver<crate::fleet::CoordinatorStatus>,
    health: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) {
    use tonic_health::ServingStatus;
    loop {
        let serving = if status.borrow_and_update().degraded.is_some() {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        health.set_service_status("", serving).await;
        health.set_service_status(STORE_HEALTH_SERVICE, serving).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = status.changed() => if changed.is_err() { return },
        }
    }
}

impl Prepared {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.bound
    }

    /// Prints the readiness line and serves until the stop token is cancelled, then drains.
    ///
    /// # Errors
    /// The transport failed.
    pub async fn run(self) -> Result<(), ServeError> {
        let Prepared { router, listener, bound, config, stop, fleet_stop, tasks, health, poller, ops } = self;
        let client_path = StateDir::new(&config.state_dir).client_config();
        tracing::info!(addr = %bound, tls = !config.insecure, state_dir = %config.state_dir.display(), client_config = %client_path.display(), "coordinator listening");
        metalfleet_common::readiness::announce(bound);

        let limits = listener.config();
        tracing::info!(
            max_connections = limits.max_connections,
            max_connections_per_ip = limits.max_connections_per_ip,
            operator_reserved = limits.operator_reserved,
            tls_handshake_timeout = ?limits.tls_handshake_timeout,
            first_request_timeout = ?limits.first_request_timeout,
            max_concurrent_streams = limits.max_concurrent_streams,
            "connection limits"
        );
        let shutdown = stop.clone().cancelled_owned();
        let mut server = match listener.start(stop.child_token()) {
            listener::Started::Plain(incoming) => tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown)),
            listener::Started::Tls(incoming) => tokio::spawn(router.serve_with_incoming_shutdown(incoming, shutdown)),
        };
        // Connections and running operations drain together, within one grace period from the stop.
        let mut drain_deadline = None;
        let result = tokio::select! {
            result = &mut server => result,
            _ = stop.cancelled() => {
                tracing::info!(grace_period = ?config.grace_period, "draining");
                let deadline = tokio::time::Instant::now() + config.grace_period;
                drain_deadline = Some(deadline);
                match tokio::time::timeout_at(deadline, &mut server).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!("drain overran the grace period; closing the remaining connections");
                        server.abort();
                        Ok(Ok(()))
                    }
                }
            }
        };
        health.set_not_serving::<AgentServiceServer<AgentApi>>().await;
        // Each running operation finishes the MAAS call it is in and records it; the next run resumes the rest.
        let left = drain_deadline
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
            .unwrap_or(config.grace_period);
        if !ops.shutdown(left).await {
            tracing::warn!("running operations overran the grace period; the next run resumes them from MAAS's state");
        }
        if let Some((poller_stop, handle)) = poller {
            poller_stop.cancel();
            if let Err(error) = handle.await {
                tracing::error!(%error, "the MAAS poller failed");
            }
        }
        fleet_stop.cancel();
        tasks.join().await;
        tracing::info!("stopped");
        match result {
            Ok(outcome) => Ok(outcome?),
            Err(join) => Err(ServeError::Listener(std::io::Error::other(join.to_string()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ::store::state_dir::ENTRIES;

    use super::*;
    use crate::config::Overrides;

    /// Everything a coordinator and its admin commands leave in the state directory is an entry of
    /// `store::StateDir`, so `coordinator backup` takes it (or says on purpose that it does not).
    #[tokio::test]
    async fn every_file_a_running_coordinator_writes_is_known_to_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let overrides = Overrides { listen: None, state_dir: Some(state.root().to_owned()), insecure: false };
        let config =
            Config::from_sources(None, &std::collections::HashMap::<String, String>::new(), &overrides).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stop = CancellationToken::new();
        let prepared = prepare(listener, config, stop.clone()).await.unwrap();
        let server = tokio::spawn(prepared.run());
        let while_running = state.unknown().unwrap();

        // The admin commands that write there, and the lab plan's files.
        let store = crate::security_store::SecurityStore::open(state.root()).unwrap();
        crate::operators::add(state.root(), &store, "ops", crate::auth::ROLE_READ_ONLY, true, None).await.unwrap();
        crate::router_cert::issue(state.root(), &dir.path().join("shim"), &["127.0.0.1".to_string()]).unwrap();
        crate::rotation::rotate(state.root()).unwrap();
        let lab =
            crate::plan::LabFile::parse(std::path::Path::new("lab.toml"), "[maas]\nkernel_opts = \"quiet\"\n").unwrap();
        crate::plan::store::save(state.root(), &lab).unwrap();
        let memory = crate::plan::reconcile::Memory { maas_ips: vec!["172.16.0.3".into()], ..Default::default() };
        memory.save(state.root());

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
        assert!(while_running.is_empty(), "unknown to StateDir while running: {while_running:?}");
        assert_eq!(state.unknown().unwrap(), Vec::<std::path::PathBuf>::new(), "unknown to StateDir");
        // Every entry that a backup takes was written by one of the above.
        for entry in ENTRIES.iter().filter(|e| ::store::backup::is_backed_up(e)) {
            assert!(state.path_of(entry).exists(), "{} ({}) was not written", entry.name, entry.what);
        }
    }
}
