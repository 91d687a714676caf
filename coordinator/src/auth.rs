//! Who is calling: agent and operator identities from client certificates or bearer tokens, the
//! per-RPC checks, revocation and the Enroll rate limit, refusing with an [`AuthError`] (the gRPC
//! layer answers it with a code, and `grpc::gate::OperatorGate` guards whole operator services with it).
//!
//! The agent port serves everyone on one TLS listener with *optional* client authentication: rustls
//! verifies any presented certificate against our CA during the handshake, and each RPC then decides
//! what it needs (Enroll: a token or the agent's certificate; everything else: the certificate of
//! the machine the request names, not revoked).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use chrono::Utc;
use tokio::sync::broadcast;
use tonic::codegen::http;
use tonic::transport::CertificateDer;

use crate::enroll::{self, EnrollConfig, MACHINE_URI, OPERATOR_URI};
use crate::secret::Secret;
use crate::security_store::{SecurityStore, TokenRefusal};
use crate::store::StoreError;

/// Operator roles.
pub const ROLE_ADMIN: &str = "admin";
pub const ROLE_READ_ONLY: &str = "read-only";

/// What a client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// Lower-case hex.
    pub serial: String,
    /// The SAN URIs.
    pub uris: Vec<String>,
}

impl PeerCert {
    /// Parses a DER certificate (already verified against our CA by rustls).
    pub fn parse(der: &[u8]) -> Option<PeerCert> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let serial = enroll::hex(cert.tbs_certificate.raw_serial());
        let mut uris = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::URI(uri) = name {
                    uris.push((*uri).to_string());
                }
            }
        }
        Some(PeerCert { serial: serial.trim_start_matches("00").to_string(), uris })
    }

    pub fn machine_id(&self) -> Option<&str> {
        self.uris.iter().find_map(|u| u.strip_prefix(MACHINE_URI))
    }

    pub fn operator(&self) -> Option<&str> {
        self.uris.iter().find_map(|u| u.strip_prefix(OPERATOR_URI))
    }
}

/// An authenticated operator, put into the request's extensions by [`OperatorGate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub name: String,
    pub role: String,
}

impl Operator {
    pub fn is_admin(&self) -> bool {
        self.role == ROLE_ADMIN
    }
}

/// The arguments of a state-changing call, filled in by the handler (without secrets) for the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditArgs(Arc<Mutex<Option<String>>>);

impl AuditArgs {
    pub fn set(&self, args: serde_json::Value) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(args.to_string());
    }

    pub(crate) fn take(&self) -> String {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take().unwrap_or_else(|| "{}".to_string())
    }
}

/// How an Enroll call was allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollGrant {
    /// With a token (its id).
    Token(String),
    /// With the agent's own certificate, for this machine.
    Certificate(String),
    /// No token needed (`require_token = false`, or `--insecure`).
    Open,
}

/// The coordinator's security state, shared by the services.
pub struct Security {
    pub store: SecurityStore,
    pub config: EnrollConfig,
    /// Plaintext serving: there are no certificates, so nothing is checked (with a loud warning at start).
    pub insecure: bool,
    /// The signing CA (certificate, key) and the bundle of every trusted CA, read once at start so
    /// a `coordinator ca rotate` on disk takes effect only with the TLS settings, at the next start.
    ca: Option<(String, Secret, String)>,
    revoked: RwLock<HashSet<String>>,
    revoked_machines: RwLock<HashSet<String>>,
    revocations: broadcast::Sender<String>,
    limiter: Mutex<RateLimiter>,
}

impl Security {
    /// Loads the revocation list.
    ///
    /// # Errors
    /// The store failed.
    pub async fn load(
        store: SecurityStore,
        config: EnrollConfig,
        insecure: bool,
        state_dir: std::path::PathBuf,
    ) -> Result<Arc<Self>, StoreError> {
        let revoked = store.revoked_serials().await?.into_iter().collect();
        let revoked_machines = store.revoked_machines().await?.into_iter().collect();
        let (revocations, _) = broadcast::channel(64);
        let limiter = RateLimiter::new(config.enroll_per_minute);
        let ca = if insecure {
            None
        } else {
            match (enroll::load_ca(&state_dir), crate::rotation::trust_bundle(&state_dir)) {
                (Ok((cert, key)), Ok(bundle)) => Some((cert, key, bundle)),
                (Err(error), _) => {
                    tracing::error!(%error, "cannot read the CA; agents cannot enroll");
                    None
                }
                (_, Err(error)) => {
                    tracing::error!(%error, "cannot read the CA bundle; agents cannot enroll");
                    None
                }
            }
        };
        Ok(Arc::new(Security {
            store,
            config,
            insecure,
            ca,
            revoked: RwLock::new(revoked),
            revoked_machines: RwLock::new(revoked_machines),
            revocations,
            limiter: Mutex::new(limiter),
        }))
    }

