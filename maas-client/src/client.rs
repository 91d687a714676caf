//! [`Client`]: one typed async method per MAAS call, with a timeout on every request and retries only where safe.
//!
//! Retry policy (every retry waits a jittered exponential backoff, or MAAS's `Retry-After` if longer, capped by
//! `max_backoff`; only errors with [`Error::is_retryable`] are retried, at most `retries` times):
//! - Every GET (reads, `query_power_state`, `is_importing`, `get_config`, ...) is retried.
//! - Idempotent writes are retried: `set_config` (same name and value), `update_subnet_dns_servers`,
//!   `update_vlan` (PUT of absolute values), `update_boot_source_selection_arches`, `import_boot_resources` and
//!   `stop_import_boot_resources` (starting an import twice is harmless).
//! - Machine actions whose effect shows in the machine are verified, never retried blindly: on a retryable error
//!   the client re-reads the machine; if the effect is already visible (e.g. `deploy`: status Deploying or
//!   Deployed) it returns that machine, otherwise (the machine did not move) it sends the action again. These are
//!   `deploy`, `release`, `commission`, `power_on`, `power_off`, `mark_broken`, `mark_fixed`, `lock`, `unlock`.
//! - Never retried: `create_machine`, `allocate`, `abort`, `create_ip_range`, `create_ssh_key`, `create_device`,
//!   `create_boot_source*`, `create_tag`, `tag_machines` and every DELETE: a lost answer cannot be told apart from
//!   an effect the client cannot cheaply check, so the error goes to the caller.

#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod proptests;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use rand::Rng;
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::de::DeserializeOwned;
use tracing::{debug, instrument, warn};

use super::error::{Error, Subject};
use super::types::*;
use super::{ApiKey, Config, oauth};

/// A MAAS API client. Cheap to clone (the HTTP connection pool is shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    root: String,
    key: ApiKey,
    request_timeout: Duration,
    connect_timeout: Duration,
    retries: u32,
    backoff: Duration,
    max_backoff: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("maas::Client").field("root", &self.root).field("key", &self.key).finish_non_exhaustive()
    }
}

/// Whether and how a request may be sent again after a retryable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// A GET or an idempotent write.
    Safe,
    /// Sent once; verified machine actions do their own re-read before sending again.
    Never,
}

/// One MAAS request, described before it is sent so it can be sent again.
struct Call {
    /// The client method's name, for errors and logs.
    op: &'static str,
    method: Method,
    /// Relative to the API root, ending in `/`.
    path: String,
    /// MAAS's `op=`, always sent in the query string.
    maas_op: Option<&'static str>,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
    /// The machine (or object) the call is about, for errors.
    subject: Option<String>,
    /// What a 404 means, e.g. `machine abc123`.
    what: String,
    retry: Retry,
}

impl Call {
    fn new(op: &'static str, method: Method, path: impl Into<String>) -> Call {
        let path = path.into();
        let retry = if method == Method::GET { Retry::Safe } else { Retry::Never };
        Call {
            op,
            method,
            what: path.trim_end_matches('/').to_owned(),
            path,
            maas_op: None,
            query: Vec::new(),
            form: Vec::new(),
            subject: None,
            retry,
        }
    }

    fn get(op: &'static str, path: impl Into<String>) -> Call {
        Call::new(op, Method::GET, path)
    }

    fn post(op: &'static str, path: impl Into<String>) -> Call {
        Call::new(op, Method::POST, path)
    }

    fn maas_op(mut self, maas_op: &'static str) -> Call {
        self.maas_op = Some(maas_op);
        self
    }

    fn machine(mut self, system_id: &str) -> Call {
        self.subject = Some(system_id.to_owned());
        self.what = format!("machine {system_id}");
        self
    }

    fn what(mut self, what: impl Into<String>) -> Call {
        self.what = what.into();
        self
    }

    fn retry(mut self, retry: Retry) -> Call {
        self.retry = retry;
        self
    }

    fn query(mut self, pairs: Vec<(String, String)>) -> Call {
        self.query.extend(pairs);
        self
    }

    fn form(mut self, pairs: Vec<(String, String)>) -> Call {
        self.form.extend(pairs);
        self
    }

    fn subject(&self) -> Subject {
        Subject(self.subject.clone())
    }
}

/// A successful answer.
struct Reply {
    body: Vec<u8>,
}

/// Form/query pairs built field by field.
#[derive(Default)]
struct Params(Vec<(String, String)>);

impl Params {
    fn add(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.0.push((key.to_owned(), value.into()));
        self
    }

    fn opt(&mut self, key: &str, value: Option<impl ToString>) -> &mut Self {
        if let Some(v) = value {
            self.0.push((key.to_owned(), v.to_string()));
        }
        self
    }

    /// Booleans go as `true`/`false`: Django BooleanFields read `0` as true.
    fn flag(&mut self, key: &str, value: Option<bool>) -> &mut Self {
        if let Some(v) = value {
            self.0.push((key.to_owned(), if v { "true" } else { "false" }.to_owned()));
        }
        self
    }

    fn many(&mut self, key: &str, values: &[String]) -> &mut Self {
        for v in values {
            self.0.push((key.to_owned(), v.clone()));
        }
        self
    }

