//! Enrollment: one-time tokens (stored as SHA-256 hashes) and client certificates signed from CSRs.
//!
//! Modelled on kubelet TLS bootstrap: an agent proves itself once with a short-lived token, sends a
//! CSR for a key that never leaves its host, and from then on authenticates with the certificate.
//! The certificate names the machine as a SAN URI `metalfleet:machine:<machine_id>`; operators get
//! `metalfleet:operator:<name>`.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use metalfleet_common::config::bounds::Problems;
use rand::RngCore;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::secret::Secret;
use crate::security_store::{SecurityStore, TokenRecord};
use crate::store::StoreError;

/// The SAN URI prefix of an agent certificate.
pub const MACHINE_URI: &str = "metalfleet:machine:";
/// The SAN URI prefix of an operator certificate.
pub const OPERATOR_URI: &str = "metalfleet:operator:";

/// The `[enroll]` table of the coordinator's config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollConfig {
    /// Agents must present an enrollment token (or their certificate) to enroll.
    #[serde(default = "default_require_token")]
    pub require_token: bool,
    /// How long an agent certificate is valid; agents renew at two thirds of it.
    #[serde(with = "humantime_serde", default = "default_cert_lifetime")]
    pub cert_lifetime: Duration,
    /// The lifetime of a token created without `--ttl`.
    #[serde(with = "humantime_serde", default = "default_token_ttl")]
    pub token_ttl: Duration,
    /// Enroll calls allowed per source address and minute (a token bucket of this size).
    #[serde(default = "default_enroll_per_minute")]
    pub enroll_per_minute: u32,
}

fn default_require_token() -> bool {
    true
}
fn default_cert_lifetime() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_token_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_enroll_per_minute() -> u32 {
    10
}

impl EnrollConfig {
    /// `[enroll]`: a certificate lives long enough to be renewed (at two thirds of it) and at most ten years,
    /// a token between a minute and a year, and the rate limit lets at least one agent through.
    pub fn validate(&self, problems: &mut Problems) {
        problems.duration("cert_lifetime", self.cert_lifetime, MIN_CERT_LIFETIME..=MAX_CERT_LIFETIME);
        problems.duration("token_ttl", self.token_ttl, MIN_TOKEN_TTL..=MAX_TOKEN_TTL);
        problems.number("enroll_per_minute", self.enroll_per_minute, 1..=MAX_ENROLL_PER_MINUTE);
    }
}

/// Bounds of `[enroll]`, documented in `deploy/coordinator.example.toml`.
const MIN_CERT_LIFETIME: Duration = Duration::from_secs(3600);
/// Ten years as humantime counts them (365.25 days each), so the bound prints as `10years`.
const MAX_CERT_LIFETIME: Duration = Duration::from_secs(10 * YEAR_SECS);
const MIN_TOKEN_TTL: Duration = Duration::from_secs(60);
const MAX_TOKEN_TTL: Duration = Duration::from_secs(YEAR_SECS);
const YEAR_SECS: u64 = 31_557_600;
const MAX_ENROLL_PER_MINUTE: u32 = 100_000;

impl Default for EnrollConfig {
    fn default() -> Self {
        EnrollConfig {
            require_token: default_require_token(),
            cert_lifetime: default_cert_lifetime(),
            token_ttl: default_token_ttl(),
            enroll_per_minute: default_enroll_per_minute(),
        }
    }
}

/// Why a certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("the CSR is not a valid PKCS#10 request ({0}); send the PEM `CERTIFICATE REQUEST` the agent made")]
    BadCsr(String),
    #[error("cannot read the CA: {0}; check the coordinator's state directory")]
    Ca(String),
    #[error("cannot sign the certificate: {0}")]
    Sign(String),
}

/// SHA-256 of a token or bearer secret, hex; the only form the store keeps.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token `mf1.<id>.<secret>` and its id.
pub fn new_token() -> (String, Secret) {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    (id.clone(), Secret::new(format!("mf1.{id}.{secret}")))
}

/// Mints an enrollment token (for `fleetctl tokens create` and the redeploy flow's cloud-init user data).
/// `machine` binds it to one hostname or system_id. The secret is returned once; only its hash is stored.
///
/// # Errors
/// The store failed.
pub async fn mint_token(
    store: &SecurityStore,
    machine: Option<&str>,
    ttl: Duration,
    uses: u32,
) -> Result<(TokenRecord, Secret), StoreError> {
    mint_token_by(store, machine, ttl, uses, "coordinator").await
}

/// [`mint_token`], naming who asked for it.
///
/// # Errors
/// The store failed.
pub async fn mint_token_by(
    store: &SecurityStore,
    machine: Option<&str>,
    ttl: Duration,
    uses: u32,
    created_by: &str,
) -> Result<(TokenRecord, Secret), StoreError> {
    let (id, secret) = new_token();
    let now = Utc::now();
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(365));
    let record = TokenRecord {
        id,
        machine: machine.filter(|m| !m.is_empty()).map(str::to_string),
        uses_left: uses.max(1),
        expires_at: now + ttl,
        created_at: now,
        created_by: created_by.to_string(),
        revoked: false,
    };
    store.insert_token(record.clone(), hash_secret(secret.expose())).await?;
    Ok((record, secret))
}

