//! The OpenWrt (ubus JSON-RPC) and RouterOS (REST) backends against small emulators of their
//! documented HTTP APIs, served by axum on 127.0.0.1:0: request shapes, authentication, error
//! answers, a refused login and a 500 from the router.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use router_shim::backend::openwrt::OpenWrtBackend;
use router_shim::backend::routeros::RouterOsBackend;
use router_shim::backend::{Backend, BackendError};
use router_shim::config::{OpenWrtConfig, RouterOsConfig};
use router_shim::model::{PortForward, Protocol, RemoteManagement};
use router_shim::shim::{Change, Shim, ShimError, ShimSettings};
use serde_json::{Value, json};

fn credentials(dir: &Path, text: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.join("credentials");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn shim(backend: Arc<dyn Backend>, dir: &Path) -> Arc<Shim> {
    Shim::new(
        backend,
        ShimSettings {
            lan_prefix: "192.168.1.0/24".parse().unwrap(),
            protected_forwards: vec!["main-ssh".into()],
            confirm_timeout: Duration::from_secs(60),
            dhcp_found_file: dir.join("dhcp-found.json"),
            auto_rollback: true,
        },
    )
}

fn ssh(target: &str) -> PortForward {
    PortForward {
        name: "main-ssh".into(),
        protocol: Protocol::Tcp,
        external_port: 2222,
        target: target.parse().unwrap(),
        protected: false,
    }
}

// === OpenWrt: ubus JSON-RPC ===

/// A uci config: section name -> (section type, options).
type UciConfig = BTreeMap<String, (String, serde_json::Map<String, Value>)>;

#[derive(Default)]
struct Ubus {
    sessions: Vec<String>,
    /// config -> section -> (type, values)
    uci: BTreeMap<String, UciConfig>,
    calls: Vec<String>,
    fail_with_500: bool,
}

fn ubus_reply(id: &Value, result: Value) -> Response {
    axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
}

async fn ubus(state: Arc<Mutex<Ubus>>, method: Method, uri: Uri, body: Bytes) -> Response {
    let mut ubus = state.lock().unwrap();
    if method != Method::POST || uri.path() != "/ubus" {
        return StatusCode::NOT_FOUND.into_response();
    }
    if ubus.fail_with_500 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "uhttpd: internal error").into_response();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return axum::Json(json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}))
            .into_response();
    };
    let id = request["id"].clone();
    let params = request["params"].as_array().cloned().unwrap_or_default();
    if request["jsonrpc"] != "2.0" || request["method"] != "call" || params.len() != 4 {
        return axum::Json(json!({"jsonrpc":"2.0","id":id,"error":{"code":-32600,"message":"Invalid request"}}))
            .into_response();
    }
    let (sid, object, call, args) = (
        params[0].as_str().unwrap_or_default(),
        params[1].as_str().unwrap_or_default(),
        params[2].as_str().unwrap_or_default(),
        &params[3],
    );
    ubus.calls.push(format!("{object}.{call}"));
    if object == "session" && call == "login" {
        if sid != "00000000000000000000000000000000" {
            return ubus_reply(&id, json!([6]));
        }
        if args["username"] == "root" && args["password"] == "s3cret" && args["timeout"].is_u64() {
            let session = format!("{:032x}", ubus.sessions.len() + 1);
            ubus.sessions.push(session.clone());
            return ubus_reply(&id, json!([0, {"ubus_rpc_session": session, "timeout": 600}]));
        }
        return ubus_reply(&id, json!([6]));
    }
    if !ubus.sessions.iter().any(|s| s == sid) {
        return ubus_reply(&id, json!([6]));
    }
    if object != "uci" {
        return ubus_reply(&id, json!([4]));
    }
    let config = args["config"].as_str().unwrap_or_default().to_string();
    match call {
        "get" => {
            let Some(sections) = ubus.uci.get(&config) else { return ubus_reply(&id, json!([4])) };
            if let Some(section) = args["section"].as_str() {
                return match sections.get(section) {
                    Some((_, values)) => ubus_reply(&id, json!([0, {"values": values}])),
                    None => ubus_reply(&id, json!([4])),
                };
            }
            let kind = args["type"].as_str();
            let values: serde_json::Map<String, Value> = sections
                .iter()
                .filter(|(_, (t, _))| kind.is_none_or(|k| k == t))
                .map(|(name, (t, v))| {
                    let mut v = v.clone();
                    v.insert(".name".into(), json!(name));
                    v.insert(".type".into(), json!(t));
                    (name.clone(), Value::Object(v))
                })
                .collect();
            ubus_reply(&id, json!([0, {"values": values}]))
        }
        "set" => {
            let section = args["section"].as_str().unwrap_or_default();
            let Some((_, values)) = ubus.uci.get_mut(&config).and_then(|c| c.get_mut(section)) else {
                return ubus_reply(&id, json!([4]));
            };
            for (k, v) in args["values"].as_object().cloned().unwrap_or_default() {
                if !v.is_string() {
                    return ubus_reply(&id, json!([2]));
                }
                values.insert(k, v);
            }
            ubus_reply(&id, json!([0]))
        }
        "add" => {
            let (Some(kind), Some(name)) = (args["type"].as_str(), args["name"].as_str()) else {
                return ubus_reply(&id, json!([2]));
            };
            let values = args["values"].as_object().cloned().unwrap_or_default();
            ubus.uci.entry(config).or_default().insert(name.to_string(), (kind.to_string(), values));
            ubus_reply(&id, json!([0, {"section": name}]))
        }
        "delete" => {
            let section = args["section"].as_str().unwrap_or_default();
            let Some(sections) = ubus.uci.get_mut(&config) else { return ubus_reply(&id, json!([4])) };
            match args["option"].as_str() {
                Some(option) => {
                    if let Some((_, values)) = sections.get_mut(section) {
                        values.remove(option);
                    }
                }
                None => {
                    if sections.remove(section).is_none() {
                        return ubus_reply(&id, json!([4]));
                    }
                }
            }
            ubus_reply(&id, json!([0]))
        }
        "commit" => ubus_reply(&id, json!([0])),
        "apply" => {
            if args["rollback"] != true || !args["timeout"].is_u64() {
                return ubus_reply(&id, json!([2]));
            }
            ubus_reply(&id, json!([0]))
        }
        "confirm" => ubus_reply(&id, json!([0])),
        _ => ubus_reply(&id, json!([4])),
    }
}

