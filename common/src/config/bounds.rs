//! Bounds for configuration values, and errors that point at the value that broke one.
//!
//! Each config section has a `validate(&self, problems: &mut Problems)` beside its struct, in the module that
//! owns the section. It checks its keys with the helpers here ([`Problems::duration`], [`Problems::number`],
//! [`Problems::size`], ...) under the section's name ([`Problems::section`]), so every problem carries its full
//! key path. [`Origins`] then turns the problems into [`Error`]s: a value read from the file is named by file,
//! line, column and key (found through the TOML document's spans), a value set by an environment variable or a
//! flag is named by that variable or flag.

use std::collections::HashMap;
use std::fmt::{self, Display};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{Error, line_and_column};

/// A key path such as `maas.poll_interval`, or one entry of a list, `tls.extra_sans[2]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Table names then the key, as written in the file.
    pub path: Vec<String>,
    /// The entry of a list value, when the problem is one entry.
    pub index: Option<usize>,
}

impl Key {
    /// The key without the list index: what an environment variable or flag sets as a whole.
    fn whole(&self) -> String {
        self.path.join(".")
    }
}

impl Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.whole())?;
        match self.index {
            Some(index) => write!(f, "[{index}]"),
            None => Ok(()),
        }
    }
}

/// One value out of its bounds, by key.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: Key,
    pub message: String,
}

/// The problems a config's `validate()` found, every one of them, each under its full key path.
#[derive(Debug, Default)]
pub struct Problems {
    prefix: Vec<String>,
    found: Vec<Problem>,
}

impl Problems {
    pub fn new() -> Self {
        Problems::default()
    }

    /// Runs `check` with `name` prefixed to every key it reports (`[maas]` → `maas.poll_interval`).
    pub fn section(&mut self, name: &str, check: impl FnOnce(&mut Problems)) {
        self.prefix.push(name.to_string());
        check(self);
        self.prefix.pop();
    }

    /// A problem with `key` (relative to the current section).
    pub fn push(&mut self, key: &str, message: impl Into<String>) {
        let key = self.key(key, None);
        self.found.push(Problem { key, message: message.into() });
    }

    /// A problem with the key `name` taken literally, dots included (a hostname used as a key).
    pub fn push_named(&mut self, name: &str, message: impl Into<String>) {
        let mut path = self.prefix.clone();
        path.push(name.to_string());
        self.found.push(Problem { key: Key { path, index: None }, message: message.into() });
    }

    /// A problem with entry `index` of the list `key`.
    pub fn push_entry(&mut self, key: &str, index: usize, message: impl Into<String>) {
        let key = self.key(key, Some(index));
        self.found.push(Problem { key, message: message.into() });
    }

    /// `value` must lie in `range`, both ends included.
    pub fn duration(&mut self, key: &str, value: Duration, range: RangeInclusive<Duration>) {
        if !range.contains(&value) {
            self.push(
                key,
                format!(
                    "{} is out of range; use {} to {}",
                    show_duration(value),
                    show_duration(*range.start()),
                    show_duration(*range.end())
                ),
            );
        }
    }

    /// `value` (a count, port, percentage, ...) must lie in `range`, both ends included; NaN never does.
    pub fn number<T: PartialOrd + Display>(&mut self, key: &str, value: T, range: RangeInclusive<T>) {
        if !range.contains(&value) {
            self.push(key, format!("{value} is out of range; use {} to {}", range.start(), range.end()));
        }
    }

    /// A size in bytes must lie in `range`, both ends included; the message shows the bounds in IEC units too.
    pub fn size(&mut self, key: &str, value: u64, range: RangeInclusive<u64>) {
        if !range.contains(&value) {
            let (start, end) = (*range.start(), *range.end());
            self.push(
                key,
                format!(
                    "{value} bytes ({}) is out of range; use {start} to {end} bytes ({} to {})",
                    show_size(value),
                    show_size(start),
                    show_size(end)
                ),
            );
        }
    }

    /// A list with `len` entries must have at least one and at most `max`.
    pub fn list_len(&mut self, key: &str, len: usize, max: usize) {
        if len == 0 {
            self.push(key, "must not be empty");
        } else if len > max {
            self.push(key, format!("has {len} entries; at most {max} are allowed"));
        }
    }

