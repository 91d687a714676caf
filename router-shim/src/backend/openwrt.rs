//! OpenWrt through ubus JSON-RPC over HTTP (rpcd + uhttpd-mod-ubus).
//!
//! Every call is `{"jsonrpc":"2.0","id":N,"method":"call","params":[SID, OBJECT, METHOD, ARGS]}` to
//! the `/ubus` endpoint; the answer's `result` is `[status, data]` with status 0 on success. The
//! shim logs in (`session login`), stages uci changes, commits, then `uci apply` with rollback and
//! `uci confirm` once the read-back worked: if the change cut the shim off, the router reverts by
//! itself. Forwards are `redirect` sections named `mf_<name>`; remote management is one `rule`
//! section `mf_mgmt`.

#[doc(hidden)]
pub mod fuzzing;

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::{Backend, BackendError, read_credentials};
use crate::config::OpenWrtConfig;
use crate::model::{PortForward, Protocol, RemoteManagement, RouterState};

const NO_SESSION: &str = "00000000000000000000000000000000";
const MGMT_SECTION: &str = "mf_mgmt";

pub struct OpenWrtBackend {
    config: OpenWrtConfig,
    http: reqwest::Client,
    username: String,
    password: String,
    session: Mutex<Option<String>>,
    next_id: AtomicU64,
}

fn section_name(forward: &str) -> String {
    format!("mf_{}", forward.replace(['.', '-'], "_"))
}

impl OpenWrtBackend {
    pub fn new(config: OpenWrtConfig) -> Result<Self, BackendError> {
        let (username, password) = read_credentials(&config.credentials_file)?;
        let http = super::http_client(config.timeout, None)?;
        Ok(OpenWrtBackend { config, http, username, password, session: Mutex::new(None), next_id: AtomicU64::new(1) })
    }

    fn address(&self) -> String {
        self.config.url.to_string()
    }

    async fn raw_call(&self, sid: &str, object: &str, method: &str, args: Value) -> Result<(i64, Value), BackendError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "call", "params": [sid, object, method, args]});
        let response = self
            .http
            .post(self.config.url.clone())
            .json(&body)
            .send()
            .await
            .map_err(|e| BackendError::Unreachable { address: self.address(), message: e.to_string() })?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(BackendError::Router {
                address: self.address(),
                message: format!("HTTP {status} for {object}.{method}: {}", text.chars().take(200).collect::<String>()),
            });
        }
        let reply: Value = response.json().await.map_err(|e| BackendError::Router {
            address: self.address(),
            message: format!("unreadable JSON-RPC answer to {object}.{method}: {e}"),
        })?;
        if let Some(error) = reply.get("error") {
            return Err(BackendError::Router {
                address: self.address(),
                message: format!("{object}.{method}: {error}"),
            });
        }
        let result = reply.get("result").and_then(Value::as_array).cloned().unwrap_or_default();
        let code = result.first().and_then(Value::as_i64).unwrap_or(-1);
        Ok((code, result.get(1).cloned().unwrap_or(Value::Null)))
    }

    async fn login(&self) -> Result<String, BackendError> {
        let args = json!({"username": self.username, "password": self.password, "timeout": 600});
        let (code, data) = self.raw_call(NO_SESSION, "session", "login", args).await?;
        match (code, data.get("ubus_rpc_session").and_then(Value::as_str)) {
            (0, Some(sid)) => Ok(sid.to_string()),
            _ => Err(BackendError::Auth {
                address: self.address(),
                message: format!("session.login answered status {code} ({})", status_text(code)),
            }),
        }
    }

    /// Calls with the current session, logging in first and once more when the session expired.
    async fn call(&self, object: &str, method: &str, args: Value) -> Result<Value, BackendError> {
        let mut session = self.session.lock().await;
        for attempt in 0..2 {
            let sid = match session.as_ref() {
                Some(sid) => sid.clone(),
                None => {
                    let sid = self.login().await?;
                    *session = Some(sid.clone());
                    sid
                }
            };
            let (code, data) = self.raw_call(&sid, object, method, args.clone()).await?;
            match code {
                0 => return Ok(data),
                6 if attempt == 0 => *session = None,
                _ => {
                    return Err(BackendError::Router {
                        address: self.address(),
                        message: format!("{object}.{method} answered status {code} ({})", status_text(code)),
                    });
                }
            }
        }
        Err(BackendError::Auth { address: self.address(), message: "permission denied after a fresh login".into() })
    }

    async fn commit_with_rollback(&self, config: &str) -> Result<(), BackendError> {
        self.call("uci", "commit", json!({"config": config})).await?;
        let timeout = self.config.apply_rollback.as_secs().max(1);
        self.call("uci", "apply", json!({"rollback": true, "timeout": timeout})).await?;
        // Reading back through the same API proves the shim still has access; then keep the change.
        self.call("uci", "get", json!({"config": config})).await?;
        self.call("uci", "confirm", json!({})).await?;
        Ok(())
    }

    async fn sections(&self, config: &str, kind: &str) -> Result<Vec<(String, Value)>, BackendError> {
        let data = self.call("uci", "get", json!({"config": config, "type": kind})).await?;
        let values = data.get("values").and_then(Value::as_object).cloned().unwrap_or_default();
        Ok(values.into_iter().collect())
    }
}

fn status_text(code: i64) -> &'static str {
    match code {
        0 => "ok",
        2 => "invalid argument",
        4 => "not found",
        5 => "no data",
        6 => "permission denied",
        7 => "timeout",
        _ => "error",
    }
}

