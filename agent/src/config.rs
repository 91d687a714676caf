//! The agent's configuration: built-in defaults < `--config` TOML file < `METALFLEET_*` < flags.
//!
//! [`Config::from_sources`] is pure (the environment comes in as a [`metalfleet_common::config::Env`]),
//! so tests never touch the process environment. Every error here means exit 64.

#[cfg(test)]
mod proptests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use metalfleet_common::config::bounds::{Origins, Problems, SourceFile, limits};
use metalfleet_common::config::{self as common_config, Env};
use serde::Deserialize;

use crate::cli::RunArgs;

/// The config file's keys, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub coordinator: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub insecure: Option<bool>,
    /// A file (mode 0600) holding the one-time enrollment token.
    pub token_file: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub hostname: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    pub buffer_samples: Option<usize>,
    pub memory_budget: Option<ByteSize>,
    pub hide_disks: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub rpc_timeout: Option<Duration>,
}

/// The effective configuration of `agent run`.
#[derive(Debug, Clone)]
pub struct Config {
    /// `http://HOST:PORT` with `insecure`, `https://HOST:PORT` otherwise; `None` only in dry-run mode.
    pub coordinator: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// The PEM bytes of `ca_file`, read once by validation.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure: bool,
    /// The enrollment token's file; read at each enrollment that has no certificate to use.
    pub token_file: Option<PathBuf>,
    pub state_dir: PathBuf,
    /// `None`: ask the OS.
    pub hostname: Option<String>,
    pub interval: Duration,
    pub buffer_samples: usize,
    pub memory_budget: u64,
    pub hide_disks: Vec<String>,
    pub connect_timeout: Duration,
    pub rpc_timeout: Duration,
    pub dry_run: bool,
}

