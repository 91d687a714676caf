//! Typed async client for the MAAS 3.5 region API (`/MAAS/api/2.0/`).
//!
//! Its rule: it knows MAAS, not metalfleet, so another project could depend on it. It names no metalfleet domain
//! type and depends on no workspace crate but `metalfleet-common` (for the bounds its [`Config::validate`] reports
//! and the mode check on the key file); maas-sim is only a dev-dependency, and `scripts/test` checks both with
//! `cargo tree`. In metalfleet the coordinator uses it (as `coordinator::maas`) and is the only caller of MAAS.
//!
//! Layout:
//! - [`client`]: [`Client`], one typed async method per MAAS call, with timeouts and safe retries.
//! - [`types`]: what the methods return (machines, subnets, VLANs, boot images, ...) and the request structs.
//! - [`error`]: [`Error`], one variant per class of MAAS answer, each naming the op and the machine.
//! - [`oauth`]: the OAuth 1.0 PLAINTEXT `Authorization` header MAAS expects.
//!
//! Wire and domain types: the response structs in [`types`] are both. They only derive `Deserialize` (never
//! `Serialize`, so they are not an accidental output format), every field is tolerant (`#[serde(default)]`, nulls
//! read as the default, unknown fields ignored), and the fields MAAS encodes loosely are turned into enums at the
//! edge ([`NodeStatus`], [`PowerState`], [`ServiceStatus`], [`IpRangeType`], each with a fallback for values we do
//! not know). Request parameters are separate structs ([`MachineFilter`], [`DeployOptions`], ...) that the client
//! turns into MAAS's form fields itself, so the MAAS spelling of parameters lives in one place.
#![forbid(unsafe_code)]

pub mod client;
pub mod error;
pub mod oauth;
pub mod types;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use metalfleet_common::config::bounds::{Problems, limits};
use serde::Deserialize;
use url::Url;

pub use client::Client;
pub use error::Error;
pub use types::*;

/// The `[maas]` table of a config file (in metalfleet, the coordinator's).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The MAAS URL, e.g. `http://172.16.0.3:5240/MAAS`; `.../MAAS/api/2.0/` and a trailing slash are accepted too.
    pub url: Url,
    /// A file (mode 0600) holding the API key `consumer:token:secret`.
    pub api_key_file: PathBuf,
    /// How long to wait for the TCP connection to MAAS.
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// How long one HTTP request (connect, send, whole response) may take.
    #[serde(with = "humantime_serde", default = "default_request_timeout")]
    pub request_timeout: Duration,
    /// How many times a retryable failure is retried, on the calls where retrying is safe.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The first backoff delay; it doubles on every retry, with jitter, up to `max_backoff`.
    #[serde(with = "humantime_serde", default = "default_retry_backoff")]
    pub retry_backoff: Duration,
    /// The cap on one backoff delay, also applied to a `Retry-After` that MAAS sends with a 503.
    #[serde(with = "humantime_serde", default = "default_max_backoff")]
    pub max_backoff: Duration,
    /// How often the caller polls MAAS (the coordinator's poller: one `GET machines/` per poll); the client
    /// itself never polls, it only checks the bounds.
    #[serde(with = "humantime_serde", default = "default_poll_interval")]
    pub poll_interval: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_retries() -> u32 {
    3
}

fn default_retry_backoff() -> Duration {
    Duration::from_millis(250)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(30)
}

impl Config {
    /// A config with every default, for the given MAAS URL and key file.
    pub fn new(url: Url, api_key_file: PathBuf) -> Self {
        Config {
            url,
            api_key_file,
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
            retries: default_retries(),
            retry_backoff: default_retry_backoff(),
            max_backoff: default_max_backoff(),
            poll_interval: default_poll_interval(),
        }
    }

    /// The API root, always ending in `/api/2.0/`, whichever form of the URL the operator wrote.
    pub fn api_root(&self) -> Url {
        api_root(&self.url)
    }

    /// `[maas]`: an http(s) URL with a host, a key file, and timeouts, retries and intervals that neither spin
    /// nor wait forever (the bounds are listed in `deploy/coordinator.example.toml`).
    pub fn validate(&self, problems: &mut Problems) {
        if !matches!(self.url.scheme(), "http" | "https") || self.url.host_str().is_none_or(str::is_empty) {
            problems.push("url", format!("{} is not an http:// or https:// URL with a host", self.url));
        }
        problems.not_blank("api_key_file", &self.api_key_file.to_string_lossy());
        problems.duration("connect_timeout", self.connect_timeout, limits::MIN_TIMEOUT..=MAX_CONNECT_TIMEOUT);
        problems.duration("request_timeout", self.request_timeout, limits::MIN_TIMEOUT..=MAX_REQUEST_TIMEOUT);
        problems.number("retries", self.retries, 0..=MAX_RETRIES);
        problems.duration("retry_backoff", self.retry_backoff, MIN_BACKOFF..=MAX_BACKOFF);
        problems.duration("max_backoff", self.max_backoff, MIN_BACKOFF..=MAX_BACKOFF);
        if self.retry_backoff > self.max_backoff {
            problems.push("retry_backoff", "is above `max_backoff`; the first delay cannot exceed the cap");
        }
        problems.duration("poll_interval", self.poll_interval, limits::MIN_POLL..=limits::DAY);
    }
}

/// Bounds of `[maas]`: a connection takes seconds at most, a request (a whole machine list) minutes.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);
/// More retries than this only delay the error an operator has to see.
const MAX_RETRIES: u32 = 20;
const MIN_BACKOFF: Duration = Duration::from_millis(1);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Normalises `http://h:5240/MAAS`, `http://h:5240/MAAS/`, `http://h:5240/MAAS/api/2.0` and
/// `http://h:5240/MAAS/api/2.0/` to `http://h:5240/MAAS/api/2.0/`.
pub fn api_root(url: &Url) -> Url {
    let mut root = url.clone();
    root.set_query(None);
    root.set_fragment(None);
    let path = root.path().trim_end_matches('/');
    let base = path.strip_suffix("/api/2.0").unwrap_or(path);
    let new_path = format!("{base}/api/2.0/");
    root.set_path(&new_path);
    root
}

