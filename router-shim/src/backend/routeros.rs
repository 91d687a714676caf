//! MikroTik RouterOS v7 through its REST API (`/rest/...`), Basic auth, HTTPS with a configured CA.
//!
//! Verbs: GET prints, PUT adds, PATCH sets (`/<.id>`), DELETE removes. Values are strings. Errors
//! come as HTTP 400/404 with `{"error":..,"message":..,"detail":..}`, 401 for bad credentials.
//! Everything the shim creates carries a comment `metalfleet:<name>`, so it is found by comment,
//! never by position.

#[doc(hidden)]
pub mod fuzzing;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Backend, BackendError, read_credentials};
use crate::config::RouterOsConfig;
use crate::model::{PortForward, Protocol, RemoteManagement, RouterState};

const FWD_PREFIX: &str = "metalfleet:fwd:";
const MGMT_COMMENT: &str = "metalfleet:mgmt";

pub struct RouterOsBackend {
    config: RouterOsConfig,
    http: reqwest::Client,
    username: String,
    password: String,
}

impl RouterOsBackend {
    pub fn new(config: RouterOsConfig) -> Result<Self, BackendError> {
        let (username, password) = read_credentials(&config.credentials_file)?;
        let http = super::http_client(config.timeout, config.ca_file.as_deref())?;
        Ok(RouterOsBackend { config, http, username, password })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.config.url.as_str().trim_end_matches('/'), path.trim_start_matches('/'))
    }

    async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, BackendError> {
        let url = self.url(path);
        let mut request = self.http.request(method.clone(), &url).basic_auth(&self.username, Some(&self.password));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| BackendError::Unreachable { address: url.clone(), message: e.to_string() })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(BackendError::Auth { address: url, message: format!("HTTP 401 {text}") });
        }
        if !status.is_success() {
            let detail = serde_json::from_str::<Value>(&text)
                .ok()
                .map(|v| {
                    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                    format!("{} {}", field("message"), field("detail")).trim().to_string()
                })
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| text.chars().take(200).collect());
            return Err(BackendError::Router {
                address: url,
                message: format!("{method} answered HTTP {status}: {detail}"),
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| BackendError::Router { address: url, message: format!("unreadable JSON: {e}") })
    }

    async fn list(&self, path: &str) -> Result<Vec<Value>, BackendError> {
        match self.request(Method::GET, path, None).await? {
            Value::Array(items) => Ok(items),
            other => {
                Err(BackendError::Router { address: self.url(path), message: format!("expected a list, got {other}") })
            }
        }
    }

    async fn dhcp_server(&self) -> Result<Value, BackendError> {
        self.list("ip/dhcp-server").await?.into_iter().find(|s| field(s, "name") == self.config.dhcp_server).ok_or_else(
            || {
                BackendError::Config(format!(
                    "RouterOS has no /ip/dhcp-server named {:?}; set routeros.dhcp_server to one of its names",
                    self.config.dhcp_server
                ))
            },
        )
    }

    async fn delete_by_comment(&self, path: &str, keep: impl Fn(&str) -> bool) -> Result<(), BackendError> {
        for item in self.list(path).await? {
            let comment = field(&item, "comment");
            if !keep(&comment) {
                let id = field(&item, ".id");
                self.request(Method::DELETE, &format!("{path}/{id}"), None).await?;
            }
        }
        Ok(())
    }
}

