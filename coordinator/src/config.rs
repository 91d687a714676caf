//! The coordinator's configuration: defaults, then the TOML file, then `METALFLEET_*`, then flags.
//!
//! Only [`Config::from_sources`] combines the sources, and it is pure: the environment comes in
//! through [`Env`], so tests never touch the process environment.

#[cfg(test)]
mod bounds_tests;
#[cfg(test)]
mod proptests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use metalfleet_common::config::bounds::{Origins, Problems, SourceFile, limits};
use metalfleet_common::config::{self as common_config, Env, env_parse};
use serde::Deserialize;

use crate::health::HealthThresholds;

/// The default state directory (defined beside `client.toml`, since fleetctl looks there too).
pub use model::client_config::DEFAULT_STATE_DIR;

/// Everything `coordinator serve` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Serve plaintext gRPC instead of TLS.
    #[serde(default)]
    pub insecure: bool,
    /// The interval given to agents at Enroll.
    #[serde(with = "humantime_serde", default = "default_heartbeat_interval")]
    pub heartbeat_interval: Duration,
    /// Stored samples kept per machine; older ones are pruned.
    #[serde(default = "default_history_samples")]
    pub history_samples: u32,
    /// How long in-flight calls may run after SIGTERM before the server stops anyway.
    #[serde(with = "humantime_serde", default = "default_grace_period")]
    pub grace_period: Duration,
    /// How long a call may take to be answered (for Heartbeat: until its first message arrived).
    #[serde(with = "humantime_serde", default = "default_request_timeout")]
    pub request_timeout: Duration,
    /// The largest gRPC message accepted; bigger ones are refused with RESOURCE_EXHAUSTED.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Heartbeats waiting to be written; above three quarters of it agents are slowed down.
    #[serde(default = "default_write_queue")]
    pub write_queue: usize,
    /// How often the evaluator looks for machines that stopped sending heartbeats.
    #[serde(with = "humantime_serde", default = "default_evaluate_every")]
    pub evaluate_every: Duration,
    #[serde(default)]
    pub health: HealthThresholds,
    #[serde(default)]
    pub tls: TlsConfig,
    /// The MAAS client's settings (see [`crate::maas::Config`]); absent when MAAS is not used.
    #[serde(default)]
    pub maas: Option<crate::maas::Config>,
    /// Enrollment tokens and agent certificates (see [`crate::enroll::EnrollConfig`]).
    #[serde(default)]
    pub enroll: crate::enroll::EnrollConfig,
    /// Spec verification and lost-node verdicts (see [`crate::verify::VerifyConfig`]).
    #[serde(default)]
    pub verify: crate::verify::VerifyConfig,
    /// Redeploy operations (see [`crate::operations::Config`]).
    #[serde(default)]
    pub operations: crate::operations::Config,
    /// The HTTPS listener that serves the agent binary to deploying servers (see [`crate::artifacts::Config`]).
    #[serde(default)]
    pub artifacts: crate::artifacts::Config,
    /// The lab plan's reconciliation and waits (see [`crate::plan::LabConfig`]).
    #[serde(default)]
    pub lab: crate::plan::LabConfig,
    /// The gRPC listener's connection limits and timeouts (see [`crate::listener::Config`]).
    #[serde(default)]
    pub limits: crate::listener::Config,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Names and addresses added to the server certificate besides localhost and the hostname.
    #[serde(default)]
    pub extra_sans: Vec<String>,
}

/// Values given on the command line; `None` means "not given".
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub state_dir: Option<PathBuf>,
    pub insecure: bool,
}

/// MAAS values given on the command line (`--maas-url`, `--maas-api-key-file`); `None` means "not given".
#[derive(Debug, Clone, Default)]
pub struct MaasOverrides {
    pub url: Option<url::Url>,
    pub api_key_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        // Every field has a serde default, so an empty document is the default config.
        toml::from_str("").expect("the empty config parses")
    }
}

impl Config {
    /// Combines the sources, lowest priority first: defaults, `file`, `env`, `overrides`.
    ///
    /// # Errors
    /// A file that cannot be read or parsed (naming file, line and key), a bad environment
    /// value (naming the variable), or values that do not fit together.
    pub fn from_sources(file: Option<&Path>, env: &dyn Env, overrides: &Overrides) -> Result<Self, ConfigError> {
        Self::from_sources_with_maas(file, env, overrides, &MaasOverrides::default())
    }