    fn take(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.0)
    }
}

// === impl Client: transport ===

impl Client {
    /// Builds a client from the `[maas]` config, reading the API key file.
    ///
    /// # Errors
    /// [`Error::ApiKey`] when the key file is unreadable or malformed, [`Error::Build`] when reqwest cannot start.
    pub fn new(config: &Config) -> Result<Client, Error> {
        let key = ApiKey::from_file(&config.api_key_file)?;
        Client::with_key(config, key)
    }

    /// Builds a client with a key already in hand (tests, or a key from another source).
    ///
    /// # Errors
    /// [`Error::Build`] when reqwest cannot start.
    pub fn with_key(config: &Config, key: ApiKey) -> Result<Client, Error> {
        // reqwest is built with rustls but no crypto provider: a binary (the coordinator's) installs ring. A
        // library user (or a test) that did not would make reqwest panic, so install ring here when nobody has; losing
        // the race to another installer is fine.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("metalfleet-coordinator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Build)?;
        Ok(Client {
            http,
            root: config.api_root().to_string(),
            key,
            request_timeout: config.request_timeout,
            connect_timeout: config.connect_timeout,
            retries: config.retries,
            backoff: config.retry_backoff,
            max_backoff: config.max_backoff,
        })
    }

    /// The API root this client talks to, ending in `/api/2.0/`.
    pub fn api_root(&self) -> &str {
        &self.root
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.root, path)
    }

    /// The delay before retry number `attempt` (1-based): backoff * 2^(attempt-1), jittered to 50-100 %, raised to
    /// MAAS's `Retry-After` when that is longer, capped by `max_backoff`.
    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self.backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let jitter: f64 = rand::rng().random_range(0.5..=1.0);
        let base = exp.mul_f64(jitter);
        base.max(retry_after.unwrap_or_default()).min(self.max_backoff)
    }

    /// Sends the call, retrying when its policy allows.
    async fn execute(&self, call: &Call) -> Result<Reply, Error> {
        let mut attempt = 0;
        loop {
            match self.send_once(call).await {
                Ok(reply) => return Ok(reply),
                Err(error) if call.retry == Retry::Safe && error.is_retryable() && attempt < self.retries => {
                    attempt += 1;
                    let wait = self.delay(attempt, error.retry_after());
                    warn!(%error, op = call.op, attempt, wait_ms = wait.as_millis() as u64, "MAAS call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn send_once(&self, call: &Call) -> Result<Reply, Error> {
        let url = self.url(&call.path);
        let mut query: Vec<(String, String)> = Vec::with_capacity(call.query.len() + 1);
        if let Some(op) = call.maas_op {
            query.push(("op".into(), op.into()));
        }
        query.extend(call.query.iter().cloned());
        let mut request = self
            .http
            .request(call.method.clone(), &url)
            .header(AUTHORIZATION, oauth::authorization_header(&self.key))
            .header(ACCEPT, "application/json,*/*;q=0.9");
        if !query.is_empty() {
            request = request.query(&query);
        }
        if call.method == Method::POST || call.method == Method::PUT {
            request = request.form(&call.form);
        }
        debug!(op = call.op, method = %call.method, path = %call.path, maas_op = call.maas_op, "MAAS request");
        let response = request.send().await.map_err(|e| self.transport_error(call, &url, e))?;
        let status = response.status();
        let content_type =
            response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.map_err(|e| self.transport_error(call, &url, e))?.to_vec();
        if status.is_success() {
            return Ok(Reply { body });
        }
        Err(classify(call, status.as_u16(), &content_type, &body, retry_after))
    }

    fn transport_error(&self, call: &Call, url: &str, e: reqwest::Error) -> Error {
        let machine = call.subject();
        if e.is_timeout() {
            let timeout = if e.is_connect() { self.connect_timeout } else { self.request_timeout };
            Error::Timeout { op: call.op, machine, url: url.to_owned(), timeout }
        } else if e.is_connect() {
            Error::Connect { op: call.op, machine, url: url.to_owned(), source: e }
        } else {
            Error::Transport { op: call.op, machine, url: url.to_owned(), source: e }
        }
    }

    async fn json<T: DeserializeOwned>(&self, call: Call) -> Result<T, Error> {
        let reply = self.execute(&call).await?;
        decode(&call, &reply.body)
    }

    /// For calls whose answer is not needed (DELETE's 204, `set_config`'s `OK`).
    async fn unit(&self, call: Call) -> Result<(), Error> {
        self.execute(&call).await.map(|_| ())
    }

    /// A machine action whose effect is checked by a read before it is sent again (see the module doc).
    async fn machine_action(&self, call: Call, done: impl Fn(&Machine) -> bool) -> Result<Option<Machine>, Error> {
        let mut attempt = 0;
        loop {
            let error = match self.send_once(&call).await {
                Ok(reply) => return decode_optional_machine(&call, &reply),
                Err(error) if error.is_retryable() && attempt < self.retries => error,
                Err(error) => return Err(error),
            };
            attempt += 1;
            let wait = self.delay(attempt, error.retry_after());
            warn!(%error, op = call.op, attempt, "MAAS machine action failed; re-reading the machine before retrying");
            tokio::time::sleep(wait).await;
            let system_id = call.subject.clone().unwrap_or_default();
            match self.machine(&system_id).await {
                Ok(machine) if done(&machine) => return Ok(Some(machine)),
                Ok(_) => continue,
                // The read failed too: report the action's own error, which names what was attempted.
                Err(_) => return Err(error),
            }
        }
    }

    async fn machine_action_required(&self, call: Call, done: impl Fn(&Machine) -> bool) -> Result<Machine, Error> {
        let op = call.op;
        let subject = call.subject();
        self.machine_action(call, done).await?.ok_or_else(|| Error::Decode {
            op,
            machine: subject,
            source: serde::de::Error::custom("MAAS answered null where a machine was expected"),
        })
    }
}

fn decode<T: DeserializeOwned>(call: &Call, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|source| Error::Decode { op: call.op, machine: call.subject(), source })
}

fn decode_optional_machine(call: &Call, reply: &Reply) -> Result<Option<Machine>, Error> {
    let trimmed = reply.body.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" {
        return Ok(None);
    }
    decode(call, &reply.body).map(Some)
}

/// Turns a non-2xx answer into the error class of maas-api.md section 1.5.
fn classify(call: &Call, status: u16, content_type: &str, body: &[u8], retry_after: Option<Duration>) -> Error {
    let text = String::from_utf8_lossy(body).trim().to_owned();
    let op = call.op;
    let machine = call.subject();
    match status {
        400 => {
            let mut fields = BTreeMap::new();
            let mut message = text.clone();
            if content_type.contains("json") || text.starts_with('{') || text.starts_with('[') {
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(serde_json::Value::Object(map)) => {
                        for (field, v) in map {
                            let msgs = match v {
                                serde_json::Value::Array(items) => {
                                    items.into_iter().map(super::types::lenient::value_to_string).collect()
                                }
                                other => vec![super::types::lenient::value_to_string(other)],
                            };
                            fields.insert(field, msgs);
                        }
                        message = String::new();
                    }
                    Ok(serde_json::Value::Array(items)) => {
                        message =
                            items.into_iter().map(super::types::lenient::value_to_string).collect::<Vec<_>>().join(" ");
                    }
                    _ => {}
                }
            }
            Error::BadRequest { op, machine, fields, message }
        }
        401 => Error::Unauthorized { op, message: text },
        403 => Error::Forbidden { op, machine, message: text },
        404 => Error::NotFound { op, what: call.what.clone(), message: text },
        409 => Error::Conflict { op, machine, message: text },
        503 => Error::Unavailable { op, machine, message: text, retry_after },
        _ => Error::Server { op, machine, status, message: text },
    }
}

