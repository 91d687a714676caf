//! The agent's TLS identity: its private key (`<state-dir>/agent.key`, mode 0600, never sent), the
//! client certificate the coordinator signed (`agent.pem`) and the CA bundle it gave (`agent-ca.pem`).
//!
//! The key is ECDSA P-256, made once; CSRs for enrollment and renewal are signed with it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

pub const KEY_FILE: &str = "agent.key";
pub const CERT_FILE: &str = "agent.pem";
pub const CA_FILE: &str = "agent-ca.pem";

/// Why the identity files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot {action} {}: {source}; check the state directory's permissions", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a usable key ({reason}); delete it to have a new one made (the agent then needs a new token)", .path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("{} is readable by group or others (mode {mode:04o}); run `chmod 600 {}`", .path.display(), .path.display())]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("cannot make a certificate request: {0}")]
    Csr(String),
}

/// The key and, once enrolled, the certificate.
pub struct Identity {
    dir: PathBuf,
    key: KeyPair,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("dir", &self.dir).field("key", &"***").finish()
    }
}

/// A stored certificate with its validity.
#[derive(Debug, Clone)]
pub struct StoredCert {
    pub cert_pem: String,
    pub ca_pem: Option<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl StoredCert {
    /// When to renew: at two thirds of the lifetime.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self.not_after.duration_since(self.not_before).unwrap_or_default();
        self.not_before + lifetime * 2 / 3
    }

    pub fn expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

impl Identity {
    /// Loads `<dir>/agent.key`, or makes it (mode 0600) on first start.
    ///
    /// # Errors
    /// The file cannot be read or written, is open to others, or is not a key.
    pub fn load_or_create(dir: &Path) -> Result<Self, IdentityError> {
        let path = dir.join(KEY_FILE);
        let key = match std::fs::read_to_string(&path) {
            Ok(pem) => {
                let mode = std::fs::metadata(&path)
                    .map_err(|source| IdentityError::Io { action: "read", path: path.clone(), source })?
                    .permissions()
                    .mode()
                    & 0o777;
                if mode & 0o077 != 0 {
                    return Err(IdentityError::TooOpen { path, mode });
                }
                KeyPair::from_pem(&pem)
                    .map_err(|e| IdentityError::BadKey { path: path.clone(), reason: e.to_string() })?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key =
                    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| IdentityError::Csr(e.to_string()))?;
                write_file(&path, &key.serialize_pem(), 0o600)?;
                tracing::info!(path = %path.display(), "created the agent's private key");
                key
            }
            Err(source) => return Err(IdentityError::Io { action: "read", path, source }),
        };
        Ok(Identity { dir: dir.to_owned(), key })
    }

    /// A PEM CSR for this key; the coordinator decides the names, so only the CN is a hint.
    ///
    /// # Errors
    /// The request cannot be made.
    pub fn csr(&self, hostname: &str) -> Result<String, IdentityError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, hostname);
        params.distinguished_name = name;
        let csr = params.serialize_request(&self.key).map_err(|e| IdentityError::Csr(e.to_string()))?;
        csr.pem().map_err(|e| IdentityError::Csr(e.to_string()))
    }

    /// The key as PEM, for the TLS client identity.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The stored certificate, if any and parseable.
    pub fn certificate(&self) -> Option<StoredCert> {
        let cert_pem = std::fs::read_to_string(self.dir.join(CERT_FILE)).ok()?;
        let ca_pem = std::fs::read_to_string(self.dir.join(CA_FILE)).ok();
        let (not_before, not_after) = validity(&cert_pem)?;
        Some(StoredCert { cert_pem, ca_pem, not_before, not_after })
    }

    /// Stores a certificate (and the CA bundle) the coordinator issued.
    ///
    /// # Errors
    /// A file cannot be written.
    pub fn store(&self, cert_pem: &str, ca_pem: &str) -> Result<(), IdentityError> {
        if !ca_pem.is_empty() {
            write_file(&self.dir.join(CA_FILE), ca_pem, 0o644)?;
        }
        write_file(&self.dir.join(CERT_FILE), cert_pem, 0o644)
    }

    /// Stores the coordinator's CA bundle; returns whether it differs from the one stored before
    /// (a CA rotation: the agent then renews onto the new CA).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn store_bundle(&self, ca_pem: &str) -> Result<bool, IdentityError> {
        let path = self.dir.join(CA_FILE);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(ca_pem) {
            return Ok(false);
        }
        write_file(&path, ca_pem, 0o644)?;
        Ok(true)
    }

    /// Forgets the certificate (after it was revoked): the next enrollment needs a token.
    pub fn forget_certificate(&self) {
        let _ = std::fs::remove_file(self.dir.join(CERT_FILE));
    }
}

/// `notBefore` and `notAfter` of a PEM certificate.
pub fn validity(cert_pem: &str) -> Option<(SystemTime, SystemTime)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    let not_before = at(cert.validity().not_before.timestamp());
    let not_after = at(cert.validity().not_after.timestamp());
    Some((not_before, not_after))
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io { action: "write", path: path.to_owned(), source };
    // Written beside and renamed, so a crash never leaves half a certificate.
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(io)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads an enrollment token file; refuses one readable by group or others.
///
/// # Errors
/// The file cannot be read or is open to others.
pub fn read_token(path: &Path) -> Result<String, IdentityError> {
    let io = |source| IdentityError::Io { action: "read", path: path.to_owned(), source };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::TooOpen { path: path.to_owned(), mode });
    }
    Ok(std::fs::read_to_string(path).map_err(io)?.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_with_mode_0600_and_csrs_parse() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(first.key_pem(), second.key_pem());
        let csr = first.csr("host-1").unwrap();
        assert!(csr.contains("BEGIN CERTIFICATE REQUEST"), "{csr}");
        assert!(!format!("{first:?}").contains("PRIVATE"));
        assert!(first.certificate().is_none());
    }

    #[test]
    fn a_stored_certificate_renews_at_two_thirds() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::load_or_create(dir.path()).unwrap();
        let mut params = CertificateParams::new(vec!["x".to_string()]).unwrap();
        let now = rcgen::date_time_ymd(2030, 1, 1);
        params.not_before = now;
        params.not_after = rcgen::date_time_ymd(2030, 1, 31);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.self_signed(&key).unwrap().pem();
        identity.store(&cert, "CA").unwrap();
        let stored = identity.certificate().unwrap();
        let lifetime = stored.not_after.duration_since(stored.not_before).unwrap();
        assert_eq!(lifetime, Duration::from_secs(30 * 86400));
        assert_eq!(stored.renew_at().duration_since(stored.not_before).unwrap(), Duration::from_secs(20 * 86400));
        assert_eq!(stored.ca_pem.as_deref(), Some("CA"));
        identity.forget_certificate();
        assert!(identity.certificate().is_none());
    }

    #[test]
    fn token_files_open_to_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "mf1.abc.def\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = read_token(&path).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_token(&path).unwrap(), "mf1.abc.def");
    }
}