    /// [`Config::from_sources`] plus the MAAS flags. `METALFLEET_MAAS_URL` and `METALFLEET_MAAS_API_KEY_FILE`
    /// (then the flags) set or override `[maas] url` and `api_key_file`; MAAS needs both.
    ///
    /// # Errors
    /// As [`Config::from_sources`], and a MAAS URL without a key file (or the reverse).
    pub fn from_sources_with_maas(
        file: Option<&Path>,
        env: &dyn Env,
        overrides: &Overrides,
        maas: &MaasOverrides,
    ) -> Result<Self, ConfigError> {
        common_config::reject_empty(env)?;
        let file = file.map(SourceFile::read).transpose()?;
        let mut config = match &file {
            Some(file) => file.parse::<Config>()?,
            None => Config::default(),
        };
        let mut origins = Origins::new(file);
        if let Some(listen) = env_parse::<SocketAddr>(env, "METALFLEET_LISTEN")? {
            config.listen = listen;
        }
        if let Some(dir) = env.var("METALFLEET_STATE_DIR") {
            config.state_dir = PathBuf::from(dir);
            origins.set_by("state_dir", "environment variable METALFLEET_STATE_DIR");
        }
        if let Some(insecure) = env_parse::<bool>(env, "METALFLEET_INSECURE")? {
            config.insecure = insecure;
        }
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(dir) = &overrides.state_dir {
            config.state_dir = dir.clone();
            origins.set_by("state_dir", "flag --state-dir");
        }
        if overrides.insecure {
            config.insecure = true;
        }
        let url = match &maas.url {
            Some(url) => {
                origins.set_by("maas.url", "flag --maas-url");
                Some(url.clone())
            }
            None => {
                let url = env_parse::<url::Url>(env, "METALFLEET_MAAS_URL")?;
                if url.is_some() {
                    origins.set_by("maas.url", "environment variable METALFLEET_MAAS_URL");
                }
                url
            }
        };
        let key_file = match &maas.api_key_file {
            Some(path) => {
                origins.set_by("maas.api_key_file", "flag --maas-api-key-file");
                Some(path.clone())
            }
            None => {
                let path = env.var("METALFLEET_MAAS_API_KEY_FILE").map(PathBuf::from);
                if path.is_some() {
                    origins.set_by("maas.api_key_file", "environment variable METALFLEET_MAAS_API_KEY_FILE");
                }
                path
            }
        };
        config.maas = match (config.maas.take(), url, key_file) {
            (Some(mut table), url, key_file) => {
                table.url = url.unwrap_or(table.url);
                table.api_key_file = key_file.unwrap_or(table.api_key_file);
                Some(table)
            }
            (None, Some(url), Some(key_file)) => Some(crate::maas::Config::new(url, key_file)),
            (None, None, None) => None,
            (None, Some(_), None) | (None, None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "MAAS needs both a URL and an API key file: give --maas-url and --maas-api-key-file \
                     (or METALFLEET_MAAS_URL and METALFLEET_MAAS_API_KEY_FILE, or [maas] url and api_key_file)"
                        .to_string(),
                ));
            }
        };
        let mut problems = Problems::new();
        config.validate(&mut problems);
        origins.check(problems)?;
        Ok(config)
    }

    /// Checks every value against its bounds (documented in `deploy/coordinator.example.toml`), each section
    /// through the `validate` beside its struct, reporting every problem by key.
    pub fn validate(&self, problems: &mut Problems) {
        problems.not_blank("state_dir", &self.state_dir.to_string_lossy());
        problems.duration("heartbeat_interval", self.heartbeat_interval, MIN_HEARTBEAT_INTERVAL..=HOUR);
        problems.number("history_samples", self.history_samples, 1..=MAX_HISTORY_SAMPLES);
        problems.duration("grace_period", self.grace_period, MIN_GRACE_PERIOD..=HOUR);
        problems.duration("request_timeout", self.request_timeout, limits::MIN_TIMEOUT..=HOUR);
        problems.size("max_message_bytes", self.max_message_bytes as u64, MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES);
        problems.number("write_queue", self.write_queue, MIN_WRITE_QUEUE..=MAX_WRITE_QUEUE);
        problems.duration("evaluate_every", self.evaluate_every, MIN_EVALUATE_EVERY..=HOUR);
        problems.section("health", |p| self.health.validate(p));
        problems.section("tls", |p| self.tls.validate(p));
        if let Some(maas) = &self.maas {
            problems.section("maas", |p| maas.validate(p));
        }
        problems.section("enroll", |p| self.enroll.validate(p));
        problems.section("verify", |p| self.verify.validate(p));
        problems.section("operations", |p| self.operations.validate(p));
        problems.section("artifacts", |p| self.artifacts.validate(p));
        problems.section("lab", |p| self.lab.validate(p));
        problems.section("limits", |p| self.limits.validate_into(p));
    }

    /// Parses `text` as the config file `path` and validates it, naming file, line and key on failure; the
    /// environment and flags play no part (tests, and checking a file before it is installed).
    ///
    /// # Errors
    /// As [`Config::from_sources`].
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file = SourceFile { path: path.to_owned(), text: text.to_owned() };
        let config: Config = file.parse()?;
        let mut problems = Problems::new();
        config.validate(&mut problems);
        Origins::new(Some(file)).check(problems)?;
        Ok(config)
    }
}

