//! Where the coordinator is and how to trust it: the client config file, then `METALFLEET_*`, then flags.
//!
//! Only [`resolve_target`] decides the coordinator's address.

use std::path::{Path, PathBuf};
use std::time::Duration;

use metalfleet_common::config::Env;
use model::client_config::{self, ClientConfig, DEFAULT_STATE_DIR};

use crate::CliError;
use crate::client::ClientSettings;

/// The options every fleetctl command takes.
#[derive(Debug, Clone, Default)]
pub struct GlobalArgs {
    pub config: Option<PathBuf>,
    pub coordinator: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub insecure: bool,
    /// A file holding an operator bearer token (overrides client.toml's token_file).
    pub token_file: Option<PathBuf>,
}

/// Where the coordinator is and how to trust it, after every source was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub url: String,
    pub ca_file: Option<PathBuf>,
    /// The client config file that was read, if any.
    pub from_file: Option<PathBuf>,
    /// The operator credential: a certificate and key, and/or a bearer token file.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

/// The client config files looked at when `--config` is not given, in order.
pub fn default_config_paths(env: &dyn Env) -> Vec<PathBuf> {
    if let Some(path) = env.var("METALFLEET_CLIENT_CONFIG") {
        return vec![PathBuf::from(path)];
    }
    let mut paths = Vec::new();
    if let Some(home) = env.var("HOME") {
        paths.push(Path::new(&home).join(".config/metalfleet").join(client_config::FILE_NAME));
    }
    paths.push(Path::new(DEFAULT_STATE_DIR).join(client_config::FILE_NAME));
    paths
}

/// Combines the client config file, `METALFLEET_COORDINATOR` and the flags.
///
/// # Errors
/// [`CliError::Usage`] when a named config file cannot be read, or no address is known.
pub fn resolve_target(args: &GlobalArgs, env: &dyn Env) -> Result<Target, CliError> {
    metalfleet_common::config::reject_empty(env).map_err(|e| CliError::Usage(e.to_string()))?;
    let explicit = args.config.clone().or_else(|| env.var("METALFLEET_CLIENT_CONFIG").map(PathBuf::from));
    let file_path = match explicit {
        Some(path) => Some(path),
        None => default_config_paths(env).into_iter().find(|p| p.exists()),
    };
    let file = match &file_path {
        Some(path) => Some(ClientConfig::load(path).map_err(|e| CliError::Usage(e.to_string()))?),
        None => None,
    };
    let url = args
        .coordinator
        .clone()
        .or_else(|| env.var("METALFLEET_COORDINATOR"))
        .or_else(|| file.as_ref().map(|f| f.coordinator.clone()))
        .ok_or_else(|| {
            CliError::Usage(format!(
                "no coordinator address: pass --coordinator URL, set METALFLEET_COORDINATOR, or create a client.toml \
                 (looked at {})",
                default_config_paths(env).iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ))
        })?;
    let insecure = args.insecure || file.as_ref().is_some_and(|f| f.insecure);
    let url = normalize_url(&url, insecure);
    let token_file = args
        .token_file
        .clone()
        .or_else(|| env.var("METALFLEET_TOKEN_FILE").map(PathBuf::from))
        .or_else(|| file.as_ref().and_then(|f| f.token_file.clone()));
    let cert_file = file.as_ref().and_then(|f| f.cert_file.clone());
    let key_file = file.as_ref().and_then(|f| f.key_file.clone());
    let ca_file = args.ca_file.clone().or_else(|| file.and_then(|f| f.ca_file));
    Ok(Target { url, ca_file, from_file: file_path, cert_file, key_file, token_file })
}

/// Adds a scheme when missing; `insecure` means plaintext, so it turns https into http.
fn normalize_url(url: &str, insecure: bool) -> String {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match (rest, insecure) {
        (Some(rest), true) => format!("http://{rest}"),
        (Some(_), false) => url.to_string(),
        (None, true) => format!("http://{url}"),
        (None, false) => format!("https://{url}"),
    }
}

