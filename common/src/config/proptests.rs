//! Property tests for the config parser: hostile text never panics, errors point inside the text, and a
//! generated valid config reads back the values it was written with.

use std::path::Path;

use proptest::prelude::*;

use super::*;

#[derive(Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Sample {
    name: String,
    port: u16,
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    limits: Option<Limits>,
}

#[derive(Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    ratio: f64,
    count: i64,
}

/// A TOML basic string holding `text` exactly.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Checks the invariants every parse error keeps: the position is inside the text and the path is named.
fn check_error(text: &str, error: &Error) -> Result<(), TestCaseError> {
    match error {
        Error::Invalid { path, line, column, .. } => {
            prop_assert_eq!(path.as_path(), Path::new("hostile.toml"));
            prop_assert!(*line >= 1 && *line <= text.split('\n').count(), "line {} of {:?}", line, text);
            prop_assert!(*column >= 1);
            prop_assert!(error.to_string().starts_with("hostile.toml:"));
        }
        other => prop_assert!(false, "parse gave a non-parse error: {other}"),
    }
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        if let Err(error) = parse::<Sample>(Path::new("hostile.toml"), &text) {
            check_error(&text, &error)?;
        }
    }

    #[test]
    fn toml_like_text_never_panics(text in "[a-z_. =\"'0-9\n\\[\\]{},#é\u{1F600}\\\\-]{0,120}") {
        if let Err(error) = parse::<Sample>(Path::new("hostile.toml"), &text) {
            check_error(&text, &error)?;
        }
        let _ = parse::<toml::Table>(Path::new("hostile.toml"), &text);
    }

    #[test]
    fn arbitrary_bytes_read_lossily_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(error) = parse::<Sample>(Path::new("hostile.toml"), &text) {
            check_error(&text, &error)?;
        }
    }

    #[test]
    fn generated_config_reads_back_the_same_values(
        name in "\\PC{0,30}",
        port in any::<u16>(),
        enabled in any::<bool>(),
        tags in proptest::collection::vec("\\PC{0,10}", 0..4),
        limits in proptest::option::of((-1.0e12f64..1.0e12, any::<i64>())),
    ) {
        let mut text = format!("name = {}\nport = {port}\nenabled = {enabled}\n", quoted(&name));
        let list: Vec<String> = tags.iter().map(|t| quoted(t)).collect();
        text.push_str(&format!("tags = [{}]\n", list.join(", ")));
        if let Some((ratio, count)) = limits {
            // `{:?}` always writes a decimal point or exponent, so TOML reads a float back.
            text.push_str(&format!("\n[limits]\nratio = {ratio:?}\ncount = {count}\n"));
        }
        let parsed = parse::<Sample>(Path::new("generated.toml"), &text)
            .map_err(|e| TestCaseError::fail(format!("{e} in {text:?}")))?;
        let expected = Sample {
            name,
            port,
            enabled,
            tags,
            limits: limits.map(|(ratio, count)| Limits { ratio, count }),
        };
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line(key in "[a-z]{3,12}", blank_lines in 0usize..5) {
        prop_assume!(!["name", "port", "enabled", "tags", "limits"].contains(&key.as_str()));
        let text = format!("name = \"x\"\nport = 1\n{}{key} = 1\n", "\n".repeat(blank_lines));
        let error = parse::<Sample>(Path::new("hostile.toml"), &text).unwrap_err();
        let message = error.to_string();
        prop_assert!(message.contains(&format!("key `{key}`")), "{}", message);
        prop_assert!(message.starts_with(&format!("hostile.toml:{}:", 3 + blank_lines)), "{}", message);
    }
}