impl TlsConfig {
    /// `[tls]`: every extra SAN an IP address or an RFC 1123 DNS name (see [`crate::pki::check_san`]).
    pub fn validate(&self, problems: &mut Problems) {
        if self.extra_sans.len() > crate::pki::MAX_EXTRA_SANS {
            problems.push(
                "extra_sans",
                format!("has {} entries; at most {} are allowed", self.extra_sans.len(), crate::pki::MAX_EXTRA_SANS),
            );
        }
        for (index, san) in self.extra_sans.iter().enumerate() {
            if let Err(reason) = crate::pki::check_san(san) {
                problems.push_entry("extra_sans", index, format!("{san:?} {reason}; give a DNS name or an IP address"));
            }
        }
    }
}

/// Bounds of the top-level keys and `[health]`; `deploy/coordinator.example.toml` documents each.
const HOUR: Duration = Duration::from_secs(3600);
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// A million samples is about four months of history at the default 10 s interval.
const MAX_HISTORY_SAMPLES: u32 = 1_000_000;
/// Below this, a SIGTERM cuts calls that were about to finish.
const MIN_GRACE_PERIOD: Duration = Duration::from_millis(100);
const MIN_MESSAGE_BYTES: u64 = 1024;
const MAX_MESSAGE_BYTES: u64 = 64 << 20;
/// The writer batches from this queue; fewer slots than this make every burst of heartbeats wait.
const MIN_WRITE_QUEUE: usize = 16;
/// The queue plus its sample budget (four samples per slot, a tokio semaphore) stay far below what tokio
/// accepts (`usize::MAX >> 3` for both), and a full queue stays a few hundred MB at most.
const MAX_WRITE_QUEUE: usize = 65_536;
/// Below this the evaluator wakes so often that an idle coordinator burns a core.
const MIN_EVALUATE_EVERY: Duration = Duration::from_millis(10);