async fn openwrt(dir: &Path, password: &str) -> (OpenWrtBackend, Arc<Mutex<Ubus>>) {
    let mut emulator = Ubus::default();
    let mut lan = serde_json::Map::new();
    lan.insert("interface".into(), json!("lan"));
    lan.insert("start".into(), json!("100"));
    lan.insert("limit".into(), json!("150"));
    emulator.uci.entry("dhcp".into()).or_default().insert("lan".into(), ("dhcp".into(), lan));
    let mut rule = serde_json::Map::new();
    rule.insert("name".into(), json!("Allow-Ping"));
    emulator.uci.entry("firewall".into()).or_default().insert("cfg0a92bd".into(), ("rule".into(), rule));
    let state = Arc::new(Mutex::new(emulator));
    let handler_state = state.clone();
    let router = axum::Router::new()
        .fallback(move |method: Method, uri: Uri, body: Bytes| ubus(handler_state.clone(), method, uri, body));
    let url = serve(router).await;
    let config = OpenWrtConfig {
        url: format!("{url}/ubus").parse().unwrap(),
        credentials_file: credentials(dir, &format!("root:{password}\n"), 0o600),
        dhcp_section: "lan".into(),
        management_ports: vec![22, 443],
        apply_rollback: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
    };
    (OpenWrtBackend::new(config).unwrap(), state)
}

