//! The wire layer: form bodies (urlencoded and multipart with per-part base64), OAuth header parsing, responses.

#[cfg(test)]
mod proptests;

use base64::Engine;
use serde_json::Value;

/// Parameters in arrival order; a list is a repeated key, as Django's QueryDict keeps it.
#[derive(Clone, Debug, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// The last value of `key`, as `QueryDict.get` returns it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// Parses `a=1&b=2` (query strings and urlencoded bodies).
    pub fn parse_urlencoded(input: &[u8]) -> Params {
        Params(form_urlencoded::parse(input).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }

    /// `true`/`1`/`yes`/`on` as formencode's StringBool reads them.
    pub fn bool(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"))
    }

    /// A Django form BooleanField: `false` (and empty) is false, any other string, even `0`, is true.
    pub fn django_bool(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| !v.is_empty() && !v.eq_ignore_ascii_case("false"))
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyError {
    #[error("multipart body without a boundary; send Content-Type: multipart/form-data; boundary=...")]
    NoBoundary,
    #[error("malformed multipart body; each part needs headers, a blank line and a closing boundary")]
    Malformed,
}

/// Reads a POST/PUT body according to its content type. Other content types (JSON) give no parameters,
/// as Django's `request.POST` would.
pub fn parse_body(content_type: &str, body: &[u8]) -> Result<Params, BodyError> {
    let lower = content_type.to_ascii_lowercase();
    if lower.starts_with("multipart/form-data") {
        let boundary = content_type
            .split(';')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
            .map(|(_, v)| v.trim().trim_matches('"').to_owned())
            .ok_or(BodyError::NoBoundary)?;
        parse_multipart(&boundary, body)
    } else if lower.starts_with("application/x-www-form-urlencoded") || lower.is_empty() {
        Ok(Params::parse_urlencoded(body))
    } else {
        Ok(Params::default())
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

/// Parses multipart/form-data, decoding `Content-Transfer-Encoding: base64` parts (python-libmaas sends those).
pub fn parse_multipart(boundary: &str, body: &[u8]) -> Result<Params, BodyError> {
    let delim = format!("--{boundary}").into_bytes();
    let mut out = Vec::new();
    // python-libmaas sends a multipart body on every POST, which is empty when there are no parameters.
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Params(out));
    }
    let mut pos = find(body, &delim, 0).ok_or(BodyError::Malformed)? + delim.len();
    // Hostile bodies can end right after a delimiter: every index below is checked, never trusted.
    let rest = |at: usize| body.get(at..).unwrap_or_default();
    loop {
        if rest(pos).starts_with(b"--") {
            return Ok(Params(out));
        }
        let head_start = if rest(pos).starts_with(b"\r\n") { pos + 2 } else { pos + 1 };
        if head_start > body.len() {
            return Err(BodyError::Malformed);
        }
        // A part may have no headers at all (python's email package writes one for an empty form).
        let (head_end, sep) = if rest(head_start).starts_with(b"\r\n") {
            (head_start, 2)
        } else if rest(head_start).starts_with(b"\n") {
            (head_start, 1)
        } else {
            match find(body, b"\r\n\r\n", head_start) {
                Some(i) => (i, 4),
                None => (find(body, b"\n\n", head_start).ok_or(BodyError::Malformed)?, 2),
            }
        };
        let headers = String::from_utf8_lossy(&body[head_start..head_end]).into_owned();
        let next = find(body, &delim, head_end).ok_or(BodyError::Malformed)?;
        let mut content = body.get(head_end + sep..next).ok_or(BodyError::Malformed)?;
        content = content.strip_suffix(b"\r\n").or_else(|| content.strip_suffix(b"\n")).unwrap_or(content);
        let mut name = None;
        let mut base64_encoded = false;
        for line in headers.lines() {
            let Some((k, v)) = line.split_once(':') else { continue };
            let k = k.trim().to_ascii_lowercase();
            if k == "content-disposition" {
                name = v
                    .split(';')
                    .filter_map(|p| p.trim().split_once('='))
                    .find_map(|(k, v)| (k.trim() == "name").then(|| v.trim().trim_matches('"').to_owned()));
            } else if k == "content-transfer-encoding" {
                base64_encoded = v.trim().eq_ignore_ascii_case("base64");
            }
        }
        let value = if base64_encoded {
            let compact: Vec<u8> = content.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            base64::engine::general_purpose::STANDARD.decode(compact).map_err(|_| BodyError::Malformed)?
        } else {
            content.to_vec()
        };
        if let Some(name) = name {
            out.push((name, String::from_utf8_lossy(&value).into_owned()));
        }
        pos = next + delim.len();
    }
}

/// The OAuth parameters of an `Authorization: OAuth ...` header, parsed the way piston does.
#[derive(Debug, Default, PartialEq)]
pub struct OAuthParams {
    pub consumer_key: String,
    pub token: String,
    pub signature: String,
    pub signature_method: String,
    pub timestamp: String,
    pub nonce: String,
    pub version: Option<String>,
}

/// Returns None when the header is not a complete OAuth attempt (the request is then anonymous).
pub fn parse_oauth(header: &str) -> Option<OAuthParams> {
    let required = [
        "oauth_consumer_key",
        "oauth_token",
        "oauth_signature",
        "oauth_signature_method",
        "oauth_timestamp",
        "oauth_nonce",
    ];
    if !required.iter().all(|k| header.contains(k)) {
        return None;
    }
    let body = header.trim().strip_prefix("OAuth").unwrap_or(header).trim();
    let mut p = OAuthParams::default();
    for piece in body.split(',') {
        if piece.contains("realm") {
            continue;
        }
        let Some((k, v)) = piece.split_once('=') else { continue };
        let v = percent_encoding::percent_decode_str(v.trim().trim_matches('"')).decode_utf8_lossy().into_owned();
        match k.trim() {
            "oauth_consumer_key" => p.consumer_key = v,
            "oauth_token" => p.token = v,
            "oauth_signature" => p.signature = v,
            "oauth_signature_method" => p.signature_method = v,
            "oauth_timestamp" => p.timestamp = v,
            "oauth_nonce" => p.nonce = v,
            "oauth_version" => p.version = Some(v),
            _ => {}
        }
    }
    Some(p)
}

/// A response before it becomes an HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// Handlers return `Err` for refusals so `?` can short-cut; both sides are sent as they are.
pub type Reply = Result<Resp, Resp>;

pub const JSON: &str = "application/json; charset=utf-8";
pub const TEXT: &str = "text/plain; charset=utf-8";

impl Resp {
    /// Pretty JSON with MAAS's 4-space indent.
    pub fn json(status: u16, v: &Value) -> Resp {
        let mut buf = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
        serde::Serialize::serialize(v, &mut ser).expect("serialising a Value cannot fail");
        Resp { status, content_type: JSON, body: buf, headers: Vec::new() }
    }

    pub fn ok(v: Value) -> Reply {
        Ok(Resp::json(200, &v))
    }

    pub fn text(status: u16, s: impl Into<String>) -> Resp {
        Resp { status, content_type: TEXT, body: s.into().into_bytes(), headers: Vec::new() }
    }

    pub fn empty(status: u16) -> Resp {
        Resp { status, content_type: TEXT, body: Vec::new(), headers: Vec::new() }
    }

    /// A 400 form error `{field: [msg]}`, with MAAS's `", "` / `": "` separators.
    pub fn fields(errors: &[(&str, &str)]) -> Resp {
        let mut map: Vec<(&str, Vec<&str>)> = Vec::new();
        for (field, msg) in errors {
            match map.iter_mut().find(|(f, _)| f == field) {
                Some((_, list)) => list.push(msg),
                None => map.push((field, vec![msg])),
            }
        }
        let q = |s: &str| Value::String(s.to_owned()).to_string();
        let entries: Vec<String> = map
            .iter()
            .map(|(f, msgs)| format!("{}: [{}]", q(f), msgs.iter().map(|m| q(m)).collect::<Vec<_>>().join(", ")))
            .collect();
        let body = format!("{{{}}}", entries.join(", "));
        Resp { status: 400, content_type: JSON, body: body.into_bytes(), headers: Vec::new() }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Resp {
        self.headers.push((name, value.into()));
        self
    }
}

/// A 400 field error as a refusal.
pub fn field_err(field: &str, msg: &str) -> Resp {
    Resp::fields(&[(field, msg)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_with_quoted_boundary_and_base64_parts() {
        let body = b"--===============42==\r\nContent-Type: text/plain; charset=\"utf-8\"\r\nMIME-Version: 1.0\r\n\
Content-Transfer-Encoding: base64\r\nContent-Disposition: form-data; name=\"distro_series\"\r\n\r\namFtbXk=\r\n\
--===============42==\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nplain text\r\n\
--===============42==--\r\n";
        let p = parse_body("multipart/form-data; boundary=\"===============42==\"", body).unwrap();
        assert_eq!(p.get("distro_series"), Some("jammy"));
        assert_eq!(p.get("comment"), Some("plain text"));
    }

    #[test]
    fn multipart_as_python_email_writes_it() {
        // What python-libmaas sends for no parameters, and for two (captured from its encoder).
        let b = "===============8489499627780561212==";
        let empty = format!("--{b}\r\n\r\n--{b}--");
        assert!(parse_multipart(b, empty.as_bytes()).unwrap().0.is_empty());
        let two = format!(
            "--{b}\r\nContent-Type: application/octet-stream\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n\
Content-Disposition: form-data; name=\"erase\"\r\n\r\nZmFsc2U=\r\n\r\n--{b}\r\nContent-Transfer-Encoding: base64\r\n\
Content-Disposition: form-data; name=\"comment\"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n\r\n\
eA==\r\n\r\n--{b}--"
        );
        let p = parse_multipart(b, two.as_bytes()).unwrap();
        assert_eq!((p.get("erase"), p.get("comment")), (Some("false"), Some("x")));
    }

    #[test]
    fn multipart_ending_right_after_a_delimiter_is_malformed_not_a_panic() {
        // Found by wire::proptests (and the fuzz target maas_sim_wire): these used to index past the end.
        for (boundary, body) in [("", &b"--"[..]), ("b", b"--b"), ("b", b"--b\r\n"), ("b", b"--bx")] {
            assert_eq!(parse_multipart(boundary, body).unwrap_err(), BodyError::Malformed, "{body:?}");
        }
    }

    #[test]
    fn multipart_without_boundary_is_refused() {
        assert_eq!(parse_body("multipart/form-data", b"").unwrap_err(), BodyError::NoBoundary);
    }

    #[test]
    fn oauth_header_parses_like_piston() {
        let h = "OAuth realm=\"OAuth\", oauth_nonce=\"n1\", oauth_timestamp=\"1700000000\", oauth_version=\"1.0\", \
oauth_signature_method=\"PLAINTEXT\", oauth_consumer_key=\"ck\", oauth_token=\"tk\", oauth_signature=\"%26sec\"";
        let p = parse_oauth(h).unwrap();
        assert_eq!(p.signature, "&sec");
        assert_eq!(p.consumer_key, "ck");
        assert_eq!(p.version.as_deref(), Some("1.0"));
        assert!(parse_oauth("OAuth oauth_token=\"x\"").is_none());
    }

    #[test]
    fn field_errors_use_maas_separators() {
        let r = Resp::fields(&[("start_ip", "a"), ("start_ip", "b"), ("end_ip", "c")]);
        assert_eq!(String::from_utf8(r.body).unwrap(), r#"{"start_ip": ["a", "b"], "end_ip": ["c"]}"#);
    }

    #[test]
    fn django_booleans_treat_zero_as_true() {
        let p = Params::parse_urlencoded(b"erase=0&quick_erase=false&force=1");
        assert!(p.django_bool("erase"));
        assert!(!p.django_bool("quick_erase"));
        assert!(p.bool("force"));
    }
}
