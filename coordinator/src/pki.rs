//! The coordinator's private CA and server certificate, created at first start and reused after.
//!
//! Files in the state directory (named by `store::StateDir`): `ca.pem`, `ca.key` (0600), `server.pem`,
//! `server.key` (0600).
//! Keys are ECDSA P-256. Delete `server.pem` to have the server certificate issued again (for
//! example after changing `tls.extra_sans`); deleting `ca.key` makes a new CA, which every client
//! then has to be given again. The security issue extends this module with client certificates.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ::store::StateDir;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

/// The file names; `store::StateDir` owns them.
pub use ::store::state_dir::names::{CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY};

/// Why the certificates could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot {action} {path}: {source}; check the state directory's ownership and permissions")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate error in {path}: {source}; remove the file to have it created again")]
    Certificate {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
}

/// The PEM material the server needs.
#[derive(Debug, Clone)]
pub struct ServerPki {
    pub ca_path: PathBuf,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// True when this call created the CA (first start).
    pub created_ca: bool,
}

/// Creates what is missing under `state_dir` and returns the server's certificate and key.
///
/// # Errors
/// A file cannot be read or written, or a stored certificate or key cannot be parsed.
pub fn ensure(state_dir: &Path, extra_sans: &[String]) -> Result<ServerPki, PkiError> {
    let state = StateDir::new(state_dir);
    let (ca_path, ca_key_path) = (state.ca_cert(), state.ca_key());
    let (ca_pem, ca_key_pem, created_ca) = if ca_path.exists() && ca_key_path.exists() {
        (read(&ca_path)?, read(&ca_key_path)?, false)
    } else {
        let (cert, key) = new_ca().map_err(|source| PkiError::Certificate { path: ca_path.clone(), source })?;
        write_secret(&ca_key_path, &key)?;
        write_public(&ca_path, &cert)?;
        tracing::info!(path = %ca_path.display(), "created the coordinator's private CA");
        (cert, key, true)
    };

    let (cert_path, key_path) = (state.server_cert(), state.server_key());
    let (cert_pem, key_pem) = if !created_ca && cert_path.exists() && key_path.exists() {
        (read(&cert_path)?, read(&key_path)?)
    } else {
        let sans = server_sans(extra_sans);
        let (cert, key) = new_server_cert(&ca_pem, &ca_key_pem, &sans)
            .map_err(|source| PkiError::Certificate { path: cert_path.clone(), source })?;
        write_secret(&key_path, &key)?;
        write_public(&cert_path, &cert)?;
        tracing::info!(path = %cert_path.display(), sans = ?sans, "issued the server certificate");
        (cert, key)
    };
    Ok(ServerPki { ca_path, ca_pem, cert_pem, key_pem, created_ca })
}

/// localhost, the loopback addresses, this host's name, and the configured extras, without repeats.
pub fn server_sans(extra: &[String]) -> Vec<String> {
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Some(hostname) = hostname() {
        sans.push(hostname);
    }
    sans.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    sans.retain(|san| seen.insert(san.clone()));
    sans
}

/// The most names one certificate is issued for (besides localhost, the loopback addresses and the hostname).
pub const MAX_EXTRA_SANS: usize = 100;

