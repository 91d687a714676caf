//! Config, version, boot images, account and SSH keys, users, events, notifications, zones, pools, tags.

use std::net::IpAddr;

use base64::Engine;
use chrono::Utc;
use serde_json::{Value, json};

use super::{Ctx, not_found, unsupported};
use crate::wire::{Reply, Resp, field_err};
use crate::world::{
    BootSource, KNOWN_ARCHES, KNOWN_RELEASES, NamedThing, Notification, Selection, SshKey, World, datetime,
    random_token,
};

pub const VERSION: &str = "3.5.3-16334-g.1a4d1b8ba";

pub(super) fn dispatch(w: &mut World, handler: &str, action: &str, c: &Ctx) -> Reply {
    match (handler, action) {
        ("VersionHandler", "read") => Resp::ok(json!({
            "capabilities": ["networks-management", "static-ipaddresses", "ipv6-deployment-ubuntu",
                "devices-management", "storage-deployment-ubuntu", "network-deployment-ubuntu",
                "bridging-interface-ubuntu", "bridging-automatic-ubuntu", "authenticate-api"],
            "version": VERSION, "subversion": "",
        })),
        ("MaasHandler", "get_config") => get_config(w, c),
        ("MaasHandler", "set_config") => set_config(w, c),
        ("BootResourcesHandler", _) => boot_resources(w, c, action),
        ("BootResourceHandler", _) => {
            let idx = w
                .boot_resources
                .iter()
                .position(|r| r.id.to_string() == c.path("id"))
                .ok_or_else(|| not_found("BootResource"))?;
            match action {
                "read" => Resp::ok(boot_resource_json(w, idx, true)),
                "delete" => {
                    c.admin()?;
                    w.boot_resources.remove(idx);
                    Ok(Resp::empty(204))
                }
                _ => unsupported(handler, action),
            }
        }
        ("BootSourcesHandler", "read") => {
            c.admin()?;
            Resp::ok(json!(w.boot_sources.iter().map(boot_source_json).collect::<Vec<_>>()))
        }
        ("BootSourcesHandler", "create") => {
            c.admin()?;
            let p = c.params;
            let Some(url) = p.get("url").filter(|u| !u.is_empty()) else {
                return Err(field_err("url", "This field is required."));
            };
            let kf = p.get("keyring_filename").unwrap_or("");
            let kd = p.get("keyring_data").unwrap_or("");
            if kf.is_empty() && kd.is_empty() {
                return Err(field_err("__all__", "One of keyring_data or keyring_filename must be specified."));
            }
            if w.boot_sources.iter().any(|s| s.url == url) {
                return Err(field_err("url", "Boot source with this Url already exists."));
            }
            let id = w.boot_sources.iter().map(|s| s.id).max().unwrap_or(0) + 1;
            w.boot_sources.push(BootSource {
                id,
                url: url.to_owned(),
                keyring_filename: kf.to_owned(),
                keyring_data: kd.to_owned(),
                created: Utc::now(),
            });
            Ok(Resp::json(201, &boot_source_json(w.boot_sources.last().expect("just pushed"))))
        }
        ("BootSourceHandler", _) => {
            c.admin()?;
            let idx = w
                .boot_sources
                .iter()
                .position(|s| s.id.to_string() == c.path("id"))
                .ok_or_else(|| not_found("BootSource"))?;
            match action {
                "read" => Resp::ok(boot_source_json(&w.boot_sources[idx])),
                "update" => {
                    let p = c.params;
                    let s = &mut w.boot_sources[idx];
                    if let Some(u) = p.get("url") {
                        s.url = u.to_owned();
                    }
                    if let Some(k) = p.get("keyring_filename") {
                        s.keyring_filename = k.to_owned();
                    }
                    if let Some(k) = p.get("keyring_data") {
                        s.keyring_data = k.to_owned();
                    }
                    Resp::ok(boot_source_json(&w.boot_sources[idx]))
                }
                "delete" => {
                    let id = w.boot_sources[idx].id;
                    w.boot_sources.remove(idx);
                    w.selections.retain(|s| s.boot_source_id != id);
                    Ok(Resp::empty(204))
                }
                _ => unsupported(handler, action),
            }
        }
        ("BootSourceSelectionsHandler" | "BootSourceSelectionHandler", _) => selections(w, c, handler, action),
        ("AccountHandler", _) => account(w, c, action),
        ("SSHKeysHandler", _) => sshkeys(w, c, action),
        ("SSHKeyHandler", _) => {
            let idx =
                w.sshkeys.iter().position(|k| k.id.to_string() == c.path("id")).ok_or_else(|| not_found("SSHKey"))?;
            match action {
                "read" => Resp::ok(sshkey_json(&w.sshkeys[idx])),
                "delete" => {
                    if w.sshkeys[idx].username != c.user() {
                        return Err(Resp::text(403, "Can't delete a key you don't own."));
                    }
                    w.sshkeys.remove(idx);
                    Ok(Resp::empty(204))
                }
                _ => unsupported(handler, action),
            }
        }
        ("UsersHandler", "read") => {
            Resp::ok(json!(w.users.iter().map(|u| w.user_json(&u.username)).collect::<Vec<_>>()))
        }
        ("UsersHandler", "whoami") => Resp::ok(w.user_json(c.user())),
        ("UsersHandler", "create") => {
            c.admin()?;
            let p = c.params;
            let mut errors = Vec::new();
            for f in ["username", "email", "password", "is_superuser"] {
                if p.get(f).is_none_or(str::is_empty) {
                    errors.push((f, "This field is required."));
                }
            }
            if !errors.is_empty() {
                return Err(Resp::fields(&errors));
            }
            let username = p.get("username").expect("checked").to_owned();
            if w.users.iter().any(|u| u.username == username) {
                return Err(field_err("username", "A user with that username already exists."));
            }
            w.users.push(crate::world::User {
                username: username.clone(),
                email: p.get("email").expect("checked").to_owned(),
                is_superuser: p.bool("is_superuser"),
            });
            Resp::ok(w.user_json(&username))
        }
        ("UserHandler", _) => {
            let name = c.path("username").to_owned();
            if !w.users.iter().any(|u| u.username == name) {
                return Err(not_found("User"));
            }
            match action {
                "read" => Resp::ok(w.user_json(&name)),
                "delete" => {
                    c.admin()?;
                    if name == c.user() {
                        return Err(Resp::text(400, "An administrator cannot self-delete."));
                    }
                    w.users.retain(|u| u.username != name);
                    w.tokens.retain(|t| t.username != name);
                    Ok(Resp::empty(204))
                }
                _ => unsupported(handler, action),
            }
        }
        ("EventsHandler", "query") => events(w, c),
        ("NotificationsHandler", "read") => {
            let mut list = Vec::new();
            if !w.vlans.iter().any(|v| v.dhcp_on) {
                list.push(json!({"id": 0, "ident": "dhcp_disabled_all_vlans", "user": null, "users": false,
                    "admins": true, "message": "DHCP is not enabled on any VLAN.  This will prevent machines from being able to PXE boot, unless an external DHCP server is being used.",
                    "context": {}, "category": "warning", "dismissable": false,
                    "resource_uri": "/MAAS/api/2.0/notifications/0/"}));
            }
            list.extend(w.notifications.iter().filter(|n| !n.dismissed).map(notification_json));
            Resp::ok(json!(list))
        }
        ("NotificationsHandler", "create") => {
            c.admin()?;
            let Some(message) = c.params.get("message").filter(|m| !m.is_empty()) else {
                return Err(field_err("message", "This field is required."));
            };
            let id = w.id();
            w.notifications.push(Notification {
                id,
                ident: c.params.get("ident").map(str::to_owned),
                message: message.to_owned(),
                category: c.params.get("category").unwrap_or("info").to_owned(),
                dismissed: false,
            });
            Resp::ok(notification_json(w.notifications.last().expect("just pushed")))
        }
        ("NotificationHandler", _) => {
            let idx = w
                .notifications
                .iter()
                .position(|n| n.id.to_string() == c.path("id"))
                .ok_or_else(|| not_found("Notification"))?;
            match action {
                "read" => Resp::ok(notification_json(&w.notifications[idx])),
                "dismiss" => {
                    w.notifications[idx].dismissed = true;
                    Ok(Resp::text(200, "OK"))
                }
                "delete" => {
                    c.admin()?;
                    w.notifications.remove(idx);
                    Ok(Resp::empty(204))
                }
                "update" => {
                    c.admin()?;
                    if let Some(m) = c.params.get("message") {
                        w.notifications[idx].message = m.to_owned();
                    }
                    Resp::ok(notification_json(&w.notifications[idx]))
                }
                _ => unsupported(handler, action),
            }
        }
        ("ZonesHandler", "read") => {
            Resp::ok(json!(w.zones.iter().map(|z| World::named_json("zones", z)).collect::<Vec<_>>()))
        }
        ("ZonesHandler", "create") => named_create(w, c, "zones"),
        ("ZoneHandler", "read") => {
            let z = w.zones.iter().find(|z| z.name == c.path("name")).ok_or_else(|| not_found("Zone"))?;
            Resp::ok(World::named_json("zones", z))
        }
        ("ResourcePoolsHandler", "read") => {
            Resp::ok(json!(w.pools.iter().map(|z| World::named_json("pool", z)).collect::<Vec<_>>()))
        }
        ("ResourcePoolsHandler", "create") => named_create(w, c, "pool"),
        ("ResourcePoolHandler", "read") => {
            let z = w
                .pools
                .iter()
                .find(|z| z.id.to_string() == c.path("id") || z.name == c.path("id"))
                .ok_or_else(|| not_found("ResourcePool"))?;
            Resp::ok(World::named_json("pool", z))
        }
        ("TagsHandler", "read") => {
            Resp::ok(json!(w.tags.iter().map(|z| World::named_json("tags", z)).collect::<Vec<_>>()))
        }
        ("TagsHandler", "create") => named_create(w, c, "tags"),
        _ => unsupported(handler, action),
    }
}