    /// The signing CA's certificate and key, and the bundle of every CA agents should trust.
    ///
    /// # Errors
    /// `INTERNAL` when the CA could not be read at start.
    pub fn ca(&self) -> Result<(&str, &Secret, &str), AuthError> {
        self.ca
            .as_ref()
            .map(|(cert, key, bundle)| (cert.as_str(), key, bundle.as_str()))
            .ok_or(AuthError::Internal("the coordinator cannot read its CA; see its log"))
    }

    /// Whether a client certificate (DER) was signed by the CA that signs now; false during a CA
    /// rotation for certificates of the old CA, whose holders are then asked to renew.
    pub fn signed_by_current_ca(&self, der: &[u8]) -> bool {
        let Some((ca_pem, _, _)) = &self.ca else { return true };
        let Ok((_, ca)) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()) else { return true };
        let (Ok(ca), Ok((_, cert))) = (ca.parse_x509(), x509_parser::parse_x509_certificate(der)) else {
            return true;
        };
        cert.verify_signature(Some(ca.public_key())).is_ok()
    }

    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked.read().unwrap_or_else(PoisonError::into_inner).contains(serial)
    }

    pub fn is_machine_revoked(&self, machine_id: &str) -> bool {
        self.revoked_machines.read().unwrap_or_else(PoisonError::into_inner).contains(machine_id)
    }

    /// Machine ids whose certificates were revoked, for open streams to end themselves.
    pub fn revocations(&self) -> broadcast::Receiver<String> {
        self.revocations.subscribe()
    }

    /// Revokes every certificate of `machine_id`, at once for open connections too.
    ///
    /// # Errors
    /// The store failed.
    pub async fn revoke_machine(&self, machine_id: &str) -> Result<u32, StoreError> {
        let count = self.store.revoke_agent(machine_id.to_string(), Utc::now()).await?;
        let serials = self.store.revoked_serials().await?;
        self.revoked.write().unwrap_or_else(PoisonError::into_inner).extend(serials);
        self.revoked_machines.write().unwrap_or_else(PoisonError::into_inner).insert(machine_id.to_string());
        let _ = self.revocations.send(machine_id.to_string());
        Ok(count)
    }

    /// A fresh certificate was issued: the machine is no longer revoked.
    pub fn unrevoke_machine(&self, machine_id: &str) {
        self.revoked_machines.write().unwrap_or_else(PoisonError::into_inner).remove(machine_id);
    }

    /// The verified client certificate of a call, when one was presented.
    pub fn peer(certs: Option<Arc<Vec<CertificateDer<'static>>>>) -> Option<PeerCert> {
        certs.and_then(|certs| certs.first().and_then(|der| PeerCert::parse(der)))
    }

    /// Checks that the caller may act for `machine_id` (every AgentService call but Enroll).
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without a certificate (when tokens are required) or with a revoked one;
    /// `PERMISSION_DENIED` when the certificate names another machine or is not an agent's.
    pub fn check_agent(&self, peer: Option<&PeerCert>, machine_id: &str) -> Result<(), AuthError> {
        if self.insecure {
            return Ok(());
        }
        let Some(peer) = peer else {
            if self.config.require_token {
                return Err(unauthenticated(
                    "a client certificate is required; enroll with a token first (agent --token-file)",
                ));
            }
            return Ok(());
        };
        if self.is_revoked(&peer.serial) {
            return Err(unauthenticated("certificate revoked; enroll again with a new token"));
        }
        match peer.machine_id() {
            Some(id) if id == machine_id => Ok(()),
            Some(id) => Err(permission_denied(format!(
                "this certificate belongs to machine {id}, not {machine_id}; an agent may only report for itself"
            ))),
            None => Err(permission_denied("this certificate is not an agent certificate")),
        }
    }

    /// Decides whether an Enroll may go on; takes one use of the token when it is the reason.
    /// `names` are the hostname and system_id the agent goes by (for tokens bound to a machine).
    ///
    /// # Errors
    /// `RESOURCE_EXHAUSTED` past the rate limit; `UNAUTHENTICATED` for a missing, unknown, expired,
    /// used or revoked token, or a revoked certificate; `PERMISSION_DENIED` for a token of another machine.
    pub async fn admit_enroll(
        &self,
        remote: Option<SocketAddr>,
        peer: Option<&PeerCert>,
        token: &str,
        names: Vec<String>,
    ) -> Result<EnrollGrant, AuthError> {
        if let Some(ip) = remote.map(|a| a.ip())
            && !self.limiter.lock().unwrap_or_else(PoisonError::into_inner).allow(ip, Instant::now())
        {
            return Err(AuthError::RateLimited { ip, per_minute: self.config.enroll_per_minute });
        }
        if self.insecure {
            return Ok(EnrollGrant::Open);
        }
        if let Some(peer) = peer
            && let Some(machine_id) = peer.machine_id()
        {
            if self.is_revoked(&peer.serial) {
                return Err(unauthenticated("certificate revoked; enroll again with a new token"));
            }
            return Ok(EnrollGrant::Certificate(machine_id.to_string()));
        }
        if token.is_empty() {
            if self.config.require_token {
                return Err(unauthenticated(
                    "an enrollment token is required; create one with `fleetctl tokens create` and pass it with --token-file",
                ));
            }
            return Ok(EnrollGrant::Open);
        }
        let hash = enroll::hash_secret(token);
        match self.store.redeem_token(hash, names, Utc::now()).await {
            Ok(Ok(record)) => Ok(EnrollGrant::Token(record.id)),
            Ok(Err(refusal)) => Err(match refusal {
                TokenRefusal::Unknown => unauthenticated("unknown enrollment token; create a new one"),
                TokenRefusal::Expired => unauthenticated("enrollment token expired; create a new one"),
                TokenRefusal::UsedUp => {
                    unauthenticated("enrollment token already used; create a new one (or use --uses)")
                }
                TokenRefusal::Revoked => unauthenticated("enrollment token revoked; create a new one"),
                TokenRefusal::OtherMachine => {
                    permission_denied("this enrollment token is for another machine; create one for this one")
                }
            }),
            Err(error) => {
                tracing::error!(%error, "token store failure");
                Err(AuthError::Internal("the coordinator cannot check tokens; see its log"))
            }
        }
    }

    /// Authenticates an operator call from its certificate or `authorization: Bearer` header.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` without a valid credential.
    pub async fn operator(&self, peer: Option<&PeerCert>, headers: &http::HeaderMap) -> Result<Operator, AuthError> {
        let store_error = |error: StoreError| {
            tracing::error!(%error, "operator store failure");
            AuthError::Internal("the coordinator cannot check operators; see its log")
        };
        if let Some(value) = headers.get("authorization") {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| unauthenticated("the authorization header must be `Bearer TOKEN`"))?;
            let found = self.store.operator_by_token(enroll::hash_secret(token.trim())).await.map_err(store_error)?;
            return match found {
                Some(record) => Ok(Operator { name: record.name, role: record.role }),
                None => Err(unauthenticated("unknown bearer token; ask an admin for `coordinator operators add`")),
            };
        }
        if let Some(peer) = peer
            && let Some(name) = peer.operator()
        {
            let found = self.store.operator(name.to_string()).await.map_err(store_error)?;
            return match found {
                Some(record) if record.cert_serial.as_deref() == Some(peer.serial.as_str()) => {
                    Ok(Operator { name: record.name, role: record.role })
                }
                _ => Err(unauthenticated(format!(
                    "the certificate of operator {name} is no longer valid; ask an admin for a new one"
                ))),
            };
        }
        if self.insecure {
            return Ok(Operator { name: "anonymous (insecure)".into(), role: ROLE_ADMIN.into() });
        }
        Err(unauthenticated(
            "an operator credential is required: a certificate from `coordinator operators add` (client.toml \
             cert_file/key_file) or a bearer token (token_file)",
        ))
    }

    pub(crate) async fn audit(&self, operator: &Operator, action: &str, args: String, result: String) {
        if let Err(error) = self
            .store
            .append_audit(operator.name.clone(), operator.role.clone(), action.to_string(), args, result, Utc::now())
            .await
        {
            tracing::error!(%error, action, "cannot write the audit log");
        }
    }
}

