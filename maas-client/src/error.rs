//! [`Error`]: every way a MAAS call fails, classified by MAAS's answer, each naming the op and the machine.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The machine (or other object) a failed call was about, printed as ` on machine <id>` when known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject(pub Option<String>);

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(id) => write!(f, " on machine {id}"),
            None => Ok(()),
        }
    }
}

/// A failed MAAS call. `op` is the client method's name (e.g. `deploy`), `machine` the system_id or hostname.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to MAAS at {url} ({op}{machine}): {source}; check that MAAS runs and [maas] url is right")]
    Connect {
        op: &'static str,
        machine: Subject,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("MAAS at {url} did not answer {op}{machine} within {timeout:?}; it may be overloaded, try again later")]
    Timeout { op: &'static str, machine: Subject, url: String, timeout: Duration },

    #[error("MAAS rejected the API key for {op} (401: {message}); check [maas] api_key_file and that the key exists")]
    Unauthorized { op: &'static str, message: String },

    #[error(
        "MAAS refused {op}{machine} (403 forbidden{}); the API key's user lacks the permission or the machine is locked",
        colon(message)
    )]
    Forbidden { op: &'static str, machine: Subject, message: String },

    #[error("MAAS has no {what} ({op}, 404: {message})")]
    NotFound { op: &'static str, what: String, message: String },

    #[error("MAAS refused {op}{machine} in its current state (409: {message})")]
    Conflict { op: &'static str, machine: Subject, message: String },

    #[error("MAAS rejected the parameters of {op}{machine} (400: {}); fix the request", bad_request(fields, message))]
    BadRequest { op: &'static str, machine: Subject, fields: BTreeMap<String, Vec<String>>, message: String },

    #[error("MAAS is unavailable for {op}{machine} (503: {message}); retry later")]
    Unavailable { op: &'static str, machine: Subject, message: String, retry_after: Option<Duration> },

    #[error("MAAS failed {op}{machine} with HTTP {status}: {message}")]
    Server { op: &'static str, machine: Subject, status: u16, message: String },

    #[error("cannot read MAAS's answer to {op}{machine} ({source}); the MAAS version may be unsupported")]
    Decode {
        op: &'static str,
        machine: Subject,
        #[source]
        source: serde_json::Error,
    },

    #[error("lost the connection to MAAS at {url} during {op}{machine}: {source}")]
    Transport {
        op: &'static str,
        machine: Subject,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("invalid MAAS API key file {}: {reason}", path.display())]
    ApiKey { path: PathBuf, reason: String },

    #[error("cannot build the MAAS HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

fn colon(message: &str) -> String {
    if message.is_empty() { String::new() } else { format!(": {message}") }
}

fn bad_request(fields: &BTreeMap<String, Vec<String>>, message: &str) -> String {
    if fields.is_empty() {
        return message.to_owned();
    }
    fields.iter().map(|(field, msgs)| format!("{field}: {}", msgs.join(" "))).collect::<Vec<_>>().join("; ")
}

impl Error {
    /// True when the same request may succeed if sent again later: no connection, a timeout, a 503, a 502/504,
    /// or the connection dropped mid-answer. A 4xx is never retryable: MAAS will say the same again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Timeout { .. } | Error::Unavailable { .. } | Error::Transport { .. } => true,
            Error::Server { status, .. } => matches!(status, 502 | 504),
            _ => false,
        }
    }

    /// The URL the failed request went to, when the failure was reaching MAAS at all.
    pub fn url(&self) -> Option<&str> {
        match self {
            Error::Connect { url, .. } | Error::Timeout { url, .. } | Error::Transport { url, .. } => Some(url),
            _ => None,
        }
    }

    /// The `Retry-After` MAAS sent with a 503, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status MAAS answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Unauthorized { .. } => Some(401),
            Error::Forbidden { .. } => Some(403),
            Error::NotFound { .. } => Some(404),
            Error::Conflict { .. } => Some(409),
            Error::BadRequest { .. } => Some(400),
            Error::Unavailable { .. } => Some(503),
            Error::Server { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The name of the client method that failed, when the error comes from a call.
    pub fn op(&self) -> Option<&'static str> {
        match self {
            Error::Connect { op, .. }
            | Error::Timeout { op, .. }
            | Error::Unauthorized { op, .. }
            | Error::Forbidden { op, .. }
            | Error::NotFound { op, .. }
            | Error::Conflict { op, .. }
            | Error::BadRequest { op, .. }
            | Error::Unavailable { op, .. }
            | Error::Server { op, .. }
            | Error::Decode { op, .. }
            | Error::Transport { op, .. } => Some(op),
            Error::ApiKey { .. } | Error::Build(_) => None,
        }
    }

    /// MAAS's own text (or the joined field messages of a 400), when MAAS answered.
    pub fn maas_message(&self) -> Option<String> {
        match self {
            Error::Unauthorized { message, .. }
            | Error::Forbidden { message, .. }
            | Error::NotFound { message, .. }
            | Error::Conflict { message, .. }
            | Error::Unavailable { message, .. }
            | Error::Server { message, .. } => Some(message.clone()),
            Error::BadRequest { fields, message, .. } => Some(bad_request(fields, message)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_carries_op_machine_and_maas_text() {
        let e = Error::Conflict {
            op: "deploy",
            machine: Subject(Some("4y3h7n".into())),
            message: "Can't deploy a machine that is in the 'Deployed' state".into(),
        };
        let text = e.to_string();
        assert!(text.contains("deploy on machine 4y3h7n"), "{text}");
        assert!(text.contains("'Deployed' state"), "{text}");
        assert!(!e.is_retryable());
        assert_eq!(e.status(), Some(409));
    }

    #[test]
    fn bad_request_lists_fields() {
        let mut fields = BTreeMap::new();
        fields.insert(
            "dhcp_on".to_owned(),
            vec!["dhcp can only be turned on when a dynamic IP range is defined.".into()],
        );
        let e = Error::BadRequest { op: "update_vlan", machine: Subject(None), fields, message: String::new() };
        assert!(e.to_string().contains("dhcp_on: dhcp can only be turned on"), "{e}");
    }

    #[test]
    fn retryable_classes() {
        let unavailable =
            Error::Unavailable { op: "read", machine: Subject(None), message: String::new(), retry_after: None };
        assert!(unavailable.is_retryable());
        let s502 = Error::Server { op: "x", machine: Subject(None), status: 502, message: String::new() };
        let s500 = Error::Server { op: "x", machine: Subject(None), status: 500, message: String::new() };
        assert!(s502.is_retryable());
        assert!(!s500.is_retryable());
        let timeout = Error::Timeout { op: "x", machine: Subject(None), url: "u".into(), timeout: Duration::ZERO };
        assert!(timeout.is_retryable());
        assert!(!Error::Unauthorized { op: "x", message: String::new() }.is_retryable());
    }
}