#[tokio::test]
async fn openwrt_dhcp_forward_and_management_through_uci() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, emulator) = openwrt(dir.path(), "s3cret").await;
    let shim = shim(Arc::new(backend), dir.path());
    let state = shim.state().await.unwrap();
    assert!(state.dhcp_enabled);
    assert_eq!(state.dhcp_pool, "start 100, limit 150");

    assert!(shim.apply(Change::Dhcp { enabled: false }).await.unwrap().changed);
    assert_eq!(emulator.lock().unwrap().uci["dhcp"]["lan"].1["ignore"], "1");
    let calls = emulator.lock().unwrap().calls.clone();
    // Staged, committed, applied with rollback, read back, then confirmed: in that order.
    let mut wanted = ["uci.set", "uci.commit", "uci.apply", "uci.get", "uci.confirm"].into_iter().peekable();
    for call in &calls {
        if wanted.peek() == Some(&call.as_str()) {
            wanted.next();
        }
    }
    assert_eq!(wanted.next(), None, "{calls:?}");
    assert_eq!(calls.iter().filter(|c| *c == "session.login").count(), 1, "one session: {calls:?}");

    let add = Change::AddForward { forward: ssh("192.168.1.3:22"), replace: false };
    let outcome = shim.apply(add.clone()).await.unwrap();
    assert!(outcome.changed);
    assert_eq!(outcome.after.forwards, vec![PortForward { protected: true, ..ssh("192.168.1.3:22") }]);
    {
        let emulator = emulator.lock().unwrap();
        let (kind, values) = &emulator.uci["firewall"]["mf_main_ssh"];
        assert_eq!(kind, "redirect");
        assert_eq!(values["target"], "DNAT");
        assert_eq!(values["src"], "wan");
        assert_eq!(values["src_dport"], "2222");
        assert_eq!(values["dest_ip"], "192.168.1.3");
        assert_eq!(values["dest_port"], "22");
    }
    assert!(!shim.apply(add).await.unwrap().changed, "idempotent");

    let on = RemoteManagement { enabled: true, allowed_from: vec!["10.0.0.0/8".parse().unwrap()] };
    shim.apply(Change::RemoteManagement(on.clone())).await.unwrap();
    assert_eq!(emulator.lock().unwrap().uci["firewall"]["mf_mgmt"].1["dest_port"], "22 443");
    assert_eq!(shim.state().await.unwrap().remote_management, on);

    shim.apply(Change::Reset).await.unwrap();
    let state = shim.state().await.unwrap();
    assert!(state.dhcp_enabled && state.forwards.is_empty() && !state.remote_management.enabled);
    assert!(emulator.lock().unwrap().uci["firewall"].contains_key("cfg0a92bd"), "foreign rule left alone");
}

#[tokio::test]
async fn openwrt_refused_login_is_an_auth_error() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, emulator) = openwrt(dir.path(), "wrong").await;
    let error = backend.state().await.unwrap_err();
    assert!(matches!(error, BackendError::Auth { .. }), "{error}");
    assert!(error.to_string().contains("refused the login"), "{error}");
    assert!(error.to_string().contains("check the credentials file"), "{error}");
    assert_eq!(emulator.lock().unwrap().calls, vec!["session.login".to_string()]);
}

#[tokio::test]
async fn openwrt_500_is_a_router_error_and_nothing_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, emulator) = openwrt(dir.path(), "s3cret").await;
    emulator.lock().unwrap().fail_with_500 = true;
    let shim = shim(Arc::new(backend), dir.path());
    let error = shim.apply(Change::Dhcp { enabled: false }).await.unwrap_err();
    assert!(matches!(error, ShimError::Backend(BackendError::Router { .. })), "{error}");
    assert!(error.to_string().contains("HTTP 500"), "{error}");
    assert!(!emulator.lock().unwrap().uci["dhcp"]["lan"].1.contains_key("ignore"));
}

#[tokio::test]
async fn openwrt_credentials_readable_by_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = OpenWrtConfig {
        url: "http://127.0.0.1:9/ubus".parse().unwrap(),
        credentials_file: credentials(dir.path(), "root:x\n", 0o644),
        dhcp_section: "lan".into(),
        management_ports: vec![22],
        apply_rollback: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
    };
    let error = OpenWrtBackend::new(config).err().unwrap().to_string();
    assert!(error.contains("chmod 600"), "{error}");
}

// === RouterOS: REST ===

#[derive(Default)]
struct RestRouter {
    /// menu path (e.g. `ip/firewall/nat`) -> items with `.id`
    menus: BTreeMap<String, Vec<serde_json::Map<String, Value>>>,
    next_id: u32,
    requests: Vec<String>,
    fail_with_500: bool,
}

fn rest_error(status: StatusCode, message: &str, detail: &str) -> Response {
    (status, axum::Json(json!({"error": status.as_u16(), "message": message, "detail": detail}))).into_response()
}