fn named_create(w: &mut World, c: &Ctx, kind: &str) -> Reply {
    c.admin()?;
    let Some(name) = c.params.get("name").filter(|n| !n.is_empty()) else {
        return Err(field_err("name", "This field is required."));
    };
    let (label, list) = match kind {
        "zones" => ("Zone", &w.zones),
        "pool" => ("Resource pool", &w.pools),
        _ => ("Tag", &w.tags),
    };
    if kind == "tags" && !name.chars().all(|ch| ch.is_alphanumeric() || ch == '-' || ch == '_') {
        return Err(field_err("name", "Invalid character in tag name."));
    }
    if list.iter().any(|t| t.name == name) {
        return Err(field_err("name", &format!("{label} with this Name already exists.")));
    }
    let id = w.id();
    let thing = NamedThing {
        id,
        name: name.to_owned(),
        description: c.params.get("description").or(c.params.get("comment")).unwrap_or("").to_owned(),
    };
    let v = World::named_json(kind, &thing);
    match kind {
        "zones" => w.zones.push(thing),
        "pool" => w.pools.push(thing),
        _ => w.tags.push(thing),
    }
    Resp::ok(v)
}

fn get_config(w: &World, c: &Ctx) -> Reply {
    let Some(name) = c.params.get("name") else { return Err(Resp::text(400, "No provided name!")) };
    let name = if name == "ntp_server" { "ntp_servers" } else { name };
    match w.config.get(name) {
        Some(v) => Resp::ok(v.clone()),
        None => Err(invalid_setting(w, name)),
    }
}

