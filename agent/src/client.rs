//! `agent run`: enroll, report the inventory, stream heartbeats, obey directives, reconnect.
//!
//! Two tasks share one [`SampleBuffer`]:
//! - the sampler ticks at the current interval, pushes a sample into the buffer whether or not the
//!   coordinator is reachable, and watches the agent's own memory;
//! - the connection loop drains the buffer into the Heartbeat stream (oldest first, at most
//!   [`MAX_SAMPLES_PER_MESSAGE`] per message) and reconnects with jittered backoff when the stream breaks.
//!
//! Samples handed to a stream that breaks before they are written may be lost; everything still in
//! the buffer survives a reconnect, a re-exec (saved to `<state-dir>/buffer.json`) and a clean stop.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use proto::v1 as pb;
use proto::v1::agent_service_client::AgentServiceClient;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsIdentity};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::buffer::SampleBuffer;
use crate::config::Config;
use crate::health::{SampleError, Sampler};
use crate::identity::{Identity, IdentityError, StoredCert};
use crate::inventory::{self, Inventory, Root};

/// Samples per HeartbeatRequest when flushing a backlog, so one message stays far below gRPC's 4 MiB limit.
pub const MAX_SAMPLES_PER_MESSAGE: usize = 100;

/// A connection that stayed up this long was healthy: the next failure starts the backoff from its base.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// A fresh process re-executes only after this many samples: a budget below the start-up footprint
/// must not turn into a re-exec loop.
const REEXEC_AFTER_TICKS: u32 = 10;

/// The shortest interval a directive may set; a coordinator bug must not turn agents into a busy loop.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The sample buffer, shared by the sampler and the connection loop. Never locked across an `.await`.
pub type SharedBuffer = Arc<Mutex<SampleBuffer>>;

/// How `run` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Stopped by the caller's token (SIGTERM/SIGINT).
    Stopped,
    /// Over the memory budget: the buffer is saved, and the caller should re-exec the binary.
    Reexec,
}

