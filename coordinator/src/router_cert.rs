//! `coordinator router-cert issue`: mTLS between the coordinator and its router shims, from the coordinator's CA.
//!
//! One command issues a server certificate for the shim (the names it is reached by) and a client
//! certificate for the coordinator itself. The shim's files go to `--out DIR`, with the CA bundle the
//! shim checks clients against; the coordinator's own credential goes to `<state_dir>/router-client/`,
//! where [`client_identity`] finds it whenever a lab plan's `[router]` names an `https://` shim, so an
//! operator writes no certificate paths into `lab.toml`. `[router] cert_file`/`key_file` override it.
//!
//! After a CA rotation (`coordinator ca rotate`, then `ca retire-old`) run `router-cert issue` again
//! and give the shim its new files: the coordinator trusts only its current CAs, and `coordinator
//! backup` keeps `router-client/` with the rest of the state directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ::store::StateDir;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use crate::enroll::{self, IssueError};
use crate::secret::{self, Secret, SecretFileError};

/// The folder under the state directory holding the coordinator's client credential for shims, and its
/// certificate and key (0600) in it; `store::StateDir` owns the names.
pub use ::store::state_dir::names::{
    ROUTER_CLIENT as CLIENT_DIR, ROUTER_CLIENT_CERT as CLIENT_CERT, ROUTER_CLIENT_KEY as CLIENT_KEY,
};
/// The SAN URI naming the coordinator as a shim's client.
pub const CLIENT_URI: &str = "metalfleet:coordinator:router-client";
/// Shim and client certificates are valid this long; run `router-cert issue` again to replace them.
pub const LIFETIME: Duration = Duration::from_secs(2 * 365 * 24 * 3600);

/// The shim's file names inside `--out`.
pub const SHIM_CERT: &str = "router-shim.pem";
pub const SHIM_KEY: &str = "router-shim.key";
pub const SHIM_CA: &str = "ca.pem";

