//! Entry points into the MAAS client's answer readers for the fuzz targets and property tests; not an API.

use std::time::Duration;

use super::{Call, Reply, classify, decode_optional_machine};
use crate::{Error, Machine};

/// The error a non-2xx MAAS answer to a machine call becomes, from its status, content type and body.
pub fn classify_answer(status: u16, content_type: &str, body: &[u8], retry_after: Option<Duration>) -> Error {
    classify(&fuzz_call(), status, content_type, body, retry_after)
}

/// What a machine action's 2xx answer becomes: a machine, nothing (empty or `null`), or a decode error.
pub fn machine_action_answer(body: &[u8]) -> Result<Option<Machine>, Error> {
    decode_optional_machine(&fuzz_call(), &Reply { body: body.to_vec() })
}

fn fuzz_call() -> Call {
    Call::post("deploy", "machines/abc123/").maas_op("deploy").machine("abc123")
}