// === impl Client: machines ===

impl Client {
    /// Lists machines (one call, no pagination), filtered.
    #[instrument(skip_all)]
    pub async fn machines(&self, filter: &MachineFilter) -> Result<Vec<Machine>, Error> {
        self.json(Call::get("machines", "machines/").query(filter.to_query())).await
    }

    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn machine(&self, system_id: &str) -> Result<Machine, Error> {
        self.json(Call::get("machine", format!("machines/{system_id}/")).machine(system_id)).await
    }

    /// The commissioned hardware of one machine, in bytes (read from the machine object).
    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn hardware_details(&self, system_id: &str) -> Result<HardwareDetails, Error> {
        Ok(self.machine(system_id).await?.hardware())
    }

    /// The raw BSON document of `op=details` (lshw and lldp XML from the last commissioning).
    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn machine_details_bson(&self, system_id: &str) -> Result<Vec<u8>, Error> {
        let call = Call::get("machine_details", format!("machines/{system_id}/")).maas_op("details").machine(system_id);
        Ok(self.execute(&call).await?.body)
    }

    /// Script results (`nodes/{system_id}/results/`).
    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn machine_results(&self, system_id: &str, query: &ResultsQuery) -> Result<Vec<ScriptSet>, Error> {
        let mut p = Params::default();
        p.opt("type", query.result_type.as_ref())
            .opt("hardware_type", query.hardware_type.as_ref())
            .opt("include_output", query.include_output.then_some("true"));
        if !query.filters.is_empty() {
            p.add("filters", query.filters.join(","));
        }
        self.json(
            Call::get("machine_results", format!("nodes/{system_id}/results/")).machine(system_id).query(p.take()),
        )
        .await
    }

    /// Creates a machine. An admin's create starts commissioning at once unless `commission` is false.
    #[instrument(skip_all, fields(hostname = new.hostname.as_deref().unwrap_or("")))]
    pub async fn create_machine(&self, new: &NewMachine) -> Result<Machine, Error> {
        let mut p = Params::default();
        p.add("architecture", new.architecture.clone())
            .many("mac_addresses", &new.mac_addresses)
            .opt("hostname", new.hostname.as_ref())
            .opt("description", new.description.as_ref())
            .opt("domain", new.domain.as_ref())
            .opt("power_type", new.power_type.as_ref())
            .flag("commission", new.commission);
        for (k, v) in &new.power_parameters {
            p.add(&format!("power_parameters_{k}"), v.clone());
        }
        let mut call = Call::post("create_machine", "machines/").form(p.take());
        call.subject = new.hostname.clone();
        self.json(call).await
    }

    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn commission(&self, system_id: &str, options: &CommissionOptions) -> Result<Machine, Error> {
        let mut p = Params::default();
        p.flag("enable_ssh", options.enable_ssh)
            .flag("skip_bmc_config", options.skip_bmc_config)
            .flag("skip_networking", options.skip_networking)
            .flag("skip_storage", options.skip_storage);
        if !options.commissioning_scripts.is_empty() {
            p.add("commissioning_scripts", options.commissioning_scripts.join(","));
        }
        if !options.testing_scripts.is_empty() {
            p.add("testing_scripts", options.testing_scripts.join(","));
        }
        let call = self.action("commission", system_id).form(p.take());
        self.machine_action_required(call, |m| matches!(m.status, NodeStatus::Commissioning | NodeStatus::Testing))
            .await
    }