/// Why the agent could not start. Connection problems are never errors: the agent keeps retrying.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot use state directory {path}: {source}; create it or pass --state-dir")]
    StateDir { path: String, source: std::io::Error },
    #[error("{path} does not hold a valid agent id ({content:?}); delete it to get a new identity")]
    BadAgentId { path: String, content: String },
    #[error(transparent)]
    Sampler(#[from] SampleError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

fn lock(buffer: &SharedBuffer) -> std::sync::MutexGuard<'_, SampleBuffer> {
    buffer.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the agent until `stop` is cancelled or the memory budget is exceeded.
pub async fn run(config: Config, stop: CancellationToken) -> Result<Exit, RunError> {
    let buffer = Arc::new(Mutex::new(SampleBuffer::new(config.buffer_samples)));
    run_with_buffer(config, stop, buffer).await
}

/// [`run`] with a buffer the caller can watch (tests wait on its length instead of sleeping).
pub async fn run_with_buffer(config: Config, stop: CancellationToken, buffer: SharedBuffer) -> Result<Exit, RunError> {
    let state_error = |source| RunError::StateDir { path: config.state_dir.display().to_string(), source };
    std::fs::create_dir_all(&config.state_dir).map_err(state_error)?;
    let agent_id = load_or_create_agent_id(&config.agent_id_path())?;
    restore_buffer(&config.buffer_path(), &buffer);
    let hostname =
        config.hostname.clone().or_else(|| sysinfo::System::host_name().ok()).unwrap_or_else(|| "localhost".into());
    info!(
        agent_id = %agent_id,
        hostname = %hostname,
        coordinator = config.coordinator.as_deref().unwrap_or("none (dry run)"),
        state_dir = %config.state_dir.display(),
        interval = ?config.interval,
        buffer_samples = config.buffer_samples,
        memory_budget = config.memory_budget,
        "agent starting"
    );

    // Cancelled by `stop`, or by the sampler when the memory budget is exceeded.
    let inner = stop.child_token();
    let over_budget = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (interval_tx, interval_rx) = watch::channel(config.interval);
    let sampled = Arc::new(Notify::new());
    let sampler = Sampler::new()?;
    // With TLS the agent has a key of its own from the first start on; plaintext has no use for one.
    let identity =
        if config.insecure || config.dry_run { None } else { Some(Identity::load_or_create(&config.state_dir)?) };
    let sampler_task = tokio::spawn(sample_loop(SampleLoop {
        sampler,
        buffer: buffer.clone(),
        interval: interval_rx,
        sampled: sampled.clone(),
        memory_budget: config.memory_budget,
        over_budget: over_budget.clone(),
        stop: inner.clone(),
    }));

    if config.dry_run {
        inner.cancelled().await;
    } else {
        let connection = Connection {
            config: &config,
            agent_id,
            hostname,
            buffer: &buffer,
            interval: interval_tx,
            sampled,
            identity: identity.as_ref(),
            renew_now: std::sync::atomic::AtomicBool::new(false),
        };
        connection.run_forever(&inner).await;
    }
    inner.cancel();
    if let Err(error) = sampler_task.await {
        warn!(%error, "sampler task ended abnormally");
    }

    let exit = if over_budget.load(std::sync::atomic::Ordering::SeqCst) { Exit::Reexec } else { Exit::Stopped };
    save_buffer(&config.buffer_path(), &buffer);
    info!(?exit, "agent stopped");
    Ok(exit)
}

/// Reads `<state-dir>/agent-id`, or creates it with a new UUID on first start.
fn load_or_create_agent_id(path: &Path) -> Result<String, RunError> {
    match std::fs::read_to_string(path) {
        Ok(content) => {
            let id = content.trim();
            uuid::Uuid::parse_str(id)
                .map(|uuid| uuid.to_string())
                .map_err(|_| RunError::BadAgentId { path: path.display().to_string(), content: id.to_string() })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().to_string();
            std::fs::write(path, format!("{id}\n"))
                .map_err(|source| RunError::StateDir { path: path.display().to_string(), source })?;
            info!(agent_id = %id, path = %path.display(), "created a new agent id");
            Ok(id)
        }
        Err(source) => Err(RunError::StateDir { path: path.display().to_string(), source }),
    }
}

/// Puts samples saved by a previous process (a re-exec or a stop) in front of the buffer.
fn restore_buffer(path: &Path, buffer: &SharedBuffer) {
    match SampleBuffer::load(path) {
        Ok(None) => {}
        Ok(Some(saved)) => {
            info!(samples = saved.len(), path = %path.display(), "restored buffered samples");
            lock(buffer).prepend(saved);
        }
        Err(error) => warn!(%error, "ignoring the saved sample buffer"),
    }
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        warn!(%error, path = %path.display(), "cannot remove the saved sample buffer; samples may be sent twice");
    }
}

fn save_buffer(path: &Path, buffer: &SharedBuffer) {
    let buffer = lock(buffer);
    if buffer.is_empty() {
        return;
    }
    match buffer.save(path) {
        Ok(()) => info!(samples = buffer.len(), path = %path.display(), "saved buffered samples for the next start"),
        Err(error) => warn!(%error, "buffered samples are lost"),
    }
}

struct SampleLoop {
    sampler: Sampler,
    buffer: SharedBuffer,
    interval: watch::Receiver<Duration>,
    sampled: Arc<Notify>,
    memory_budget: u64,
    over_budget: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
}

