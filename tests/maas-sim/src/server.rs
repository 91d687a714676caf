//! The HTTP server: accept loop, the `/_sim/` admin endpoints, faults, OAuth, dispatch, the request log,
//! lifecycle timers and the deploy hook.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::Digest;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::routes::{self, ROOT};
use crate::wire::{self, Params, Resp};
use crate::world::{Effect, HookRun, World, random_token};
use crate::{Config, Failure, Fault, LoggedRequest};

/// State shared by the connections, the timers and the [`Handle`].
pub(crate) struct Shared {
    world: Mutex<World>,
    time_scale: f64,
    hook: Option<PathBuf>,
    data_dir: PathBuf,
    /// Keeps the temporary data directory alive when no state dir was given.
    _tmp: Option<tempfile::TempDir>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    describe_hash: String,
}

impl Shared {
    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock leaves a usable world for a test fixture; keep serving.
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running emulator.
pub struct Handle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    api_key: String,
    server: tokio::task::JoinHandle<()>,
}

impl Handle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT/MAAS`, the form MAAS clients are configured with.
    pub fn base_url(&self) -> String {
        format!("http://{}/MAAS", self.addr)
    }

    /// The admin API key `consumer:token:secret`.
    pub fn api_key(&self) -> String {
        self.api_key.clone()
    }

    /// Every request seen so far (admin `/_sim/` calls excluded), secrets redacted.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        self.shared.world().log.clone()
    }

    pub fn clear_request_log(&self) {
        self.shared.world().log.clear();
    }

    pub fn inject(&self, fault: Fault) {
        inject(&mut self.shared.world(), fault);
    }

    /// Removes every pending request fault (machine failures stay).
    pub fn clear_faults(&self) {
        self.shared.world().faults.clear();
    }

    pub fn set_machine_failure(&self, hostname: &str, failure: Failure) {
        self.shared.world().failures.insert(hostname.to_owned(), failure);
    }

    /// Test shortcut: puts the machine called `hostname` straight into `status` (owner and power follow the
    /// status); returns false when no such machine exists. Real MAAS has no such call.
    pub fn force_status(&self, hostname: &str, status: crate::status::Status) -> bool {
        self.shared.world().force_status(hostname, status)
    }

    /// What the rack "sees" on a VLAN: another DHCP server at `ip` (the router's), or none. MAAS reports it as the
    /// VLAN's `external_dhcp`. Returns false when no VLAN has that id.
    pub fn set_external_dhcp(&self, vlan_id: u64, ip: Option<std::net::IpAddr>) -> bool {
        set_external_dhcp(&mut self.shared.world(), vlan_id, ip)
    }

    /// Creates (or reuses) a user and returns a fresh API key for it.
    pub fn create_api_key(&self, username: &str, admin: bool) -> String {
        let mut w = self.shared.world();
        if !w.users.iter().any(|u| u.username == username) {
            w.users.push(crate::world::User {
                username: username.into(),
                email: format!("{username}@example.com"),
                is_superuser: admin,
            });
        }
        let key = (random_token(18), random_token(18), random_token(32));
        w.add_token(username, (&key.0, &key.1, &key.2), "test");
        format!("{}:{}:{}", key.0, key.1, key.2)
    }

    /// Stops accepting, cancels timers and waits for the server task.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        let _ = self.server.await;
        self.shared.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.shared.tasks.wait()).await;
    }
}

fn inject(w: &mut World, fault: Fault) {
    match fault {
        Fault::FailCommissioning { hostname } => {
            w.failures.insert(hostname, Failure::Commissioning);
        }
        Fault::FailDeployment { hostname } => {
            w.failures.insert(hostname, Failure::Deployment);
        }
        other => w.faults.push(other),
    }
}

fn set_external_dhcp(w: &mut World, vlan_id: u64, ip: Option<std::net::IpAddr>) -> bool {
    match w.vlans.iter_mut().find(|v| v.id == vlan_id) {
        Some(v) => {
            v.external_dhcp = ip.map(|i| i.to_string());
            true
        }
        None => false,
    }
}

/// The body of `POST /_sim/external-dhcp`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalDhcp {
    vlan_id: u64,
    ip: Option<std::net::IpAddr>,
}

fn split_key(key: &str) -> anyhow::Result<(String, String, String)> {
    let parts: Vec<&str> = key.trim().split(':').collect();
    match parts.as_slice() {
        [c, t, s] if !c.is_empty() && !t.is_empty() && !s.is_empty() => {
            Ok(((*c).to_owned(), (*t).to_owned(), (*s).to_owned()))
        }
        _ => anyhow::bail!("api key must be consumer_key:token_key:token_secret (three non-empty parts)"),
    }
}

/// Binds, spawns the server and returns once it accepts connections.
///
/// # Errors
/// A malformed API key, an unusable state dir, or a listen address that cannot be bound.
pub async fn start(config: Config) -> anyhow::Result<Handle> {
    let (generated, key) = match &config.api_key {
        Some(k) => (false, split_key(k)?),
        None => (true, (random_token(18), random_token(18), random_token(32))),
    };
    let api_key = format!("{}:{}:{}", key.0, key.1, key.2);
    let (data_dir, tmp) = match &config.state_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("create state dir {}", d.display()))?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new().prefix("maas-sim-").tempdir().context("create a temporary state dir")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    if generated && config.state_dir.is_some() {
        write_secret(&data_dir.join("api-key"), &api_key)?;
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("bind {} (is the port free?)", config.listen))?;
    let addr = listener.local_addr()?;
    let doc = serde_json::to_string(&routes::describe("http://maas")).expect("serialising a Value cannot fail");
    let describe_hash = hex(&sha2::Sha256::digest(doc.as_bytes()))[..40].to_owned();
    let shared = Arc::new(Shared {
        world: Mutex::new(World::new(&config, (&key.0, &key.1, &key.2))),
        time_scale: config.time_scale.max(0.0),
        hook: config.hook.clone(),
        data_dir,
        _tmp: tmp,
        cancel: CancellationToken::new(),
        tasks: TaskTracker::new(),
        describe_hash,
    });
    let server = tokio::spawn(accept_loop(listener, shared.clone()));
    info!(%addr, machines = shared.world().specs.len(), "maas-sim accepting");
    Ok(Handle { shared, addr, api_key, server })
}

fn write_secret(path: &std::path::Path, value: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    f.write_all(value.as_bytes())?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shared.cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(error) => {
                    warn!(%error, "accept failed; continuing");
                    continue;
                }
            },
        };
        let shared2 = shared.clone();
        let cancel = shared.cancel.clone();
        shared.tasks.spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared2.clone();
                async move { handle(shared, req).await }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => if let Err(error) = r { debug!(%error, %peer, "connection ended") },
                _ = cancel.cancelled() => {}
            }
        });
    }
}

/// A fault asked hyper to close the connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
struct Dropped;

type HttpResponse = Response<Full<Bytes>>;

fn to_http(r: Resp) -> HttpResponse {
    let mut b = Response::builder().status(r.status).header("Content-Type", r.content_type);
    for (k, v) in r.headers {
        b = b.header(k, v);
    }
    b.body(Full::new(Bytes::from(r.body))).expect("valid response parts")
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<HttpResponse, Dropped> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let headers = req.headers().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    if let Some(admin) = path.strip_prefix("/_sim/") {
        return Ok(to_http(sim_admin(&shared, &method, admin, &body)));
    }
    // Faults first: they stand for the network or a proxy in front of MAAS.
    let fault = take_fault(&mut shared.world(), &path);
    let mut early = None;
    match fault {
        Some(Fault::Latency { ms, .. }) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Some(Fault::Drop { .. }) => early = Some(0),
        Some(Fault::Status { status, .. }) => early = Some(status),
        _ => {}
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let query_params = Params::parse_urlencoded(query.as_bytes());
    let body_params = if matches!(method.as_str(), "POST" | "PUT") {
        wire::parse_body(&header("content-type"), &body)
    } else {
        Ok(Params::default())
    };
    let mut op = query_params.get("op").map(str::to_owned);
    if op.is_none()
        && let Ok(b) = &body_params
    {
        op = b.get("op").map(str::to_owned);
    }
    let mut all = Params(query_params.0.into_iter().filter(|(k, _)| k != "op").collect());
    let body_ok = match body_params {
        Ok(b) => {
            all.0.extend(b.0.into_iter().filter(|(k, _)| k != "op"));
            None
        }
        Err(e) => Some(e),
    };
    let mut effective_path = path.clone();
    if let Some((prefix, last)) = path.trim_end_matches('/').rsplit_once('/')
        && let Some(name) = last.strip_prefix("op-")
    {
        if op.as_deref().is_none_or(str::is_empty) {
            op = Some(name.to_owned());
        }
        effective_path = format!("{prefix}/");
    }
    let op = op.filter(|o| !o.is_empty());
    let resp = if let Some(status) = early {
        if status == 0 {
            log(&shared, &method, &path, &op, &all, 0);
            return Err(Dropped);
        }
        let mut r = Resp::text(status, format!("Injected fault: HTTP {status}."));
        if status == 503 {
            r = r.with_header("Retry-After", "10");
        }
        r
    } else if let Some(e) = body_ok {
        Resp::text(400, e.to_string())
    } else {
        let host = header("host");
        let host = if host.is_empty() { "localhost:5240".to_owned() } else { host };
        let auth = header("authorization");
        let r = route(&shared, &method, &effective_path, op.as_deref(), &all, &auth, &host);
        r.with_header("X-MAAS-API-Hash", shared.describe_hash.clone()).with_header("Vary", "Authorization")
    };
    debug!(%method, %path, op = op.as_deref().unwrap_or(""), status = resp.status, "request");
    log(&shared, &method, &path, &op, &all, resp.status);
    let effects = std::mem::take(&mut shared.world().effects);
    run_effects(&shared, effects);
    Ok(to_http(resp))
}

fn log(shared: &Shared, method: &str, path: &str, op: &Option<String>, params: &Params, status: u16) {
    let params = params.0.iter().map(|(k, v)| (k.clone(), redact(k, v))).collect();
    shared.world().log(LoggedRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        op: op.clone(),
        params,
        status,
    });
}

fn redact(key: &str, value: &str) -> String {
    let secret = key.contains("pass") || key == "user_data" || key.contains("secret") || key == "keyring_data";
    if secret || (key == "power_parameters" && value.contains("pass")) {
        "<redacted>".to_owned()
    } else {
        value.to_owned()
    }
}

fn take_fault(w: &mut World, path: &str) -> Option<Fault> {
    if !path.starts_with("/MAAS/") {
        return None;
    }
    let idx = w.faults.iter().position(|f| match f {
        Fault::Status { path_prefix, count, .. }
        | Fault::Latency { path_prefix, count, .. }
        | Fault::Drop { path_prefix, count } => {
            *count > 0 && path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
        }
        _ => false,
    })?;
    let fault = w.faults[idx].clone();
    let exhausted = match &mut w.faults[idx] {
        Fault::Status { count, .. } | Fault::Latency { count, .. } | Fault::Drop { count, .. } => {
            *count -= 1;
            *count == 0
        }
        _ => true,
    };
    if exhausted {
        w.faults.remove(idx);
    }
    Some(fault)
}

fn sim_admin(shared: &Shared, method: &str, path: &str, body: &[u8]) -> Resp {
    match (method, path.trim_end_matches('/')) {
        ("POST", "faults") => match serde_json::from_slice::<Fault>(body) {
            Ok(f) => {
                inject(&mut shared.world(), f);
                Resp::json(200, &serde_json::json!({"ok": true}))
            }
            Err(e) => {
                Resp::text(400, format!("bad fault: {e}; send e.g. {{\"kind\":\"status\",\"status\":503,\"count\":3}}"))
            }
        },
        ("DELETE", "faults") => {
            shared.world().faults.clear();
            Resp::empty(204)
        }
        ("GET", "faults") => {
            let faults = shared.world().faults.clone();
            Resp::json(200, &serde_json::to_value(faults).expect("faults serialise"))
        }
        ("GET", "requests") => {
            let log = shared.world().log.clone();
            Resp::json(200, &serde_json::to_value(log).expect("log serialises"))
        }
        ("POST", "external-dhcp") => match serde_json::from_slice::<ExternalDhcp>(body) {
            Ok(e) if set_external_dhcp(&mut shared.world(), e.vlan_id, e.ip) => Resp::empty(204),
            Ok(e) => Resp::text(404, format!("no VLAN with id {}; see GET /MAAS/api/2.0/fabrics/", e.vlan_id)),
            Err(e) => Resp::text(400, format!("bad body: {e}; send {{\"vlan_id\":5001,\"ip\":\"172.16.0.1\"}}")),
        },
        ("DELETE", "requests") => {
            shared.world().log.clear();
            Resp::empty(204)
        }
        _ => Resp::text(404, format!("Unknown sim endpoint: /_sim/{path}; use /_sim/faults or /_sim/requests")),
    }
}

/// Who is calling: None for anonymous.
pub(crate) struct Caller {
    pub username: Option<String>,
    pub admin: bool,
}

fn unauthorized(msg: &str) -> Resp {
    Resp::text(401, format!("Authorization Error: {msg}")).with_header("WWW-Authenticate", "OAuth realm=\"OAuth\"")
}

fn authenticate(w: &mut World, header: &str) -> Result<Caller, Resp> {
    let anon = Caller { username: None, admin: false };
    let Some(p) = wire::parse_oauth(header) else { return Ok(anon) };
    if let Some(v) = &p.version
        && v != "1.0"
    {
        return Err(unauthorized(&format!("'OAuth version {v} not supported.'")));
    }
    if !w.tokens.iter().any(|t| t.consumer_key == p.consumer_key) {
        return Err(unauthorized("Invalid API key."));
    }
    let Some(token) = w.tokens.iter().find(|t| t.consumer_key == p.consumer_key && t.token_key == p.token) else {
        return Err(unauthorized(&format!("'Invalid access token: {}'", p.token)));
    };
    let now = chrono::Utc::now().timestamp();
    let ts: i64 = p.timestamp.parse().unwrap_or(0);
    if now - ts > 300 {
        return Err(unauthorized(&format!(
            "'Expired timestamp: given {ts} and now {now} has a greater difference than threshold 300'"
        )));
    }
    let nonce_key = (p.consumer_key.clone(), p.token.clone(), p.nonce.clone());
    if w.nonces.contains_key(&nonce_key) {
        return Err(unauthorized(&format!("'Nonce already used: {}'", p.nonce)));
    }
    if p.signature_method != "PLAINTEXT" && p.signature_method != "HMAC-SHA1" {
        return Err(unauthorized(&format!("'Signature method {} not supported.'", p.signature_method)));
    }
    // PLAINTEXT: consumer secret (empty) & token secret. HMAC-SHA1 is not verified by the emulator. MAAS's own
    // message adds the expected base string, which for PLAINTEXT is the secret itself; the emulator leaves it out.
    if p.signature_method == "PLAINTEXT" && p.signature != format!("&{}", token.token_secret) {
        return Err(unauthorized("'Invalid signature.'"));
    }
    let username = token.username.clone();
    if w.nonces.len() >= 10_000 {
        w.nonces.retain(|_, seen| now - *seen <= 300);
    }
    w.nonces.insert(nonce_key, ts);
    let admin = w.is_admin(&username);
    Ok(Caller { username: Some(username), admin })
}

fn route(shared: &Shared, method: &str, path: &str, op: Option<&str>, params: &Params, auth: &str, host: &str) -> Resp {
    if path.trim_end_matches('/') == "/MAAS/api/version" {
        return Resp::text(200, "2.0");
    }
    if path.starts_with("/MAAS/api/1.0/") {
        return Resp::text(410, "The 1.0 API is no longer available. Please use API version 2.0.");
    }
    let Some(rest) = path.strip_prefix(ROOT) else {
        return Resp::text(404, format!("Unknown API endpoint: {path}."));
    };
    if rest == "describe/" || rest == "describe" {
        let mut doc = routes::describe(&format!("http://{host}"));
        doc["hash"] = serde_json::Value::String(shared.describe_hash.clone());
        let body = serde_json::to_string(&doc).expect("serialising a Value cannot fail");
        return Resp { status: 200, content_type: "application/json", body: body.into_bytes(), headers: Vec::new() };
    }
    let Some(matched) = routes::match_path(rest) else {
        return Resp::text(404, format!("Unknown API endpoint: {path}."));
    };
    let mut w = shared.world();
    let caller = match authenticate(&mut w, auth) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let res = matched.resource;
    let (handler, exports) = match (&caller.username, res.anon, res.auth) {
        (Some(_), _, Some(h)) => (h, res.auth_actions),
        (_, Some(h), _) => (h, res.anon_actions),
        (None, None, Some(_)) => {
            // MAASAPIAuthentication.challenge answers piston's rc.FORBIDDEN, which is ('Forbidden', 401).
            return Resp::text(401, "Forbidden");
        }
        (_, None, None) => return Resp::text(404, format!("Unknown API endpoint: {path}.")),
    };
    let actions: Vec<routes::Action> = routes::actions(exports).collect();
    let Some(action) = actions.iter().find(|a| a.method == method && a.op() == op) else {
        if !actions.iter().any(|a| a.method == method) {
            let mut allow: Vec<&str> = actions.iter().map(|a| a.method).collect();
            allow.sort_unstable();
            allow.dedup();
            return Resp::empty(405).with_header("Allow", allow.join(", "));
        }
        return Resp::text(400, format!("Unrecognised signature: method={method} op={}", op.unwrap_or("None")));
    };
    let ctx = crate::api::Ctx { caller: &caller, params, path: &matched.params, host };
    match crate::api::dispatch(&mut w, handler, action.name, &ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn run_effects(shared: &Arc<Shared>, effects: Vec<Effect>) {
    for effect in effects {
        match effect {
            Effect::Later { secs, system_id, generation, step } => {
                let shared2 = shared.clone();
                let delay = Duration::from_secs_f64(secs * shared.time_scale);
                shared.tasks.spawn(async move {
                    tokio::select! {
                        _ = shared2.cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    let more = {
                        let mut w = shared2.world();
                        w.apply(&system_id, generation, step);
                        std::mem::take(&mut w.effects)
                    };
                    run_effects(&shared2, more);
                });
            }
            Effect::ImportDone { secs, generation } => {
                let shared2 = shared.clone();
                let delay = Duration::from_secs_f64(secs * shared.time_scale);
                shared.tasks.spawn(async move {
                    tokio::select! {
                        _ = shared2.cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    shared2.world().finish_import(generation);
                });
            }
            Effect::Hook(run) => {
                if let Some(cmd) = shared.hook.clone() {
                    let dir = shared.data_dir.clone();
                    shared.tasks.spawn(run_hook(cmd, dir, run));
                }
            }
        }
    }
}

async fn run_hook(cmd: PathBuf, dir: PathBuf, run: HookRun) {
    let user_data_path = dir.join(format!("user-data-{}-{}", run.system_id, run.event));
    if let Err(error) = tokio::fs::write(&user_data_path, run.user_data.as_deref().unwrap_or_default()).await {
        warn!(%error, path = %user_data_path.display(), "could not write user data for the hook");
    }
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .env("MAAS_SIM_EVENT", run.event)
        .env("MAAS_SIM_HOSTNAME", &run.hostname)
        .env("MAAS_SIM_SYSTEM_ID", &run.system_id)
        .env("MAAS_SIM_MACS", run.macs.join(","))
        .env("MAAS_SIM_USER_DATA", &user_data_path)
        .env("MAAS_SIM_DISTRO_SERIES", &run.distro_series)
        .stdin(std::process::Stdio::null())
        .status()
        .await;
    match status {
        Ok(s) if s.success() => info!(event = run.event, system_id = %run.system_id, "hook finished"),
        Ok(s) => warn!(event = run.event, system_id = %run.system_id, status = %s, "hook failed"),
        Err(error) => warn!(%error, hook = %cmd.display(), "hook could not be started"),
    }
}