fn field(item: &Value, key: &str) -> String {
    item.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn parse_nat(item: &Value) -> Option<PortForward> {
    let name = field(item, "comment").strip_prefix(FWD_PREFIX)?.to_string();
    Some(PortForward {
        name,
        protocol: field(item, "protocol").parse::<Protocol>().ok()?,
        external_port: field(item, "dst-port").parse().ok()?,
        target: std::net::SocketAddrV4::new(
            field(item, "to-addresses").parse().ok()?,
            field(item, "to-ports").parse().ok()?,
        ),
        protected: false,
    })
}

#[async_trait]
impl Backend for RouterOsBackend {
    fn name(&self) -> &'static str {
        "routeros"
    }

    async fn state(&self) -> Result<RouterState, BackendError> {
        let server = self.dhcp_server().await?;
        let forwards = self.list("ip/firewall/nat").await?.iter().filter_map(parse_nat).collect();
        let rules: Vec<Value> = self
            .list("ip/firewall/filter")
            .await?
            .into_iter()
            .filter(|r| field(r, "comment") == MGMT_COMMENT && field(r, "disabled") != "true")
            .collect();
        let management = RemoteManagement {
            enabled: !rules.is_empty(),
            allowed_from: rules
                .iter()
                .filter_map(|r| crate::model::parse_cidr(&field(r, "src-address")).ok())
                .collect(),
        };
        Ok(RouterState {
            backend: "routeros".into(),
            dhcp_enabled: field(&server, "disabled") != "true",
            dhcp_pool: field(&server, "address-pool"),
            forwards,
            remote_management: management,
        })
    }

    async fn set_dhcp(&self, enabled: bool) -> Result<(), BackendError> {
        let server = self.dhcp_server().await?;
        let id = field(&server, ".id");
        let disabled = if enabled { "false" } else { "true" };
        self.request(Method::PATCH, &format!("ip/dhcp-server/{id}"), Some(json!({"disabled": disabled}))).await?;
        Ok(())
    }

    async fn add_forward(&self, forward: &PortForward) -> Result<(), BackendError> {
        let comment = format!("{FWD_PREFIX}{}", forward.name);
        self.delete_by_comment("ip/firewall/nat", |c| c != comment).await?;
        let body = json!({
            "chain": "dstnat",
            "action": "dst-nat",
            "protocol": forward.protocol.as_str(),
            "in-interface": self.config.wan_interface,
            "dst-port": forward.external_port.to_string(),
            "to-addresses": forward.target.ip().to_string(),
            "to-ports": forward.target.port().to_string(),
            "comment": comment,
        });
        self.request(Method::PUT, "ip/firewall/nat", Some(body)).await?;
        Ok(())
    }

    async fn remove_forward(&self, name: &str) -> Result<(), BackendError> {
        let comment = format!("{FWD_PREFIX}{name}");
        self.delete_by_comment("ip/firewall/nat", |c| c != comment).await
    }

    async fn set_remote_management(&self, management: &RemoteManagement) -> Result<(), BackendError> {
        self.delete_by_comment("ip/firewall/filter", |c| c != MGMT_COMMENT).await?;
        if !management.enabled {
            return Ok(());
        }
        let from: Vec<String> = management.allowed_from.iter().map(ToString::to_string).collect();
        for service in self.list("ip/service").await? {
            if field(&service, "name") == "ssh" {
                let id = field(&service, ".id");
                let body = json!({"disabled": "false", "address": from.join(",")});
                self.request(Method::PATCH, &format!("ip/service/{id}"), Some(body)).await?;
            }
        }
        let ports = self.config.management_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        // Before every other input rule, so the default "drop all not coming from LAN" does not win.
        let first = self.list("ip/firewall/filter").await?.into_iter().find(|r| field(r, "chain") == "input");
        for cidr in &from {
            let mut body = json!({
                "chain": "input",
                "action": "accept",
                "protocol": "tcp",
                "dst-port": ports,
                "in-interface": self.config.wan_interface,
                "src-address": cidr,
                "comment": MGMT_COMMENT,
            });
            if let Some(first) = &first {
                body["place-before"] = json!(field(first, ".id"));
            }
            self.request(Method::PUT, "ip/firewall/filter", Some(body)).await?;
        }
        Ok(())
    }

    async fn reset(&self, dhcp_as_found: Option<bool>) -> Result<(), BackendError> {
        self.delete_by_comment("ip/firewall/nat", |c| !c.starts_with(FWD_PREFIX)).await?;
        self.delete_by_comment("ip/firewall/filter", |c| c != MGMT_COMMENT).await?;
        if let Some(found) = dhcp_as_found {
            self.set_dhcp(found).await?;
        }
        Ok(())
    }
}