    /// Allocates a Ready machine matching the request. Not retried (a lost answer would leave a machine allocated).
    #[instrument(skip_all, fields(system_id = request.system_id.as_deref().unwrap_or(""), name = request.name.as_deref().unwrap_or("")))]
    pub async fn allocate(&self, request: &AllocateRequest) -> Result<Machine, Error> {
        let mut p = Params::default();
        p.opt("name", request.name.as_ref())
            .opt("system_id", request.system_id.as_ref())
            .opt("arch", request.arch.as_ref())
            .opt("cpu_count", request.min_cpu_count)
            .opt("mem", request.min_memory_mib)
            .many("tags", &request.tags)
            .many("not_tags", &request.not_tags)
            .opt("zone", request.zone.as_ref())
            .opt("pool", request.pool.as_ref())
            .opt("agent_name", request.agent_name.as_ref())
            .opt("comment", request.comment.as_ref())
            .flag("dry_run", request.dry_run.then_some(true));
        let mut call = Call::post("allocate", "machines/").maas_op("allocate").form(p.take());
        call.subject = request.system_id.clone().or_else(|| request.name.clone());
        self.json(call).await
    }

    /// Deploys (a Ready machine is allocated implicitly). `user_data` travels base64-encoded.
    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn deploy(&self, system_id: &str, options: &DeployOptions) -> Result<Machine, Error> {
        let mut p = Params::default();
        p.opt("distro_series", options.distro_series.as_ref())
            .opt("hwe_kernel", options.hwe_kernel.as_ref())
            .opt("comment", options.comment.as_ref())
            .opt("agent_name", options.agent_name.as_ref())
            .flag("ephemeral_deploy", options.ephemeral_deploy)
            .flag("enable_hw_sync", options.enable_hw_sync);
        if let Some(data) = &options.user_data {
            p.add("user_data", base64::engine::general_purpose::STANDARD.encode(data));
        }
        let call = self.action("deploy", system_id).form(p.take());
        self.machine_action_required(call, |m| matches!(m.status, NodeStatus::Deploying | NodeStatus::Deployed)).await
    }

    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn release(&self, system_id: &str, options: &ReleaseOptions) -> Result<Machine, Error> {
        let mut p = Params::default();
        p.flag("erase", options.erase.then_some(true))
            .flag("secure_erase", options.secure_erase.then_some(true))
            .flag("quick_erase", options.quick_erase.then_some(true))
            .flag("force", options.force.then_some(true))
            .opt("comment", options.comment.as_ref());
        let call = self.action("release", system_id).form(p.take());
        self.machine_action_required(call, |m| {
            matches!(m.status, NodeStatus::Releasing | NodeStatus::DiskErasing | NodeStatus::Ready)
        })
        .await
    }

    /// Aborts commissioning, deployment, disk erasing or testing. Not retried. MAAS sets the new status after the
    /// answer, so the returned machine may still show the old one.
    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn abort(&self, system_id: &str, comment: Option<&str>) -> Result<Machine, Error> {
        let mut p = Params::default();
        p.opt("comment", comment);
        self.json(self.action("abort", system_id).form(p.take())).await
    }

    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn power_on(&self, system_id: &str, comment: Option<&str>) -> Result<Machine, Error> {
        let mut p = Params::default();
        p.opt("comment", comment);
        let call = self.action("power_on", system_id).form(p.take());
        self.machine_action_required(call, |m| m.power_state == PowerState::On || m.status == NodeStatus::Deploying)
            .await
    }

    /// Powers off. `None` when MAAS sent no power action (e.g. a `manual` power type).
    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn power_off(
        &self,
        system_id: &str,
        stop_mode: StopMode,
        comment: Option<&str>,
    ) -> Result<Option<Machine>, Error> {
        let mut p = Params::default();
        p.add("stop_mode", if stop_mode == StopMode::Soft { "soft" } else { "hard" }).opt("comment", comment);
        let call = self.action("power_off", system_id).form(p.take());
        self.machine_action(call, |m| m.power_state == PowerState::Off).await
    }

    /// Asks the BMC now (MAAS waits up to 60 s for it) and returns the state.
    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn query_power_state(&self, system_id: &str) -> Result<PowerState, Error> {
        let call = Call::get("query_power_state", format!("machines/{system_id}/"))
            .maas_op("query_power_state")
            .machine(system_id);
        Ok(self.json::<PowerStateReply>(call).await?.state)
    }

