//! How a test whose prerequisite is missing says so: it records one line and returns, instead of passing
//! silently.
//!
//! A test states what it needs in one line at its top (or before the part that needs it):
//! ```no_run
//! use metalfleet_skip::{require, root, tools};
//!
//! fn netns_router_forwards() -> Result<(), String> {
//!     require!(root(), tools(&["ip", "nft", "dnsmasq"]));
//!     // ... the test proper ...
//!     Ok(())
//! }
//! ```
//! When a check finds something missing, [`require!`] writes `METALFLEET-SKIP: <test>: <reason>` to stderr,
//! appends the same line to the file named by [`LOG_ENV`] (when set) and returns from the test (`()` or
//! `Ok(())`). `scripts/test` points [`LOG_ENV`] at a fresh file, prints the skips grouped by reason at the end,
//! and as root fails the run for any skip outside its short allow-list. The test is named as nextest names it,
//! `<package>::<binary> <path>`, from the test thread's name.
//!
//! Checks return `Option<Missing>` (`None`: present), so a test or a harness can combine them with `or_else`.

#![forbid(unsafe_code)]

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The environment variable naming the file every skip line is appended to.
pub const LOG_ENV: &str = "METALFLEET_SKIP_LOG";

/// The start of every skip line, on stderr and in the log.
pub const PREFIX: &str = "METALFLEET-SKIP: ";

/// A prerequisite that is missing, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(String);

impl Missing {
    /// A missing prerequisite, in words: what is missing and how to get it (one line).
    pub fn new(reason: impl Into<String>) -> Self {
        Missing(reason.into().replace(['\n', '\r'], " "))
    }

    pub fn reason(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `None` when this process runs as root (network namespaces, nftables, tmpfs mounts, port 68).
pub fn root() -> Option<Missing> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false);
    (!root).then(|| Missing::new("not root (run as root, as CI does)"))
}

/// `None` when every program in `names` is on `PATH`.
pub fn tools(names: &[&str]) -> Option<Missing> {
    let missing: Vec<&str> = names.iter().copied().filter(|name| !on_path(name)).collect();
    (!missing.is_empty())
        .then(|| Missing::new(format!("{} not installed (scripts/test installs them as root)", missing.join(", "))))
}

/// `None` when `python` (a program on `PATH` or a path) can `import module`; `hint` says how to get it.
pub fn python_module(python: &str, module: &str, hint: &str) -> Option<Missing> {
    let imports = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    (!imports).then(|| Missing::new(format!("{python} cannot import {module} ({hint})")))
}

/// `None` when `path` is a directory; `what` names it in the reason.
pub fn dir(path: &Path, what: &str) -> Option<Missing> {
    (!path.is_dir()).then(|| Missing::new(format!("{what} absent ({})", path.display())))
}

/// Returns from the calling test when a check finds a prerequisite missing, after recording the skip.
///
/// Takes one or more `Option<Missing>` expressions, evaluated in order until one is `Some`. The calling function
/// returns `()` or `Ok(())` (any `Result<(), E>`); see [`Skipped`]. `require!(@log Some(path); checks)` records
/// into `path` instead of [`LOG_ENV`]'s file: this crate's own tests, whose skips are not the run's.
#[macro_export]
macro_rules! require {
    ($($check:expr),+ $(,)?) => {
        $crate::require!(@log $crate::log_from_env(); $($check),+)
    };
    (@log $log:expr; $($check:expr),+) => {
        $(
            if let ::std::option::Option::Some(missing) = $check {
                $crate::record(
                    $log.as_deref(),
                    &$crate::test_name(env!("CARGO_PKG_NAME"), env!("CARGO_CRATE_NAME")),
                    &missing,
                );
                return $crate::Skipped::skipped();
            }
        )+
    };
}

/// Records that part of the calling test cannot run and returns `false` then, `true` when it can: for a test
/// that checks what it can everywhere and more where a prerequisite is present.
#[macro_export]
macro_rules! part {
    ($check:expr) => {
        match $check {
            ::std::option::Option::Some(missing) => {
                $crate::record(
                    $crate::log_from_env().as_deref(),
                    &$crate::test_name(env!("CARGO_PKG_NAME"), env!("CARGO_CRATE_NAME")),
                    &missing,
                );
                false
            }
            ::std::option::Option::None => true,
        }
    };
}

/// What a skipped test returns: `()`, or `Ok(())` for a test that returns a `Result`.
pub trait Skipped {
    fn skipped() -> Self;
}

impl Skipped for () {
    fn skipped() -> Self {}
}

