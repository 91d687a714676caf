//! The resource table: MAAS's handler names, paths and exported (method, op) pairs.
//!
//! One table drives both dispatch (which signature is exported, 400 versus 405) and the `/describe/` document,
//! so the two can never disagree.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The API root every path below hangs from.
pub const ROOT: &str = "/MAAS/api/2.0/";

/// One URL pattern and the handlers behind it.
pub struct Resource {
    /// The auth handler's name (`MachinesHandler`), also the resource's name in `/describe/`.
    pub auth: Option<&'static str>,
    /// The anonymous handler's name, when anonymous calls are served.
    pub anon: Option<&'static str>,
    /// The path below [`ROOT`], with `{param}` placeholders.
    pub path: &'static str,
    /// `"METHOD name"` for each export; `read`, `create`, `update` and `delete` are the CRUD methods.
    pub auth_actions: &'static [&'static str],
    pub anon_actions: &'static [&'static str],
    /// False for aliases that MAAS serves but that would duplicate a describe entry.
    pub described: bool,
}

macro_rules! res {
    ($auth:expr, $anon:expr, $path:expr, [$($a:expr),* $(,)?], [$($n:expr),* $(,)?]) => {
        Resource { auth: $auth, anon: $anon, path: $path, auth_actions: &[$($a),*], anon_actions: &[$($n),*], described: true }
    };
}