    /// Marks broken. MAAS requires the caller to own the machine (403 otherwise).
    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn mark_broken(&self, system_id: &str, comment: Option<&str>) -> Result<Machine, Error> {
        let mut p = Params::default();
        p.opt("comment", comment);
        let call = self.action("mark_broken", system_id).form(p.take());
        self.machine_action_required(call, |m| m.status == NodeStatus::Broken).await
    }

    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn mark_fixed(&self, system_id: &str, comment: Option<&str>) -> Result<Machine, Error> {
        let mut p = Params::default();
        p.opt("comment", comment);
        let call = self.action("mark_fixed", system_id).form(p.take());
        self.machine_action_required(call, |m| m.status != NodeStatus::Broken).await
    }

    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn lock(&self, system_id: &str, comment: Option<&str>) -> Result<Machine, Error> {
        let mut p = Params::default();
        p.opt("comment", comment);
        let call = self.action("lock", system_id).form(p.take());
        self.machine_action_required(call, |m| m.locked).await
    }

    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn unlock(&self, system_id: &str, comment: Option<&str>) -> Result<Machine, Error> {
        let mut p = Params::default();
        p.opt("comment", comment);
        let call = self.action("unlock", system_id).form(p.take());
        self.machine_action_required(call, |m| !m.locked).await
    }

    fn action(&self, op: &'static str, system_id: &str) -> Call {
        Call::post(op, format!("machines/{system_id}/")).maas_op(op).machine(system_id)
    }
}

// === impl Client: tags ===

impl Client {
    #[instrument(skip_all)]
    pub async fn tags(&self) -> Result<Vec<Tag>, Error> {
        self.json(Call::get("tags", "tags/")).await
    }

    #[instrument(skip_all, fields(tag = %name))]
    pub async fn create_tag(&self, name: &str, comment: Option<&str>) -> Result<Tag, Error> {
        let mut p = Params::default();
        p.add("name", name).opt("comment", comment);
        self.json(Call::post("create_tag", "tags/").form(p.take())).await
    }

    /// Adds and removes the tag on machines (`tags/{name}/?op=update_nodes`).
    #[instrument(skip_all, fields(tag = %name))]
    pub async fn tag_machines(&self, name: &str, add: &[String], remove: &[String]) -> Result<(), Error> {
        let mut p = Params::default();
        p.many("add", add).many("remove", remove);
        let call = Call::post("tag_machines", format!("tags/{name}/"))
            .maas_op("update_nodes")
            .what(format!("tag {name}"))
            .form(p.take());
        self.unit(call).await
    }
}

// === impl Client: network ===

impl Client {
    #[instrument(skip_all)]
    pub async fn subnets(&self) -> Result<Vec<Subnet>, Error> {
        self.json(Call::get("subnets", "subnets/")).await
    }

    #[instrument(skip_all, fields(subnet = %subnet))]
    pub async fn subnet(&self, subnet: &SubnetRef) -> Result<Subnet, Error> {
        self.json(self.subnet_call("subnet", subnet, None)).await
    }

    /// Sets the subnet's DNS servers (sent space-separated; an empty list clears them). Idempotent, retried.
    #[instrument(skip_all, fields(subnet = %subnet))]
    pub async fn update_subnet_dns_servers(&self, subnet: &SubnetRef, servers: &[String]) -> Result<Subnet, Error> {
        let mut call = self.subnet_call("update_subnet_dns_servers", subnet, None).retry(Retry::Safe);
        call.method = Method::PUT;
        call = call.form(vec![("dns_servers".into(), servers.join(" "))]);
        self.json(call).await
    }

    #[instrument(skip_all, fields(subnet = %subnet))]
    pub async fn subnet_reserved_ranges(&self, subnet: &SubnetRef) -> Result<Vec<ReservedRange>, Error> {
        self.json(self.subnet_call("subnet_reserved_ranges", subnet, Some("reserved_ip_ranges"))).await
    }

    #[instrument(skip_all, fields(subnet = %subnet))]
    pub async fn subnet_unreserved_ranges(&self, subnet: &SubnetRef) -> Result<Vec<UnreservedRange>, Error> {
        self.json(self.subnet_call("subnet_unreserved_ranges", subnet, Some("unreserved_ip_ranges"))).await
    }

    #[instrument(skip_all, fields(subnet = %subnet))]
    pub async fn subnet_statistics(&self, subnet: &SubnetRef) -> Result<SubnetStatistics, Error> {
        self.json(self.subnet_call("subnet_statistics", subnet, Some("statistics"))).await
    }

    fn subnet_call(&self, op: &'static str, subnet: &SubnetRef, maas_op: Option<&'static str>) -> Call {
        let mut call = Call::get(op, format!("subnets/{subnet}/")).what(format!("subnet {subnet}"));
        call.maas_op = maas_op;
        call
    }

    #[instrument(skip_all)]
    pub async fn fabrics(&self) -> Result<Vec<Fabric>, Error> {
        self.json(Call::get("fabrics", "fabrics/")).await
    }

    #[instrument(skip_all, fields(fabric_id))]
    pub async fn vlans(&self, fabric_id: i64) -> Result<Vec<Vlan>, Error> {
        self.json(Call::get("vlans", format!("fabrics/{fabric_id}/vlans/")).what(format!("fabric {fabric_id}"))).await
    }