/// Why a caller was refused, about the caller's own credentials only. The gRPC layer answers each with its
/// code (`grpc::auth_status`): the words are for the caller and say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The credential is missing, unknown, expired, used up or revoked (`UNAUTHENTICATED`).
    #[error("{0}")]
    Unauthenticated(String),
    /// The credential is valid but may not do this (`PERMISSION_DENIED`).
    #[error("{0}")]
    PermissionDenied(String),
    /// Too many Enroll calls from one address (`RESOURCE_EXHAUSTED`).
    #[error("too many Enroll calls from {ip} (limit {per_minute} a minute); wait and retry")]
    RateLimited { ip: IpAddr, per_minute: u32 },
    /// The coordinator cannot read its own CA or credential store (`INTERNAL`); the cause is in its log.
    #[error("{0}")]
    Internal(&'static str),
}

fn unauthenticated(words: impl Into<String>) -> AuthError {
    AuthError::Unauthenticated(words.into())
}

fn permission_denied(words: impl Into<String>) -> AuthError {
    AuthError::PermissionDenied(words.into())
}

/// A token bucket per source address: `per_minute` calls at once, refilled evenly over a minute.
#[derive(Debug)]
struct RateLimiter {
    per_minute: u32,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl RateLimiter {
    fn new(per_minute: u32) -> Self {
        RateLimiter { per_minute: per_minute.max(1), buckets: HashMap::new() }
    }

    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let capacity = f64::from(self.per_minute);
        let rate = capacity / 60.0;
        // Bound the table: forget full buckets when it grows (a full bucket equals a fresh one).
        if self.buckets.len() > 10_000 {
            self.buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < capacity);
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_rate_limit_is_a_token_bucket_per_address() {
        let mut limiter = RateLimiter::new(10);
        let start = Instant::now();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..10 {
            assert!(limiter.allow(a, start));
        }
        assert!(!limiter.allow(a, start));
        assert!(limiter.allow(b, start), "another address has its own bucket");
        assert!(limiter.allow(a, start + Duration::from_secs(6)), "one call back every six seconds");
        assert!(!limiter.allow(a, start + Duration::from_secs(6)));
    }
}
