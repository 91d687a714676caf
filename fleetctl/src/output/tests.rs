//! Tests of [`super`]: no input makes formatting panic, leaves a control character in a table, forges a row,
//! or changes a string in JSON.

use proptest::prelude::*;
use serde_json::json;

use super::*;

/// Any string, with control characters, bidi controls and long runs much more likely than in `any::<String>()`.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\x00-\\x1f\\x7f-\\x9f\u{202a}-\u{202e}\u{2066}-\u{2069}\u{2028}a-z\\\\ |…]{0,300}",
        ("[a-z]{0,3}", 60usize..200).prop_map(|(s, n)| s.repeat(n)),
    ]
}

fn no_hazard_but_newlines(text: &str) -> bool {
    text.chars().all(|c| c == '\n' || !is_hazard(c))
}

/// A table of `rows` under the status header, rendered.
fn render(rows: &[Vec<String>]) -> String {
    let mut table = Table::new(&["HOSTNAME", "HEALTH", "MESSAGE"]).wide(&["MESSAGE"]);
    for row in rows {
        table.row(row);
    }
    let mut text = Text::new();
    text.table(table);
    text.render()
}

proptest! {
    #[test]
    fn tables_never_panic_hold_no_control_character_and_keep_one_line_per_row(
        rows in proptest::collection::vec(proptest::collection::vec(hostile(), 0..4), 0..4),
    ) {
        let text = render(&rows);
        prop_assert!(no_hazard_but_newlines(&text), "{text:?}");
        prop_assert_eq!(text.lines().count(), rows.len() + 1, "{:?}", text);
        // A wide character takes two columns, and narrower cells are padded to the widest; still bounded.
        let widest = 3 * (NAME_WIDTH + NAME_WIDTH + TEXT_WIDTH) + 8;
        for line in text.lines() {
            prop_assert!(line.chars().count() <= widest, "{} chars: {line:?}", line.chars().count());
        }
    }

    #[test]
    fn a_line_stays_one_line(s in hostile()) {
        let mut text = Text::new();
        text.line(format!("hostname: {s}"));
        let rendered = text.render();
        prop_assert!(no_hazard_but_newlines(&rendered));
        prop_assert_eq!(rendered.matches('\n').count(), 1);
    }

    #[test]
    fn json_round_trips_the_exact_string_and_is_safe_on_a_terminal(s in hostile()) {
        let value = json!({ "hostname": s, "nested": [s.clone()] });
        for text in [json_pretty(&value), json_compact(&value)] {
            prop_assert!(no_hazard_but_newlines(&text), "{text:?}");
            let back: Value = serde_json::from_str(&text).expect("fleetctl's JSON parses");
            prop_assert_eq!(&back, &value);
        }
        prop_assert!(!json_compact(&value).contains('\n'));
    }

    #[test]
    fn escaping_is_idempotent_and_clipping_respects_the_cap(s in hostile(), cap in 1usize..100) {
        let once = escape(&s).into_owned();
        let twice = escape(&once).into_owned();
        prop_assert_eq!(twice, once.clone());
        let clipped = clip(&s, cap);
        prop_assert!(clipped.chars().count() <= cap);
        prop_assert!(!clipped.chars().any(is_hazard));
        if once.chars().count() <= cap {
            prop_assert_eq!(clipped.as_ref(), once.as_str());
        } else {
            prop_assert!(clipped.ends_with(TRUNCATED));
        }
    }

    #[test]
    fn documents_keep_their_lines_and_nothing_else(s in hostile()) {
        let mut out = Output::new(Format::Table, Vec::new());
        out.document(&s).expect("a Vec takes everything");
        let text = String::from_utf8(out.into_inner()).expect("UTF-8");
        prop_assert!(no_hazard_but_newlines(&text));
        prop_assert_eq!(text.lines().count(), s.split('\n').count() - usize::from(s.ends_with('\n')));
    }
}

#[test]
fn a_newline_in_a_hostname_cannot_forge_a_row() {
    let forged = "evil\nserver2                 healthy";
    let text = render(&[vec![forged.to_string(), "degraded".into(), String::new()]]);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("evil\\nserver2"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("server2")), "{text}");
}

#[test]
fn escape_sequences_are_shown_not_run() {
    let check = |input: &str, expected: &str| assert_eq!(escape(input), expected, "{input:?}");
    check("server1", "server1");
    check("a\nb\r\tc\0", "a\\nb\\r\\tc\\0");
    check("\u{1b}[31mred\u{1b}[0m", "\\x1b[31mred\\x1b[0m");
    check("\u{1b}]0;title\u{7}", "\\x1b]0;title\\x07");
    check("\u{9b}31m\u{7f}", "\\u{9b}31m\\x7f");
    check("abc\u{202e}cba", "abc\\u{202e}cba");
    check("back\\slash", "back\\slash");
}

#[test]
fn values_up_to_the_cap_are_whole_and_longer_ones_are_cut_with_a_marker() {
    let longest = "a".repeat(NAME_WIDTH);
    assert_eq!(clip(&longest, NAME_WIDTH), longest);
    let cut = clip(&"a".repeat(NAME_WIDTH + 1), NAME_WIDTH).into_owned();
    assert_eq!(cut.chars().count(), NAME_WIDTH);
    assert!(cut.ends_with(TRUNCATED));
    // An escape sequence is never cut in half.
    let escapes = clip(&"\u{1b}".repeat(20), 10).into_owned();
    assert_eq!(escapes, "\\x1b\\x1b…");
}

#[test]
fn a_100_kb_value_and_the_longest_allowed_values_fit_a_table() {
    let huge = "x".repeat(100 * 1024);
    let hostname = "h".repeat(63); // the longest RFC 1123 label
    let message = "m".repeat(TEXT_WIDTH);
    let text = render(&[
        vec![huge.clone(), huge.clone(), huge.clone()],
        vec![hostname.clone(), "healthy".into(), message.clone()],
        vec!["\u{1b}".repeat(70_000), "\n".repeat(70_000), "\u{9b}".repeat(70_000)],
    ]);
    assert_eq!(text.lines().count(), 4);
    let widest = text.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(widest <= NAME_WIDTH * 2 + TEXT_WIDTH + 8, "{widest}");
    assert!(text.contains(&hostname) && text.contains(&message), "the longest allowed values are not cut");
    assert!(text.contains(&format!("{}{TRUNCATED}", "x".repeat(NAME_WIDTH - 1))));
}

/// A writer whose reader went away.
struct ClosedPipe;

impl Write for ClosedPipe {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::BrokenPipe))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_closed_pipe_is_a_clean_end() {
    let mut out = Output::new(Format::Table, ClosedPipe);
    assert!(matches!(out.line("x"), Err(Error::Closed)));
    assert!(matches!(out.json(&json!({})), Err(Error::Closed)));
    assert!(matches!(out.text(&Text::of("x")), Err(Error::Closed)));
    let other: Error = io::Error::from(io::ErrorKind::StorageFull).into();
    assert!(matches!(other, Error::Write(_)));
}

#[test]
fn json_escapes_c1_and_del_but_keeps_text_whole() {
    let text = json_compact(&json!({"h": "a\u{9b}b\u{7f}\u{1b}"}));
    assert_eq!(text, r#"{"h":"a\u009bb\u007f\u001b"}"#);
    let pretty = json_pretty(&json!({"h": "x"}));
    assert_eq!(pretty, "{\n  \"h\": \"x\"\n}");
}