/// The client settings for `target`, reading the CA file when TLS is used.
///
/// # Errors
/// [`CliError::Usage`] when the CA file cannot be read.
pub fn client_settings(target: &Target) -> Result<ClientSettings, CliError> {
    let ca_pem = match (&target.ca_file, target.url.starts_with("https://")) {
        (Some(path), true) => Some(std::fs::read_to_string(path).map_err(|e| {
            CliError::Usage(format!(
                "cannot read the CA file {}: {e}; check --ca-file or ca_file in client.toml",
                path.display()
            ))
        })?),
        _ => None,
    };
    let identity = match (&target.cert_file, &target.key_file, target.url.starts_with("https://")) {
        (Some(cert), Some(key), true) => {
            let cert_pem = std::fs::read_to_string(cert).map_err(|e| {
                CliError::Usage(format!(
                    "cannot read the certificate {}: {e}; check cert_file in client.toml",
                    cert.display()
                ))
            })?;
            let key_pem = metalfleet_common::secret::read_private(key).map_err(|e| CliError::Usage(e.to_string()))?;
            Some((cert_pem, key_pem))
        }
        _ => None,
    };
    let bearer = match &target.token_file {
        Some(path) => Some(metalfleet_common::secret::read_private(path).map_err(|e| CliError::Usage(e.to_string()))?),
        None => None,
    };
    Ok(ClientSettings {
        url: target.url.clone(),
        ca_pem,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(15),
        identity,
        bearer,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use metalfleet_common::exit;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn check(args: GlobalArgs, vars: &[(&str, &str)], expected: Result<(&str, Option<&str>), i32>) {
        let got = resolve_target(&args, &env(vars));
        match (got, expected) {
            (Ok(target), Ok((url, ca))) => {
                assert_eq!(target.url, url);
                assert_eq!(target.ca_file, ca.map(PathBuf::from));
            }
            (Err(error), Err(code)) => assert_eq!(error.exit_code(), code, "{error}"),
            (got, expected) => panic!("got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn client_config_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(&path, "coordinator = \"https://127.0.0.1:7443\"\nca_file = \"/s/ca.pem\"\ninsecure = false\n")
            .unwrap();
        let file = path.to_str().unwrap();
        let no_home = ("HOME", "/nonexistent-home");
        check(
            GlobalArgs::default(),
            &[("METALFLEET_CLIENT_CONFIG", file), no_home],
            Ok(("https://127.0.0.1:7443", Some("/s/ca.pem"))),
        );
        check(
            GlobalArgs::default(),
            &[("METALFLEET_CLIENT_CONFIG", file), ("METALFLEET_COORDINATOR", "https://10.0.0.1:1"), no_home],
            Ok(("https://10.0.0.1:1", Some("/s/ca.pem"))),
        );
        let flags = GlobalArgs {
            config: Some(path.clone()),
            coordinator: Some("127.0.0.2:9".into()),
            ca_file: Some("/other.pem".into()),
            insecure: true,
            token_file: None,
        };
        check(
            flags,
            &[("METALFLEET_COORDINATOR", "https://10.0.0.1:1")],
            Ok(("http://127.0.0.2:9", Some("/other.pem"))),
        );
    }

    #[test]
    fn a_missing_named_config_is_a_usage_error() {
        let args = GlobalArgs { config: Some("/nonexistent/client.toml".into()), ..Default::default() };
        check(args, &[], Err(exit::USAGE));
    }

    #[test]
    fn a_bad_key_in_the_client_config_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(&path, "coordinator = \"https://x:1\"\ncafile = \"/a\"\n").unwrap();
        let args = GlobalArgs { config: Some(path.clone()), ..Default::default() };
        let error = resolve_target(&args, &env(&[])).unwrap_err();
        assert!(error.to_string().contains(":2:1: key `cafile`"), "{error}");
    }

    #[test]
    fn default_paths_follow_the_documented_order() {
        let paths = default_config_paths(&env(&[("HOME", "/home/op")]));
        assert_eq!(
            paths,
            vec![
                PathBuf::from("/home/op/.config/metalfleet/client.toml"),
                PathBuf::from("/var/lib/metalfleet/client.toml")
            ]
        );
        let named = default_config_paths(&env(&[("METALFLEET_CLIENT_CONFIG", "/x.toml"), ("HOME", "/home/op")]));
        assert_eq!(named, vec![PathBuf::from("/x.toml")]);
    }
}