    /// Reads a VLAN by fabric id and 802.1Q tag (0 for the untagged VLAN).
    #[instrument(skip_all, fields(fabric_id, vid))]
    pub async fn vlan(&self, fabric_id: i64, vid: u16) -> Result<Vlan, Error> {
        self.json(
            Call::get("vlan", format!("fabrics/{fabric_id}/vlans/{vid}/"))
                .what(format!("VLAN {vid} on fabric {fabric_id}")),
        )
        .await
    }

    /// Updates a VLAN, e.g. `dhcp_on` with `primary_rack`. Absolute values, so it is retried.
    #[instrument(skip_all, fields(fabric_id, vid))]
    pub async fn update_vlan(&self, fabric_id: i64, vid: u16, update: &VlanUpdate) -> Result<Vlan, Error> {
        let mut p = Params::default();
        p.flag("dhcp_on", update.dhcp_on)
            .opt("primary_rack", update.primary_rack.as_ref())
            .opt("secondary_rack", update.secondary_rack.as_ref())
            .opt("name", update.name.as_ref())
            .opt("description", update.description.as_ref())
            .opt("mtu", update.mtu)
            .opt("space", update.space.as_ref());
        let call = Call::new("update_vlan", Method::PUT, format!("fabrics/{fabric_id}/vlans/{vid}/"))
            .what(format!("VLAN {vid} on fabric {fabric_id}"))
            .retry(Retry::Safe)
            .form(p.take());
        self.json(call).await
    }

    #[instrument(skip_all)]
    pub async fn rack_controllers(&self) -> Result<Vec<RackController>, Error> {
        self.json(Call::get("rack_controllers", "rackcontrollers/")).await
    }

    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn rack_controller(&self, system_id: &str) -> Result<RackController, Error> {
        self.json(
            Call::get("rack_controller", format!("rackcontrollers/{system_id}/"))
                .what(format!("rack controller {system_id}")),
        )
        .await
    }

    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn rack_boot_images(&self, system_id: &str) -> Result<RackBootImages, Error> {
        self.json(
            Call::get("rack_boot_images", format!("rackcontrollers/{system_id}/"))
                .maas_op("list_boot_images")
                .what(format!("rack controller {system_id}")),
        )
        .await
    }

    #[instrument(skip_all)]
    pub async fn ip_ranges(&self) -> Result<Vec<IpRange>, Error> {
        self.json(Call::get("ip_ranges", "ipranges/")).await
    }

    #[instrument(skip_all, fields(id))]
    pub async fn ip_range(&self, id: i64) -> Result<IpRange, Error> {
        self.json(Call::get("ip_range", format!("ipranges/{id}/")).what(format!("IP range {id}"))).await
    }

    #[instrument(skip_all, fields(start = %new.start_ip, end = %new.end_ip))]
    pub async fn create_ip_range(&self, new: &NewIpRange) -> Result<IpRange, Error> {
        let mut p = Params::default();
        p.add("type", new.range_type.as_str())
            .add("start_ip", new.start_ip.clone())
            .add("end_ip", new.end_ip.clone())
            .opt("subnet", new.subnet)
            .opt("comment", new.comment.as_ref());
        self.json(Call::post("create_ip_range", "ipranges/").form(p.take())).await
    }

    #[instrument(skip_all, fields(id))]
    pub async fn delete_ip_range(&self, id: i64) -> Result<(), Error> {
        self.unit(
            Call::new("delete_ip_range", Method::DELETE, format!("ipranges/{id}/")).what(format!("IP range {id}")),
        )
        .await
    }
}

// === impl Client: settings ===

impl Client {
    /// A setting's JSON value (a string, a bool, or null when unset).
    #[instrument(skip_all, fields(name = %name))]
    pub async fn get_config(&self, name: &str) -> Result<serde_json::Value, Error> {
        let call = Call::get("get_config", "maas/").maas_op("get_config").query(vec![("name".into(), name.into())]);
        self.json(call).await
    }

    /// Sets a setting (MAAS answers `OK`). Idempotent, retried.
    #[instrument(skip_all, fields(name = %name))]
    pub async fn set_config(&self, name: &str, value: &str) -> Result<(), Error> {
        let call = Call::post("set_config", "maas/")
            .maas_op("set_config")
            .retry(Retry::Safe)
            .form(vec![("name".into(), name.into()), ("value".into(), value.into())]);
        self.unit(call).await
    }

    /// The DNS forwarders; MAAS stores them space-separated (commas are accepted too when reading).
    pub async fn upstream_dns(&self) -> Result<Vec<String>, Error> {
        let value = self.get_config("upstream_dns").await?;
        let text = super::types::lenient::value_to_string(value);
        Ok(text.split([' ', ',']).filter(|s| !s.is_empty()).map(str::to_owned).collect())
    }

    pub async fn set_upstream_dns(&self, servers: &[String]) -> Result<(), Error> {
        self.set_config("upstream_dns", &servers.join(" ")).await
    }

    pub async fn dnssec_validation(&self) -> Result<DnssecValidation, Error> {
        let value = self.get_config("dnssec_validation").await?;
        Ok(DnssecValidation::from(super::types::lenient::value_to_string(value).as_str()))
    }

