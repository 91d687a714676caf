//! Machines, nodes, script results and machine tags (maas-api.md sections 2 and 3).

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Value, json};

use super::{Ctx, not_found, unsupported};
use crate::status::Status;
use crate::wire::{Reply, Resp, field_err};
use crate::world::{Machine, NamedThing, World, durations, release_version};

pub(super) fn dispatch(w: &mut World, handler: &str, action: &str, c: &Ctx) -> Reply {
    match (handler, action) {
        ("MachinesHandler" | "NodesHandler", "read") => list(w, c, handler == "NodesHandler"),
        ("MachinesHandler" | "AnonMachinesHandler", "create") => create(w, c),
        ("MachinesHandler", "allocate") => allocate(w, c),
        ("MachinesHandler", "release") => bulk_release(w, c),
        ("MachinesHandler", "list_allocated") => {
            let v: Vec<Value> =
                w.machines.iter().filter(|m| m.owner.as_deref() == Some(c.user())).map(|m| w.machine_json(m)).collect();
            Resp::ok(json!(v))
        }
        ("MachinesHandler" | "AnonMachinesHandler" | "NodesHandler" | "AnonNodesHandler", "is_registered") => {
            let mac = c.params.get("mac_address").unwrap_or("");
            let found = w.machines.iter().any(|m| m.interfaces.iter().any(|i| i.mac.eq_ignore_ascii_case(mac)));
            Resp::ok(json!(found))
        }
        ("AnonMachinesHandler" | "AnonNodesHandler", "is_action_in_progress") => Resp::ok(json!(false)),
        ("MachinesHandler", "power_parameters") => {
            c.admin()?;
            let ids = c.params.list("id");
            let map: serde_json::Map<String, Value> = w
                .machines
                .iter()
                .filter(|m| ids.is_empty() || ids.contains(&m.system_id))
                .map(|m| (m.system_id.clone(), json!(m.power_parameters)))
                .collect();
            Resp::ok(Value::Object(map))
        }
        ("MachineHandler" | "NodeHandler", _) => machine_action(w, c, action, handler),
        ("NodeScriptResultsHandler", "read") => script_results(w, c),
        ("NodeScriptResultHandler", "read") => script_result(w, c),
        ("NodeResultsHandler", "read") => node_results(w, c),
        ("TagHandler", _) => tag_action(w, c, action),
        _ => unsupported(handler, action),
    }
}

fn visible(m: &Machine, c: &Ctx) -> bool {
    c.caller.admin || m.owner.is_none() || m.owner.as_deref() == Some(c.user())
}

fn can_edit(m: &Machine, c: &Ctx) -> bool {
    c.caller.admin || m.owner.as_deref() == Some(c.user())
}

fn find<'w>(w: &'w World, c: &Ctx) -> Result<&'w Machine, Resp> {
    let sid = c.path("system_id");
    w.machine(sid).filter(|m| visible(m, c)).ok_or_else(|| not_found("Machine"))
}