/// Why the configuration is unusable. Both variants mean exit 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Load(#[from] common_config::Error),
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/metalfleet-agent")
}
fn default_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_buffer_samples() -> usize {
    360
}
fn default_memory_budget() -> u64 {
    64 * 1024 * 1024
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_rpc_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Bounds of the agent's keys, documented in `deploy/agent.example.toml`.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// A million samples is 116 days at the default interval; the memory budget caps the buffer too.
const MAX_BUFFER_SAMPLES: usize = 1_000_000;
/// Below this the agent cannot even start; above it the "budget" no longer guards anything on a server.
const MIN_MEMORY_BUDGET: u64 = 4 << 20;
const MAX_MEMORY_BUDGET: u64 = 16 << 30;
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_RPC_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest DNS name, and so the longest hostname an agent can enroll with.
const MAX_HOSTNAME_LEN: usize = 253;

impl Config {
    /// Reads the `--config` file (if any), then `env`, then `args`.
    pub fn load(args: &RunArgs, env: &dyn Env) -> Result<Config, ConfigError> {
        let source = args.config.as_deref().map(SourceFile::read).transpose()?;
        let file = source.as_ref().map(SourceFile::parse::<FileConfig>).transpose()?;
        Config::from_file_sources(file, source, env, args)
    }

    /// Merges the sources (file < env < flags) and validates the result, reporting every problem at once.
    pub fn from_sources(file: Option<FileConfig>, env: &dyn Env, args: &RunArgs) -> Result<Config, ConfigError> {
        Config::from_file_sources(file, None, env, args)
    }

    /// [`Config::from_sources`] with the file's text, so a value out of bounds is named by its line.
    fn from_file_sources(
        file: Option<FileConfig>,
        source: Option<SourceFile>,
        env: &dyn Env,
        args: &RunArgs,
    ) -> Result<Config, ConfigError> {
        common_config::reject_empty(env)?;
        let file = file.unwrap_or_default();
        let mut origins = Origins::new(source);
        let mut problems = Vec::new();
        let mut env_value = |name: &str, parse: &dyn Fn(&str) -> Result<(), String>| -> Option<String> {
            let raw = env.var(name)?;
            match parse(&raw) {
                Ok(()) => Some(raw),
                Err(message) => {
                    problems.push(format!("environment variable {name}={raw:?}: {message}"));
                    None
                }
            }
        };
        let any = |_: &str| Ok(());
        let env_coordinator = env_value("METALFLEET_COORDINATOR", &any);
        let env_ca_file = env_value("METALFLEET_CA_FILE", &any).map(PathBuf::from);
        let env_token_file = env_value("METALFLEET_TOKEN_FILE", &any).map(PathBuf::from);
        let env_state_dir = env_value("METALFLEET_STATE_DIR", &any).map(PathBuf::from);
        let env_hostname = env_value("METALFLEET_HOSTNAME", &any);
        let env_interval = env_value("METALFLEET_INTERVAL", &|raw| parse_duration(raw).map(|_| ()))
            .and_then(|raw| parse_duration(&raw).ok());
        let env_insecure =
            env_value("METALFLEET_INSECURE", &|raw| parse_bool(raw).map(|_| ())).and_then(|raw| parse_bool(&raw).ok());
        let env_hide_disks = env_value("METALFLEET_HIDE_DISKS", &any).map(|raw| split_list(&raw));

        for (key, flag, from_env, var) in [
            ("state_dir", args.state_dir.is_some(), env_state_dir.is_some(), "METALFLEET_STATE_DIR"),
            ("hostname", args.hostname.is_some(), env_hostname.is_some(), "METALFLEET_HOSTNAME"),
            ("interval", args.interval.is_some(), env_interval.is_some(), "METALFLEET_INTERVAL"),
            ("token_file", args.token_file.is_some(), env_token_file.is_some(), "METALFLEET_TOKEN_FILE"),
            ("hide_disks", false, env_hide_disks.is_some(), "METALFLEET_HIDE_DISKS"),
        ] {
            if flag {
                origins.set_by(key, format!("flag --{}", key.replace('_', "-")));
            } else if from_env {
                origins.set_by(key, format!("environment variable {var}"));
            }
        }
        let insecure = args.insecure || env_insecure.or(file.insecure).unwrap_or(false);
        let coordinator_raw = args.coordinator.clone().or(env_coordinator).or(file.coordinator);
        let ca_file = args.ca_file.clone().or(env_ca_file).or(file.ca_file);
        let config = Config {
            coordinator: None,
            ca_pem: None,
            ca_file,
            insecure,
            token_file: args.token_file.clone().or(env_token_file).or(file.token_file),
            state_dir: args.state_dir.clone().or(env_state_dir).or(file.state_dir).unwrap_or_else(default_state_dir),
            hostname: args.hostname.clone().or(env_hostname).or(file.hostname),
            interval: args.interval.or(env_interval).or(file.interval).unwrap_or_else(default_interval),
            buffer_samples: file.buffer_samples.unwrap_or_else(default_buffer_samples),
            memory_budget: file.memory_budget.map(|b| b.0).unwrap_or_else(default_memory_budget),
            hide_disks: env_hide_disks.or(file.hide_disks).unwrap_or_default(),
            connect_timeout: file.connect_timeout.unwrap_or_else(default_connect_timeout),
            rpc_timeout: file.rpc_timeout.unwrap_or_else(default_rpc_timeout),
            dry_run: args.dry_run,
        };
        config.finish(coordinator_raw, &origins, problems)
    }

    /// Checks every value against its bounds, reporting each problem by key.
    pub fn validate(&self, problems: &mut Problems) {
        problems.not_blank("state_dir", &self.state_dir.to_string_lossy());
        if let Some(path) = &self.token_file {
            problems.not_blank("token_file", &path.to_string_lossy());
        }
        if let Some(hostname) = &self.hostname {
            if hostname.trim().is_empty() {
                problems.push("hostname", "is empty; remove it to use the OS hostname");
            } else if hostname.len() > MAX_HOSTNAME_LEN {
                problems.push("hostname", format!("is {} characters long; at most {MAX_HOSTNAME_LEN}", hostname.len()));
            }
        }
        problems.duration("interval", self.interval, MIN_INTERVAL..=MAX_INTERVAL);
        problems.number("buffer_samples", self.buffer_samples, 1..=MAX_BUFFER_SAMPLES);
        problems.size("memory_budget", self.memory_budget, MIN_MEMORY_BUDGET..=MAX_MEMORY_BUDGET);
        problems.duration("connect_timeout", self.connect_timeout, limits::MIN_TIMEOUT..=MAX_CONNECT_TIMEOUT);
        problems.duration("rpc_timeout", self.rpc_timeout, limits::MIN_TIMEOUT..=MAX_RPC_TIMEOUT);
        if self.hide_disks.len() > limits::MAX_LIST {
            problems.push("hide_disks", format!("has {} entries; at most {}", self.hide_disks.len(), limits::MAX_LIST));
        }
        for (index, disk) in self.hide_disks.iter().enumerate() {
            if disk.trim().is_empty() {
                problems.push_entry("hide_disks", index, "must not be empty");
            }
        }
    }

    /// Checks the bounds and the rules that span fields, and reads the CA file.
    fn finish(
        mut self,
        coordinator: Option<String>,
        origins: &Origins,
        mut problems: Vec<String>,
    ) -> Result<Config, ConfigError> {
        match coordinator {
            Some(raw) => match endpoint_url(&raw, self.insecure) {
                Ok(url) => self.coordinator = Some(url),
                Err(message) => problems.push(format!("coordinator {raw:?}: {message}")),
            },
            None if !self.dry_run => problems.push(
                "no coordinator address: give --coordinator HOST:PORT, METALFLEET_COORDINATOR or `coordinator` in the config file"
                    .into(),
            ),
            None => {}
        }
        if !self.insecure && !self.dry_run {
            match &self.ca_file {
                None => problems.push(
                    "TLS needs the coordinator's CA: give --ca-file PATH (or `ca_file`), or --insecure for plaintext"
                        .into(),
                ),
                Some(path) => match std::fs::read(path) {
                    Ok(pem) => self.ca_pem = Some(pem),
                    Err(error) => problems.push(format!("cannot read CA file {}: {error}", path.display())),
                },
            }
        }
        let mut bounds = Problems::new();
        self.validate(&mut bounds);
        problems.extend(bounds.into_vec().into_iter().map(|problem| origins.locate(problem).to_string()));
        if problems.is_empty() { Ok(self) } else { Err(ConfigError::Invalid(problems)) }
    }

    /// `<state-dir>/agent-id`.
    pub fn agent_id_path(&self) -> PathBuf {
        self.state_dir.join("agent-id")
    }

    /// `<state-dir>/buffer.json`.
    pub fn buffer_path(&self) -> PathBuf {
        self.state_dir.join("buffer.json")
    }
}

/// The `hide_disks` list for `agent inventory`: from the optional config file, or `METALFLEET_HIDE_DISKS`.
pub fn hide_disks_for_inventory(config: Option<&Path>, env: &dyn Env) -> Result<Vec<String>, ConfigError> {
    common_config::reject_empty(env)?;
    if let Some(raw) = env.var("METALFLEET_HIDE_DISKS") {
        return Ok(split_list(&raw));
    }
    let file = config.map(common_config::load::<FileConfig>).transpose()?;
    Ok(file.and_then(|f| f.hide_disks).unwrap_or_default())
}

/// Turns `HOST:PORT` (or a URL) into the URL tonic connects to; the scheme follows `insecure`.
pub fn endpoint_url(raw: &str, insecure: bool) -> Result<String, String> {
    let raw = raw.trim().trim_end_matches('/');
    let (scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, raw),
    };
    match (scheme, insecure) {
        (Some("http"), false) => return Err("plaintext http:// needs --insecure; use https:// with --ca-file".into()),
        (Some("https"), true) => return Err("https:// contradicts --insecure; drop one of them".into()),
        (Some(other), _) if other != "http" && other != "https" => return Err(format!("unknown scheme {other}://")),
        _ => {}
    }
    if rest.is_empty() || rest.contains('/') {
        return Err("expected HOST:PORT, e.g. 127.0.0.1:7443".into());
    }
    Ok(format!("{}://{rest}", if insecure { "http" } else { "https" }))
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    match raw.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(Duration::from_secs_f64(seconds)),
        _ => humantime::parse_duration(raw.trim()).map_err(|e| format!("{e}; write e.g. 10s or 500ms")),
    }
}

fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn split_list(raw: &str) -> Vec<String> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// A size in bytes, written as an integer or as text such as `"64MiB"`, `"512 KiB"`, `"1GB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let raw = raw.trim();
        let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
        let (digits, unit) = raw.split_at(split);
        let number: u64 = digits.parse().map_err(|_| format!("{raw:?} is not a size; write e.g. 64MiB or 67108864"))?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => return Err(format!("unknown size unit {other:?}; use B, KiB, MiB, GiB, KB, MB or GB")),
        };
        number.checked_mul(multiplier).map(ByteSize).ok_or_else(|| format!("{raw:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size in bytes, or a string such as \"64MiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn file(text: &str) -> FileConfig {
        common_config::parse(Path::new("agent.toml"), text).unwrap()
    }

    fn insecure_args() -> RunArgs {
        RunArgs { insecure: true, ..RunArgs::default() }
    }

    #[test]
    fn flags_beat_env_which_beats_the_file() {
        let text = "coordinator = \"file:1\"\nhostname = \"from-file\"\ninterval = \"30s\"\nstate_dir = \"/file\"\n";
        let only_file = Config::from_sources(Some(file(text)), &env(&[]), &insecure_args()).unwrap();
        assert_eq!(only_file.coordinator.as_deref(), Some("http://file:1"));
        assert_eq!(only_file.hostname.as_deref(), Some("from-file"));
        assert_eq!(only_file.interval, Duration::from_secs(30));
        assert_eq!(only_file.state_dir, PathBuf::from("/file"));

        let environment = env(&[
            ("METALFLEET_COORDINATOR", "env:2"),
            ("METALFLEET_HOSTNAME", "from-env"),
            ("METALFLEET_INTERVAL", "5s"),
        ]);
        let with_env = Config::from_sources(Some(file(text)), &environment, &insecure_args()).unwrap();
        assert_eq!(with_env.coordinator.as_deref(), Some("http://env:2"));
        assert_eq!(with_env.hostname.as_deref(), Some("from-env"));
        assert_eq!(with_env.interval, Duration::from_secs(5));
        assert_eq!(with_env.state_dir, PathBuf::from("/file"));

        let args = RunArgs {
            coordinator: Some("flag:3".into()),
            interval: Some(Duration::from_secs(1)),
            state_dir: Some("/flag".into()),
            ..insecure_args()
        };
        let with_flags = Config::from_sources(Some(file(text)), &environment, &args).unwrap();
        assert_eq!(with_flags.coordinator.as_deref(), Some("http://flag:3"));
        assert_eq!(with_flags.hostname.as_deref(), Some("from-env"));
        assert_eq!(with_flags.interval, Duration::from_secs(1));
        assert_eq!(with_flags.state_dir, PathBuf::from("/flag"));
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = Config::from_sources(None, &env(&[]), &RunArgs { dry_run: true, ..RunArgs::default() }).unwrap();
        assert_eq!(config.state_dir, PathBuf::from("/var/lib/metalfleet-agent"));
        assert_eq!(config.interval, Duration::from_secs(10));
        assert_eq!(config.buffer_samples, 360);
        assert_eq!(config.memory_budget, 64 * 1024 * 1024);
        assert!(config.hide_disks.is_empty());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let error =
            common_config::parse::<FileConfig>(Path::new("/etc/agent.toml"), "interval = \"5s\"\nbufer_samples = 3\n")
                .unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("/etc/agent.toml:2:1: key `bufer_samples`: unknown field `bufer_samples`"), "{text}");
    }

    #[test]
    fn bad_values_name_their_source() {
        let error = common_config::parse::<FileConfig>(Path::new("a.toml"), "memory_budget = \"64XB\"\n").unwrap_err();
        assert!(error.to_string().starts_with("a.toml:1:17: key `memory_budget`: unknown size unit"), "{error}");
        let error = Config::from_sources(None, &env(&[("METALFLEET_INTERVAL", "soon")]), &insecure_args()).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("environment variable METALFLEET_INTERVAL=\"soon\""), "{text}");
        assert!(text.contains("no coordinator address"), "every problem is reported at once: {text}");
    }

    #[test]
    fn tls_needs_a_readable_ca_file() {
        let args = RunArgs { coordinator: Some("c:1".into()), ..RunArgs::default() };
        let error = Config::from_sources(None, &env(&[]), &args).unwrap_err();
        assert!(error.to_string().contains("--ca-file"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let args = RunArgs { ca_file: Some(ca), ..args };
        let config = Config::from_sources(None, &env(&[]), &args).unwrap();
        assert_eq!(config.coordinator.as_deref(), Some("https://c:1"));
        assert!(config.ca_pem.is_some());
    }

    /// Loads `text` as the `--config` file `/etc/agent.toml` (plaintext, so no CA is needed) and compares the
    /// whole error with `expected`.
    fn check(text: &str, env_pairs: &[(&str, &str)], expected: &str) {
        let source = SourceFile { path: PathBuf::from("/etc/agent.toml"), text: text.to_string() };
        let parsed = source.parse::<FileConfig>().unwrap();
        let args = RunArgs { coordinator: Some("main:7443".into()), ..insecure_args() };
        let error = Config::from_file_sources(Some(parsed), Some(source), &env(env_pairs), &args).unwrap_err();
        assert_eq!(error.to_string(), expected, "for {text:?}");
    }

    #[test]
    fn huge_sizes_and_counts_name_line_and_key() {
        check(
            "buffer_samples = 9223372036854775807\n",
            &[],
            "invalid configuration:\n  /etc/agent.toml:1:18: key `buffer_samples`: 9223372036854775807 is out of \
             range; use 1 to 1000000",
        );
        check(
            "interval = \"1s\"\nmemory_budget = \"1024GiB\"\n",
            &[],
            "invalid configuration:\n  /etc/agent.toml:2:17: key `memory_budget`: 1099511627776 bytes (1 TiB) is out \
             of range; use 4194304 to 17179869184 bytes (4 MiB to 16 GiB)",
        );
        check(
            "buffer_samples = 0\n",
            &[],
            "invalid configuration:\n  /etc/agent.toml:1:18: key `buffer_samples`: 0 is out of range; use 1 to 1000000",
        );
    }

    #[test]
    fn zero_and_sub_millisecond_durations_name_line_and_key() {
        check(
            "interval = \"500us\"\nrpc_timeout = \"0s\"\n",
            &[],
            "invalid configuration:\n  /etc/agent.toml:1:12: key `interval`: 500us is out of range; use 100ms to 1h\n  \
             /etc/agent.toml:2:15: key `rpc_timeout`: 0s is out of range; use 10ms to 1h",
        );
        check(
            "connect_timeout = \"1day\"\n",
            &[],
            "invalid configuration:\n  /etc/agent.toml:1:19: key `connect_timeout`: 1day is out of range; use 10ms to 5m",
        );
    }

    #[test]
    fn values_from_variables_and_flags_name_them() {
        check(
            "interval = \"10s\"\n",
            &[("METALFLEET_INTERVAL", "1ms")],
            "invalid configuration:\n  environment variable METALFLEET_INTERVAL (key `interval`): 1ms is out of \
             range; use 100ms to 1h",
        );
        let args = RunArgs { interval: Some(Duration::from_millis(1)), dry_run: true, ..RunArgs::default() };
        let error = Config::from_sources(None, &env(&[]), &args).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid configuration:\n  flag --interval (key `interval`): 1ms is out of range; use 100ms to 1h"
        );
    }

    #[test]
    fn empty_environment_variables_are_named() {
        let args = RunArgs { dry_run: true, ..RunArgs::default() };
        let error = Config::from_sources(None, &env(&[("METALFLEET_STATE_DIR", "")]), &args).unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable METALFLEET_STATE_DIR: is set but empty; unset it or give it a value"
        );
        let error = hide_disks_for_inventory(None, &env(&[("METALFLEET_HIDE_DISKS", "")])).unwrap_err();
        assert!(error.to_string().contains("METALFLEET_HIDE_DISKS"), "{error}");
    }

    #[test]
    fn blank_names_are_refused_by_entry() {
        check(
            "hide_disks = [\"sdb\", \" \"]\nhostname = \"\"\n",
            &[],
            "invalid configuration:\n  /etc/agent.toml:2:12: key `hostname`: is empty; remove it to use the OS \
             hostname\n  /etc/agent.toml:1:22: key `hide_disks[1]`: must not be empty",
        );
    }

    #[test]
    fn coordinator_addresses() {
        assert_eq!(endpoint_url("127.0.0.1:7443", true).unwrap(), "http://127.0.0.1:7443");
        assert_eq!(endpoint_url("https://main:7443/", false).unwrap(), "https://main:7443");
        assert!(endpoint_url("http://main:7443", false).is_err());
        assert!(endpoint_url("https://main:7443", true).is_err());
        assert!(endpoint_url("main:7443/path", true).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!("64MiB".parse::<ByteSize>().unwrap(), ByteSize(64 << 20));
        assert_eq!("512 KiB".parse::<ByteSize>().unwrap(), ByteSize(512 << 10));
        assert_eq!("1000".parse::<ByteSize>().unwrap(), ByteSize(1000));
        assert!("MiB".parse::<ByteSize>().is_err());
        assert_eq!(file("memory_budget = 70000000\n").memory_budget, Some(ByteSize(70_000_000)));
    }

    #[test]
    fn hide_disks_come_from_env_or_file() {
        let config = Config::from_sources(
            Some(file("hide_disks = [\"sdb\"]\n")),
            &env(&[]),
            &RunArgs { dry_run: true, ..RunArgs::default() },
        )
        .unwrap();
        assert_eq!(config.hide_disks, ["sdb"]);
        let hidden = hide_disks_for_inventory(None, &env(&[("METALFLEET_HIDE_DISKS", "sdb, sdc")])).unwrap();
        assert_eq!(hidden, ["sdb", "sdc"]);
    }

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.example.toml");
        let parsed: FileConfig = common_config::load(&path).unwrap();
        assert!(parsed.coordinator.is_some());
        assert_eq!(parsed.memory_budget, Some(ByteSize(64 << 20)));
        let config = Config::from_sources(Some(parsed), &env(&[]), &insecure_args()).unwrap();
        assert_eq!(config.interval, Duration::from_secs(10));
    }

    proptest::proptest! {
        #[test]
        fn any_size_text_parses_or_errors_without_panicking(text in ".{0,24}") {
            let _ = text.parse::<ByteSize>();
        }

        #[test]
        fn mebibytes_parse_exactly(n in 0u64..(1 << 40)) {
            proptest::prop_assert_eq!(format!("{n}MiB").parse::<ByteSize>().unwrap(), ByteSize(n << 20));
            proptest::prop_assert_eq!(format!("{n}").parse::<ByteSize>().unwrap(), ByteSize(n));
        }

        #[test]
        fn any_config_text_parses_or_names_a_line(text in "[a-z_ =\"0-9\n\\[\\]]{0,80}") {
            if let Err(error) = common_config::parse::<FileConfig>(Path::new("p.toml"), &text) {
                proptest::prop_assert!(error.to_string().starts_with("p.toml:"));
            }
        }
    }
}