fn invalid_setting(w: &World, name: &str) -> Resp {
    let valid: Vec<&str> = w.config.keys().map(String::as_str).collect();
    field_err(name, &format!("{name} is not a valid config setting (valid settings are: {}).", valid.join(", ")))
}

fn set_config(w: &mut World, c: &Ctx) -> Reply {
    c.admin()?;
    let Some(name) = c.params.get("name") else { return Err(Resp::text(400, "No provided name!")) };
    let name = if name == "ntp_server" { "ntp_servers" } else { name };
    let Some(value) = c.params.get("value") else { return Err(Resp::text(400, "No provided value!")) };
    let Some(current) = w.config.get(name) else { return Err(invalid_setting(w, name)) };
    let choice_err =
        |v: &str| field_err(name, &format!("Select a valid choice. {v} is not one of the available choices."));
    let new = match name {
        "upstream_dns" => {
            let parts: Vec<&str> = value.split([' ', ',']).filter(|p| !p.is_empty()).collect();
            for p in &parts {
                if p.parse::<IpAddr>().is_err() {
                    return Err(field_err(
                        name,
                        &format!("Invalid IP address: {p}; provide a list of space-separated IP addresses"),
                    ));
                }
            }
            json!(parts.join(" "))
        }
        "dnssec_validation" => {
            if !matches!(value, "auto" | "yes" | "no") {
                return Err(choice_err(value));
            }
            json!(value)
        }
        "default_distro_series" | "commissioning_distro_series" => {
            if !KNOWN_RELEASES.iter().any(|(_, r, _)| *r == value) {
                return Err(choice_err(value));
            }
            json!(value)
        }
        "network_discovery" => {
            if !matches!(value, "enabled" | "disabled") {
                return Err(choice_err(value));
            }
            json!(value)
        }
        _ if current.is_boolean() => match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => json!(true),
            "false" | "0" | "no" | "off" | "" => json!(false),
            _ => return Err(field_err(name, "Enter a valid boolean value.")),
        },
        _ if current.is_number() => match value.parse::<i64>() {
            Ok(n) => json!(n),
            Err(_) => return Err(field_err(name, "Enter a whole number.")),
        },
        _ => json!(value),
    };
    w.config.insert(name.to_owned(), new);
    w.event(None, "AUDIT", "Settings", &format!("Updated configuration setting '{name}' to '{value}'."));
    Ok(Resp::text(200, "OK"))
}

