//! Property tests for the MAAS answer readers: whatever MAAS (or something pretending to be MAAS) sends, every
//! response type and the error classifier answer with a value or an error, never a panic.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::fuzzing;
use crate::*;

/// Decodes `bytes` as every response type the client reads, and runs the derived views of the ones that have them.
fn decode_everything(bytes: &[u8]) {
    if let Ok(machines) = serde_json::from_slice::<Vec<Machine>>(bytes) {
        for machine in &machines {
            let _ = (machine.mac_addresses(), machine.hardware(), machine.status.label(), machine.status.key());
        }
    }
    let _ = serde_json::from_slice::<Vec<ScriptSet>>(bytes);
    let _ = serde_json::from_slice::<Vec<Subnet>>(bytes);
    let _ = serde_json::from_slice::<SubnetStatistics>(bytes);
    let _ = serde_json::from_slice::<Vec<UnreservedRange>>(bytes);
    let _ = serde_json::from_slice::<Vec<ReservedRange>>(bytes);
    let _ = serde_json::from_slice::<Vec<Vlan>>(bytes);
    let _ = serde_json::from_slice::<Vec<Fabric>>(bytes);
    let _ = serde_json::from_slice::<Vec<IpRange>>(bytes);
    let _ = serde_json::from_slice::<Vec<User>>(bytes);
    if let Ok(racks) = serde_json::from_slice::<Vec<RackController>>(bytes) {
        for rack in &racks {
            let _ = (rack.unhealthy_services(), rack.is_on_vlan(5001));
        }
    }
    let _ = serde_json::from_slice::<RackBootImages>(bytes);
    let _ = serde_json::from_slice::<Vec<BootSource>>(bytes);
    let _ = serde_json::from_slice::<Vec<BootSourceSelection>>(bytes);
    if let Ok(resources) = serde_json::from_slice::<Vec<BootResource>>(bytes) {
        for resource in &resources {
            let _ = (resource.progress(), resource.is_synced());
        }
    }
    let _ = serde_json::from_slice::<Vec<SshKey>>(bytes);
    let _ = serde_json::from_slice::<EventPage>(bytes);
    if let Ok(devices) = serde_json::from_slice::<Vec<Device>>(bytes) {
        for device in &devices {
            let _ = device.mac_addresses();
        }
    }
    let _ = serde_json::from_slice::<Version>(bytes);
    let _ = serde_json::from_slice::<Vec<Tag>>(bytes);
    let _ = serde_json::from_slice::<PowerState>(bytes);
    let _ = fuzzing::machine_action_answer(bytes);
}

/// JSON of any shape, biased towards field names and values MAAS uses, so the lenient decoders' paths run.
fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("system_id"),
        Just("status"),
        Just("status_name"),
        Just("power_state"),
        Just("memory"),
        Just("cpu_count"),
        Just("interface_set"),
        Just("mac_address"),
        Just("blockdevice_set"),
        Just("size"),
        Just("links"),
        Just("subnet"),
        Just("vlan"),
        Just("type"),
        Just("progress"),
        Just("sets"),
        Just("events"),
        Just("hardware_info"),
        Just("service_set"),
        Just("id"),
    ]
    .prop_map(str::to_string);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            proptest::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_readers(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        decode_everything(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics_the_readers(value in arb_json()) {
        let one = serde_json::to_vec(&value).unwrap();
        decode_everything(&one);
        decode_everything(&serde_json::to_vec(&json!([value])).unwrap());
    }

    #[test]
    fn any_error_answer_is_classified(
        status in prop_oneof![Just(400u16), Just(401), Just(403), Just(404), Just(409), Just(503), 100u16..600],
        json_type in any::<bool>(),
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            arb_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        ],
        retry_secs in proptest::option::of(0u64..100_000),
    ) {
        let content_type = if json_type { "application/json" } else { "text/plain; charset=utf-8" };
        let retry_after = retry_secs.map(std::time::Duration::from_secs);
        let error = fuzzing::classify_answer(status, content_type, &body, retry_after);
        prop_assert_eq!(error.status(), Some(status));
        prop_assert_eq!(error.op(), Some("deploy"));
        let text = error.to_string();
        prop_assert!(!text.is_empty());
        let _ = (error.is_retryable(), error.retry_after(), error.maas_message());
    }

    #[test]
    fn bad_request_field_errors_are_kept(
        fields in proptest::collection::btree_map("[a-z_]{1,12}", proptest::collection::vec("[ -~]{1,30}", 1..3), 1..4),
    ) {
        let body = serde_json::to_vec(&fields).unwrap();
        match fuzzing::classify_answer(400, "application/json", &body, None) {
            Error::BadRequest { fields: read, .. } => prop_assert_eq!(read, fields),
            other => prop_assert!(false, "expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn empty_or_null_machine_answers_are_nothing(spaces in "[ \t\r\n]{0,4}", null in any::<bool>()) {
        let body = format!("{spaces}{}{spaces}", if null { "null" } else { "" });
        prop_assert!(fuzzing::machine_action_answer(body.as_bytes()).unwrap().is_none());
    }
}
