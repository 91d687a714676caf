//! `coordinator operators add`: operator credentials (a client certificate, or a bearer token for
//! scripts), and the local admin whose certificate the coordinator's own `client.toml` points at.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ::store::StateDir;
use rand::RngCore;

use crate::auth::{ROLE_ADMIN, ROLE_READ_ONLY};
use crate::client_config::{self, ClientConfig};
use crate::enroll::{self, OPERATOR_URI};
use crate::secret::Secret;
use crate::security_store::{OperatorRecord, SecurityStore};
use crate::store::StoreError;

/// The name of the operator the coordinator creates for its own host.
pub const LOCAL_ADMIN: &str = "admin";
/// Operator certificates are valid this long; run `operators add` again to replace one.
pub const OPERATOR_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why an operator could not be added.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("operator name {0:?} is not valid; use letters, digits, '.', '_' and '-'")]
    BadName(String),
    #[error("role {0:?} is not known; use admin or read-only")]
    BadRole(String),
    #[error(transparent)]
    Issue(#[from] enroll::IssueError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write {}: {source}; check the directory's permissions", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What `operators add` made.
#[derive(Debug)]
pub struct Added {
    pub name: String,
    pub role: String,
    pub dir: PathBuf,
    pub client_config: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Set for `--bearer`: shown once; the store keeps its hash.
    pub bearer: Option<Secret>,
}

fn check_name(name: &str) -> Result<(), OperatorError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with('.');
    if ok { Ok(()) } else { Err(OperatorError::BadName(name.to_string())) }
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), OperatorError> {
    let result = if secret {
        crate::pki::write_secret(path, text).map_err(|e| std::io::Error::other(e.to_string()))
    } else {
        std::fs::write(path, text)
    };
    result.map_err(|source| OperatorError::Write { path: path.to_owned(), source })
}

/// Creates (or replaces: the old credential stops working) operator `name` with `role`, writing its
/// credential and a `client.toml` into `dir` (default `<state_dir>/operators/<name>`).
///
/// # Errors
/// A bad name or role, the CA cannot be read, the store or a file write failed.
pub async fn add(
    state_dir: &Path,
    store: &SecurityStore,
    name: &str,
    role: &str,
    bearer: bool,
    dir: Option<PathBuf>,
) -> Result<Added, OperatorError> {
    check_name(name)?;
    if role != ROLE_ADMIN && role != ROLE_READ_ONLY {
        return Err(OperatorError::BadRole(role.to_string()));
    }
    let state = StateDir::new(state_dir);
    let dir = dir.unwrap_or_else(|| state.operator(name));
    std::fs::create_dir_all(&dir).map_err(|source| OperatorError::Write { path: dir.clone(), source })?;
    let (ca_pem, ca_key) = enroll::load_ca(state_dir)?;
    let uri = format!("{OPERATOR_URI}{name}");
    let (issued, key) = enroll::issue_client_cert(&ca_pem, &ca_key, name, &[uri], OPERATOR_CERT_LIFETIME)?;
    let cert_file = dir.join(format!("{name}.pem"));
    let key_file = dir.join(format!("{name}.key"));
    write(&key_file, key.expose(), true)?;
    write(&cert_file, &issued.certificate_pem, false)?;
    let bearer = bearer.then(|| {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Secret::new(format!("mfo.{}", enroll::hex(&bytes)))
    });
    let token_hash = bearer.as_ref().map(|b| enroll::hash_secret(b.expose()));
    let record = OperatorRecord { name: name.to_string(), role: role.to_string(), cert_serial: Some(issued.serial) };
    store.put_operator(record, token_hash, chrono::Utc::now()).await?;

    // The operator's client.toml: where the coordinator is (from the server's own file, when written).
    let server_client = ClientConfig::load(&state.client_config()).ok();
    let mut client = ClientConfig {
        coordinator: server_client.as_ref().map_or_else(|| "https://127.0.0.1:7443".into(), |c| c.coordinator.clone()),
        ca_file: Some(state.ca_cert()),
        insecure: false,
        cert_file: Some(cert_file.clone()),
        key_file: Some(key_file.clone()),
        token_file: None,
    };
    if let Some(secret) = &bearer {
        let token_file = dir.join(format!("{name}.token"));
        write(&token_file, &format!("{}\n", secret.expose()), true)?;
        client.token_file = Some(token_file);
    }
    let client_config = dir.join(client_config::FILE_NAME);
    client.write(&client_config).map_err(|source| OperatorError::Write { path: client_config.clone(), source })?;
    Ok(Added { name: name.to_string(), role: role.to_string(), dir, client_config, cert_file, key_file, bearer })
}