/// Why the certificates could not be issued or read.
#[derive(Debug, thiserror::Error)]
pub enum RouterCertError {
    #[error("give at least one --san (the name or address the coordinator uses in `[router] shim`)")]
    NoSans,
    #[error("--san {san:?} {reason}; each --san is a DNS name or an IP address")]
    BadSan { san: String, reason: &'static str },
    #[error(transparent)]
    Issue(#[from] IssueError),
    #[error("cannot write {}: {message}; check the directory's permissions", .path.display())]
    Write { path: PathBuf, message: String },
    #[error("the router client credential is incomplete: {}; run `coordinator router-cert issue` again", .0.display())]
    Missing(PathBuf),
    #[error(transparent)]
    Secret(#[from] SecretFileError),
}

/// What `issue` wrote.
#[derive(Debug)]
pub struct Issued {
    pub shim_cert: PathBuf,
    pub shim_key: PathBuf,
    pub shim_ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Issued {
    /// The `[serve]` lines of `router-shim.toml` that turn mTLS on with these files.
    pub fn shim_toml(&self) -> String {
        format!(
            "[serve]\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_ca = \"{}\"\n",
            self.shim_cert.display(),
            self.shim_key.display(),
            self.shim_ca.display()
        )
    }
}

/// A client identity for the shim connection: certificate PEM and key.
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: Secret,
}

/// Refuses an empty list and every name that is not an IP address or a DNS name ([`crate::pki::check_san`]).
///
/// # Errors
/// [`RouterCertError::NoSans`] or [`RouterCertError::BadSan`], both usage errors.
pub fn check_sans(sans: &[String]) -> Result<(), RouterCertError> {
    if sans.is_empty() {
        return Err(RouterCertError::NoSans);
    }
    for san in sans {
        crate::pki::check_san(san).map_err(|reason| RouterCertError::BadSan { san: san.clone(), reason })?;
    }
    Ok(())
}

/// Issues the shim's server certificate (for `sans`) and the coordinator's client certificate, both from
/// the coordinator's signing CA. The shim gets the full trust bundle (both CAs during a rotation).
///
/// # Errors
/// No or bad names, an unreadable CA, or a file that cannot be written.
pub fn issue(state_dir: &Path, out: &Path, sans: &[String]) -> Result<Issued, RouterCertError> {
    check_sans(sans)?;
    let (ca_pem, ca_key) = enroll::load_ca(state_dir)?;
    let (server_pem, server_key) = server_cert(&ca_pem, &ca_key, sans)?;
    let (client, client_key) = enroll::issue_client_cert(
        &ca_pem,
        &ca_key,
        "metalfleet coordinator (router client)",
        &[CLIENT_URI.to_string()],
        LIFETIME,
    )?;
    let bundle = crate::rotation::trust_bundle(state_dir).map_err(|e| IssueError::Ca(e.to_string()))?;

    let state = StateDir::new(state_dir);
    let client_dir = state.router_client();
    for dir in [out, client_dir.as_path()] {
        std::fs::create_dir_all(dir)
            .map_err(|e| RouterCertError::Write { path: dir.to_owned(), message: e.to_string() })?;
    }
    let issued = Issued {
        shim_cert: absolute(&out.join(SHIM_CERT)),
        shim_key: absolute(&out.join(SHIM_KEY)),
        shim_ca: absolute(&out.join(SHIM_CA)),
        client_cert: state.router_client_cert(),
        client_key: state.router_client_key(),
    };
    write(&issued.shim_key, server_key.expose(), true)?;
    write(&issued.shim_cert, &server_pem, false)?;
    write(&issued.shim_ca, &bundle, false)?;
    write(&issued.client_key, client_key.expose(), true)?;
    write(&issued.client_cert, &client.certificate_pem, false)?;
    Ok(issued)
}

/// The client credential to present to a shim: `cert`/`key` when given (both), else the one
/// `router-cert issue` left in the state directory, else none.
///
/// # Errors
/// Only one of a pair exists, a key file is readable by others, or a file cannot be read.
pub fn client_identity(
    state_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<ClientIdentity>, RouterCertError> {
    let (cert, key) = match (cert, key) {
        (Some(cert), Some(key)) => (cert.to_owned(), key.to_owned()),
        (Some(_), None) | (None, Some(_)) => {
            return Err(RouterCertError::Missing(cert.or(key).expect("one is set").to_owned()));
        }
        (None, None) => {
            let state = StateDir::new(state_dir);
            (state.router_client_cert(), state.router_client_key())
        }
    };
    match (cert.exists(), key.exists()) {
        (false, false) => Ok(None),
        (true, false) => Err(RouterCertError::Missing(key)),
        (false, true) => Err(RouterCertError::Missing(cert)),
        (true, true) => {
            let key_pem = secret::read_private(&key)?;
            let cert_pem = std::fs::read_to_string(&cert)
                .map_err(|source| SecretFileError::Read { path: cert.clone(), source })?;
            Ok(Some(ClientIdentity { cert_pem, key_pem }))
        }
    }
}

fn server_cert(ca_pem: &str, ca_key: &Secret, sans: &[String]) -> Result<(String, Secret), RouterCertError> {
    let sign = |e: rcgen::Error| IssueError::Sign(e.to_string());
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(sign)?;
    for san in sans {
        let parsed = match san.parse::<std::net::IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(san.clone().try_into().map_err(|_: rcgen::Error| {
                RouterCertError::BadSan { san: san.clone(), reason: "is not a DNS name rcgen accepts" }
            })?),
        };
        params.subject_alt_names.push(parsed);
    }
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "metalfleet router shim");
    name.push(DnType::OrganizationName, "metalfleet");
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::seconds(i64::try_from(LIFETIME.as_secs()).unwrap_or(i64::MAX / 2));
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(sign)?;
    let ca = KeyPair::from_pem(ca_key.expose()).map_err(|e| IssueError::Ca(e.to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca).map_err(|e| IssueError::Ca(e.to_string()))?;
    let cert = params.signed_by(&key, &issuer).map_err(sign)?;
    Ok((cert.pem(), Secret::new(key.serialize_pem())))
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), RouterCertError> {
    let result = if private {
        crate::pki::write_secret(path, text).map_err(|e| e.to_string())
    } else {
        std::fs::write(path, text).map_err(|e| e.to_string())
    };
    result.map_err(|message| RouterCertError::Write { path: path.to_owned(), message })
}

/// `path` made absolute against the current directory, so the printed TOML works from anywhere.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn issue_writes_shim_files_and_the_coordinators_client_credential() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        crate::pki::ensure(&state, &[]).unwrap();
        assert!(client_identity(&state, None, None).unwrap().is_none(), "nothing issued yet");
        assert!(matches!(issue(&state, &dir.path().join("out"), &[]), Err(RouterCertError::NoSans)));

        let sans = ["127.0.0.1".to_string(), "router.lab".to_string()];
        let issued = issue(&state, &dir.path().join("out"), &sans).unwrap();
        for key in [&issued.shim_key, &issued.client_key] {
            assert_eq!(std::fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600, "{}", key.display());
        }
        let toml = issued.shim_toml();
        assert!(toml.contains(&format!("tls_ca = \"{}\"", issued.shim_ca.display())), "{toml}");
        assert_eq!(
            std::fs::read_to_string(&issued.shim_ca).unwrap(),
            std::fs::read_to_string(StateDir::new(&state).ca_cert()).unwrap()
        );

        let identity = client_identity(&state, None, None).unwrap().expect("found in the state directory");
        let (_, pem) = x509_parser::pem::parse_x509_pem(identity.cert_pem.as_bytes()).unwrap();
        let der = pem.contents;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let uris: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(uri) => Some(uri.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(uris, vec![CLIENT_URI.to_string()]);

        let only_cert = client_identity(&state, Some(&issued.client_cert), None);
        assert!(matches!(only_cert, Err(RouterCertError::Missing(_))));
        std::fs::set_permissions(&issued.client_key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(client_identity(&state, None, None), Err(RouterCertError::Secret(_))));
    }

    #[test]
    fn bad_sans_are_refused_by_name_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        for (san, reason) in [("", "is empty"), ("https://router", "is a URL"), ("router lab", "contains whitespace")] {
            let sans = ["router.lab".to_string(), san.to_string()];
            let error = issue(dir.path(), &out, &sans).unwrap_err();
            assert!(matches!(error, RouterCertError::BadSan { .. }), "{error}");
            let text = error.to_string();
            assert!(text.starts_with(&format!("--san {san:?} {reason}")), "{text}");
        }
        assert!(!out.exists(), "nothing is written for a refused name");
    }
}