fn list(w: &World, c: &Ctx, nodes: bool) -> Reply {
    let p = c.params;
    for (key, model) in [("zone", "zone"), ("not_in_zone", "zone"), ("pool", "pool"), ("not_in_pool", "pool")] {
        for v in p.list(key) {
            let known =
                if model == "zone" { w.zones.iter().any(|z| z.name == v) } else { w.pools.iter().any(|z| z.name == v) };
            if !known {
                return Err(field_err(key, &format!("No such {model}(s): {v}.")));
            }
        }
    }
    let tags: Vec<String> = p.list("tags").iter().flat_map(|t| t.split(',').map(str::to_owned)).collect();
    let not_tags: Vec<String> = p.list("not_tags").iter().flat_map(|t| t.split(',').map(str::to_owned)).collect();
    let unknown: Vec<&String> =
        tags.iter().chain(&not_tags).filter(|t| !w.tags.iter().any(|x| &&x.name == t)).collect();
    if !unknown.is_empty() {
        let names: Vec<String> = unknown.iter().map(|t| format!("'{t}'")).collect();
        return Err(field_err("tags", &format!("No such tag(s): {}.", names.join(", "))));
    }
    let mut statuses = Vec::new();
    let mut not_statuses = Vec::new();
    for (key, out) in [("status", &mut statuses), ("not_status", &mut not_statuses)] {
        for v in p.list(key) {
            match Status::from_key(&v) {
                Some(s) => out.push(s),
                None => {
                    return Err(field_err(
                        key,
                        &format!("Select a valid choice. {v} is not one of the available choices."),
                    ));
                }
            }
        }
    }
    let ge = |key: &str| p.get(key).and_then(|v| v.parse::<f64>().ok());
    let any = |key: &str, f: &dyn Fn(&str) -> bool| {
        let vals = p.list(key);
        vals.is_empty() || vals.iter().any(|v| f(v))
    };
    let none = |key: &str, f: &dyn Fn(&str) -> bool| !p.list(key).iter().any(|v| f(v));
    let mut out: Vec<Value> = w
        .machines
        .iter()
        .filter(|m| visible(m, c))
        .filter(|m| any("id", &|v| v == m.system_id) && none("not_id", &|v| v == m.system_id))
        .filter(|m| any("hostname", &|v| v == m.hostname || v == format!("{}.maas", m.hostname)))
        .filter(|m| none("not_hostname", &|v| v == m.hostname))
        .filter(|m| any("mac_address", &|v| m.interfaces.iter().any(|i| i.mac.eq_ignore_ascii_case(v))))
        .filter(|m| statuses.is_empty() || statuses.contains(&m.status))
        .filter(|m| !not_statuses.contains(&m.status))
        .filter(|m| any("simple_status", &|v| v == m.status.simple()))
        .filter(|m| any("zone", &|v| v == m.zone) && none("not_in_zone", &|v| v == m.zone))
        .filter(|m| any("pool", &|v| v == m.pool) && none("not_in_pool", &|v| v == m.pool))
        .filter(|m| any("arch", &|v| m.architecture == v || m.architecture.starts_with(&format!("{v}/"))))
        .filter(|m| tags.iter().all(|t| m.tags.contains(t)) && !not_tags.iter().any(|t| m.tags.contains(t)))
        .filter(|m| ge("cpu_count").is_none_or(|n| f64::from(m.cpu_count) >= n))
        .filter(|m| ge("mem").is_none_or(|n| m.memory as f64 >= n))
        .filter(|m| ge("cpu_speed").is_none_or(|n| f64::from(m.cpu_speed) >= n))
        .filter(|m| any("owner", &|v| m.owner.as_deref() == Some(v)))
        .filter(|m| any("power_state", &|v| v == m.power_state))
        .filter(|_| any("domain", &|v| v == "maas"))
        .map(|m| w.machine_json(m))
        .collect();
    if nodes && c.caller.admin && p.0.is_empty() {
        out.push(w.rack_json());
    }
    Resp::ok(json!(out))
}

const POWER_TYPES: &[&str] = &[
    "amt", "apc", "dli", "eaton", "hmc", "hmcz", "ipmi", "lxd", "manual", "moonshot", "mscm", "msftocs", "nova",
    "openbmc", "proxmox", "recs_box", "redfish", "sm15k", "ucsm", "vmware", "webhook", "wedge", "virsh",
];

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn normalize_arch(arch: &str) -> String {
    if arch.contains('/') { arch.to_owned() } else { format!("{arch}/generic") }
}

/// Power parameters from either one JSON string `power_parameters` or `power_parameters_<name>` fields.
fn power_params(c: &Ctx) -> Result<BTreeMap<String, String>, Resp> {
    let mut out = BTreeMap::new();
    if let Some(raw) = c.params.get("power_parameters").filter(|s| !s.is_empty()) {
        let v: Value = serde_json::from_str(raw)
            .map_err(|_| field_err("power_parameters", "Enter a valid JSON object for power parameters."))?;
        let Value::Object(map) = v else {
            return Err(field_err("power_parameters", "Enter a valid JSON object for power parameters."));
        };
        for (k, v) in map {
            out.insert(k, v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()));
        }
    }
    for (k, v) in &c.params.0 {
        if let Some(name) = k.strip_prefix("power_parameters_") {
            out.insert(name.to_owned(), v.clone());
        }
    }
    Ok(out)
}

