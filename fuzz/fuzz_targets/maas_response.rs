//! The MAAS answer readers: every response type of `maas_client`, a machine action's answer, and the
//! error classifier. The first byte picks the HTTP status and content type given to the classifier.
#![no_main]

use std::time::Duration;

use maas_client::client::fuzzing;
use maas_client::*;
use libfuzzer_sys::fuzz_target;

const STATUSES: [u16; 8] = [400, 401, 403, 404, 409, 500, 503, 502];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    if let Ok(machines) = serde_json::from_slice::<Vec<Machine>>(body) {
        for machine in &machines {
            let _ = (machine.mac_addresses(), machine.hardware(), machine.status.label(), machine.status.key());
        }
    }
    if let Ok(machine) = serde_json::from_slice::<Machine>(body) {
        let _ = machine.hardware();
    }
    let _ = serde_json::from_slice::<Vec<ScriptSet>>(body);
    let _ = serde_json::from_slice::<Vec<Subnet>>(body);
    let _ = serde_json::from_slice::<SubnetStatistics>(body);
    let _ = serde_json::from_slice::<Vec<ReservedRange>>(body);
    let _ = serde_json::from_slice::<Vec<UnreservedRange>>(body);
    let _ = serde_json::from_slice::<Vec<Vlan>>(body);
    let _ = serde_json::from_slice::<Vec<Fabric>>(body);
    let _ = serde_json::from_slice::<Vec<IpRange>>(body);
    let _ = serde_json::from_slice::<Vec<User>>(body);
    if let Ok(racks) = serde_json::from_slice::<Vec<RackController>>(body) {
        for rack in &racks {
            let _ = (rack.unhealthy_services(), rack.is_on_vlan(5001));
        }
    }
    let _ = serde_json::from_slice::<RackBootImages>(body);
    let _ = serde_json::from_slice::<Vec<BootSource>>(body);
    let _ = serde_json::from_slice::<Vec<BootSourceSelection>>(body);
    if let Ok(resources) = serde_json::from_slice::<Vec<BootResource>>(body) {
        for resource in &resources {
            let _ = (resource.progress(), resource.is_synced());
        }
    }
    let _ = serde_json::from_slice::<Vec<SshKey>>(body);
    let _ = serde_json::from_slice::<EventPage>(body);
    if let Ok(devices) = serde_json::from_slice::<Vec<Device>>(body) {
        for device in &devices {
            let _ = device.mac_addresses();
        }
    }
    let _ = serde_json::from_slice::<Version>(body);
    let _ = serde_json::from_slice::<Vec<Tag>>(body);
    let _ = serde_json::from_slice::<PowerState>(body);
    let _ = fuzzing::machine_action_answer(body);

    let status = STATUSES[usize::from(selector & 7)];
    let content_type = if selector & 8 == 0 { "application/json" } else { "text/plain; charset=utf-8" };
    let retry_after = (selector & 16 != 0).then(|| Duration::from_secs(u64::from(selector)));
    let error = fuzzing::classify_answer(status, content_type, body, retry_after);
    assert_eq!(error.status(), Some(status));
    let _ = (error.to_string(), error.is_retryable(), error.retry_after(), error.maas_message());
});
