//! maas-sim's request parsers: form bodies (urlencoded and multipart) and the OAuth header. The input is
//! `CONTENT-TYPE \n BODY`; the whole input is also tried as an OAuth header and as a multipart body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maas_sim::wire::{Params, parse_body, parse_multipart, parse_oauth};

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let content_type = String::from_utf8_lossy(head);
    if let Ok(params) = parse_body(&content_type, body) {
        let _ = (params.bool("erase"), params.django_bool("erase"), params.list("tags"), params.has("op"));
    }
    let _ = parse_multipart("b", data);
    let _ = parse_multipart(&content_type, body);
    let _ = Params::parse_urlencoded(data);
    let _ = parse_oauth(&String::from_utf8_lossy(data));
});