fn create(w: &mut World, c: &Ctx) -> Reply {
    let p = c.params;
    let macs = p.list("mac_addresses");
    let mut errors: Vec<(&str, String)> = Vec::new();
    let architecture = p.get("architecture").map(normalize_arch);
    if architecture.is_none() {
        errors.push(("architecture", "This field is required.".into()));
    }
    if macs.is_empty() {
        errors.push(("mac_addresses", "This field is required.".into()));
    }
    for mac in &macs {
        if !valid_mac(mac) {
            errors.push(("mac_addresses", format!("'{mac}' is not a valid MAC address.")));
        } else if let Some(m) = w.machines.iter().find(|m| m.interfaces.iter().any(|i| i.mac.eq_ignore_ascii_case(mac)))
        {
            errors.push((
                "mac_addresses",
                format!("Mac address {} already in use on {}.", mac.to_lowercase(), m.hostname),
            ));
        }
    }
    let hostname = p.get("hostname").filter(|h| !h.is_empty()).map(|h| h.split('.').next().unwrap_or(h).to_owned());
    if let Some(h) = &hostname
        && w.machines.iter().any(|m| &m.hostname == h)
    {
        errors.push(("hostname", format!("Node with hostname \"{h}\" already exists.")));
    }
    let power_type = p.get("power_type").unwrap_or("").to_owned();
    if !power_type.is_empty() && !POWER_TYPES.contains(&power_type.as_str()) {
        errors
            .push(("power_type", format!("Select a valid choice. {power_type} is not one of the available choices.")));
    }
    let power_parameters = power_params(c)?;
    if !errors.is_empty() {
        let refs: Vec<(&str, &str)> = errors.iter().map(|(k, v)| (*k, v.as_str())).collect();
        return Err(Resp::fields(&refs));
    }
    let architecture = architecture.expect("checked above");
    let sid = w.create_machine(&macs, &architecture, hostname);
    {
        let m = w.machine_mut(&sid).expect("just created");
        m.power_type = power_type;
        m.power_parameters = power_parameters;
        m.description = p.get("description").unwrap_or("").to_owned();
        m.min_hwe_kernel = p.get("min_hwe_kernel").unwrap_or("").to_owned();
    }
    if c.caller.username.is_some() && p.django_bool("deployed") {
        let m = w.machine_mut(&sid).expect("just created");
        m.status = Status::Deployed;
        m.owner = c.caller.username.clone();
        m.power_state = "on";
        w.event(Some(&sid), "INFO", "Deployed", "");
    } else if c.caller.admin && p.get("commission").is_none_or(|v| !v.eq_ignore_ascii_case("false")) {
        let run_tests = p.get("testing_scripts").is_none_or(|t| t != "none");
        w.start_commissioning(&sid, run_tests).map_err(|e| Resp::text(409, e))?;
    } else {
        w.event(Some(&sid), "INFO", "Enlisted", "");
    }
    Resp::ok(w.machine_json(w.machine(&sid).expect("just created")))
}

const CONSTRAINTS: &[&str] = &[
    "name",
    "system_id",
    "arch",
    "cpu_count",
    "mem",
    "tags",
    "not_tags",
    "zone",
    "not_in_zone",
    "pool",
    "not_in_pool",
    "subnets",
    "not_subnets",
    "fabrics",
    "not_fabrics",
    "fabric_classes",
    "interfaces",
    "storage",
    "pod",
    "pod_type",
    "not_pod",
    "not_pod_type",
    "devices",
];
const ALLOCATE_OPTIONS: &[&str] =
    &["agent_name", "comment", "bridge_all", "bridge_type", "bridge_stp", "bridge_fd", "dry_run", "verbose"];

