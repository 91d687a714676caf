//! fleetctl's one way to the terminal: tables, lines, documents and JSON, every outside string made safe.
//!
//! Strings that came from an agent, MAAS or a file may hold anything: newlines that would forge a table row,
//! ANSI and OSC escape sequences that would repaint the operator's terminal, NUL, 100 KB of text. Everything
//! fleetctl prints goes through [`Output`], and the only things it prints are
//! - a [`Text`]: [`Table`]s and lines, where every control character of every cell and line is shown visibly
//!   ([`escape`]) and table cells are cut to a width cap with a [`TRUNCATED`] marker ([`clip`]);
//! - JSON, whole and exact (serde escapes C0; [`Output::json`] also writes DEL, C1 and the bidi controls as
//!   `\uXXXX`, so a JSON document is safe on a terminal too and still parses back to the original string);
//! - a document (TOML, Markdown) the coordinator rendered, with its line breaks kept and every other control
//!   character shown visibly.
//!
//! Formatting never panics on any input: no `{:width$}` with a data-dependent width (Rust's format width is a
//! `u16`; a 70,000-character hostname once made `status` panic with "Formatting argument out of range"), and
//! comfy-table only ever sees cells within their cap.
//!
//! A closed stdout (`fleetctl status | head -0`) is not a failure: Rust ignores SIGPIPE, so the write returns
//! `EPIPE`, which [`Output`] reports as [`Error::Closed`]; fleetctl ends with exit 0 and prints nothing more.
//!
//! This module knows nothing about the coordinator or the wire (std, serde_json and comfy-table only).

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};

use comfy_table::{ContentArrangement, presets};
use serde_json::Value;

/// The width cap, in characters after escaping, of a table cell holding a name or an id (hostnames, system
/// ids, kinds, states, times). RFC 1123 hostnames are at most 63 characters, so a valid one is never cut.
pub const NAME_WIDTH: usize = 64;

/// The width cap of a table column of free text (messages, reasons, arguments): wide enough for a sentence,
/// narrow enough that a row still fits a wide terminal. JSON output has the whole text.
pub const TEXT_WIDTH: usize = 160;

/// Ends a value that was cut to fit its column.
pub const TRUNCATED: char = '…';

/// What the operator asked for with `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    /// Only `report` has a Markdown form; other commands print their table.
    Markdown,
}

/// Why output could not be written.
#[derive(Debug)]
pub enum Error {
    /// The reader went away (`| head`, a closed pipe): a normal end, not a failure.
    Closed,
    /// Any other write failure (a full disk behind a redirection, say).
    Write(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Closed => f.write_str("the output was closed by its reader"),
            Error::Write(error) => write!(f, "cannot write the output: {error}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Closed => None,
            Error::Write(error) => Some(error),
        }
    }
}

impl From<io::Error> for Error {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::BrokenPipe { Error::Closed } else { Error::Write(error) }
    }
}

/// Where fleetctl's results go (stdout), in the format the operator asked for.
pub struct Output<W: Write = io::StdoutLock<'static>> {
    format: Format,
    out: W,
}

impl Output {
    /// Output to this process's stdout, locked once for the whole command.
    pub fn stdout(format: Format) -> Self {
        Output { format, out: io::stdout().lock() }
    }
}

impl<W: Write> Output<W> {
    pub fn new(format: Format, out: W) -> Self {
        Output { format, out }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// True when the operator asked for JSON.
    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// The writer, for tests.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Prints tables and lines, each value escaped.
    ///
    /// # Errors
    /// [`Error::Closed`] when the reader went away.
    pub fn text(&mut self, text: &Text) -> Result<(), Error> {
        self.write(&text.render())
    }

    /// Prints one line, escaped as a whole (a newline inside it is shown as `\n`).
    ///
    /// # Errors
    /// [`Error::Closed`] when the reader went away.
    pub fn line(&mut self, line: impl fmt::Display) -> Result<(), Error> {
        let mut text = escape(&line.to_string()).into_owned();
        text.push('\n');
        self.write(&text)
    }

    /// Prints one JSON document, pretty.
    ///
    /// # Errors
    /// [`Error::Closed`] when the reader went away.
    pub fn json(&mut self, value: &Value) -> Result<(), Error> {
        let mut text = json_pretty(value);
        text.push('\n');
        self.write(&text)
    }

    /// Prints one JSON document on one line (a stream: events, progress).
    ///
    /// # Errors
    /// [`Error::Closed`] when the reader went away.
    pub fn json_line(&mut self, value: &Value) -> Result<(), Error> {
        let mut text = json_compact(value);
        text.push('\n');
        self.write(&text)
    }

    /// Prints a document the coordinator rendered (a TOML plan, a Markdown report): line breaks are kept, every
    /// other control character is shown visibly.
    ///
    /// # Errors
    /// [`Error::Closed`] when the reader went away.
    pub fn document(&mut self, text: &str) -> Result<(), Error> {
        let mut safe: String = text.split('\n').map(escape).collect::<Vec<_>>().join("\n");
        if !safe.ends_with('\n') {
            safe.push('\n');
        }
        self.write(&safe)
    }

    /// Writes and flushes, so `--follow` output reaches a pipe at once.
    fn write(&mut self, text: &str) -> Result<(), Error> {
        self.out.write_all(text.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }
}

/// A note for the operator on stderr (progress, prompts, errors), escaped line by line; a closed stderr is
/// ignored, since there is nobody left to tell.
pub fn note(text: impl fmt::Display) {
    let text = text.to_string();
    let safe: Vec<Cow<'_, str>> = text.split('\n').map(escape).collect();
    let _ = writeln!(io::stderr().lock(), "{}", safe.join("\n"));
}

/// Lines and tables, printed in order by [`Output::text`].
#[derive(Debug, Clone, Default)]
pub struct Text {
    blocks: Vec<Block>,
}

#[derive(Debug, Clone)]
enum Block {
    Line(String),
    Table(Table),
}

impl Text {
    pub fn new() -> Self {
        Text::default()
    }

    /// A text of one line.
    pub fn of(line: impl fmt::Display) -> Self {
        let mut text = Text::new();
        text.line(line);
        text
    }

    /// Adds one line; it is escaped as a whole when printed, so whatever it holds stays one line.
    pub fn line(&mut self, line: impl fmt::Display) -> &mut Self {
        self.blocks.push(Block::Line(line.to_string()));
        self
    }

    pub fn table(&mut self, table: Table) -> &mut Self {
        self.blocks.push(Block::Table(table));
        self
    }

    /// Adds every block of `other`.
    pub fn append(&mut self, other: Text) -> &mut Self {
        self.blocks.extend(other.blocks);
        self
    }

    /// The text as the terminal gets it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for block in &self.blocks {
            match block {
                Block::Line(line) => out.push_str(&escape(line)),
                Block::Table(table) => out.push_str(&table.render()),
            }
            out.push('\n');
        }
        out
    }
}

