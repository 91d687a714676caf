//! Property tests for the request parsers: hostile bodies and headers never panic the emulator, and
//! well-formed bodies (as python-libmaas and reqwest write them) read back the parameters they carry.

use base64::Engine;
use proptest::prelude::*;

use super::*;

/// Bytes biased towards what a multipart parser looks for, so the odd paths get exercised.
fn multipart_like() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"--b".to_vec()),
        Just(b"--".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n\r\n".to_vec()),
        Just(b"Content-Disposition: form-data; name=\"k\"".to_vec()),
        Just(b"Content-Transfer-Encoding: base64".to_vec()),
        Just(b"eA==".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..6),
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

/// A multipart body as python's email package writes it (CRLF, optional base64 parts).
fn multipart_body(boundary: &str, params: &[(String, String, bool)]) -> Vec<u8> {
    let mut body = String::new();
    for (name, value, encode) in params {
        body.push_str(&format!("--{boundary}\r\n"));
        if *encode {
            let encoded = base64::engine::general_purpose::STANDARD.encode(value);
            body.push_str("Content-Transfer-Encoding: base64\r\n");
            body.push_str(&format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{encoded}\r\n"));
        } else {
            body.push_str(&format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"));
        }
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    body.into_bytes()
}

proptest! {
    #[test]
    fn arbitrary_multipart_never_panics(boundary in "[-=a-zA-Z0-9]{0,8}", body in multipart_like()) {
        let _ = parse_multipart(&boundary, &body);
        let _ = parse_body(&format!("multipart/form-data; boundary={boundary}"), &body);
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_body_parser(
        content_type in "\\PC{0,40}",
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let _ = parse_body(&content_type, &body);
        let _ = parse_body("multipart/form-data; boundary=b", &body);
        let params = Params::parse_urlencoded(&body);
        let _ = (params.bool("a"), params.django_bool("a"), params.list("a"), params.has("a"));
    }

    #[test]
    fn arbitrary_oauth_headers_never_panic(header in "\\PC{0,200}", tail in "[a-z_=\",% ]{0,60}") {
        let _ = parse_oauth(&header);
        let _ = parse_oauth(&format!(
            "OAuth oauth_consumer_key oauth_token oauth_signature oauth_signature_method oauth_timestamp oauth_nonce{tail}"
        ));
    }

    #[test]
    fn multipart_round_trips(
        boundary in "[=a-zA-Z0-9]{8,30}",
        params in proptest::collection::vec(("[a-z_]{1,12}", "[ -~]{0,40}", any::<bool>()), 0..6),
    ) {
        let body = multipart_body(&boundary, &params);
        let parsed = parse_body(&format!("multipart/form-data; boundary=\"{boundary}\""), &body)
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&body))))?;
        let expected: Vec<(String, String)> = params.into_iter().map(|(k, v, _)| (k, v)).collect();
        prop_assert_eq!(parsed.0, expected);
    }

    #[test]
    fn urlencoded_round_trips(params in proptest::collection::vec(("\\PC{1,12}", "\\PC{0,30}"), 0..6)) {
        let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&params).finish();
        let parsed = parse_body("application/x-www-form-urlencoded", body.as_bytes()).unwrap();
        prop_assert_eq!(parsed.0, params);
    }

    #[test]
    fn oauth_header_round_trips(
        consumer in "[A-Za-z0-9]{1,20}",
        token in "[A-Za-z0-9]{1,20}",
        secret in "[ -~]{1,20}",
        nonce in "[0-9]{1,12}",
        timestamp in 0u64..4_000_000_000,
    ) {
        let encode = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
        let header = format!(
            "OAuth realm=\"\", oauth_nonce=\"{nonce}\", oauth_timestamp=\"{timestamp}\", oauth_version=\"1.0\", \
oauth_signature_method=\"PLAINTEXT\", oauth_consumer_key=\"{consumer}\", oauth_token=\"{token}\", \
oauth_signature=\"{}\"",
            encode(&format!("&{secret}"))
        );
        let p = parse_oauth(&header).unwrap();
        prop_assert_eq!(p.consumer_key, consumer);
        prop_assert_eq!(p.token, token);
        prop_assert_eq!(p.signature, format!("&{secret}"));
        prop_assert_eq!(p.nonce, nonce);
        prop_assert_eq!(p.timestamp, timestamp.to_string());
        prop_assert_eq!(p.signature_method, "PLAINTEXT");
    }
}