fn allocate(w: &mut World, c: &Ctx) -> Reply {
    let p = c.params;
    let mut bad: Vec<&str> = Vec::new();
    for (k, _) in &p.0 {
        if !CONSTRAINTS.contains(&k.as_str()) && !ALLOCATE_OPTIONS.contains(&k.as_str()) && !bad.contains(&k.as_str()) {
            bad.push(k);
        }
    }
    if !bad.is_empty() {
        let errs: Vec<(&str, &str)> = bad.iter().map(|k| (*k, "No such constraint.")).collect();
        return Err(Resp::fields(&errs));
    }
    let tags: Vec<String> = p.list("tags").iter().flat_map(|t| t.split(',').map(str::to_owned)).collect();
    let name = p.get("name").map(|n| n.split('.').next().unwrap_or(n).to_owned());
    let num = |k: &str| p.get(k).and_then(|v| v.parse::<f64>().ok());
    let candidate = w
        .machines
        .iter()
        .filter(|m| m.status == Status::Ready && m.owner.is_none() && !m.locked)
        .filter(|m| name.as_ref().is_none_or(|n| &m.hostname == n))
        .filter(|m| p.get("system_id").is_none_or(|s| m.system_id == s))
        .filter(|m| p.get("arch").is_none_or(|a| m.architecture == a || m.architecture.starts_with(&format!("{a}/"))))
        .filter(|m| num("cpu_count").is_none_or(|n| f64::from(m.cpu_count) >= n))
        .filter(|m| num("mem").is_none_or(|n| m.memory as f64 >= n))
        .filter(|m| tags.iter().all(|t| m.tags.contains(t)))
        .filter(|m| !p.list("not_tags").iter().any(|t| m.tags.contains(t)))
        .filter(|m| p.list("zone").iter().all(|z| &m.zone == z))
        .filter(|m| !p.list("not_in_zone").contains(&m.zone))
        .filter(|m| p.list("pool").iter().all(|z| &m.pool == z))
        .filter(|m| !p.list("not_in_pool").contains(&m.pool))
        .min_by(|a, b| {
            let cost = |m: &Machine| f64::from(m.cpu_count) + m.memory as f64 / 1024.0;
            cost(a).total_cmp(&cost(b)).then(a.id.cmp(&b.id))
        })
        .map(|m| m.system_id.clone());
    let Some(sid) = candidate else {
        let given: Vec<(&str, Vec<String>)> =
            CONSTRAINTS.iter().filter(|k| p.has(k)).map(|k| (*k, p.list(k))).collect();
        let msg = if given.is_empty() {
            "No machine available.".to_owned()
        } else if let [("system_id", ids)] = given.as_slice() {
            format!("No machine with system ID {} available.", ids.join(","))
        } else {
            let repr: Vec<String> = given
                .iter()
                .map(|(k, vs)| {
                    let vs: Vec<String> = vs.iter().map(|v| format!("'{v}'")).collect();
                    format!("('{k}', [{}])", vs.join(", "))
                })
                .collect();
            let resolved: Vec<String> = given.iter().map(|(k, vs)| format!("{k}={}", vs.join(","))).collect();
            format!(
                "No available machine matches constraints: [{}] (resolved to \"{}\")",
                repr.join(", "),
                resolved.join(" ")
            )
        };
        return Err(Resp::text(409, msg));
    };
    if !p.bool("dry_run") {
        w.transition(&sid, Status::Allocated).map_err(|e| Resp::text(409, e))?;
        let m = w.machine_mut(&sid).expect("candidate exists");
        m.owner = c.caller.username.clone();
        w.event(Some(&sid), "AUDIT", "Node", &format!("Acquired by {}", c.user()));
    }
    let mut v = w.machine_json(w.machine(&sid).expect("candidate exists"));
    v["constraints_by_type"] = json!({});
    Resp::ok(v)
}

const RELEASABLE: &[Status] = &[
    Status::Allocated,
    Status::Reserved,
    Status::Broken,
    Status::Deploying,
    Status::Deployed,
    Status::FailedDeployment,
    Status::FailedDiskErasing,
    Status::FailedReleasing,
];

fn release_one(w: &mut World, c: &Ctx, sid: &str) -> Result<(), Resp> {
    let m = w.machine(sid).ok_or_else(|| not_found("Machine"))?;
    if !can_edit(m, c) || m.locked {
        return Err(Resp::empty(403));
    }
    if matches!(m.status, Status::Ready | Status::Releasing) {
        return Ok(());
    }
    if !RELEASABLE.contains(&m.status) {
        return Err(Resp::text(
            409,
            format!("Machine cannot be released in its current state ('{}').", m.status.label()),
        ));
    }
    let p = c.params;
    let erase = p.django_bool("erase")
        || p.django_bool("secure_erase")
        || p.django_bool("quick_erase")
        || w.config.get("enable_disk_erasing_on_release").and_then(Value::as_bool).unwrap_or(false);
    w.start_release(sid, erase).map_err(|e| Resp::text(409, e))
}

fn bulk_release(w: &mut World, c: &Ctx) -> Reply {
    let ids = c.params.list("machines");
    let unknown: Vec<&String> = ids.iter().filter(|id| w.machine(id).is_none()).collect();
    if !unknown.is_empty() {
        let list: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
        return Err(Resp::text(400, format!("Unknown machine(s): {}.", list.join(", "))));
    }
    let mut released = Vec::new();
    for id in &ids {
        release_one(w, c, id)?;
        released.push(id.clone());
    }
    Resp::ok(json!(released))
}

fn decode_user_data(raw: &str) -> Vec<u8> {
    let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()).unwrap_or_else(|_| raw.as_bytes().to_vec())
}

