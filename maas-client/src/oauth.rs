//! The OAuth 1.0 PLAINTEXT `Authorization` header MAAS expects (maas-api.md section 1.6).
//!
//! MAAS (through piston) strips `OAuth `, splits on `,`, skips the `realm` piece, splits each piece on the first
//! `=`, strips the quotes and percent-decodes. The consumer secret is empty, so the signature is `&<token_secret>`,
//! sent percent-encoded as `%26<token_secret>`. Each request needs a fresh nonce (MAAS refuses a reused one) and a
//! current timestamp (MAAS refuses one older than 300 s).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use rand::distr::Alphanumeric;

use super::ApiKey;

/// The full header value for one request, with a fresh nonce and the current time.
pub fn authorization_header(key: &ApiKey) -> String {
    let nonce: String = rand::rng().sample_iter(Alphanumeric).take(32).map(char::from).collect();
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    authorization_header_with(key, &nonce, timestamp)
}

/// The header value for a given nonce and timestamp (deterministic, for tests).
pub fn authorization_header_with(key: &ApiKey, nonce: &str, timestamp: u64) -> String {
    // PLAINTEXT: percent_encode(consumer_secret) + "&" + percent_encode(token_secret); the consumer secret is "".
    let signature = format!("&{}", percent_encode(key.token_secret()));
    format!(
        "OAuth realm=\"OAuth\", oauth_nonce=\"{}\", oauth_timestamp=\"{}\", oauth_version=\"1.0\", \
         oauth_signature_method=\"PLAINTEXT\", oauth_consumer_key=\"{}\", oauth_token=\"{}\", \
         oauth_signature=\"{}\"",
        percent_encode(nonce),
        timestamp,
        percent_encode(key.consumer_key()),
        percent_encode(key.token_key()),
        percent_encode(&signature),
    )
}

/// RFC 5849 section 3.6 percent-encoding: everything but `A-Z a-z 0-9 - . _ ~` becomes `%XX` (upper-case hex).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> ApiKey {
        ApiKey::parse(text).unwrap()
    }

    #[test]
    fn exact_format_as_python_libmaas_sends_it() {
        let header = authorization_header_with(&key("ck:tk:secret"), "abc123", 1_700_000_000);
        assert_eq!(
            header,
            "OAuth realm=\"OAuth\", oauth_nonce=\"abc123\", oauth_timestamp=\"1700000000\", oauth_version=\"1.0\", \
             oauth_signature_method=\"PLAINTEXT\", oauth_consumer_key=\"ck\", oauth_token=\"tk\", \
             oauth_signature=\"%26secret\""
        );
    }

    #[test]
    fn percent_encoding_of_reserved_characters() {
        assert_eq!(percent_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(percent_encode("a b&c=d,\"e%/+"), "a%20b%26c%3Dd%2C%22e%25%2F%2B");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    fn percent_decode(text: &str) -> Vec<u8> {
        let b = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn percent_encoding_round_trips_and_is_header_safe(text in ".*") {
            let encoded = percent_encode(&text);
            proptest::prop_assert!(!encoded.contains(['"', ',', '=', ' ', '&']));
            proptest::prop_assert_eq!(percent_decode(&encoded), text.as_bytes().to_vec());
        }

        #[test]
        fn api_key_parse_never_panics(text in ".*") {
            let _ = ApiKey::parse(&text);
        }
    }

    #[test]
    fn nonce_and_timestamp_are_fresh() {
        let k = key("ck:tk:secret");
        let a = authorization_header(&k);
        let b = authorization_header(&k);
        assert_ne!(a, b, "two requests must not share a nonce");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let ts: u64 = a.split("oauth_timestamp=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
        assert!(now.abs_diff(ts) < 5, "timestamp {ts} vs now {now}");
    }
}
