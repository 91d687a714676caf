//! Loading TOML config files into typed structs, with errors a person can act on.
//!
//! Every binary has one `Config` with `#[serde(deny_unknown_fields)]`; this module turns
//! serde's complaint into `FILE:LINE:COLUMN: key `a.b`: what is wrong`, and gives each
//! binary one way to read `METALFLEET_*` variables that tests can replace.
//! [`bounds`] does the same for values that parse but are out of bounds.

pub mod bounds;
#[cfg(test)]
mod proptests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a config could not be loaded. Every variant is a usage error (exit 64).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}; check the path given to --config")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {key_part}{message}", key_part = key.as_deref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Invalid { path: PathBuf, line: usize, column: usize, key: Option<String>, message: String },
    #[error("{source_name}: {message}")]
    Value { source_name: String, message: String },
    /// A key whose value is not written in the file (a default that does not fit a value that is).
    #[error("{path_part}key `{key}`: {message}", path_part = path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Key { path: Option<PathBuf>, key: String, message: String },
    /// More than one problem, each on its own line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<Error>),
}

impl Error {
    /// A value error from an environment variable or flag, named after where it came from.
    pub fn value(source_name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Value { source_name: source_name.into(), message: message.into() }
    }
}

/// Reads and parses `path`. See [`parse`].
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
    parse(path, &text)
}

/// Parses `text` (the content of `path`) into `T`, naming line, column and key on failure.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, Error> {
    toml::from_str(text).map_err(|error| {
        let offset = error.span().map(|span| span.start).unwrap_or(0).min(text.len());
        let (line, column) = line_and_column(text, offset);
        Error::Invalid {
            path: path.to_owned(),
            line,
            column,
            key: key_at(text, offset, error.span().is_some()),
            message: tidy_message(error.message()),
        }
    })
}

/// The prefix of every variable metalfleet reads; [`reject_empty`] checks all of them.
pub const ENV_PREFIX: &str = "METALFLEET_";

/// Where `METALFLEET_*` settings come from: the process environment in production, a map in tests.
pub trait Env {
    /// The variable's value; `None` when it is unset or blank. Call [`reject_empty`] first, so that a blank
    /// `METALFLEET_*` variable is an error rather than silently meaning "unset".
    fn var(&self, name: &str) -> Option<String>;
    /// The `METALFLEET_*` variables that are set but empty (or only whitespace), sorted.
    fn blank_vars(&self) -> Vec<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }

    fn blank_vars(&self) -> Vec<String> {
        let mut names: Vec<String> = std::env::vars_os()
            .filter_map(|(name, value)| {
                let name = name.into_string().ok()?;
                let blank = value.to_str().is_some_and(|v| v.trim().is_empty());
                (name.starts_with(ENV_PREFIX) && blank).then_some(name)
            })
            .collect();
        names.sort();
        names
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.trim().is_empty()).cloned()
    }

    fn blank_vars(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .iter()
            .filter(|(k, v)| k.starts_with(ENV_PREFIX) && v.trim().is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        names.sort();
        names
    }
}

/// Refuses every `METALFLEET_*` variable that is set but empty, naming it: an empty `METALFLEET_STATE_DIR` must
/// not quietly mean the default directory. Every binary calls this before it reads any variable.
///
/// # Errors
/// One [`Error::Value`] per blank variable ([`Error::Several`] for more than one).
pub fn reject_empty(env: &dyn Env) -> Result<(), Error> {
    let mut errors: Vec<Error> = env
        .blank_vars()
        .into_iter()
        .map(|name| {
            Error::value(format!("environment variable {name}"), "is set but empty; unset it or give it a value")
        })
        .collect();
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Several(errors)),
    }
}

/// Parses an environment variable with `FromStr`, naming the variable when the value is bad.
pub fn env_parse<T>(env: &dyn Env, name: &str) -> Result<Option<T>, Error>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match env.var(name) {
        None => Ok(None),
        Some(raw) => raw
            .parse::<T>()
            .map(Some)
            .map_err(|e| Error::value(format!("environment variable {name}={raw:?}"), e.to_string())),
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

/// The dotted key at `offset`: the table header in force there plus the key on that line.
fn key_at(text: &str, offset: usize, has_span: bool) -> Option<String> {
    if !has_span {
        return None;
    }
    let line_start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = text[offset..].find('\n').map(|i| offset + i).unwrap_or(text.len());
    let line = text[line_start..line_end].trim();
    let mut table = String::new();
    for earlier in text[..line_start].lines() {
        let earlier = earlier.trim();
        if earlier.starts_with('[') {
            table = earlier.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
    }
    let key = if line.starts_with('[') {
        return Some(line.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    } else if let Some((key, _)) = line.split_once('=') {
        key.trim().trim_matches('"').to_string()
    } else {
        return if table.is_empty() { None } else { Some(table) };
    };
    Some(if table.is_empty() { key } else { format!("{table}.{key}") })
}

fn tidy_message(message: &str) -> String {
    let message = message.trim().trim_end_matches('.');
    if message.starts_with("unknown field") {
        format!("{message}; remove the key or fix its spelling")
    } else {
        message.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        listen: String,
        #[serde(default)]
        tls: Tls,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Tls {
        #[serde(default)]
        port: u16,
    }

    fn check(text: &str, expected: &str) {
        let error = parse::<Sample>(Path::new("/etc/x.toml"), text).unwrap_err();
        assert_eq!(error.to_string(), expected);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        check(
            "listen = \"a\"\n\n[tls]\nprot = 3\n",
            "/etc/x.toml:4:1: key `tls.prot`: unknown field `prot`, expected `port`; remove the key or fix its spelling",
        );
    }

    #[test]
    fn wrong_type_names_the_key() {
        check(
            "listen = \"a\"\n[tls]\nport = \"x\"\n",
            "/etc/x.toml:3:8: key `tls.port`: invalid type: string \"x\", expected u16",
        );
    }

    #[test]
    fn syntax_error_has_a_line() {
        let error = parse::<Sample>(Path::new("c.toml"), "listen = \n").unwrap_err();
        assert!(error.to_string().starts_with("c.toml:1:"), "{error}");
    }

    #[test]
    fn env_values_name_the_variable() {
        let env: HashMap<String, String> = [("METALFLEET_PORT".to_string(), "x".to_string())].into();
        let error = env_parse::<u16>(&env, "METALFLEET_PORT").unwrap_err();
        assert_eq!(error.to_string(), "environment variable METALFLEET_PORT=\"x\": invalid digit found in string");
        assert_eq!(env_parse::<u16>(&env, "METALFLEET_OTHER").unwrap(), None);
    }

    #[test]
    fn empty_variables_are_named() {
        let env: HashMap<String, String> = [
            ("METALFLEET_STATE_DIR".to_string(), String::new()),
            ("METALFLEET_LISTEN".to_string(), "  ".to_string()),
            ("METALFLEET_INSECURE".to_string(), "true".to_string()),
            ("HOME".to_string(), String::new()),
        ]
        .into();
        let error = reject_empty(&env).unwrap_err().to_string();
        assert_eq!(
            error,
            "environment variable METALFLEET_LISTEN: is set but empty; unset it or give it a value\n\
             environment variable METALFLEET_STATE_DIR: is set but empty; unset it or give it a value"
        );
        assert_eq!(env.var("METALFLEET_STATE_DIR"), None, "a blank value never reaches a setting");
        let fine: HashMap<String, String> = [("METALFLEET_INSECURE".to_string(), "1".to_string())].into();
        reject_empty(&fine).unwrap();
    }
}