/// The BSON document `{"lshw": <binary XML>, "lldp": null}` that `op=details` serves.
fn details_bson(m: &Machine) -> Vec<u8> {
    let xml = format!(
        "<?xml version=\"1.0\"?><list><node id=\"{}\" class=\"system\"><size units=\"bytes\">{}</size></node></list>",
        m.hostname,
        m.memory * 1024 * 1024
    );
    let mut doc = Vec::new();
    doc.push(0x05);
    doc.extend_from_slice(b"lshw\0");
    doc.extend_from_slice(&(xml.len() as i32).to_le_bytes());
    doc.push(0x00);
    doc.extend_from_slice(xml.as_bytes());
    doc.push(0x0A);
    doc.extend_from_slice(b"lldp\0");
    doc.push(0x00);
    let mut out = ((doc.len() + 4) as i32).to_le_bytes().to_vec();
    out.extend(doc);
    out
}

fn machine_action(w: &mut World, c: &Ctx, action: &str, handler: &str) -> Reply {
    let sid = c.path("system_id").to_owned();
    if handler == "NodeHandler" && sid == w.rack_system_id && c.caller.admin {
        return match action {
            "read" => Resp::ok(w.rack_json()),
            _ => unsupported(handler, action),
        };
    }
    let m = find(w, c)?;
    let p = c.params;
    let locked = m.locked;
    let status = m.status;
    let json_of = |w: &World| Resp::ok(w.machine_json(w.machine(&sid).expect("machine exists")));
    match action {
        "read" => json_of(w),
        "details" => {
            Ok(Resp { status: 200, content_type: "application/bson", body: details_bson(m), headers: Vec::new() })
        }
        "power_parameters" => {
            c.admin()?;
            Resp::ok(json!(m.power_parameters))
        }
        "query_power_state" => Resp::ok(json!({"state": m.power_state})),
        "get_token" => Resp::ok(json!({"token_key": "sim", "token_secret": "sim", "consumer_key": "sim"})),
        "get_curtin_config" => Ok(Resp::text(200, "# curtin config rendered by maas-sim\n")),
        "update" => {
            if !can_edit(m, c) || locked {
                return Err(Resp::empty(403));
            }
            update(w, c, &sid)
        }
        "delete" => {
            c.admin()?;
            if locked {
                return Err(Resp::empty(403));
            }
            w.machines.retain(|m| m.system_id != sid);
            Ok(Resp::empty(204))
        }
        "deploy" => {
            if locked || (!can_edit(m, c) && m.owner.is_some()) {
                return Err(Resp::empty(403));
            }
            deploy(w, c, &sid)
        }
        "release" => {
            release_one(w, c, &sid)?;
            json_of(w)
        }
        "commission" => {
            c.admin()?;
            if locked || !matches!(status, Status::New | Status::Ready | Status::FailedCommissioning | Status::Broken) {
                return Err(field_err(
                    "__all__",
                    "Commission is not available because of the current state of the node.",
                ));
            }
            let run_tests = p.get("testing_scripts").is_none_or(|t| t != "none");
            w.start_commissioning(&sid, run_tests).map_err(|e| Resp::text(409, e))?;
            json_of(w)
        }
        "test" => {
            c.admin()?;
            let allowed = matches!(
                status,
                Status::FailedCommissioning
                    | Status::New
                    | Status::Ready
                    | Status::Reserved
                    | Status::Allocated
                    | Status::FailedDeployment
                    | Status::Deployed
                    | Status::Missing
                    | Status::Retired
                    | Status::Broken
                    | Status::RescueMode
                    | Status::FailedReleasing
                    | Status::FailedDiskErasing
                    | Status::FailedTesting
                    | Status::FailedEnteringRescueMode
                    | Status::FailedExitingRescueMode
            );
            if !allowed {
                return Err(field_err("__all__", "Test is not available because of the current state of the node."));
            }
            w.transition(&sid, Status::Testing).map_err(|e| Resp::text(409, e))?;
            w.event(Some(&sid), "INFO", "Testing", "");
            w.later(&sid, durations::TESTING, crate::world::Step::TestingDone);
            json_of(w)
        }
        "override_failed_testing" => {
            c.admin()?;
            if status != Status::FailedTesting {
                return Err(field_err(
                    "__all__",
                    "Override failed testing is not available because of the current state of the node.",
                ));
            }
            w.transition(&sid, Status::Ready).map_err(|e| Resp::text(409, e))?;
            json_of(w)
        }
        "abort" => {
            if !can_edit(m, c) || locked {
                return Err(Resp::empty(403));
            }
            let to = match status {
                Status::Commissioning => Status::New,
                Status::Deploying => Status::Allocated,
                Status::DiskErasing => Status::FailedDiskErasing,
                Status::Testing => match m.previous_status {
                    Status::Commissioning | Status::New => Status::Ready,
                    other => other,
                },
                _ => {
                    return Err(Resp::text(
                        409,
                        format!("Cannot abort in current state: node {sid} is in state {}.", status.label()),
                    ));
                }
            };
            // MAAS sets the new status after commit: the reply still shows the old one.
            w.machine_mut(&sid).expect("exists").generation += 1;
            w.later(&sid, durations::ABORT, crate::world::Step::Aborted(to));
            json_of(w)
        }
        "power_on" => {
            if locked || (m.owner.is_some() && !can_edit(m, c)) {
                return Err(Resp::empty(403));
            }
            if m.owner.is_none() {
                return Err(Resp::text(409, "Can't start node: it hasn't been allocated."));
            }
            if status == Status::Allocated {
                let default =
                    w.config.get("default_distro_series").and_then(Value::as_str).unwrap_or("jammy").to_owned();
                let m = w.machine_mut(&sid).expect("exists");
                if let Some(ud) = p.get("user_data") {
                    m.user_data = Some(decode_user_data(ud));
                }
                m.osystem = "ubuntu".into();
                if m.distro_series.is_empty() {
                    m.distro_series = default;
                }
                w.start_deploying(&sid).map_err(|e| Resp::text(409, e))?;
            } else if w.machine(&sid).is_some_and(|m| m.power_state != "on") {
                w.event(Some(&sid), "INFO", "Powering on", "");
                w.later(&sid, durations::POWER, crate::world::Step::PoweredOn);
            }
            json_of(w)
        }
        "power_off" => {
            if locked || !can_edit(m, c) {
                return Err(Resp::empty(403));
            }
            if m.power_type == "manual" || m.power_type.is_empty() {
                return Resp::ok(Value::Null);
            }
            w.event(Some(&sid), "INFO", "Powering off", "");
            w.later(&sid, durations::POWER, crate::world::Step::PoweredOff);
            json_of(w)
        }
        "mark_broken" => {
            if m.owner.as_deref() != Some(c.user()) {
                return Err(Resp::empty(403));
            }
            let comment = p.get("comment").or(p.get("error_description")).unwrap_or("").to_owned();
            let was = status;
            let m = w.machine_mut(&sid).expect("exists");
            m.previous_status = was;
            m.status = Status::Broken;
            m.generation += 1;
            m.owner = None;
            m.locked = false;
            m.error_description = comment.clone();
            if was != Status::Deployed {
                m.osystem.clear();
                m.distro_series.clear();
            }
            w.event(Some(&sid), "INFO", "Marking node broken", &comment);
            json_of(w)
        }
        "mark_fixed" => {
            c.admin()?;
            if status != Status::Broken {
                return Err(Resp::text(409, "Can't mark a non-broken node as 'Ready'."));
            }
            let to = if m.previous_status == Status::Deployed { Status::Deployed } else { Status::Ready };
            w.transition(&sid, to).map_err(|e| Resp::text(409, e))?;
            w.machine_mut(&sid).expect("exists").error_description.clear();
            w.event(Some(&sid), "INFO", "Marking node fixed", p.get("comment").unwrap_or(""));
            json_of(w)
        }
        "lock" => {
            if !can_edit(m, c) {
                return Err(Resp::empty(403));
            }
            if locked {
                return Err(Resp::text(409, "Machine is already locked"));
            }
            if !matches!(status, Status::Deployed | Status::Deploying) {
                return Err(Resp::text(409, "Can't lock, node is not deployed or deploying"));
            }
            w.machine_mut(&sid).expect("exists").locked = true;
            w.event(Some(&sid), "AUDIT", "Node", "Locked");
            json_of(w)
        }
        "unlock" => {
            if !can_edit(m, c) {
                return Err(Resp::empty(403));
            }
            if !locked {
                return Err(Resp::text(409, "Machine is not locked"));
            }
            w.machine_mut(&sid).expect("exists").locked = false;
            json_of(w)
        }
        "set_workload_annotations" | "set_owner_data" => {
            match m.owner.as_deref() {
                None => return Err(Resp::text(409, "Cannot set workload annotation: it hasn't been acquired.")),
                Some(o) if o != c.user() => return Err(Resp::empty(403)),
                Some(_) => {}
            }
            let m = w.machine_mut(&sid).expect("exists");
            for (k, v) in &p.0 {
                if v.is_empty() {
                    m.annotations.remove(k);
                } else {
                    m.annotations.insert(k.clone(), v.clone());
                }
            }
            json_of(w)
        }
        _ => unsupported(handler, action),
    }
}