fn boot_resource_json(w: &World, idx: usize, with_sets: bool) -> Value {
    let r = &w.boot_resources[idx];
    let mut v = json!({
        "id": r.id, "type": r.kind, "name": r.name, "architecture": r.architecture,
        "subarches": "generic", "title": r.title, "base_image": "", "last_deployed": null,
        "resource_uri": format!("/MAAS/api/2.0/boot-resources/{}/", r.id),
    });
    if with_sets {
        let files = json!({
            "squashfs": {"filename": "squashfs", "filetype": "squashfs", "sha256": format!("{:064x}", r.id), "size": 283_115_520u64, "complete": r.complete},
            "boot-kernel": {"filename": "boot-kernel", "filetype": "boot-kernel", "sha256": format!("{:064x}", r.id + 1), "size": 11_000_000u64, "complete": r.complete},
        });
        v["sets"] = json!({r.version.clone(): {"version": r.version, "label": "stable", "size": 294_115_520u64,
                            "complete": r.complete, "files": files}});
    }
    v
}

fn boot_resources(w: &mut World, c: &Ctx, action: &str) -> Reply {
    match action {
        "read" => {
            let kind = c.params.get("type").unwrap_or("all");
            let want = match kind {
                "all" => None,
                "synced" => Some("Synced"),
                "uploaded" => Some("Uploaded"),
                other => {
                    return Err(Resp::text(400, format!("Bad type '{other}'; must be one of: all, synced, uploaded.")));
                }
            };
            let v: Vec<Value> = (0..w.boot_resources.len())
                .filter(|i| want.is_none_or(|k| w.boot_resources[*i].kind == k))
                .map(|i| boot_resource_json(w, i, false))
                .collect();
            Resp::ok(json!(v))
        }
        "is_importing" => Resp::ok(json!(w.importing)),
        "import" => {
            c.admin()?;
            w.start_import();
            Ok(Resp::text(200, "Import of boot resources started"))
        }
        "stop_import" => {
            c.admin()?;
            w.importing = false;
            w.import_generation += 1;
            Ok(Resp::text(200, "Import of boot resources is being stopped"))
        }
        _ => unsupported("BootResourcesHandler", action),
    }
}

fn boot_source_json(s: &BootSource) -> Value {
    json!({"id": s.id, "url": s.url, "keyring_filename": s.keyring_filename, "keyring_data": s.keyring_data,
           "created": datetime(&s.created), "updated": datetime(&s.created),
           "resource_uri": format!("/MAAS/api/2.0/boot-sources/{}/", s.id)})
}