/// Every resource the emulator serves.
pub static RESOURCES: &[Resource] = &[
    res!(
        Some("MachinesHandler"),
        Some("AnonMachinesHandler"),
        "machines/",
        [
            "POST accept",
            "POST accept_all",
            "POST add_chassis",
            "POST allocate",
            "POST clone",
            "POST create",
            "GET is_registered",
            "GET list_allocated",
            "GET power_parameters",
            "GET read",
            "POST release",
            "POST set_zone"
        ],
        ["POST accept", "POST create", "GET is_action_in_progress", "GET is_registered"]
    ),
    res!(
        Some("MachineHandler"),
        None,
        "machines/{system_id}/",
        [
            "POST abort",
            "POST clear_default_gateways",
            "POST commission",
            "DELETE delete",
            "POST deploy",
            "GET details",
            "POST exit_rescue_mode",
            "GET get_curtin_config",
            "GET get_token",
            "POST lock",
            "POST mark_broken",
            "POST mark_fixed",
            "POST mount_special",
            "POST override_failed_testing",
            "POST power_off",
            "POST power_on",
            "GET power_parameters",
            "GET query_power_state",
            "GET read",
            "POST release",
            "POST rescue_mode",
            "POST restore_default_configuration",
            "POST restore_networking_configuration",
            "POST restore_storage_configuration",
            "POST set_owner_data",
            "POST set_storage_layout",
            "POST set_workload_annotations",
            "POST test",
            "POST unlock",
            "POST unmount_special",
            "PUT update"
        ],
        []
    ),
    res!(
        Some("NodesHandler"),
        Some("AnonNodesHandler"),
        "nodes/",
        ["GET is_registered", "GET read", "POST set_zone"],
        ["GET is_action_in_progress", "GET is_registered"]
    ),
    res!(
        Some("NodeHandler"),
        None,
        "nodes/{system_id}/",
        ["DELETE delete", "GET details", "GET power_parameters", "GET read"],
        []
    ),
    res!(Some("NodeScriptResultsHandler"), None, "nodes/{system_id}/results/", ["GET read"], []),
    res!(
        Some("NodeScriptResultHandler"),
        None,
        "nodes/{system_id}/results/{id}/",
        ["DELETE delete", "GET download", "GET read", "PUT update"],
        []
    ),
    res!(Some("NodeResultsHandler"), None, "installation-results/", ["GET read"], []),
    Resource {
        auth: Some("NodeResultsHandler"),
        anon: None,
        path: "commissioning-results/",
        auth_actions: &["GET read"],
        anon_actions: &[],
        described: false,
    },
    res!(Some("SubnetsHandler"), None, "subnets/", ["POST create", "GET read"], []),
    res!(
        Some("SubnetHandler"),
        None,
        "subnets/{id}/",
        [
            "DELETE delete",
            "GET ip_addresses",
            "GET read",
            "GET reserved_ip_ranges",
            "GET statistics",
            "GET unreserved_ip_ranges",
            "PUT update"
        ],
        []
    ),
    res!(Some("FabricsHandler"), None, "fabrics/", ["POST create", "GET read"], []),
    res!(Some("FabricHandler"), None, "fabrics/{id}/", ["DELETE delete", "GET read", "PUT update"], []),
    res!(Some("VlansHandler"), None, "fabrics/{fabric_id}/vlans/", ["POST create", "GET read"], []),
    res!(
        Some("VlanHandler"),
        None,
        "fabrics/{fabric_id}/vlans/{vid}/",
        ["DELETE delete", "GET read", "PUT update"],
        []
    ),
    Resource {
        auth: Some("VlanHandler"),
        anon: None,
        path: "vlans/{vlan_id}/",
        auth_actions: &["DELETE delete", "GET read", "PUT update"],
        anon_actions: &[],
        described: false,
    },
    res!(Some("IPRangesHandler"), None, "ipranges/", ["POST create", "GET read"], []),
    res!(Some("IPRangeHandler"), None, "ipranges/{id}/", ["DELETE delete", "GET read", "PUT update"], []),
    res!(
        Some("RackControllersHandler"),
        None,
        "rackcontrollers/",
        [
            "GET describe_power_types",
            "POST import_boot_images",
            "GET is_registered",
            "GET power_parameters",
            "GET read",
            "POST set_zone"
        ],
        []
    ),
    res!(
        Some("RackControllerHandler"),
        None,
        "rackcontrollers/{system_id}/",
        [
            "POST abort",
            "DELETE delete",
            "GET details",
            "POST import_boot_images",
            "GET list_boot_images",
            "POST override_failed_testing",
            "POST power_off",
            "POST power_on",
            "GET power_parameters",
            "GET query_power_state",
            "GET read",
            "POST test",
            "PUT update"
        ],
        []
    ),
    res!(Some("MaasHandler"), None, "maas/", ["GET get_config", "POST set_config"], []),
    res!(None, Some("VersionHandler"), "version/", [], ["GET read"]),
    res!(
        Some("BootResourcesHandler"),
        None,
        "boot-resources/",
        ["POST create", "POST import", "GET is_importing", "GET read", "POST stop_import"],
        []
    ),
    res!(Some("BootResourceHandler"), None, "boot-resources/{id}/", ["DELETE delete", "GET read"], []),
    res!(Some("BootSourcesHandler"), None, "boot-sources/", ["POST create", "GET read"], []),
    res!(Some("BootSourceHandler"), None, "boot-sources/{id}/", ["DELETE delete", "GET read", "PUT update"], []),
    res!(
        Some("BootSourceSelectionsHandler"),
        None,
        "boot-sources/{boot_source_id}/selections/",
        ["POST create", "GET read"],
        []
    ),
    res!(
        Some("BootSourceSelectionHandler"),
        None,
        "boot-sources/{boot_source_id}/selections/{id}/",
        ["DELETE delete", "GET read", "PUT update"],
        []
    ),
    res!(
        Some("AccountHandler"),
        None,
        "account/",
        [
            "POST create_authorisation_token",
            "POST delete_authorisation_token",
            "GET list_authorisation_tokens",
            "POST update_token_name"
        ],
        []
    ),
    res!(Some("SSHKeysHandler"), None, "account/prefs/sshkeys/", ["POST create", "POST import", "GET read"], []),
    res!(Some("SSHKeyHandler"), None, "account/prefs/sshkeys/{id}/", ["DELETE delete", "GET read"], []),
    res!(Some("UsersHandler"), None, "users/", ["POST create", "GET read", "GET whoami"], []),
    res!(Some("UserHandler"), None, "users/{username}/", ["DELETE delete", "GET read"], []),
    res!(Some("EventsHandler"), None, "events/", ["GET query"], []),
    res!(Some("NotificationsHandler"), None, "notifications/", ["POST create", "GET read"], []),
    res!(
        Some("NotificationHandler"),
        None,
        "notifications/{id}/",
        ["DELETE delete", "POST dismiss", "GET read", "PUT update"],
        []
    ),
    res!(Some("DevicesHandler"), None, "devices/", ["POST create", "GET read"], []),
    res!(Some("DeviceHandler"), None, "devices/{system_id}/", ["DELETE delete", "GET read", "PUT update"], []),
    res!(Some("ZonesHandler"), None, "zones/", ["POST create", "GET read"], []),
    res!(Some("ZoneHandler"), None, "zones/{name}/", ["DELETE delete", "GET read", "PUT update"], []),
    res!(Some("ResourcePoolsHandler"), None, "resourcepools/", ["POST create", "GET read"], []),
    res!(Some("ResourcePoolHandler"), None, "resourcepool/{id}/", ["DELETE delete", "GET read", "PUT update"], []),
    res!(Some("TagsHandler"), None, "tags/", ["POST create", "GET read"], []),
    res!(
        Some("TagHandler"),
        None,
        "tags/{name}/",
        ["DELETE delete", "GET machines", "GET nodes", "GET read", "PUT update", "POST update_nodes"],
        []
    ),
];

/// An exported action parsed from the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    pub method: &'static str,
    pub name: &'static str,
}