impl<E> Skipped for Result<(), E> {
    fn skipped() -> Self {
        Ok(())
    }
}

/// The skip log named by [`LOG_ENV`], if any.
#[doc(hidden)]
pub fn log_from_env() -> Option<std::path::PathBuf> {
    std::env::var_os(LOG_ENV).filter(|v| !v.is_empty()).map(Into::into)
}

/// The running test as nextest names it: `package::binary path::to::test` (the test thread carries the path).
#[doc(hidden)]
pub fn test_name(package: &str, binary: &str) -> String {
    let thread = std::thread::current();
    let test = thread.name().filter(|n| *n != "main").unwrap_or("<unnamed test thread>");
    format!("{package}::{binary} {test}")
}

/// Prints the skip line to stderr and appends it to `log`. A log that cannot be written fails the test: a skip
/// that is not counted is the silent pass this crate exists to prevent.
#[doc(hidden)]
pub fn record(log: Option<&Path>, test: &str, missing: &Missing) {
    let line = line(test, missing);
    eprintln!("{line}");
    if let Some(log) = log {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            // One write of one whole line: O_APPEND keeps lines from concurrent test processes apart.
            .and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()));
        if let Err(error) = appended {
            panic!("cannot record the skip in {} ({LOG_ENV}): {error}", log.display());
        }
    }
}

/// One skip line: `METALFLEET-SKIP: <test>: <reason>`.
pub fn line(test: &str, missing: &Missing) -> String {
    format!("{PREFIX}{test}: {missing}")
}

/// Splits a skip line back into the test and the reason.
pub fn parse(line: &str) -> Option<(&str, &str)> {
    line.strip_prefix(PREFIX)?.split_once(": ")
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| is_executable(&dir.join(name))))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(log: &Path) -> Vec<String> {
        std::fs::read_to_string(log).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// Returns `()` after the first missing check, or reaches the end (`None` in `reached`).
    fn unit_test(log: &Path, checks: [Option<Missing>; 2], reached: &mut bool) {
        let [first, second] = checks;
        require!(@log Some(log); first, second);
        *reached = true;
    }

    fn result_test(log: &Path, check: Option<Missing>) -> Result<u8, String> {
        // A `Result<(), E>` test; the `u8` is returned only when nothing is missing.
        fn inner(log: &Path, check: Option<Missing>) -> Result<(), String> {
            require!(@log Some(log); check);
            Err("reached the end".into())
        }
        inner(log, check).map(|()| 0)
    }

    #[test]
    fn a_missing_prerequisite_is_recorded_with_the_test_name_and_returns() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skips.log");
        let mut reached = false;
        unit_test(&log, [None, Some(Missing::new("no frobnicator\n(apt-get install frob)"))], &mut reached);
        assert!(!reached, "the test returned at the missing prerequisite");
        assert_eq!(result_test(&log, Some(Missing::new("not root"))), Ok(0));
        let recorded = lines(&log);
        let test =
            "metalfleet-skip::metalfleet_skip tests::a_missing_prerequisite_is_recorded_with_the_test_name_and_returns";
        assert_eq!(
            recorded,
            [
                format!("METALFLEET-SKIP: {test}: no frobnicator (apt-get install frob)"),
                format!("METALFLEET-SKIP: {test}: not root"),
            ]
        );
        assert_eq!(parse(&recorded[1]), Some((test, "not root")));
    }

    #[test]
    fn nothing_is_recorded_when_every_prerequisite_is_present() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skips.log");
        let mut reached = false;
        unit_test(&log, [None, None], &mut reached);
        assert!(reached);
        assert_eq!(result_test(&log, None), Err("reached the end".into()));
        assert!(!log.exists(), "no skip, no log file");
    }

    #[test]
    fn the_checks_see_what_this_host_has() {
        assert_eq!(tools(&["sh"]), None);
        let missing = tools(&["sh", "no-such-tool-mfl", "nor-this-one-mfl"]).unwrap();
        assert!(missing.reason().starts_with("no-such-tool-mfl, nor-this-one-mfl not installed"), "{missing}");
        assert_eq!(dir(Path::new("/"), "the root"), None);
        assert!(dir(Path::new("/no/such/dir"), "fixtures").is_some());
        let python = python_module("/no/such/python", "maas.client", "pip install python-libmaas").unwrap();
        assert_eq!(python.reason(), "/no/such/python cannot import maas.client (pip install python-libmaas)");
        let uid = std::fs::read_to_string("/proc/self/status").unwrap();
        let is_root = uid.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
        assert_eq!(root().is_none(), is_root);
    }
}