/// Why the configuration cannot be used. Every variant means exit 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Source(#[from] common_config::Error),
    #[error("invalid configuration: {0}; fix the config file, environment or flags")]
    Invalid(String),
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7443))
}
fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}
fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_history_samples() -> u32 {
    1000
}
fn default_grace_period() -> Duration {
    Duration::from_secs(10)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_message_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_write_queue() -> usize {
    8192
}
fn default_evaluate_every() -> Duration {
    Duration::from_millis(250)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn defaults_without_any_source() {
        let config = Config::from_sources(None, &env(&[]), &Overrides::default()).unwrap();
        assert_eq!(config.listen, "0.0.0.0:7443".parse().unwrap());
        assert_eq!(config.state_dir, PathBuf::from("/var/lib/metalfleet"));
        assert!(!config.insecure);
        assert_eq!(config.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(config.history_samples, 1000);
        assert_eq!(config.health, HealthThresholds::default());
        assert_eq!(config.max_message_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn file_then_env_then_flags() {
        let file = write("listen = \"127.0.0.1:1000\"\nstate_dir = \"/from/file\"\nheartbeat_interval = \"5s\"\n");
        let only_file = Config::from_sources(Some(file.path()), &env(&[]), &Overrides::default()).unwrap();
        assert_eq!(only_file.listen, "127.0.0.1:1000".parse().unwrap());
        assert_eq!(only_file.heartbeat_interval, Duration::from_secs(5));

        let vars = env(&[("METALFLEET_LISTEN", "127.0.0.1:2000"), ("METALFLEET_STATE_DIR", "/from/env")]);
        let with_env = Config::from_sources(Some(file.path()), &vars, &Overrides::default()).unwrap();
        assert_eq!(with_env.listen, "127.0.0.1:2000".parse().unwrap());
        assert_eq!(with_env.state_dir, PathBuf::from("/from/env"));

        let flags = Overrides { listen: Some("127.0.0.1:3000".parse().unwrap()), state_dir: None, insecure: true };
        let with_flags = Config::from_sources(Some(file.path()), &vars, &flags).unwrap();
        assert_eq!(with_flags.listen, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(with_flags.state_dir, PathBuf::from("/from/env"));
        assert!(with_flags.insecure);
    }

    #[test]
    fn bad_key_names_file_line_and_key() {
        let file = write("listen = \"127.0.0.1:0\"\n\n[health]\ndisk_percent = 80\n");
        let error = Config::from_sources(Some(file.path()), &env(&[]), &Overrides::default()).unwrap_err();
        let text = error.to_string();
        let expected =
            format!("{}:4:1: key `health.disk_percent`: unknown field `disk_percent`", file.path().display());
        assert!(text.starts_with(&expected), "{text}");
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let vars = env(&[("METALFLEET_LISTEN", "nowhere")]);
        let error = Config::from_sources(None, &vars, &Overrides::default()).unwrap_err();
        assert!(error.to_string().contains("METALFLEET_LISTEN"), "{error}");
    }

    #[test]
    fn validation_lists_every_problem() {
        let file = write("history_samples = 0\n[health]\nload_per_cpu = 0.0\n");
        let error = Config::from_sources(Some(file.path()), &env(&[]), &Overrides::default()).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("history_samples") && text.contains("health.load_per_cpu"), "{text}");
    }

    #[test]
    fn maas_table_is_the_maas_clients_config() {
        let file = write("[maas]\nurl = \"http://main:5240/MAAS/\"\napi_key_file = \"/etc/metalfleet/maas.key\"\n");
        let config = Config::from_sources(Some(file.path()), &env(&[]), &Overrides::default()).unwrap();
        assert_eq!(config.maas.unwrap().url.as_str(), "http://main:5240/MAAS/");
        let bad = write("[maas]\nurl = \"http://main:5240/MAAS/\"\napi_key_file = \"/k\"\napikey = \"x\"\n");
        let error = Config::from_sources(Some(bad.path()), &env(&[]), &Overrides::default()).unwrap_err();
        assert!(error.to_string().contains(":4:1: key `maas.apikey`"), "{error}");
    }

    #[test]
    fn maas_from_env_and_flags() {
        let none = Config::from_sources(None, &env(&[]), &Overrides::default()).unwrap();
        assert!(none.maas.is_none());

        let vars =
            env(&[("METALFLEET_MAAS_URL", "http://127.0.0.1:5240/MAAS"), ("METALFLEET_MAAS_API_KEY_FILE", "/e.key")]);
        let from_env = Config::from_sources(None, &vars, &Overrides::default()).unwrap().maas.unwrap();
        assert_eq!(from_env.url.as_str(), "http://127.0.0.1:5240/MAAS");
        assert_eq!(from_env.api_key_file, PathBuf::from("/e.key"));
        assert_eq!(from_env.poll_interval, Duration::from_secs(30));

        let file =
            write("[maas]\nurl = \"http://main:5240/MAAS/\"\napi_key_file = \"/f.key\"\npoll_interval = \"5s\"\n");
        let flags = MaasOverrides { url: Some("http://127.0.0.1:1/MAAS".parse().unwrap()), api_key_file: None };
        let config = Config::from_sources_with_maas(Some(file.path()), &vars, &Overrides::default(), &flags).unwrap();
        let maas = config.maas.unwrap();
        assert_eq!(maas.url.as_str(), "http://127.0.0.1:1/MAAS");
        assert_eq!(maas.api_key_file, PathBuf::from("/e.key"));
        assert_eq!(maas.poll_interval, Duration::from_secs(5));

        let half = env(&[("METALFLEET_MAAS_URL", "http://127.0.0.1:5240/MAAS")]);
        let error = Config::from_sources(None, &half, &Overrides::default()).unwrap_err();
        assert!(error.to_string().contains("--maas-api-key-file"), "{error}");
        let fast = write("[maas]\nurl = \"http://h/MAAS\"\napi_key_file = \"/k\"\npoll_interval = \"1ms\"\n");
        let error = Config::from_sources(Some(fast.path()), &env(&[]), &Overrides::default()).unwrap_err();
        assert!(error.to_string().contains("maas.poll_interval"), "{error}");
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/coordinator.example.toml");
        let config = Config::from_sources(Some(&path), &env(&[]), &Overrides::default()).unwrap();
        assert_eq!(config.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(config.health.disk_used_percent, 90.0);
        let defaults = Config::default();
        assert_eq!(config.enroll, defaults.enroll, "the example's [enroll] shows the defaults");
        assert_eq!(config.verify, defaults.verify, "the example's [verify] shows the defaults");
        assert_eq!(config.operations, defaults.operations, "the example's [operations] shows the defaults");
        assert_eq!(config.lab, defaults.lab, "the example's [lab] shows the defaults");
    }
}