/// A MAAS API key: `consumer_key:token_key:token_secret`. Debug and Display never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    consumer_key: String,
    token_key: String,
    token_secret: String,
}

impl ApiKey {
    /// Parses `consumer:token:secret` (surrounding whitespace, e.g. a trailing newline, is ignored).
    ///
    /// # Errors
    /// A reason in words when the text is not three non-empty parts separated by `:`; it never echoes the text.
    pub fn parse(text: &str) -> Result<ApiKey, String> {
        let parts: Vec<&str> = text.trim().split(':').collect();
        match parts.as_slice() {
            [consumer, token, secret] if !consumer.is_empty() && !token.is_empty() && !secret.is_empty() => {
                Ok(ApiKey {
                    consumer_key: (*consumer).to_owned(),
                    token_key: (*token).to_owned(),
                    token_secret: (*secret).to_owned(),
                })
            }
            _ => Err(format!(
                "expected one line `consumer_key:token_key:token_secret` (three non-empty parts), found {} part(s)",
                parts.len()
            )),
        }
    }

    /// Reads and parses the key file.
    ///
    /// # Errors
    /// [`Error::ApiKey`] naming the file when it cannot be read or does not hold a key.
    pub fn from_file(path: &Path) -> Result<ApiKey, Error> {
        refuse_if_shared(path)?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::ApiKey { path: path.to_owned(), reason: format!("cannot read it ({e})") })?;
        ApiKey::parse(&text).map_err(|reason| Error::ApiKey { path: path.to_owned(), reason })
    }

    pub fn consumer_key(&self) -> &str {
        &self.consumer_key
    }

    pub fn token_key(&self) -> &str {
        &self.token_key
    }

    pub fn token_secret(&self) -> &str {
        &self.token_secret
    }
}

/// Secrets live in files of mode 0600: a key readable by group or others is refused, with the fix.
fn refuse_if_shared(path: &Path) -> Result<(), Error> {
    match metalfleet_common::secret::check_private(path) {
        Err(metalfleet_common::secret::SecretFileError::TooOpen { mode, .. }) => Err(Error::ApiKey {
            path: path.to_owned(),
            reason: format!("it is readable by group or others (mode {mode:04o}); run `chmod 600 {}`", path.display()),
        }),
        // A missing or unreadable file is reported by the read that follows.
        _ => Ok(()),
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_root(input: &str, expected: &str) {
        assert_eq!(api_root(&Url::parse(input).unwrap()).as_str(), expected, "input {input}");
    }

    #[test]
    fn api_root_accepts_every_spelling() {
        let want = "http://172.16.0.3:5240/MAAS/api/2.0/";
        check_root("http://172.16.0.3:5240/MAAS", want);
        check_root("http://172.16.0.3:5240/MAAS/", want);
        check_root("http://172.16.0.3:5240/MAAS/api/2.0", want);
        check_root("http://172.16.0.3:5240/MAAS/api/2.0/", want);
        check_root("http://127.0.0.1:9/", "http://127.0.0.1:9/api/2.0/");
    }

    #[test]
    fn api_key_parses_three_parts() {
        let key = ApiKey::parse("ck:tk:sec\n").unwrap();
        assert_eq!((key.consumer_key(), key.token_key(), key.token_secret()), ("ck", "tk", "sec"));
    }

    #[test]
    fn api_key_rejects_bad_shapes_without_echoing() {
        for bad in ["", "a:b", "a:b:c:d", "a::c", ":b:c", "a:b:"] {
            let reason = ApiKey::parse(bad).unwrap_err();
            assert!(reason.contains("three non-empty parts"), "{bad:?} -> {reason}");
        }
        let reason = ApiKey::parse("topsecret").unwrap_err();
        assert!(!reason.contains("topsecret"));
    }

    #[test]
    fn api_key_is_redacted() {
        let key = ApiKey::parse("consumer:token:hunter2").unwrap();
        assert!(!format!("{key:?}").contains("hunter2"));
        assert!(!format!("{key}").contains("hunter2"));
        assert!(!format!("{key:?}").contains("consumer"));
    }

    #[test]
    fn api_key_file_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maas.key");
        std::fs::write(&path, "only:two").unwrap();
        let err = ApiKey::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("maas.key"), "{err}");
        let missing = ApiKey::from_file(&dir.path().join("nope.key")).unwrap_err();
        assert!(missing.to_string().contains("nope.key"), "{missing}");
    }

    #[test]
    fn config_defaults_and_unknown_keys() {
        let cfg: Config = toml::from_str("url = \"http://127.0.0.1:5240/MAAS\"\napi_key_file = \"/k\"\n").unwrap();
        assert_eq!(cfg.connect_timeout, Duration::from_secs(5));
        assert_eq!(cfg.request_timeout, Duration::from_secs(30));
        assert_eq!(cfg.retries, 3);
        assert_eq!(cfg.poll_interval, Duration::from_secs(30));
        let cfg: Config =
            toml::from_str("url = \"http://h/MAAS\"\napi_key_file = \"/k\"\nrequest_timeout = \"2s\"\nretries = 0\n")
                .unwrap();
        assert_eq!(cfg.request_timeout, Duration::from_secs(2));
        assert_eq!(cfg.retries, 0);
        let err = toml::from_str::<Config>("url = \"http://h/MAAS\"\napi_key_file = \"/k\"\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