    /// Text that must not be empty or blank.
    pub fn not_blank(&mut self, key: &str, value: &str) {
        if value.trim().is_empty() {
            self.push(key, "must not be empty");
        }
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The problems found, in the order they were reported.
    pub fn into_vec(self) -> Vec<Problem> {
        self.found
    }

    fn key(&self, key: &str, index: Option<usize>) -> Key {
        let mut path = self.prefix.clone();
        path.extend(key.split('.').filter(|part| !part.is_empty()).map(str::to_string));
        Key { path, index }
    }
}

/// A config file's path and text, kept after parsing so a later problem can be pointed at its line.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// Reads `path`.
    ///
    /// # Errors
    /// [`Error::Read`] when the file cannot be read.
    pub fn read(path: &Path) -> Result<SourceFile, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
        Ok(SourceFile { path: path.to_owned(), text })
    }

    /// Parses the text into `T`, naming line, column and key on failure (see [`super::parse`]).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a syntax error, an unknown key or a value of the wrong type.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        super::parse(&self.path, &self.text)
    }

    /// The byte offset of the value at `key` (of its list entry, when the key has an index).
    fn offset_of(&self, key: &Key) -> Option<usize> {
        let document = toml::de::DeTable::parse(&self.text).ok()?;
        let (last, tables) = key.path.split_last()?;
        let mut table = document.get_ref();
        for name in tables {
            table = find(table, name)?.get_ref().as_table()?;
        }
        let value = find(table, last)?;
        let entry = key.index.and_then(|index| value.get_ref().as_array()?.get(index));
        Some(entry.unwrap_or(value).span().start)
    }
}

/// Where the values of a config came from: the file (if any), and the keys an environment variable or a flag
/// set, so each problem names the place a person has to change.
#[derive(Debug, Default)]
pub struct Origins {
    file: Option<SourceFile>,
    set_by: HashMap<String, String>,
}

impl Origins {
    /// Values from `file` (or defaults only, without one).
    pub fn new(file: Option<SourceFile>) -> Self {
        Origins { file, set_by: HashMap::new() }
    }

    /// `key` (e.g. `state_dir`) was set by `source`, e.g. `environment variable METALFLEET_STATE_DIR` or
    /// `flag --state-dir`; a later call for the same key wins, as the later source does.
    pub fn set_by(&mut self, key: &str, source: impl Into<String>) {
        self.set_by.insert(key.to_string(), source.into());
    }

    /// Every problem as an error naming its origin: one error, or [`Error::Several`] for more.
    ///
    /// # Errors
    /// When there is at least one problem.
    pub fn check(&self, problems: Problems) -> Result<(), Error> {
        let mut errors: Vec<Error> = problems.into_vec().into_iter().map(|p| self.locate(p)).collect();
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Several(errors)),
        }
    }

    /// One problem as an error naming where its value came from.
    pub fn locate(&self, problem: Problem) -> Error {
        let Problem { key, message } = problem;
        if let Some(source) = self.set_by.get(&key.whole()) {
            return Error::Value { source_name: format!("{source} (key `{key}`)"), message };
        }
        match &self.file {
            Some(file) => match file.offset_of(&key) {
                Some(offset) => {
                    let (line, column) = line_and_column(&file.text, offset.min(file.text.len()));
                    Error::Invalid { path: file.path.clone(), line, column, key: Some(key.to_string()), message }
                }
                None => Error::Key { path: Some(file.path.clone()), key: key.to_string(), message },
            },
            None => Error::Key { path: None, key: key.to_string(), message },
        }
    }
}

fn find<'a, 'i>(table: &'a toml::de::DeTable<'i>, name: &str) -> Option<&'a toml::Spanned<toml::de::DeValue<'i>>> {
    table.iter().find(|(key, _)| key.get_ref().as_ref() == name).map(|(_, value)| value)
}

/// A duration as people write it in the config: `250ms`, `1h 30m`, `0s`.
pub fn show_duration(value: Duration) -> String {
    if value.is_zero() { "0s".to_string() } else { humantime::format_duration(value).to_string() }
}

/// A size in IEC units, exact when it is a whole number of them (`64 MiB`, `1 KiB`, `1000 B`).
pub fn show_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 { format!("{value} {}", UNITS[unit]) } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Bounds shared by the binaries, so the same kind of value has the same limits everywhere.
pub mod limits {
    use std::time::Duration;