impl Action {
    fn parse(spec: &'static str) -> Action {
        let (method, name) = spec.split_once(' ').expect("action specs are \"METHOD name\"");
        Action { method, name }
    }

    /// The op this action answers to, or None for CRUD.
    pub fn op(&self) -> Option<&'static str> {
        if self.is_crud() { None } else { Some(self.name) }
    }

    fn is_crud(&self) -> bool {
        matches!(self.name, "read" | "create" | "update" | "delete")
    }
}

/// The exports of one side (auth or anon) of a resource.
pub fn actions(specs: &'static [&'static str]) -> impl Iterator<Item = Action> {
    specs.iter().map(|s| Action::parse(s))
}

/// A matched request path: the resource and its path parameters.
pub struct Matched {
    pub resource: &'static Resource,
    pub params: BTreeMap<&'static str, String>,
}

/// Matches a path below [`ROOT`] (without the root itself, with its trailing slash) against the table.
pub fn match_path(rest: &str) -> Option<Matched> {
    let mut segs: Vec<String> = rest.trim_end_matches('/').split('/').map(percent_decode).collect();
    // `subnets/10.0.0.0/24/` names a subnet by CIDR: glue the prefix length back on.
    if segs.len() == 3 && segs[0] == "subnets" && segs[2].chars().all(|c| c.is_ascii_digit()) {
        let cidr = format!("{}/{}", segs[1], segs[2]);
        segs.truncate(1);
        segs.push(cidr);
    }
    for resource in RESOURCES {
        let pat: Vec<&'static str> = resource.path.trim_end_matches('/').split('/').collect();
        if pat.len() != segs.len() {
            continue;
        }
        let mut params = BTreeMap::new();
        let ok = pat.iter().zip(&segs).all(|(p, s)| match p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) => {
                params.insert(name, s.clone());
                !s.is_empty()
            }
            None => p == s,
        });
        if ok {
            return Some(Matched { resource, params });
        }
    }
    None
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn handler_doc(name: &str, path: &str, base: &str, actions: &'static [&'static str]) -> Value {
    let params: Vec<String> = path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_owned)
        .collect();
    let mut acts: Vec<Action> = self::actions(actions).collect();
    acts.sort_by_key(|a| a.name);
    let acts: Vec<Value> = acts
        .iter()
        .map(|a| {
            json!({"name": a.name, "method": a.method, "op": a.op(), "restful": a.op().is_none(),
                   "doc": format!("{} ({} {}).", a.name.replace('_', " "), a.method, path)})
        })
        .collect();
    json!({
        "name": name,
        "doc": format!("Manage {}.", path.trim_end_matches('/')),
        "params": params,
        "path": format!("{ROOT}{path}"),
        "uri": format!("{base}{ROOT}{path}"),
        "actions": acts,
    })
}

/// The `/describe/` document; `base` is `http://HOST` from the request, so every `uri` is reachable.
pub fn describe(base: &str) -> Value {
    let mut resources = Vec::new();
    let mut anon_handlers = Vec::new();
    let mut auth_handlers = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.described) {
        let anon = r.anon.map(|n| handler_doc(n, r.path, base, r.anon_actions));
        let auth = r.auth.map(|n| handler_doc(n, r.path, base, r.auth_actions));
        let name = r.auth.or(r.anon).unwrap_or_default();
        if let Some(a) = &anon {
            anon_handlers.push(a.clone());
        }
        if let Some(a) = &auth {
            auth_handlers.push(a.clone());
        }
        resources.push(json!({"name": name, "anon": anon, "auth": auth}));
    }
    resources.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    anon_handlers.extend(auth_handlers);
    // The hash is computed over a document with a fixed base, so it does not change with the Host header.
    json!({"doc": "MAAS API", "resources": resources, "handlers": anon_handlers})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_their_resources() {
        let check = |path: &str, handler: &str, param: Option<(&str, &str)>| {
            let m = match_path(path).unwrap_or_else(|| panic!("{path} matches"));
            assert_eq!(m.resource.auth.or(m.resource.anon), Some(handler), "{path}");
            if let Some((k, v)) = param {
                assert_eq!(m.params.get(k).map(String::as_str), Some(v), "{path}");
            }
        };
        check("machines/", "MachinesHandler", None);
        check("machines/abc123/", "MachineHandler", Some(("system_id", "abc123")));
        check("subnets/172.16.0.0/20/", "SubnetHandler", Some(("id", "172.16.0.0/20")));
        check("fabrics/0/vlans/untagged/", "VlanHandler", Some(("vid", "untagged")));
        check("vlans/5001/", "VlanHandler", Some(("vlan_id", "5001")));
        check("boot-sources/1/selections/2/", "BootSourceSelectionHandler", Some(("id", "2")));
        assert!(match_path("foo/").is_none());
    }
}