/// A table of escaped cells, each cut to its column's cap; no borders, columns separated by spaces.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    caps: Vec<usize>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose columns all hold names ([`NAME_WIDTH`]); see [`Table::wide`] for free text.
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            caps: vec![NAME_WIDTH; header.len()],
            rows: vec![],
        }
    }

    /// Gives the named columns the [`TEXT_WIDTH`] cap.
    pub fn wide(mut self, columns: &[&str]) -> Self {
        for (header, cap) in self.header.iter().zip(&mut self.caps) {
            if columns.contains(&header.as_str()) {
                *cap = TEXT_WIDTH;
            }
        }
        self
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn row<S: AsRef<str>>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Self {
        let mut row: Vec<String> =
            cells.into_iter().zip(&self.caps).map(|(cell, cap)| clip(cell.as_ref(), *cap).into_owned()).collect();
        row.resize(self.header.len(), String::new());
        self.rows.push(row);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines, without a final newline.
    pub fn render(&self) -> String {
        let mut table = comfy_table::Table::new();
        table.load_preset(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled);
        table.set_header(self.header.iter().map(|h| clip(h, NAME_WIDTH).into_owned()));
        for row in &self.rows {
            table.add_row(row.clone());
        }
        table.to_string()
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// True for what must never reach a terminal raw: control characters (C0, DEL, C1: NUL, tab, CR, LF, ESC of
/// ANSI and OSC sequences, the one-byte CSI U+009B) and the Unicode controls that move or reorder text
/// (bidi overrides and isolates, the line and paragraph separators).
pub fn is_hazard(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every [hazard](is_hazard) shown visibly: `\0`, `\t`, `\n`, `\r`, `\x1b` (other C0 and DEL),
/// `\u{9b}` (C1 and the Unicode controls). Escaping is idempotent: the result holds no hazard, so escaping it
/// again changes nothing (a backslash is left as it is).
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_hazard) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// `s` escaped and cut to at most `cap` characters, the last one [`TRUNCATED`] when anything was cut; an
/// escape sequence is never cut in half.
pub fn clip(s: &str, cap: usize) -> Cow<'_, str> {
    let cap = cap.max(1);
    let escaped = escape(s);
    if escaped.chars().count() <= cap {
        return escaped;
    }
    let mut out = String::new();
    let mut width = 0;
    let mut piece = String::new();
    for c in s.chars() {
        piece.clear();
        push_escaped(&mut piece, c);
        let len = piece.chars().count();
        if width + len > cap - 1 {
            break;
        }
        out.push_str(&piece);
        width += len;
    }
    out.push(TRUNCATED);
    Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    use fmt::Write as _;
    match c {
        '\0' => out.push_str("\\0"),
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        c if (c as u32) < 0x20 || c == '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if is_hazard(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// JSON text, pretty, safe on a terminal (see [`json_safe`]).
pub fn json_pretty(value: &Value) -> String {
    json_safe(serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_string()))
}

/// JSON text on one line, safe on a terminal (see [`json_safe`]).
pub fn json_compact(value: &Value) -> String {
    json_safe(value.to_string())
}

/// serde_json escapes C0 inside strings but writes DEL, C1 and the bidi controls raw; this writes them as `\uXXXX`
/// too. Outside strings JSON is ASCII with `\n` and spaces between tokens (kept), so the document still parses to
/// the same value.
fn json_safe(text: String) -> String {
    let unsafe_char = |c: char| c != '\n' && is_hazard(c);
    if !text.chars().any(unsafe_char) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            use fmt::Write as _;
            // Every hazard is in the Basic Multilingual Plane, so one \u escape holds it.
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