/// Samples at the current interval until stopped. The first sample comes after at most one second, so a
/// fresh agent shows up healthy quickly even with a long interval.
async fn sample_loop(mut state: SampleLoop) {
    let mut every = *state.interval.borrow_and_update();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every.min(Duration::from_secs(1)), every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sampler = Some(state.sampler);
    let (mut ticks, mut warned) = (0u32, false);
    loop {
        tokio::select! {
            _ = state.stop.cancelled() => return,
            changed = state.interval.changed() => {
                if changed.is_err() {
                    return;
                }
                every = *state.interval.borrow_and_update();
                tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            }
            _ = tick.tick() => {
                let Some(mut current) = sampler.take() else { return };
                // sysinfo reads /proc synchronously: keep it off the runtime thread.
                let Ok((back, sample)) = tokio::task::spawn_blocking(move || {
                    let sample = current.sample();
                    (current, sample)
                }).await else {
                    warn!("the sampling thread panicked; stopping the sampler");
                    return;
                };
                sampler = Some(back);
                lock(&state.buffer).push(sample);
                state.sampled.notify_one();
                ticks += 1;
                if let Some(rss) = crate::footprint::rss_bytes()
                    && rss > state.memory_budget
                {
                    if ticks < REEXEC_AFTER_TICKS {
                        if !warned {
                            warn!(rss_bytes = rss, memory_budget_bytes = state.memory_budget, "memory budget exceeded right after start; raise memory_budget (re-executing would not help)");
                            warned = true;
                        }
                        continue;
                    }
                    warn!(rss_bytes = rss, memory_budget_bytes = state.memory_budget, "memory budget exceeded; saving the buffer and re-executing");
                    state.over_budget.store(true, std::sync::atomic::Ordering::SeqCst);
                    state.stop.cancel();
                    return;
                }
            }
        }
    }
}

/// Why a session with the coordinator ended.
enum SessionEnd {
    Stopped,
    Disconnected { error: String, connected_for: Duration },
}

struct Connection<'a> {
    config: &'a Config,
    agent_id: String,
    hostname: String,
    buffer: &'a SharedBuffer,
    interval: watch::Sender<Duration>,
    sampled: Arc<Notify>,
    /// The key and certificate; `None` with plaintext.
    identity: Option<&'a Identity>,
    /// Set when the coordinator's CA bundle changed (a CA rotation): renew at once.
    renew_now: std::sync::atomic::AtomicBool,
}

/// How long to wait after a failed renewal before trying again.
const RENEW_RETRY: Duration = Duration::from_secs(60);

