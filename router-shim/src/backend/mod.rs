//! The one trait every router backend implements, and the factory that picks one from config.
//!
//! A backend only talks to its router: it applies what it is told and reads back what is there.
//! Validation, idempotency, read-back checks, logging and commit-confirm live one level up, in
//! [`crate::shim::Shim`], so they behave the same on every router.

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::Config;
use crate::model::{PortForward, RemoteManagement, RouterState};

pub mod linux;
pub mod manual;
pub mod openwrt;
pub mod routeros;

#[cfg(test)]
mod proptests;

/// Why a backend could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The router could not be reached (exit 69).
    #[error("router unreachable at {address}: {message}; check the address and that the router's API is enabled")]
    Unreachable { address: String, message: String },
    /// The router refused the credentials.
    #[error("router at {address} refused the login: {message}; check the credentials file")]
    Auth { address: String, message: String },
    /// The router answered with an error.
    #[error("router at {address} answered with an error: {message}")]
    Router { address: String, message: String },
    /// A local tool (nft, dnsmasq, ip) failed.
    #[error("{tool} failed: {message}")]
    Tool { tool: String, message: String },
    /// A local file could not be read or written.
    #[error("{path}: {message}")]
    File { path: String, message: String },
    /// The backend's own setup is wrong (exit 64).
    #[error("{0}")]
    Config(String),
    /// A manual step was not confirmed or its wire check failed.
    #[error("{0}")]
    NotVerified(String),
}

impl BackendError {
    pub fn file(path: &std::path::Path, error: impl std::fmt::Display) -> Self {
        BackendError::File { path: path.display().to_string(), message: error.to_string() }
    }
}

/// A router's native control.
///
/// Every method is idempotent at this level too: `add_forward` replaces a forward of the same
/// name, `remove_forward` of an absent name is a no-op.
#[async_trait]
pub trait Backend: Send + Sync {
    /// `linux`, `openwrt`, `routeros` or `manual`.
    fn name(&self) -> &'static str;
    /// Reads the router's current state (only the forwards the shim manages).
    async fn state(&self) -> Result<RouterState, BackendError>;
    async fn set_dhcp(&self, enabled: bool) -> Result<(), BackendError>;
    /// Adds `forward`, replacing any forward of the same name.
    async fn add_forward(&self, forward: &PortForward) -> Result<(), BackendError>;
    async fn remove_forward(&self, name: &str) -> Result<(), BackendError>;
    async fn set_remote_management(&self, management: &RemoteManagement) -> Result<(), BackendError>;
    /// Removes what the shim created and gives DHCP back as it was found (`dhcp_as_found`).
    async fn reset(&self, dhcp_as_found: Option<bool>) -> Result<(), BackendError>;
}

/// Asks a person to confirm a step (the manual backend, the CLI's commit-confirm).
#[async_trait]
pub trait Confirmer: Send + Sync {
    /// Shows `prompt` and returns true when the person confirmed.
    async fn confirm(&self, prompt: &str) -> bool;
}

/// Builds the backend named in `config.backend`.
///
/// # Errors
/// `BackendError::Config` for an unknown backend or a missing section; credentials files that
/// are readable by others are refused here, before any request.
pub fn build(config: &Config, confirmer: Arc<dyn Confirmer>) -> Result<Arc<dyn Backend>, BackendError> {
    let missing = |name: &str| BackendError::Config(format!("backend {name:?} needs a [{name}] table in the config"));
    match config.backend.as_str() {
        "linux" => {
            let linux = config.linux.clone().ok_or_else(|| missing("linux"))?;
            Ok(Arc::new(linux::LinuxBackend::new(linux, config.state_file("linux-found.json"))))
        }
        "openwrt" => {
            let openwrt = config.openwrt.clone().ok_or_else(|| missing("openwrt"))?;
            Ok(Arc::new(openwrt::OpenWrtBackend::new(openwrt)?))
        }
        "routeros" => {
            let routeros = config.routeros.clone().ok_or_else(|| missing("routeros"))?;
            Ok(Arc::new(routeros::RouterOsBackend::new(routeros)?))
        }
        "manual" => {
            let manual = config.manual.clone().ok_or_else(|| missing("manual"))?;
            Ok(Arc::new(manual::ManualBackend::new(manual, config.state_file("manual-state.json"), confirmer)))
        }
        other => {
            Err(BackendError::Config(format!("unknown backend {other:?}; use one of linux, openwrt, routeros, manual")))
        }
    }
}

/// Reads `username:password` from a file that only its owner may read.
pub fn read_credentials(path: &std::path::Path) -> Result<(String, String), BackendError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| BackendError::file(path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(BackendError::Config(format!(
            "credentials file {} is readable by group or others; run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| BackendError::file(path, e))?;
    let line = text.lines().next().unwrap_or_default().trim();
    let (user, password) = line.split_once(':').ok_or_else(|| {
        BackendError::Config(format!("credentials file {} must hold one line `username:password`", path.display()))
    })?;
    Ok((user.to_string(), password.to_string()))
}

/// An HTTP client for a router's API: timeouts from config, TLS through rustls with ring and only
/// the given CA (a router's certificate is rarely signed by a public CA).
pub fn http_client(
    timeout: std::time::Duration,
    ca_file: Option<&std::path::Path>,
) -> Result<reqwest::Client, BackendError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| BackendError::Config(format!("cannot read CA file {}: {e}", path.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| BackendError::Config(format!("bad PEM in {}: {e}", path.display())))?;
            roots.add(cert).map_err(|e| BackendError::Config(format!("bad CA in {}: {e}", path.display())))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BackendError::Config(format!("TLS set-up failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .map_err(|e| BackendError::Config(format!("cannot build the HTTP client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn credentials_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds");
        std::fs::write(&path, "root:secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = read_credentials(&path).unwrap_err().to_string();
        assert!(error.contains(&format!("chmod 600 {}", path.display())), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_credentials(&path).unwrap(), ("root".to_string(), "secret".to_string()));
    }
}