    pub async fn set_dnssec_validation(&self, value: &DnssecValidation) -> Result<(), Error> {
        self.set_config("dnssec_validation", value.as_str()).await
    }

    /// The global kernel command line options, `None` when unset.
    pub async fn kernel_opts(&self) -> Result<Option<String>, Error> {
        Ok(match self.get_config("kernel_opts").await? {
            serde_json::Value::Null => None,
            other => Some(super::types::lenient::value_to_string(other)),
        })
    }

    pub async fn set_kernel_opts(&self, value: &str) -> Result<(), Error> {
        self.set_config("kernel_opts", value).await
    }
}

// === impl Client: boot images ===

impl Client {
    #[instrument(skip_all)]
    pub async fn boot_sources(&self) -> Result<Vec<BootSource>, Error> {
        self.json(Call::get("boot_sources", "boot-sources/")).await
    }

    #[instrument(skip_all, fields(url = %url))]
    pub async fn create_boot_source(&self, url: &str, keyring_filename: Option<&str>) -> Result<BootSource, Error> {
        let mut p = Params::default();
        p.add("url", url).opt("keyring_filename", keyring_filename);
        self.json(Call::post("create_boot_source", "boot-sources/").form(p.take())).await
    }

    #[instrument(skip_all, fields(source_id))]
    pub async fn boot_source_selections(&self, source_id: i64) -> Result<Vec<BootSourceSelection>, Error> {
        self.json(
            Call::get("boot_source_selections", format!("boot-sources/{source_id}/selections/"))
                .what(format!("boot source {source_id}")),
        )
        .await
    }

    #[instrument(skip_all, fields(source_id, release = %new.release))]
    pub async fn create_boot_source_selection(
        &self,
        source_id: i64,
        new: &NewBootSourceSelection,
    ) -> Result<BootSourceSelection, Error> {
        let star = vec!["*".to_owned()];
        let mut p = Params::default();
        p.add("os", new.os.clone())
            .add("release", new.release.clone())
            .many("arches", &new.arches)
            .many("subarches", if new.subarches.is_empty() { &star } else { &new.subarches })
            .many("labels", if new.labels.is_empty() { &star } else { &new.labels });
        let call = Call::post("create_boot_source_selection", format!("boot-sources/{source_id}/selections/"))
            .what(format!("boot source {source_id}"))
            .form(p.take());
        self.json(call).await
    }

    /// Changes the arches of an existing selection. Idempotent, retried.
    #[instrument(skip_all, fields(source_id, selection_id))]
    pub async fn update_boot_source_selection_arches(
        &self,
        source_id: i64,
        selection_id: i64,
        arches: &[String],
    ) -> Result<BootSourceSelection, Error> {
        let mut p = Params::default();
        p.many("arches", arches);
        let call = Call::new(
            "update_boot_source_selection_arches",
            Method::PUT,
            format!("boot-sources/{source_id}/selections/{selection_id}/"),
        )
        .what(format!("boot source selection {selection_id}"))
        .retry(Retry::Safe)
        .form(p.take());
        self.json(call).await
    }

    /// Starts importing the selected images. Harmless to repeat, so retried.
    #[instrument(skip_all)]
    pub async fn import_boot_resources(&self) -> Result<(), Error> {
        self.unit(Call::post("import_boot_resources", "boot-resources/").maas_op("import").retry(Retry::Safe)).await
    }

    #[instrument(skip_all)]
    pub async fn stop_import_boot_resources(&self) -> Result<(), Error> {
        self.unit(Call::post("stop_import_boot_resources", "boot-resources/").maas_op("stop_import").retry(Retry::Safe))
            .await
    }

    #[instrument(skip_all)]
    pub async fn is_importing(&self) -> Result<bool, Error> {
        self.json(Call::get("is_importing", "boot-resources/").maas_op("is_importing")).await
    }

    /// Lists boot resources; `resource_type` is `synced`, `uploaded` or `all` (MAAS's default: all).
    #[instrument(skip_all)]
    pub async fn boot_resources(&self, resource_type: Option<&str>) -> Result<Vec<BootResource>, Error> {
        let mut p = Params::default();
        p.opt("type", resource_type);
        self.json(Call::get("boot_resources", "boot-resources/").query(p.take())).await
    }

    /// Reads one boot resource with its sets (the sync state: [`BootResource::is_synced`]).
    #[instrument(skip_all, fields(id))]
    pub async fn boot_resource(&self, id: i64) -> Result<BootResource, Error> {
        self.json(Call::get("boot_resource", format!("boot-resources/{id}/")).what(format!("boot resource {id}"))).await
    }
}

// === impl Client: accounts, events, devices ===

impl Client {
    #[instrument(skip_all)]
    pub async fn ssh_keys(&self) -> Result<Vec<SshKey>, Error> {
        self.json(Call::get("ssh_keys", "account/prefs/sshkeys/")).await
    }

    #[instrument(skip_all)]
    pub async fn create_ssh_key(&self, key: &str) -> Result<SshKey, Error> {
        self.json(Call::post("create_ssh_key", "account/prefs/sshkeys/").form(vec![("key".into(), key.into())])).await
    }