impl Connection<'_> {
    /// Connects, streams, and reconnects with jittered backoff until `stop` is cancelled.
    async fn run_forever(&self, stop: &CancellationToken) {
        let address = self.config.coordinator.clone().unwrap_or_default();
        let mut backoff = Backoff::standard();
        let mut machine_id: Option<String> = None;
        let mut announced: Option<String> = None;
        loop {
            let end = tokio::select! {
                _ = stop.cancelled() => SessionEnd::Stopped,
                end = self.session(&address, &mut machine_id, &mut announced, stop) => end,
            };
            let SessionEnd::Disconnected { error, connected_for } = end else { return };
            if connected_for >= HEALTHY_AFTER {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            let buffered = lock(self.buffer).len();
            warn!(coordinator = %address, %error, retry_in = ?delay, buffered, "coordinator unreachable; will retry");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One connection: enroll if needed, then stream until something breaks.
    ///
    /// # Cancel safety
    /// Dropping it loses at most the batch being sent; the caller only drops it on shutdown.
    async fn session(
        &self,
        address: &str,
        machine_id: &mut Option<String>,
        announced: &mut Option<String>,
        stop: &CancellationToken,
    ) -> SessionEnd {
        let disconnected = |error: String| SessionEnd::Disconnected { error, connected_for: Duration::ZERO };
        // An expired certificate would fail the handshake: without it the agent enrolls with its token.
        let mut cert = self.current_cert();
        let channel = match self.connect(address, cert.as_ref()).await {
            Ok(channel) => channel,
            Err(error) => return disconnected(error),
        };
        let mut client = AgentServiceClient::new(channel);
        let id = match machine_id.clone() {
            Some(id) => id,
            None => match self.enroll(&mut client, cert.is_some()).await {
                Ok((id, inventory, issued)) => {
                    if issued {
                        // The certificate is new: every call from now on goes over mTLS with it.
                        cert = self.current_cert();
                        client = match self.connect(address, cert.as_ref()).await {
                            Ok(channel) => AgentServiceClient::new(channel),
                            Err(error) => return disconnected(error),
                        };
                    }
                    if let Err(status) = self.report_inventory(&mut client, &id, inventory).await {
                        self.forget_if_revoked(&status, machine_id);
                        return disconnected(format!("inventory refused: {status}"));
                    }
                    if announced.as_deref() != Some(id.as_str()) {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "enrolled machine_id={id}");
                        let _ = out.flush();
                        *announced = Some(id.clone());
                    }
                    *machine_id = Some(id.clone());
                    id
                }
                Err(status) => {
                    self.forget_if_revoked(&status, machine_id);
                    return disconnected(format!("enroll failed: {status}"));
                }
            },
        };

        let (tx, rx) = mpsc::channel::<pb::HeartbeatRequest>(8);
        // A coordinator may wait for the first message before it answers the call, so one is queued
        // before the call is made. It carries no samples: if opening fails, nothing is lost with it.
        let hello = pb::HeartbeatRequest {
            machine_id: id.clone(),
            samples: Vec::new(),
            interval_ms: self.interval_ms(),
            dropped_samples: 0,
        };
        if tx.try_send(hello).is_err() {
            return disconnected("cannot queue the first heartbeat".into());
        }
        let opened = tokio::time::timeout(self.config.rpc_timeout, client.heartbeat(ReceiverStream::new(rx))).await;
        let mut directives = match opened {
            Err(_) => {
                return disconnected(format!(
                    "opening the heartbeat stream timed out after {:?}",
                    self.config.rpc_timeout
                ));
            }
            Ok(Err(status)) => {
                forget_if_unknown(&status, machine_id);
                self.forget_if_revoked(&status, machine_id);
                return disconnected(format!("heartbeat refused: {status}"));
            }
            Ok(Ok(response)) => response.into_inner(),
        };
        let connected_at = Instant::now();
        let broken = |error: String| SessionEnd::Disconnected { error, connected_for: connected_at.elapsed() };
        info!(machine_id = %id, "heartbeat stream open");
        // Whatever the last stream sent and the coordinator did not acknowledge goes again.
        lock(self.buffer).resend_all();
        if let Err(error) = self.flush(&id, &tx).await {
            return broken(error);
        }
        let rotated = self.renew_now.swap(false, std::sync::atomic::Ordering::SeqCst);
        let mut renew_at = cert.as_ref().map(|c| {
            let wait = c.renew_at().duration_since(std::time::SystemTime::now()).unwrap_or_default();
            tokio::time::Instant::now() + if rotated { Duration::ZERO } else { wait }
        });
        loop {
            tokio::select! {
                _ = stop.cancelled() => return SessionEnd::Stopped,
                _ = sleep_until_some(renew_at) => match self.renew(&mut client, &id).await {
                    Ok(()) => return broken("certificate renewed; reconnecting with it".into()),
                    Err(status) => {
                        warn!(error = %status, retry_in = ?RENEW_RETRY, "certificate renewal failed");
                        self.forget_if_revoked(&status, machine_id);
                        renew_at = Some(tokio::time::Instant::now() + RENEW_RETRY);
                    }
                },
                _ = self.sampled.notified() => {
                    if let Err(error) = self.flush(&id, &tx).await {
                        return broken(error);
                    }
                }
                message = directives.message() => match message {
                    Ok(Some(directive)) => {
                        self.obey(&mut client, &id, directive).await;
                        if self.identity.is_some() && self.renew_now.swap(false, std::sync::atomic::Ordering::SeqCst) {
                            renew_at = Some(tokio::time::Instant::now());
                        }
                    }
                    Ok(None) => return broken("the coordinator closed the heartbeat stream".into()),
                    Err(status) => {
                        forget_if_unknown(&status, machine_id);
                        self.forget_if_revoked(&status, machine_id);
                        return broken(format!("heartbeat stream failed: {status}"));
                    }
                },
            }
        }
    }

    /// The stored certificate, unless it expired.
    fn current_cert(&self) -> Option<StoredCert> {
        let cert = self.identity?.certificate()?;
        if cert.expired(std::time::SystemTime::now()) {
            warn!("the agent certificate expired; enrolling again with the token");
            return None;
        }
        Some(cert)
    }

    /// A revoked certificate is dropped, so the next enrollment uses a (new) token.
    fn forget_if_revoked(&self, status: &tonic::Status, machine_id: &mut Option<String>) {
        if status.code() == tonic::Code::Unauthenticated && status.message().contains("revoked") {
            if let Some(identity) = self.identity {
                warn!(error = %status, "the coordinator revoked this agent's certificate; a new token is needed");
                identity.forget_certificate();
            }
            *machine_id = None;
        }
    }

    /// Asks for a new certificate for the same key over the current mTLS connection, and stores it.
    async fn renew(&self, client: &mut AgentServiceClient<Channel>, machine_id: &str) -> Result<(), tonic::Status> {
        let identity = self.identity.ok_or_else(|| tonic::Status::failed_precondition("no identity"))?;
        let csr_pem = identity.csr(&self.hostname).map_err(|e| tonic::Status::internal(e.to_string()))?;
        let response =
            self.unary(client.renew(pb::RenewRequest { machine_id: machine_id.to_string(), csr_pem })).await?;
        identity
            .store(&response.certificate_pem, &response.ca_pem)
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        info!(machine_id, "certificate renewed");
        Ok(())
    }

    async fn connect(&self, address: &str, cert: Option<&StoredCert>) -> Result<Channel, String> {
        let timeout = self.config.connect_timeout;
        let mut endpoint = Endpoint::from_shared(address.to_string())
            .map_err(|e| format!("bad coordinator address {address}: {e}"))?
            .connect_timeout(timeout)
            .tcp_keepalive(Some(Duration::from_secs(30)))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if let Some(pem) = &self.config.ca_pem {
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            // The bundle from the coordinator holds the new CA during a rotation.
            if let Some(bundle) = cert.and_then(|c| c.ca_pem.as_ref()) {
                tls = tls.ca_certificate(Certificate::from_pem(bundle));
            }
            if let (Some(cert), Some(identity)) = (cert, self.identity) {
                tls = tls.identity(TlsIdentity::from_pem(&cert.cert_pem, identity.key_pem()));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS setup failed: {e}; check --ca-file"))?;
        }
        // The TLS handshake is not covered by connect_timeout: bound the whole connect.
        match tokio::time::timeout(timeout * 2, endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(error)) => Err(format!("cannot connect: {}", error_chain(&error))),
            Err(_) => Err(format!("connecting timed out after {:?}", timeout * 2)),
        }
    }

    /// Enroll: with the certificate when it has one, else with the token and a CSR. Returns the
    /// machine id, the inventory to report, and whether a certificate was issued (the caller then
    /// reconnects with it).
    async fn enroll(
        &self,
        client: &mut AgentServiceClient<Channel>,
        has_cert: bool,
    ) -> Result<(String, Inventory, bool), tonic::Status> {
        let inventory = self.collect_inventory().await;
        let (token, csr_pem) = match self.identity {
            Some(identity) if !has_cert => {
                let token = match &self.config.token_file {
                    Some(path) => crate::identity::read_token(path)
                        .map_err(|e| tonic::Status::failed_precondition(e.to_string()))?,
                    None => String::new(),
                };
                let csr = identity.csr(&self.hostname).map_err(|e| tonic::Status::internal(e.to_string()))?;
                (token, csr)
            }
            _ => (String::new(), String::new()),
        };
        let request = pb::EnrollRequest {
            agent_id: self.agent_id.clone(),
            hostname: self.hostname.clone(),
            mac_addresses: inventory::enrollment_macs(&inventory.interfaces),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            token,
            csr_pem,
        };
        let response = self.unary(client.enroll(request)).await?;
        let issued = match self.identity {
            Some(identity) if !response.certificate_pem.is_empty() => {
                identity
                    .store(&response.certificate_pem, &response.ca_pem)
                    .map_err(|e| tonic::Status::internal(e.to_string()))?;
                info!("client certificate stored; mTLS from now on");
                true
            }
            Some(identity) if has_cert && !response.ca_pem.is_empty() => {
                let changed =
                    identity.store_bundle(&response.ca_pem).map_err(|e| tonic::Status::internal(e.to_string()))?;
                if changed {
                    info!("the coordinator's CA bundle changed (CA rotation); renewing the certificate now");
                    self.renew_now.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                false
            }
            _ => false,
        };
        let machine_id = response.machine_id;
        if machine_id.is_empty() {
            return Err(tonic::Status::internal("the coordinator returned an empty machine_id"));
        }
        info!(machine_id = %machine_id, system_id = %response.system_id, "enrolled");
        // The local interval is the floor: the coordinator may only ask for a longer one at enrollment.
        let wanted = Duration::from_millis(u64::from(response.heartbeat_interval_ms));
        if wanted > *self.interval.borrow() {
            info!(interval = ?wanted, "using the coordinator's longer heartbeat interval");
            self.interval.send_replace(wanted);
        }
        Ok((machine_id, inventory, issued))
    }

    async fn report_inventory(
        &self,
        client: &mut AgentServiceClient<Channel>,
        machine_id: &str,
        inventory: Inventory,
    ) -> Result<(), tonic::Status> {
        let request = pb::ReportInventoryRequest {
            machine_id: machine_id.to_string(),
            inventory: Some(pb::Inventory::from(&inventory)),
        };
        let response = self.unary(client.report_inventory(request)).await?;
        info!(machine_id, changed = response.changed, disks = inventory.disks.len(), "inventory reported");
        Ok(())
    }

    async fn unary<T>(
        &self,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        match tokio::time::timeout(self.config.rpc_timeout, call).await {
            Ok(result) => result.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!("no answer within {:?}", self.config.rpc_timeout))),
        }
    }

    async fn collect_inventory(&self) -> Inventory {
        let hide = self.config.hide_disks.clone();
        match tokio::task::spawn_blocking(move || inventory::collect(&Root::host(), &hide)).await {
            Ok(inventory) => inventory,
            Err(error) => {
                warn!(%error, "inventory collection panicked; retrying on the calling thread");
                inventory::collect(&Root::host(), &self.config.hide_disks)
            }
        }
    }

    /// Sends everything buffered that this stream has not carried yet, oldest first, in messages of at
    /// most [`MAX_SAMPLES_PER_MESSAGE`]. Samples stay buffered until the coordinator acknowledges them.
    async fn flush(&self, machine_id: &str, tx: &mpsc::Sender<pb::HeartbeatRequest>) -> Result<(), String> {
        loop {
            let (batch, dropped) = {
                let mut buffer = lock(self.buffer);
                (buffer.next_batch(MAX_SAMPLES_PER_MESSAGE), buffer.take_dropped())
            };
            if batch.is_empty() && dropped == 0 {
                return Ok(());
            }
            let interval_ms = self.interval_ms();
            let request = pb::HeartbeatRequest {
                machine_id: machine_id.to_string(),
                samples: batch.iter().map(pb::HealthSample::from).collect(),
                interval_ms,
                dropped_samples: dropped,
            };
            debug!(samples = batch.len(), dropped, "sending heartbeat");
            if tx.send(request).await.is_err() {
                // The stream is gone: the batch is still buffered and goes out on the next connection.
                return Err("the heartbeat stream closed while sending".into());
            }
        }
    }

    /// What the coordinator did with the samples: acknowledged ones leave the buffer, refused ones
    /// too (with the reason in the log: they would be refused again).
    fn acknowledged(&self, ack: pb::Ack) {
        let pb::Ack { stored_through, refused } = ack;
        let mut buffer = lock(self.buffer);
        let stored = buffer.acknowledge(stored_through);
        for refusal in &refused {
            if buffer.refuse(refusal.seq) {
                warn!(seq = refusal.seq, field = %refusal.field, reason = %refusal.reason, "the coordinator refused a sample; dropped it");
            }
        }
        debug!(stored_through, stored, refused = refused.len(), buffered = buffer.len(), "acknowledged");
    }

    fn interval_ms(&self) -> u32 {
        u32::try_from(self.interval.borrow().as_millis()).unwrap_or(u32::MAX)
    }

    async fn obey(&self, client: &mut AgentServiceClient<Channel>, machine_id: &str, directive: pb::Directive) {
        match directive.kind {
            Some(pb::directive::Kind::SetInterval(set)) if set.interval_ms == 0 => {
                debug!(reason = %set.reason, "ignoring a SetInterval without an interval");
            }
            Some(pb::directive::Kind::SetInterval(set)) => {
                let wanted = Duration::from_millis(u64::from(set.interval_ms)).max(MIN_INTERVAL);
                info!(interval = ?wanted, reason = %set.reason, "coordinator set the heartbeat interval");
                self.interval.send_replace(wanted);
            }
            Some(pb::directive::Kind::RenewCertificate(renew)) => {
                info!(reason = %renew.reason, "coordinator asked for a certificate renewal");
                self.renew_now.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            Some(pb::directive::Kind::Ack(ack)) => self.acknowledged(ack),
            Some(pb::directive::Kind::SendInventory(send)) => {
                info!(reason = %send.reason, "coordinator asked for the inventory");
                let inventory = self.collect_inventory().await;
                if let Err(status) = self.report_inventory(client, machine_id, inventory).await {
                    warn!(error = %status, "re-sending the inventory failed");
                }
            }
            None => debug!("ignoring a directive of a kind this agent does not know"),
        }
    }
}

/// Sleeps until `at`; never wakes without one. Cancel safe.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// NOT_FOUND or FAILED_PRECONDITION: the coordinator does not know this machine; enroll again.
fn forget_if_unknown(status: &tonic::Status, machine_id: &mut Option<String>) {
    if matches!(status.code(), tonic::Code::NotFound | tonic::Code::FailedPrecondition) {
        warn!(error = %status, "the coordinator does not know this machine; enrolling again");
        *machine_id = None;
    }
}

/// An error with its sources, because tonic's transport error alone says only "transport error".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        // Layers often repeat their source's message; say each thing once.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent-id");
        let first = load_or_create_agent_id(&path).unwrap();
        assert_eq!(load_or_create_agent_id(&path).unwrap(), first);
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(load_or_create_agent_id(&path), Err(RunError::BadAgentId { .. })));
    }

    #[test]
    fn unknown_machine_statuses_trigger_re_enrollment() {
        let mut id = Some("m-1".to_string());
        forget_if_unknown(&tonic::Status::unavailable("down"), &mut id);
        assert_eq!(id.as_deref(), Some("m-1"));
        forget_if_unknown(&tonic::Status::not_found("who?"), &mut id);
        assert_eq!(id, None);
        let mut id = Some("m-2".to_string());
        forget_if_unknown(&tonic::Status::failed_precondition("enroll first"), &mut id);
        assert_eq!(id, None);
    }
}