/// The local admin's certificate and key paths.
#[derive(Debug)]
pub struct LocalAdmin {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Makes sure operator `admin` exists with a certificate under `<state_dir>/operators/admin/`,
/// issued by the current CA; reuses it when it does.
///
/// # Errors
/// As [`add`].
pub async fn ensure_local_admin(state_dir: &Path, store: &SecurityStore) -> Result<LocalAdmin, OperatorError> {
    let dir = StateDir::new(state_dir).operator(LOCAL_ADMIN);
    let cert_file = dir.join(format!("{LOCAL_ADMIN}.pem"));
    let key_file = dir.join(format!("{LOCAL_ADMIN}.key"));
    let existing = store.operator(LOCAL_ADMIN.to_string()).await?;
    let (ca_pem, _) = enroll::load_ca(state_dir)?;
    let current = match (&existing, std::fs::read_to_string(&cert_file)) {
        (Some(record), Ok(pem)) if key_file.exists() => {
            let known = x509_parser::pem::parse_x509_pem(pem.as_bytes())
                .ok()
                .and_then(|(_, parsed)| crate::auth::PeerCert::parse(&parsed.contents))
                .is_some_and(|peer| record.cert_serial.as_deref() == Some(peer.serial.as_str()));
            // After a CA rotation the old certificate is no longer trusted: issue one from the new CA.
            known && signed_by(&pem, &ca_pem)
        }
        _ => false,
    };
    if !current {
        add(state_dir, store, LOCAL_ADMIN, ROLE_ADMIN, false, Some(dir)).await?;
        tracing::info!(path = %cert_file.display(), "created the local admin operator's certificate");
    }
    Ok(LocalAdmin { cert_file, key_file })
}

/// Whether the PEM certificate `cert` was signed by the CA `ca`.
fn signed_by(cert: &str, ca: &str) -> bool {
    let parse = |pem: &str| x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok().map(|(_, p)| p.contents);
    let (Some(cert), Some(ca)) = (parse(cert), parse(ca)) else { return false };
    let (Ok((_, cert)), Ok((_, ca))) =
        (x509_parser::parse_x509_certificate(&cert), x509_parser::parse_x509_certificate(&ca))
    else {
        return false;
    };
    cert.verify_signature(Some(ca.public_key())).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn operators_get_files_and_bearer_tokens_are_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::ensure(dir.path(), &[]).unwrap();
        let store = SecurityStore::open(dir.path()).unwrap();
        let added = add(dir.path(), &store, "ci", ROLE_READ_ONLY, true, None).await.unwrap();
        let token = added.bearer.clone().unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&added.key_file).unwrap().permissions().mode() & 0o777, 0o600);
        let found = store.operator_by_token(enroll::hash_secret(token.expose())).await.unwrap().unwrap();
        assert_eq!(found.role, ROLE_READ_ONLY);
        let client = ClientConfig::load(&added.client_config).unwrap();
        assert_eq!(client.cert_file.as_deref(), Some(added.cert_file.as_path()));
        assert!(client.token_file.is_some());

        assert!(matches!(
            add(dir.path(), &store, "../x", ROLE_ADMIN, false, None).await,
            Err(OperatorError::BadName(_))
        ));
        assert!(matches!(add(dir.path(), &store, "x", "root", false, None).await, Err(OperatorError::BadRole(_))));

        let first = ensure_local_admin(dir.path(), &store).await.unwrap();
        let pem = std::fs::read_to_string(&first.cert_file).unwrap();
        ensure_local_admin(dir.path(), &store).await.unwrap();
        assert_eq!(std::fs::read_to_string(&first.cert_file).unwrap(), pem, "reused, not issued again");
    }
}