    #[instrument(skip_all, fields(id))]
    pub async fn delete_ssh_key(&self, id: i64) -> Result<(), Error> {
        self.unit(
            Call::new("delete_ssh_key", Method::DELETE, format!("account/prefs/sshkeys/{id}/"))
                .what(format!("SSH key {id}")),
        )
        .await
    }

    /// Queries events, newest first. Use `after` with the last id seen to get only new ones.
    #[instrument(skip_all)]
    pub async fn events(&self, query: &EventQuery) -> Result<EventPage, Error> {
        let mut p = Params::default();
        p.opt("after", query.after)
            .opt("before", query.before)
            .opt("limit", query.limit)
            .many("id", &query.ids)
            .many("hostname", &query.hostnames)
            .opt("level", query.level.as_ref());
        self.json(Call::get("events", "events/").maas_op("query").query(p.take())).await
    }

    #[instrument(skip_all)]
    pub async fn devices(&self) -> Result<Vec<Device>, Error> {
        self.json(Call::get("devices", "devices/")).await
    }

    #[instrument(skip_all, fields(hostname = %hostname))]
    pub async fn create_device(&self, hostname: &str, mac_addresses: &[String]) -> Result<Device, Error> {
        let mut p = Params::default();
        p.add("hostname", hostname).many("mac_addresses", mac_addresses);
        let mut call = Call::post("create_device", "devices/").form(p.take());
        call.subject = Some(hostname.to_owned());
        self.json(call).await
    }

    #[instrument(skip_all, fields(system_id = %system_id))]
    pub async fn delete_device(&self, system_id: &str) -> Result<(), Error> {
        let mut call = Call::new("delete_device", Method::DELETE, format!("devices/{system_id}/"))
            .what(format!("device {system_id}"));
        call.subject = Some(system_id.to_owned());
        self.unit(call).await
    }

    #[instrument(skip_all)]
    pub async fn whoami(&self) -> Result<User, Error> {
        self.json(Call::get("whoami", "users/").maas_op("whoami")).await
    }

    /// MAAS's version and capabilities (`version/`).
    #[instrument(skip_all)]
    pub async fn version(&self) -> Result<Version, Error> {
        self.json(Call::get("version", "version/")).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(backoff_ms: u64, max_ms: u64) -> Client {
        let mut cfg = Config::new(url::Url::parse("http://127.0.0.1:9/MAAS").unwrap(), "/nonexistent".into());
        cfg.retry_backoff = Duration::from_millis(backoff_ms);
        cfg.max_backoff = Duration::from_millis(max_ms);
        Client::with_key(&cfg, ApiKey::parse("a:b:c").unwrap()).unwrap()
    }

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let c = client(100, 1000);
        for _ in 0..50 {
            let d1 = c.delay(1, None);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100), "{d1:?}");
            let d3 = c.delay(3, None);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400), "{d3:?}");
            assert!(c.delay(10, None) <= Duration::from_millis(1000));
        }
        assert_eq!(c.delay(1, Some(Duration::from_millis(700))), Duration::from_millis(700));
        assert_eq!(c.delay(1, Some(Duration::from_secs(10))), Duration::from_millis(1000));
    }

    fn check_classify(status: u16, content_type: &str, body: &str, check: impl Fn(&Error)) {
        let call = Call::post("deploy", "machines/abc/").machine("abc");
        let error = classify(&call, status, content_type, body.as_bytes(), Some(Duration::from_secs(10)));
        check(&error);
    }

    #[test]
    fn classifies_maas_answers() {
        check_classify(400, "application/json", r#"{"distro_series": ["bad"], "__all__": ["x"]}"#, |e| {
            let Error::BadRequest { fields, .. } = e else { panic!("{e:?}") };
            assert_eq!(fields["distro_series"], vec!["bad".to_owned()]);
            assert_eq!(fields["__all__"], vec!["x".to_owned()]);
        });
        check_classify(400, "text/plain", "No provided name!", |e| {
            let Error::BadRequest { fields, message, .. } = e else { panic!("{e:?}") };
            assert!(fields.is_empty());
            assert_eq!(message, "No provided name!");
        });
        check_classify(409, "text/plain", "Can't deploy a machine that is in the 'Deployed' state", |e| {
            let Error::Conflict { machine, message, op } = e else { panic!("{e:?}") };
            assert_eq!((*op, machine.0.as_deref()), ("deploy", Some("abc")));
            assert!(message.contains("'Deployed' state"));
        });
        check_classify(503, "text/plain", "busy", |e| {
            assert_eq!(e.retry_after(), Some(Duration::from_secs(10)));
            assert!(e.is_retryable());
        });
        check_classify(404, "text/plain", "No Machine matches the given query.", |e| {
            assert!(e.to_string().contains("machine abc"), "{e}");
        });
        check_classify(401, "text/plain", "Authorization Error: Invalid API key.", |e| {
            assert!(matches!(e, Error::Unauthorized { .. }));
        });
        check_classify(403, "text/plain", "", |e| assert!(matches!(e, Error::Forbidden { .. })));
        check_classify(500, "text/plain", "boom", |e| assert_eq!(e.status(), Some(500)));
    }
}