/// Why `san` cannot name a server in a certificate: it must be an IP address or an RFC 1123 DNS name (letters,
/// digits and hyphens in dot-separated labels of 1 to 63 characters, 253 at most in all, the last label not all
/// digits), written bare: no scheme, port, path, brackets, spaces or trailing dot. Anything else makes a
/// certificate that clients refuse or cannot decode.
///
/// # Errors
/// The reason in words, without repeating the name (the caller quotes it).
pub fn check_san(san: &str) -> Result<(), &'static str> {
    if san.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if san.is_empty() {
        return Err("is empty");
    }
    if san.chars().any(char::is_whitespace) {
        return Err("contains whitespace");
    }
    if san.contains("://") {
        return Err("is a URL; give only the host name or IP address");
    }
    if san.starts_with('[') || san.contains(':') {
        return Err("is not a bare name or address; leave out brackets and the port");
    }
    if san.contains('/') {
        return Err("contains a `/`; give only the host name or IP address");
    }
    if san.len() > 253 {
        return Err("is longer than the 253 characters of a DNS name");
    }
    let labels: Vec<&str> = san.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err("has an empty label (two dots in a row, or a dot at the start or end)");
        }
        if label.len() > 63 {
            return Err("has a label longer than 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("may hold only letters, digits, hyphens and dots");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a label that starts or ends with a hyphen");
        }
    }
    if labels.last().is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit())) {
        return Err("is neither an IP address nor a DNS name (its last label is all digits)");
    }
    Ok(())
}

/// This host's name, from the kernel.
pub fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

fn new_ca() -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "metalfleet coordinator CA");
    name.push(DnType::OrganizationName, "metalfleet");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn new_server_cert(ca_pem: &str, ca_key_pem: &str, sans: &[String]) -> Result<(String, String), rcgen::Error> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(sans.to_vec())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "metalfleet coordinator");
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io { action: "read", path: path.to_owned(), source })
}

/// Writes a private key readable by the owner only (0600), also when the file already existed.
pub fn write_secret(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_mode(path, contents, 0o600)
}

fn write_public(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_mode(path, contents, 0o644)
}

fn write_mode(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io { action: "write", path: path.to_owned(), source };
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path).map_err(io)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn sans_are_addresses_or_dns_names() {
        for good in
            ["127.0.0.1", "::1", "fe80::1", "main", "main.lab", "server-1.maas", "a1.b2", "xn--bcher-kva.example"]
        {
            assert_eq!(check_san(good), Ok(()), "{good}");
        }
        let long_label = "a".repeat(64);
        let long_name = ["abcdefghij"; 24].join(".");
        for (bad, reason) in [
            ("", "is empty"),
            ("main lab", "contains whitespace"),
            ("https://main", "is a URL"),
            ("main:7443", "leave out brackets and the port"),
            ("[::1]", "leave out brackets and the port"),
            ("main/x", "contains a `/`"),
            ("main..lab", "empty label"),
            ("main.", "empty label"),
            (".main", "empty label"),
            (long_label.as_str(), "longer than 63"),
            (long_name.as_str(), "longer than the 253"),
            ("main_1", "only letters, digits"),
            ("-main", "hyphen"),
            ("main-.lab", "hyphen"),
            ("1.2.3.999", "last label is all digits"),
            ("*.lab", "only letters, digits"),
            ("mäin", "only letters, digits"),
        ] {
            let error = check_san(bad).unwrap_err();
            assert!(error.contains(reason), "{bad:?}: {error}");
        }
    }

    #[test]
    fn first_start_creates_and_later_starts_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path(), &["coordinator.lab".to_string()]).unwrap();
        assert!(first.created_ca);
        let state = StateDir::new(dir.path());
        assert_eq!(mode(&state.ca_key()), 0o600);
        assert_eq!(mode(&state.server_key()), 0o600);
        assert!(first.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));

        let second = ensure(dir.path(), &[]).unwrap();
        assert!(!second.created_ca);
        assert_eq!(second.ca_pem, first.ca_pem);
        assert_eq!(second.cert_pem, first.cert_pem);
        assert_eq!(second.key_pem, first.key_pem);
    }

    #[test]
    fn sans_always_include_loopback_and_no_repeats() {
        let sans = server_sans(&["localhost".to_string(), "10.0.0.1".to_string()]);
        assert_eq!(&sans[..3], &["localhost", "127.0.0.1", "::1"]);
        assert_eq!(sans.iter().filter(|s| *s == "localhost").count(), 1);
        assert!(sans.contains(&"10.0.0.1".to_string()));
    }
}