fn selection_json(s: &Selection) -> Value {
    json!({"id": s.id, "boot_source_id": s.boot_source_id, "os": s.os, "release": s.release, "arches": s.arches,
           "subarches": s.subarches, "labels": s.labels,
           "resource_uri": format!("/MAAS/api/2.0/boot-sources/{}/selections/{}/", s.boot_source_id, s.id)})
}

fn validate_selection(os: &str, release: &str, arches: &[String]) -> Result<(), Resp> {
    if !KNOWN_RELEASES.iter().any(|(o, r, _)| *o == os && *r == release) {
        return Err(field_err("os", &format!("OS {os} with release {release} has no available images for download")));
    }
    let bad: Vec<String> =
        arches.iter().filter(|a| *a != "*" && !KNOWN_ARCHES.contains(&a.as_str())).map(|a| format!("'{a}'")).collect();
    if !bad.is_empty() {
        return Err(field_err("arches", &format!("No available images to download for [{}]", bad.join(", "))));
    }
    Ok(())
}

fn list_or(c: &Ctx, key: &str, default: &[String]) -> Vec<String> {
    let v = c.params.list(key);
    if v.is_empty() { default.to_vec() } else { v }
}

fn selections(w: &mut World, c: &Ctx, handler: &str, action: &str) -> Reply {
    c.admin()?;
    let source = w
        .boot_sources
        .iter()
        .find(|s| s.id.to_string() == c.path("boot_source_id"))
        .map(|s| s.id)
        .ok_or_else(|| not_found("BootSource"))?;
    let star = vec!["*".to_owned()];
    if handler == "BootSourceSelectionsHandler" {
        return match action {
            "read" => Resp::ok(json!(
                w.selections.iter().filter(|s| s.boot_source_id == source).map(selection_json).collect::<Vec<_>>()
            )),
            "create" => {
                let p = c.params;
                let mut errs = Vec::new();
                if p.get("os").is_none_or(str::is_empty) {
                    errs.push(("os", "This field is required."));
                }
                if p.get("release").is_none_or(str::is_empty) {
                    errs.push(("release", "This field is required."));
                }
                if !errs.is_empty() {
                    return Err(Resp::fields(&errs));
                }
                let (os, release) = (p.get("os").expect("checked"), p.get("release").expect("checked"));
                let arches = list_or(c, "arches", &star);
                validate_selection(os, release, &arches)?;
                if w.selections.iter().any(|s| s.boot_source_id == source && s.os == os && s.release == release) {
                    return Err(field_err(
                        "__all__",
                        "Boot source selection with this Boot source, Os and Release already exists.",
                    ));
                }
                let id = w.selections.iter().map(|s| s.id).max().unwrap_or(0) + 1;
                w.selections.push(Selection {
                    id,
                    boot_source_id: source,
                    os: os.to_owned(),
                    release: release.to_owned(),
                    arches,
                    subarches: list_or(c, "subarches", &star),
                    labels: list_or(c, "labels", &star),
                });
                Resp::ok(selection_json(w.selections.last().expect("just pushed")))
            }
            _ => unsupported(handler, action),
        };
    }
    let idx = w
        .selections
        .iter()
        .position(|s| s.boot_source_id == source && s.id.to_string() == c.path("id"))
        .ok_or_else(|| not_found("BootSourceSelection"))?;
    match action {
        "read" => Resp::ok(selection_json(&w.selections[idx])),
        "update" => {
            let s = &w.selections[idx];
            let os = c.params.get("os").unwrap_or(&s.os).to_owned();
            let release = c.params.get("release").unwrap_or(&s.release).to_owned();
            let arches = list_or(c, "arches", &s.arches);
            validate_selection(&os, &release, &arches)?;
            let subarches = list_or(c, "subarches", &s.subarches);
            let labels = list_or(c, "labels", &s.labels);
            let s = &mut w.selections[idx];
            s.os = os;
            s.release = release;
            s.arches = arches;
            s.subarches = subarches;
            s.labels = labels;
            Resp::ok(selection_json(&w.selections[idx]))
        }
        "delete" => {
            w.selections.remove(idx);
            Ok(Resp::empty(204))
        }
        _ => unsupported(handler, action),
    }
}