fn text(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => Some(items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")),
        other => Some(other.to_string()),
    }
}

fn parse_redirect(values: &Value) -> Option<PortForward> {
    let name = text(values, "name")?;
    let ip = text(values, "dest_ip")?.parse().ok()?;
    let port: u16 = text(values, "dest_port")?.parse().ok()?;
    Some(PortForward {
        name,
        protocol: text(values, "proto")?.parse::<Protocol>().ok()?,
        external_port: text(values, "src_dport")?.parse().ok()?,
        target: std::net::SocketAddrV4::new(ip, port),
        protected: false,
    })
}

#[async_trait]
impl Backend for OpenWrtBackend {
    fn name(&self) -> &'static str {
        "openwrt"
    }

    async fn state(&self) -> Result<RouterState, BackendError> {
        let dhcp = self.call("uci", "get", json!({"config": "dhcp", "section": self.config.dhcp_section})).await?;
        let dhcp = dhcp.get("values").cloned().unwrap_or(Value::Null);
        let ignored = text(&dhcp, "ignore").is_some_and(|v| v == "1");
        let pool = match (text(&dhcp, "start"), text(&dhcp, "limit")) {
            (Some(start), Some(limit)) => format!("start {start}, limit {limit}"),
            _ => String::new(),
        };
        let mut forwards = Vec::new();
        for (section, values) in self.sections("firewall", "redirect").await? {
            if section.starts_with("mf_") {
                forwards.push(parse_redirect(&values).ok_or_else(|| BackendError::Router {
                    address: self.address(),
                    message: format!("redirect section {section} is not a forward the shim can read: {values}"),
                })?);
            }
        }
        let mut management = RemoteManagement::default();
        for (section, values) in self.sections("firewall", "rule").await? {
            if section == MGMT_SECTION && text(&values, "enabled").as_deref() != Some("0") {
                management.enabled = true;
                management.allowed_from = text(&values, "src_ip")
                    .unwrap_or_else(|| "0.0.0.0/0".into())
                    .split_whitespace()
                    .filter_map(|c| crate::model::parse_cidr(c).ok())
                    .collect();
            }
        }
        Ok(RouterState {
            backend: "openwrt".into(),
            dhcp_enabled: !ignored,
            dhcp_pool: pool,
            forwards,
            remote_management: management,
        })
    }

    async fn set_dhcp(&self, enabled: bool) -> Result<(), BackendError> {
        let section = &self.config.dhcp_section;
        if enabled {
            self.call("uci", "delete", json!({"config": "dhcp", "section": section, "option": "ignore"})).await?;
        } else {
            self.call("uci", "set", json!({"config": "dhcp", "section": section, "values": {"ignore": "1"}})).await?;
        }
        self.commit_with_rollback("dhcp").await
    }

    async fn add_forward(&self, forward: &PortForward) -> Result<(), BackendError> {
        let section = section_name(&forward.name);
        if self.sections("firewall", "redirect").await?.iter().any(|(s, _)| *s == section) {
            self.call("uci", "delete", json!({"config": "firewall", "section": section})).await?;
        }
        let values = json!({
            "name": forward.name,
            "target": "DNAT",
            "src": "wan",
            "proto": forward.protocol.as_str(),
            "src_dport": forward.external_port.to_string(),
            "dest": "lan",
            "dest_ip": forward.target.ip().to_string(),
            "dest_port": forward.target.port().to_string(),
        });
        self.call("uci", "add", json!({"config": "firewall", "type": "redirect", "name": section, "values": values}))
            .await?;
        self.commit_with_rollback("firewall").await
    }

    async fn remove_forward(&self, name: &str) -> Result<(), BackendError> {
        let section = section_name(name);
        if !self.sections("firewall", "redirect").await?.iter().any(|(s, _)| *s == section) {
            return Ok(());
        }
        self.call("uci", "delete", json!({"config": "firewall", "section": section})).await?;
        self.commit_with_rollback("firewall").await
    }

    async fn set_remote_management(&self, management: &RemoteManagement) -> Result<(), BackendError> {
        if self.sections("firewall", "rule").await?.iter().any(|(s, _)| s == MGMT_SECTION) {
            self.call("uci", "delete", json!({"config": "firewall", "section": MGMT_SECTION})).await?;
        }
        if management.enabled {
            let ports = self.config.management_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(" ");
            let from: Vec<String> = management.allowed_from.iter().map(ToString::to_string).collect();
            let values = json!({
                "name": "metalfleet remote management",
                "src": "wan",
                "proto": "tcp",
                "dest_port": ports,
                "src_ip": from,
                "target": "ACCEPT",
            });
            self.call(
                "uci",
                "add",
                json!({"config": "firewall", "type": "rule", "name": MGMT_SECTION, "values": values}),
            )
            .await?;
        }
        self.commit_with_rollback("firewall").await
    }

    async fn reset(&self, dhcp_as_found: Option<bool>) -> Result<(), BackendError> {
        for (section, _) in self.sections("firewall", "redirect").await? {
            if section.starts_with("mf_") {
                self.call("uci", "delete", json!({"config": "firewall", "section": section})).await?;
            }
        }
        for (section, _) in self.sections("firewall", "rule").await? {
            if section == MGMT_SECTION {
                self.call("uci", "delete", json!({"config": "firewall", "section": section})).await?;
            }
        }
        self.commit_with_rollback("firewall").await?;
        if let Some(found) = dhcp_as_found {
            self.set_dhcp(found).await?;
        }
        Ok(())
    }
}