fn update(w: &mut World, c: &Ctx, sid: &str) -> Reply {
    let p = c.params;
    if let Some(z) = p.get("zone")
        && !w.zones.iter().any(|x| x.name == z)
    {
        return Err(field_err("zone", "Select a valid choice. That choice is not one of the available choices."));
    }
    if let Some(z) = p.get("pool")
        && !w.pools.iter().any(|x| x.name == z)
    {
        return Err(field_err("pool", "Select a valid choice. That choice is not one of the available choices."));
    }
    if let Some(h) = p.get("hostname")
        && w.machines.iter().any(|m| m.hostname == h && m.system_id != sid)
    {
        return Err(field_err("hostname", &format!("Node with hostname \"{h}\" already exists.")));
    }
    if let Some(t) = p.get("power_type")
        && !t.is_empty()
        && !POWER_TYPES.contains(&t)
    {
        return Err(field_err(
            "power_type",
            &format!("Select a valid choice. {t} is not one of the available choices."),
        ));
    }
    let pp = power_params(c)?;
    let m = w.machine_mut(sid).expect("caller checked");
    if let Some(v) = p.get("hostname") {
        m.hostname = v.to_owned();
    }
    if let Some(v) = p.get("description") {
        m.description = v.to_owned();
    }
    if let Some(v) = p.get("architecture") {
        m.architecture = normalize_arch(v);
    }
    if let Some(v) = p.get("power_type") {
        m.power_type = v.to_owned();
    }
    if !pp.is_empty() {
        m.power_parameters.extend(pp);
    }
    if let Some(v) = p.get("zone") {
        m.zone = v.to_owned();
    }
    if let Some(v) = p.get("pool") {
        m.pool = v.to_owned();
    }
    if let Some(v) = p.get("min_hwe_kernel") {
        m.min_hwe_kernel = v.to_owned();
    }
    if let Some(v) = p.get("cpu_count").and_then(|v| v.parse().ok()) {
        m.cpu_count = v;
    }
    if let Some(v) = p.get("memory").and_then(|v| v.parse().ok()) {
        m.memory = v;
    }
    Resp::ok(w.machine_json(w.machine(sid).expect("exists")))
}