/// Checks that `csr_pem` parses and is signed by its own key, before a token use is spent on it.
///
/// # Errors
/// [`IssueError::BadCsr`].
pub fn check_csr(csr_pem: &str) -> Result<(), IssueError> {
    CertificateSigningRequestParams::from_pem(csr_pem).map(|_| ()).map_err(|e| IssueError::BadCsr(e.to_string()))
}

/// An issued certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub certificate_pem: String,
    pub serial: String,
    pub not_after: DateTime<Utc>,
}

/// Signs `csr_pem` as a client certificate for `uri` (e.g. `metalfleet:machine:ID`), valid for `lifetime`.
/// Only the CSR's public key is used: names and extensions are ours.
///
/// # Errors
/// A bad CSR, an unreadable CA, or a signing failure.
pub fn sign_client_csr(
    csr_pem: &str,
    ca_cert_pem: &str,
    ca_key_pem: &Secret,
    common_name: &str,
    uris: &[String],
    lifetime: Duration,
) -> Result<Issued, IssueError> {
    let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| IssueError::BadCsr(e.to_string()))?;
    csr.params = client_params(common_name, uris, lifetime)?;
    let serial = csr.params.serial_number.clone().map(|s| hex(s.as_ref())).unwrap_or_default();
    let not_after = Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::days(30));
    let key = KeyPair::from_pem(ca_key_pem.expose()).map_err(|e| IssueError::Ca(e.to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, key).map_err(|e| IssueError::Ca(e.to_string()))?;
    let cert = csr.signed_by(&issuer).map_err(|e| IssueError::Sign(e.to_string()))?;
    Ok(Issued { certificate_pem: cert.pem(), serial, not_after })
}

/// A new key and a client certificate for it (operators, whose keys the coordinator writes out).
///
/// # Errors
/// An unreadable CA or a signing failure.
pub fn issue_client_cert(
    ca_cert_pem: &str,
    ca_key_pem: &Secret,
    common_name: &str,
    uris: &[String],
    lifetime: Duration,
) -> Result<(Issued, Secret), IssueError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| IssueError::Sign(e.to_string()))?;
    let params = client_params(common_name, uris, lifetime)?;
    let serial = params.serial_number.clone().map(|s| hex(s.as_ref())).unwrap_or_default();
    let not_after = Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::days(30));
    let ca_key = KeyPair::from_pem(ca_key_pem.expose()).map_err(|e| IssueError::Ca(e.to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).map_err(|e| IssueError::Ca(e.to_string()))?;
    let cert = params.signed_by(&key, &issuer).map_err(|e| IssueError::Sign(e.to_string()))?;
    Ok((Issued { certificate_pem: cert.pem(), serial, not_after }, Secret::new(key.serialize_pem())))
}

fn client_params(common_name: &str, uris: &[String], lifetime: Duration) -> Result<CertificateParams, IssueError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "metalfleet");
    params.distinguished_name = name;
    for uri in uris {
        let uri = uri.clone().try_into().map_err(|e: rcgen::Error| IssueError::Sign(e.to_string()))?;
        params.subject_alt_names.push(SanType::URI(uri));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let mut serial = [0u8; 16];
    rand::rng().fill_bytes(&mut serial);
    serial[0] &= 0x7f; // positive
    serial[0] |= 0x01; // no leading zero byte, so the hex form is stable
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::seconds(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2));
    Ok(params)
}

/// Lower-case hex without separators.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the signing CA's certificate and key from the state directory.
///
/// # Errors
/// [`IssueError::Ca`] when a file is missing or unreadable.
pub fn load_ca(state_dir: &Path) -> Result<(String, Secret), IssueError> {
    // During a CA rotation the new CA signs (see crate::rotation).
    let (cert_path, key_path) = crate::rotation::signing_ca_paths(state_dir);
    let cert =
        std::fs::read_to_string(&cert_path).map_err(|e| IssueError::Ca(format!("{}: {e}", cert_path.display())))?;
    let key = std::fs::read_to_string(&key_path).map_err(|e| IssueError::Ca(format!("{}: {e}", key_path.display())))?;
    Ok((cert, Secret::new(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_are_stable() {
        let (id, a) = new_token();
        let (_, b) = new_token();
        assert_ne!(a, b);
        assert!(a.expose().starts_with(&format!("mf1.{id}.")));
        assert_eq!(hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(format!("{a:?}"), "Secret(***)");
    }

    #[test]
    fn a_csr_is_signed_with_our_names_not_its_own() {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::ensure(dir.path(), &[]).unwrap();
        let (ca, ca_key) = load_ca(dir.path()).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut asked = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        asked.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();
        let uri = format!("{MACHINE_URI}m-1");
        let issued =
            sign_client_csr(&csr, &ca, &ca_key, "m-1", std::slice::from_ref(&uri), Duration::from_secs(60)).unwrap();
        let identity = crate::auth::PeerCert::parse(&pem_der(&issued.certificate_pem)).unwrap();
        assert_eq!(identity.machine_id(), Some("m-1"));
        assert_eq!(identity.serial, issued.serial);
        let text = issued.certificate_pem.clone();
        assert!(!text.is_empty());
        assert!(sign_client_csr("garbage", &ca, &ca_key, "x", &[], Duration::from_secs(60)).is_err());
    }

    pub(crate) fn pem_der(pem: &str) -> Vec<u8> {
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        parsed.contents
    }
}