async fn rest(state: Arc<Mutex<RestRouter>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut ros = state.lock().unwrap();
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("admin:pa55"));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return rest_error(StatusCode::UNAUTHORIZED, "Unauthorized", "");
    }
    ros.requests.push(format!("{method} {}", uri.path()));
    if ros.fail_with_500 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
    }
    let Some(path) = uri.path().strip_prefix("/rest/") else {
        return rest_error(StatusCode::NOT_FOUND, "Not Found", "");
    };
    let (menu, id) = match path.rsplit_once('/') {
        Some((menu, id)) if id.starts_with('*') => (menu.to_string(), Some(id.to_string())),
        _ => (path.to_string(), None),
    };
    if !ros.menus.contains_key(&menu) {
        return rest_error(StatusCode::BAD_REQUEST, "Bad Request", "no such command or directory");
    }
    let body: serde_json::Map<String, Value> = if body.is_empty() {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(_) => return rest_error(StatusCode::BAD_REQUEST, "Bad Request", "JSON parse error"),
        }
    };
    if let Some((key, _)) = body.iter().find(|(_, v)| !v.is_string()) {
        return rest_error(StatusCode::BAD_REQUEST, "Bad Request", &format!("value of {key} must be a string"));
    }
    match (method, id) {
        (Method::GET, None) => axum::Json(ros.menus[&menu].clone()).into_response(),
        (Method::PUT, None) => {
            if menu == "ip/firewall/nat"
                && (body.get("chain") != Some(&json!("dstnat")) || body.get("action") != Some(&json!("dst-nat")))
            {
                return rest_error(StatusCode::BAD_REQUEST, "Bad Request", "expected chain dstnat, action dst-nat");
            }
            ros.next_id += 1;
            let mut item = body;
            item.remove("place-before");
            item.insert(".id".into(), json!(format!("*{:X}", ros.next_id)));
            item.insert("disabled".into(), json!("false"));
            ros.menus.get_mut(&menu).unwrap().push(item.clone());
            axum::Json(item).into_response()
        }
        (Method::PATCH, Some(id)) => {
            let Some(item) = ros.menus.get_mut(&menu).unwrap().iter_mut().find(|i| i[".id"] == id) else {
                return rest_error(StatusCode::NOT_FOUND, "Not Found", "no such item");
            };
            item.extend(body);
            axum::Json(item.clone()).into_response()
        }
        (Method::DELETE, Some(id)) => {
            let items = ros.menus.get_mut(&menu).unwrap();
            let before = items.len();
            items.retain(|i| i[".id"] != id);
            if items.len() == before {
                return rest_error(StatusCode::NOT_FOUND, "Not Found", "no such item");
            }
            StatusCode::NO_CONTENT.into_response()
        }
        _ => rest_error(StatusCode::BAD_REQUEST, "Bad Request", "unsupported"),
    }
}

fn item(pairs: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), json!(v))).collect()
}

async fn routeros(dir: &Path, password: &str) -> (RouterOsBackend, Arc<Mutex<RestRouter>>) {
    let mut emulator = RestRouter { next_id: 0x20, ..RestRouter::default() };
    emulator.menus.insert(
        "ip/dhcp-server".into(),
        vec![item(&[
            (".id", "*1"),
            ("name", "defconf"),
            ("interface", "bridge"),
            ("address-pool", "default-dhcp"),
            ("disabled", "false"),
        ])],
    );
    emulator.menus.insert(
        "ip/firewall/nat".into(),
        vec![item(&[(".id", "*2"), ("chain", "srcnat"), ("action", "masquerade"), ("comment", "defconf: masquerade")])],
    );
    emulator.menus.insert(
        "ip/firewall/filter".into(),
        vec![item(&[
            (".id", "*3"),
            ("chain", "input"),
            ("action", "drop"),
            ("comment", "defconf: drop all not coming from LAN"),
        ])],
    );
    emulator.menus.insert(
        "ip/service".into(),
        vec![item(&[(".id", "*4"), ("name", "ssh"), ("port", "22"), ("disabled", "false")])],
    );
    let state = Arc::new(Mutex::new(emulator));
    let handler_state = state.clone();
    let router = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        rest(handler_state.clone(), method, uri, headers, body)
    });
    let url = serve(router).await;
    let config = RouterOsConfig {
        url: format!("{url}/rest").parse().unwrap(),
        credentials_file: credentials(dir, &format!("admin:{password}\n"), 0o600),
        ca_file: None,
        dhcp_server: "defconf".into(),
        wan_interface: "ether1".into(),
        management_ports: vec![22],
        timeout: Duration::from_secs(5),
    };
    (RouterOsBackend::new(config).unwrap(), state)
}