fn deploy(w: &mut World, c: &Ctx, sid: &str) -> Reply {
    let p = c.params;
    let default = w.config.get("default_distro_series").and_then(Value::as_str).unwrap_or("jammy").to_owned();
    let series_raw = p.get("distro_series").filter(|s| !s.is_empty()).unwrap_or(&default).to_owned();
    let series = series_raw.strip_prefix("ubuntu/").unwrap_or(&series_raw).to_owned();
    if release_version(&series).is_none() {
        let known: Vec<String> = crate::world::KNOWN_RELEASES.iter().map(|(os, r, _)| format!("'{os}/{r}'")).collect();
        return Err(field_err(
            "distro_series",
            &format!("'{series_raw}' is not a valid distro_series.  It should be one of: '', {}.", known.join(", ")),
        ));
    }
    if p.bool("install_rackd") {
        return Err(Resp::text(400, "Installing rackd on a deployed machine is not supported by this API version."));
    }
    let m = w.machine(sid).expect("caller checked");
    if m.status == Status::Ready {
        if m.owner.as_deref().is_some_and(|o| o != c.user()) {
            return Err(Resp::text(409, "Can't allocate a machine belonging to another user."));
        }
        w.transition(sid, Status::Allocated).map_err(|e| Resp::text(409, e))?;
        w.machine_mut(sid).expect("exists").owner = c.caller.username.clone();
    }
    let m = w.machine(sid).expect("caller checked");
    if m.status != Status::Allocated {
        return Err(Resp::text(409, format!("Can't deploy a machine that is in the '{}' state", m.status.label())));
    }
    let m = w.machine_mut(sid).expect("exists");
    m.osystem = "ubuntu".into();
    m.distro_series = series;
    m.hwe_kernel = p.get("hwe_kernel").map(str::to_owned);
    m.user_data = p.get("user_data").map(decode_user_data);
    if let Some(comment) = p.get("comment") {
        let comment = comment.to_owned();
        w.event(Some(sid), "AUDIT", "Node", &format!("Started deploying: {comment}"));
    }
    w.start_deploying(sid).map_err(|e| Resp::text(409, e))?;
    Resp::ok(w.machine_json(w.machine(sid).expect("exists")))
}