fn account(w: &mut World, c: &Ctx, action: &str) -> Reply {
    match action {
        "create_authorisation_token" => {
            let name = c.params.get("name").unwrap_or("Unnamed token").to_owned();
            let key = (random_token(18), random_token(18), random_token(32));
            w.add_token(c.user(), (&key.0, &key.1, &key.2), &name);
            Resp::ok(json!({"token_key": key.1, "token_secret": key.2, "consumer_key": key.0, "name": name}))
        }
        "delete_authorisation_token" => {
            let Some(t) = c.params.get("token_key") else { return Err(Resp::text(400, "No provided token_key!")) };
            let user = c.user().to_owned();
            w.tokens.retain(|x| !(x.token_key == t && x.username == user));
            Ok(Resp::empty(204))
        }
        "list_authorisation_tokens" => {
            let v: Vec<Value> = w
                .tokens
                .iter()
                .filter(|t| t.username == c.user())
                .map(|t| json!({"name": t.name, "token": format!("{}:{}:{}", t.consumer_key, t.token_key, t.token_secret)}))
                .collect();
            Resp::ok(json!(v))
        }
        "update_token_name" => {
            let (Some(token), Some(name)) = (c.params.get("token"), c.params.get("name")) else {
                return Err(Resp::text(400, "No provided token or name!"));
            };
            let key = token.split(':').nth(1).unwrap_or(token).to_owned();
            let user = c.user().to_owned();
            let t = w
                .tokens
                .iter_mut()
                .find(|t| t.token_key == key && t.username == user)
                .ok_or_else(|| not_found("Token"))?;
            t.name = name.to_owned();
            Ok(Resp::text(200, "Accepted"))
        }
        _ => unsupported("AccountHandler", action),
    }
}

fn sshkey_json(k: &SshKey) -> Value {
    json!({"id": k.id, "key": k.key, "keysource": "", "resource_uri": format!("/MAAS/api/2.0/account/prefs/sshkeys/{}/", k.id)})
}

/// An OpenSSH public key: known type, base64 blob whose first field names the same type.
pub fn valid_ssh_key(key: &str) -> bool {
    let mut parts = key.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else { return false };
    let known =
        ["ssh-rsa", "ssh-dss", "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"];
    if !known.contains(&kind) {
        return false;
    }
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(blob) else { return false };
    if bytes.len() < 4 {
        return false;
    }
    let n = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    bytes.get(4..4 + n) == Some(kind.as_bytes())
}

fn sshkeys(w: &mut World, c: &Ctx, action: &str) -> Reply {
    match action {
        "read" => {
            Resp::ok(json!(w.sshkeys.iter().filter(|k| k.username == c.user()).map(sshkey_json).collect::<Vec<_>>()))
        }
        "create" => {
            let Some(key) = c.params.get("key").map(str::trim).filter(|k| !k.is_empty()) else {
                return Err(field_err("key", "This field is required."));
            };
            let user = match c.params.get("user") {
                Some(u) if c.caller.admin => u.to_owned(),
                _ => c.user().to_owned(),
            };
            if !valid_ssh_key(key) {
                return Err(field_err("key", &format!("Invalid SSH public key: {key}")));
            }
            if w.sshkeys.iter().any(|k| k.username == user && k.key == key) {
                return Err(field_err("__all__", "This key has already been added for this user."));
            }
            let id = w.sshkeys.iter().map(|k| k.id).max().unwrap_or(0) + 1;
            w.sshkeys.push(SshKey { id, key: key.to_owned(), username: user });
            Ok(Resp::json(201, &sshkey_json(w.sshkeys.last().expect("just pushed"))))
        }
        "import" => {
            let source = c.params.get("keysource").unwrap_or("");
            Err(Resp::text(
                400,
                format!(
                    "Unable to import SSH keys from '{source}': maas-sim has no internet access; add keys with op create."
                ),
            ))
        }
        _ => unsupported("SSHKeysHandler", action),
    }
}

fn notification_json(n: &Notification) -> Value {
    json!({"id": n.id, "ident": n.ident, "user": null, "users": true, "admins": true, "message": n.message,
           "context": {}, "category": n.category, "dismissable": true,
           "resource_uri": format!("/MAAS/api/2.0/notifications/{}/", n.id)})
}