#[tokio::test]
async fn routeros_dhcp_nat_and_management_through_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, emulator) = routeros(dir.path(), "pa55").await;
    let shim = shim(Arc::new(backend), dir.path());
    let state = shim.state().await.unwrap();
    assert!(state.dhcp_enabled);
    assert_eq!(state.dhcp_pool, "default-dhcp");
    assert!(state.forwards.is_empty(), "the defconf masquerade is not ours");

    shim.apply(Change::Dhcp { enabled: false }).await.unwrap();
    assert_eq!(emulator.lock().unwrap().menus["ip/dhcp-server"][0]["disabled"], "true");
    assert!(emulator.lock().unwrap().requests.contains(&"PATCH /rest/ip/dhcp-server/*1".to_string()));

    let add = Change::AddForward { forward: ssh("192.168.1.3:22"), replace: false };
    shim.apply(add.clone()).await.unwrap();
    {
        let emulator = emulator.lock().unwrap();
        let nat = emulator.menus["ip/firewall/nat"].iter().find(|i| i["comment"] == "metalfleet:fwd:main-ssh").unwrap();
        assert_eq!(nat["in-interface"], "ether1");
        assert_eq!(nat["dst-port"], "2222");
        assert_eq!(nat["to-addresses"], "192.168.1.3");
        assert_eq!(nat["to-ports"], "22");
        assert_eq!(nat["protocol"], "tcp");
    }
    assert!(!shim.apply(add).await.unwrap().changed);
    let replace = Change::AddForward { forward: ssh("192.168.1.4:22"), replace: true };
    let outcome = shim.apply(replace).await.unwrap();
    assert!(outcome.pending.is_some(), "changing a protected forward needs a confirmation");
    assert!(shim.confirm(&outcome.pending.unwrap().id));
    assert_eq!(emulator.lock().unwrap().menus["ip/firewall/nat"].len(), 2, "replaced, not duplicated");

    let on = RemoteManagement { enabled: true, allowed_from: vec!["0.0.0.0/0".parse().unwrap()] };
    shim.apply(Change::RemoteManagement(on.clone())).await.unwrap();
    assert_eq!(shim.state().await.unwrap().remote_management, on);
    assert_eq!(emulator.lock().unwrap().menus["ip/service"][0]["address"], "0.0.0.0/0");

    shim.apply(Change::Reset).await.unwrap();
    let state = shim.state().await.unwrap();
    assert!(state.dhcp_enabled && state.forwards.is_empty() && !state.remote_management.enabled);
    let emulator = emulator.lock().unwrap();
    assert_eq!(emulator.menus["ip/firewall/nat"].len(), 1, "defconf masquerade left alone");
    assert_eq!(emulator.menus["ip/firewall/filter"].len(), 1);
}

#[tokio::test]
async fn routeros_bad_credentials_are_an_auth_error() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, emulator) = routeros(dir.path(), "nope").await;
    let error = backend.state().await.unwrap_err();
    assert!(matches!(error, BackendError::Auth { .. }), "{error}");
    assert!(emulator.lock().unwrap().requests.is_empty());
}

#[tokio::test]
async fn routeros_500_and_400_are_router_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, emulator) = routeros(dir.path(), "pa55").await;
    let backend = Arc::new(backend);
    emulator.lock().unwrap().fail_with_500 = true;
    let error = backend.set_dhcp(false).await.unwrap_err();
    assert!(error.to_string().contains("HTTP 500"), "{error}");
    emulator.lock().unwrap().fail_with_500 = false;
    emulator.lock().unwrap().menus.get_mut("ip/dhcp-server").unwrap()[0].insert("name".into(), json!("other"));
    let error = backend.set_dhcp(false).await.unwrap_err();
    assert!(error.to_string().contains("no /ip/dhcp-server named \"defconf\""), "{error}");
    emulator.lock().unwrap().menus.remove("ip/firewall/nat");
    let error = backend.remove_forward("x").await.unwrap_err();
    assert!(error.to_string().contains("no such command or directory"), "{error}");
}

#[tokio::test]
async fn unreachable_router_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let config = RouterOsConfig {
        url: format!("http://127.0.0.1:{port}/rest").parse().unwrap(),
        credentials_file: credentials(dir.path(), "admin:pa55\n", 0o600),
        ca_file: None,
        dhcp_server: "defconf".into(),
        wan_interface: "ether1".into(),
        management_ports: vec![22],
        timeout: Duration::from_secs(2),
    };
    let error = RouterOsBackend::new(config).unwrap().state().await.unwrap_err();
    assert!(matches!(error, BackendError::Unreachable { .. }), "{error}");
}