fn script_results(w: &World, c: &Ctx) -> Reply {
    let m = find(w, c)?;
    let p = c.params;
    let kind = match p.get("type") {
        None => None,
        Some("commissioning") | Some("0") => Some(0),
        Some("installation") | Some("1") => Some(1),
        Some("testing") | Some("2") => Some(2),
        Some("release") | Some("3") => Some(3),
        Some(other) => return Err(Resp::text(400, format!("Unknown script type: {other}"))),
    };
    let include = p.bool("include_output");
    let hw = p.get("hardware_type");
    let names: Vec<String> = p.get("filters").map(|f| f.split(',').map(str::to_owned).collect()).unwrap_or_default();
    let sets: Vec<Value> = m
        .script_sets
        .iter()
        .filter(|s| kind.is_none_or(|k| s.kind == k))
        .map(|s| {
            let mut v = World::script_set_json(m, s, include);
            if let Some(results) = v["results"].as_array_mut() {
                results.retain(|r| {
                    hw.is_none_or(|h| r["hardware_type"] == h)
                        && (names.is_empty() || names.iter().any(|n| r["name"] == n.as_str()))
                });
            }
            v
        })
        .collect();
    Resp::ok(json!(sets))
}

fn script_result(w: &World, c: &Ctx) -> Reply {
    let m = find(w, c)?;
    let id = c.path("id");
    let set = match id {
        "current-commissioning" => m.script_sets.iter().rev().find(|s| s.kind == 0),
        "current-testing" => m.script_sets.iter().rev().find(|s| s.kind == 2),
        "current-installation" => m.script_sets.iter().rev().find(|s| s.kind == 1),
        n => n.parse::<u64>().ok().and_then(|n| m.script_sets.iter().find(|s| s.id == n)),
    };
    let set = set.ok_or_else(|| not_found("ScriptSet"))?;
    Resp::ok(World::script_set_json(m, set, c.params.bool("include_output")))
}

fn node_results(w: &World, c: &Ctx) -> Reply {
    let p = c.params;
    let ids = p.list("system_id");
    let names = p.list("name");
    let rtype = p.get("result_type").and_then(|t| t.parse::<u8>().ok());
    let mut out = Vec::new();
    for m in w.machines.iter().filter(|m| visible(m, c) && (ids.is_empty() || ids.contains(&m.system_id))) {
        for s in m.script_sets.iter().filter(|s| rtype.is_none_or(|t| s.kind == t) && s.ended.is_some()) {
            for r in s.results.iter().filter(|r| names.is_empty() || names.iter().any(|n| n == r.name)) {
                let t = crate::world::datetime(&s.started);
                out.push(json!({
                    "id": r.id, "name": r.name, "script_result": r.exit_status, "result_type": s.kind,
                    "node": {"system_id": m.system_id},
                    "data": base64::engine::general_purpose::STANDARD.encode(&r.output),
                    "created": t, "updated": t, "resource_uri": "/MAAS/api/2.0/commissioning-results/",
                }));
            }
        }
    }
    Resp::ok(json!(out))
}

fn tag_action(w: &mut World, c: &Ctx, action: &str) -> Reply {
    let name = c.path("name").to_owned();
    let tag: &NamedThing = w.tags.iter().find(|t| t.name == name).ok_or_else(|| not_found("Tag"))?;
    match action {
        "read" => Resp::ok(World::named_json("tags", tag)),
        "machines" | "nodes" => {
            let v: Vec<Value> = w
                .machines
                .iter()
                .filter(|m| m.tags.contains(&name) && visible(m, c))
                .map(|m| w.machine_json(m))
                .collect();
            Resp::ok(json!(v))
        }
        "delete" => {
            c.admin()?;
            w.tags.retain(|t| t.name != name);
            for m in &mut w.machines {
                m.tags.retain(|t| t != &name);
            }
            Ok(Resp::empty(204))
        }
        "update" => {
            c.admin()?;
            let comment = c.params.get("comment").map(str::to_owned);
            let t = w.tags.iter_mut().find(|t| t.name == name).expect("found above");
            if let Some(cm) = comment {
                t.description = cm;
            }
            Resp::ok(World::named_json("tags", t))
        }
        "update_nodes" => {
            c.admin()?;
            let add = c.params.list("add");
            let remove = c.params.list("remove");
            let (mut added, mut removed) = (0, 0);
            for m in &mut w.machines {
                if add.contains(&m.system_id) && !m.tags.contains(&name) {
                    m.tags.push(name.clone());
                    added += 1;
                }
                if remove.contains(&m.system_id) && m.tags.contains(&name) {
                    m.tags.retain(|t| t != &name);
                    removed += 1;
                }
            }
            Resp::ok(json!({"added": added, "removed": removed}))
        }
        _ => unsupported("TagHandler", action),
    }
}