fn level_rank(level: &str) -> Option<u8> {
    match level {
        "DEBUG" => Some(10),
        "INFO" => Some(20),
        "WARNING" => Some(30),
        "ERROR" => Some(40),
        "CRITICAL" => Some(50),
        "AUDIT" => Some(0),
        _ => None,
    }
}

fn events(w: &World, c: &Ctx) -> Reply {
    let p = c.params;
    let limit: usize = match p.get("limit") {
        Some(l) => l.parse().map_err(|_| Resp::text(400, format!("Invalid limit: {l}")))?,
        None => 100,
    };
    if limit > 1000 {
        return Err(Resp::text(400, format!("Requested number of events {limit} is greater than limit: 1000")));
    }
    let after = p.get("after").and_then(|v| v.parse::<u64>().ok());
    let before = p.get("before").and_then(|v| v.parse::<u64>().ok());
    if after.is_some() && before.is_some() {
        return Err(Resp::text(400, "There is undetermined behaviour when both 'after' and 'before' are specified."));
    }
    let level = p.get("level").unwrap_or("INFO").to_ascii_uppercase();
    let Some(min) = level_rank(&level) else {
        return Err(field_err(
            "level",
            &format!("Select a valid choice. {level} is not one of the available choices."),
        ));
    };
    let ids = p.list("id");
    let hostnames = p.list("hostname");
    let macs = p.list("mac_address");
    let owners = p.list("owner");
    let zones = p.list("zone");
    let node_of = |sid: &Option<String>| sid.as_deref().and_then(|s| w.machine(s));
    let matching: Vec<&crate::world::Event> = w
        .events
        .iter()
        .filter(|e| {
            let r = level_rank(e.level).unwrap_or(20);
            if level == "AUDIT" { r == 0 } else { r >= min && r != 0 }
        })
        .filter(|e| ids.is_empty() || e.node.as_ref().is_some_and(|n| ids.contains(n)))
        .filter(|e| hostnames.is_empty() || hostnames.contains(&e.hostname))
        .filter(|e| {
            macs.is_empty()
                || node_of(&e.node)
                    .is_some_and(|m| m.interfaces.iter().any(|i| macs.iter().any(|x| x.eq_ignore_ascii_case(&i.mac))))
        })
        .filter(|e| {
            owners.is_empty() || node_of(&e.node).is_some_and(|m| m.owner.as_ref().is_some_and(|o| owners.contains(o)))
        })
        .filter(|e| zones.is_empty() || node_of(&e.node).is_some_and(|m| zones.contains(&m.zone)))
        .collect();
    let mut page: Vec<&crate::world::Event> = match (after, before) {
        (Some(a), _) => matching.iter().filter(|e| e.id > a).take(limit).copied().collect(),
        (_, Some(b)) => matching.iter().rev().filter(|e| e.id < b).take(limit).copied().collect(),
        _ => matching.iter().rev().take(limit).copied().collect(),
    };
    page.sort_by_key(|e| std::cmp::Reverse(e.id));
    let filters: String =
        p.0.iter().filter(|(k, _)| k != "after" && k != "before").map(|(k, v)| format!("&{k}={v}")).collect();
    let newest = page.first().map(|e| e.id).or(after).unwrap_or(0);
    let oldest = page.last().map(|e| e.id).or(before).unwrap_or(0);
    Resp::ok(json!({
        "count": page.len(),
        "events": page.iter().map(|e| World::event_json(e)).collect::<Vec<_>>(),
        "next_uri": format!("/MAAS/api/2.0/events/?op=query{filters}&after={newest}"),
        "prev_uri": format!("/MAAS/api/2.0/events/?op=query{filters}&before={oldest}"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_keys_are_checked_for_type_and_blob() {
        let blob = base64::engine::general_purpose::STANDARD
            .encode(b"\0\0\0\x0bssh-ed25519\0\0\0\x20abcdefghijklmnopqrstuvwxyz012345");
        assert!(valid_ssh_key(&format!("ssh-ed25519 {blob} me@host")));
        assert!(!valid_ssh_key(&format!("ssh-rsa {blob}")));
        assert!(!valid_ssh_key("ssh-ed25519 not-base64!"));
        assert!(!valid_ssh_key("garbage"));
    }
}