    /// One day: no timeout, interval or wait of ours means anything longer (a deploy takes an hour at most).
    pub const DAY: Duration = Duration::from_secs(24 * 3600);
    /// The shortest network timeout: below it even a loopback call on a busy machine fails.
    pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
    /// The shortest polling interval of a loop that asks another service (MAAS, a store) each time.
    pub const MIN_POLL: Duration = Duration::from_millis(100);
    /// A list of names or addresses in a config file longer than this is a mistake.
    pub const MAX_LIST: usize = 1024;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        every: u64,
        #[serde(default)]
        names: Vec<String>,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        port: u16,
    }

    fn file(text: &str) -> SourceFile {
        SourceFile { path: PathBuf::from("/etc/s.toml"), text: text.to_string() }
    }

    /// Validates `text` with `validate` and compares the error's words with `expected`.
    fn check(text: &str, set_by: &[(&str, &str)], validate: impl FnOnce(&mut Problems), expected: &str) {
        let source = file(text);
        let _: Sample = source.parse().unwrap();
        let mut origins = Origins::new(Some(source));
        for (key, source) in set_by {
            origins.set_by(key, *source);
        }
        let mut problems = Problems::new();
        validate(&mut problems);
        assert_eq!(origins.check(problems).unwrap_err().to_string(), expected);
    }

    #[test]
    fn a_value_in_the_file_is_named_by_line_and_key() {
        check(
            "every = 0\n\n[inner]\n# a comment\nport = 0\n",
            &[],
            |p| p.section("inner", |p| p.number("port", 0u16, 1..=65535)),
            "/etc/s.toml:5:8: key `inner.port`: 0 is out of range; use 1 to 65535",
        );
    }

    #[test]
    fn a_list_entry_is_named_by_its_own_line() {
        check(
            "every = 1\nnames = [\n  \"a\",\n  \"\",\n]\n",
            &[],
            |p| p.push_entry("names", 1, "must not be empty"),
            "/etc/s.toml:4:3: key `names[1]`: must not be empty",
        );
    }

    #[test]
    fn dotted_keys_and_inline_tables_are_found() {
        check(
            "every = 1\ninner = { port = 0 }\n",
            &[],
            |p| p.section("inner", |p| p.number("port", 0u16, 1..=65535)),
            "/etc/s.toml:2:18: key `inner.port`: 0 is out of range; use 1 to 65535",
        );
        check(
            "every = 1\ninner.port = 0\n",
            &[],
            |p| p.section("inner", |p| p.number("port", 0u16, 1..=65535)),
            "/etc/s.toml:2:14: key `inner.port`: 0 is out of range; use 1 to 65535",
        );
    }

    #[test]
    fn a_value_from_the_environment_names_the_variable() {
        check(
            "every = 1\n",
            &[("every", "environment variable METALFLEET_EVERY")],
            |p| p.duration("every", Duration::from_micros(10), Duration::from_millis(10)..=limits::DAY),
            "environment variable METALFLEET_EVERY (key `every`): 10us is out of range; use 10ms to 1day",
        );
    }

    #[test]
    fn a_default_value_names_file_and_key_without_a_line() {
        check(
            "every = 1\n",
            &[],
            |p| p.push("missing", "must be below `every`"),
            "/etc/s.toml: key `missing`: must be below `every`",
        );
    }

    #[test]
    fn every_problem_is_reported() {
        check(
            "every = 1\n",
            &[],
            |p| {
                p.size("every", 1 << 40, 1024..=64 << 20);
                p.duration("every", Duration::ZERO, Duration::from_millis(10)..=limits::DAY);
            },
            "/etc/s.toml:1:9: key `every`: 1099511627776 bytes (1 TiB) is out of range; use 1024 to 67108864 bytes \
             (1 KiB to 64 MiB)\n/etc/s.toml:1:9: key `every`: 0s is out of range; use 10ms to 1day",
        );
    }

    #[test]
    fn nan_is_out_of_every_range() {
        let mut problems = Problems::new();
        problems.number("ratio", f64::NAN, 0.0..=100.0);
        assert_eq!(problems.into_vec()[0].message, "NaN is out of range; use 0 to 100");
    }

    #[test]
    fn lists_and_text() {
        let mut problems = Problems::new();
        problems.list_len("a", 0, 3);
        problems.list_len("b", 4, 3);
        problems.list_len("c", 3, 3);
        problems.not_blank("d", "  ");
        let messages: Vec<String> =
            problems.into_vec().into_iter().map(|p| format!("{}: {}", p.key, p.message)).collect();
        assert_eq!(
            messages,
            ["a: must not be empty", "b: has 4 entries; at most 3 are allowed", "d: must not be empty"]
        );
    }
}
