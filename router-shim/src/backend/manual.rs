//! Routers without a usable API (the reference lab's TP-Link TL-R470T+): the shim prints the exact
//! steps for the router's web interface, waits for the person to confirm, and then verifies the
//! result on the wire. A step counts as done only when its wire check passes; only then is it
//! recorded in the shim's state file, which is what `state` reports for this backend.

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Backend, BackendError, Confirmer};
use crate::config::ManualConfig;
use crate::model::{PortForward, Protocol, RemoteManagement, RouterState};
use crate::probe::{self, ProbeRequest};

/// What the person did and the wire confirmed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Recorded {
    /// `None` until a step touched DHCP; the router ships with its DHCP server on.
    dhcp_enabled: Option<bool>,
    forwards: Vec<RecordedForward>,
    remote_management_enabled: bool,
    remote_management_from: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RecordedForward {
    name: String,
    protocol: String,
    external_port: u16,
    target: SocketAddrV4,
}

pub struct ManualBackend {
    config: ManualConfig,
    state_file: PathBuf,
    confirmer: Arc<dyn Confirmer>,
}

impl ManualBackend {
    pub fn new(config: ManualConfig, state_file: PathBuf, confirmer: Arc<dyn Confirmer>) -> Self {
        ManualBackend { config, state_file, confirmer }
    }

    fn load(&self) -> Recorded {
        std::fs::read_to_string(&self.state_file).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
    }

    fn save(&self, recorded: &Recorded) -> Result<(), BackendError> {
        if let Some(dir) = self.state_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| BackendError::file(dir, e))?;
        }
        std::fs::write(&self.state_file, serde_json::to_string_pretty(recorded).unwrap_or_default())
            .map_err(|e| BackendError::file(&self.state_file, e))
    }

    async fn ask(&self, steps: &[String]) -> Result<(), BackendError> {
        let mut prompt = format!("On the router's web interface ({}):\n", self.config.model);
        for (i, step) in steps.iter().enumerate() {
            prompt.push_str(&format!("  {}. {step}\n", i + 1));
        }
        prompt.push_str("Type `yes` when done; the shim then checks the result on the wire: ");
        if self.confirmer.confirm(&prompt).await {
            Ok(())
        } else {
            Err(BackendError::NotVerified("the step was not confirmed; nothing recorded".to_string()))
        }
    }

    async fn tcp_reachable(&self, port: u16) -> bool {
        let addr = SocketAddrV4::new(self.config.wan_address, port);
        matches!(
            tokio::time::timeout(self.config.connect_timeout, tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(_))
        )
    }
}

#[async_trait]
impl Backend for ManualBackend {
    fn name(&self) -> &'static str {
        "manual"
    }

    async fn state(&self) -> Result<RouterState, BackendError> {
        let recorded = self.load();
        Ok(RouterState {
            backend: "manual".to_string(),
            dhcp_enabled: recorded.dhcp_enabled.unwrap_or(true),
            dhcp_pool: String::new(),
            forwards: recorded
                .forwards
                .iter()
                .filter_map(|f| {
                    Some(PortForward {
                        name: f.name.clone(),
                        protocol: f.protocol.parse().ok()?,
                        external_port: f.external_port,
                        target: f.target,
                        protected: false,
                    })
                })
                .collect(),
            remote_management: RemoteManagement {
                enabled: recorded.remote_management_enabled,
                allowed_from: recorded.remote_management_from.iter().filter_map(|c| c.parse().ok()).collect(),
            },
        })
    }

    async fn set_dhcp(&self, enabled: bool) -> Result<(), BackendError> {
        let status = if enabled { "Enable" } else { "Disable" };
        self.ask(&[
            "Open Network > LAN > DHCP Server.".to_string(),
            format!("Set Status to {status}."),
            "Click Save.".to_string(),
        ])
        .await?;
        let mut request = ProbeRequest::new(&self.config.probe_interface);
        request.window = self.config.probe_window;
        let report = probe::probe(&request).await.map_err(|e| BackendError::NotVerified(e.to_string()))?;
        let answered = !report.offers.is_empty();
        if answered != enabled {
            let evidence: Vec<String> = report
                .offers
                .iter()
                .map(|o| {
                    format!("{} (from {} {}) offered {}", o.server_identifier, o.source_ip, o.source_mac, o.offered_ip)
                })
                .collect();
            return Err(BackendError::NotVerified(format!(
                "the DHCP probe on {} does not confirm DHCP {}: {} DISCOVERs, offers: [{}]; check the router's DHCP page again",
                self.config.probe_interface,
                if enabled { "on" } else { "off" },
                report.discovers_sent,
                evidence.join(", ")
            )));
        }
        let mut recorded = self.load();
        recorded.dhcp_enabled = Some(enabled);
        self.save(&recorded)
    }

    async fn add_forward(&self, forward: &PortForward) -> Result<(), BackendError> {
        let protocol = match forward.protocol {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        };
        self.ask(&[
            "Open Transmission > NAT > Virtual Servers and click Add (or edit the entry of this name).".to_string(),
            format!("Name: {}", forward.name),
            "Interface: WAN1".to_string(),
            format!("External Port: {}", forward.external_port),
            format!("Internal Port: {}", forward.target.port()),
            format!("Internal Server IP: {}", forward.target.ip()),
            format!("Protocol: {protocol}"),
            "Status: Enable, then click OK.".to_string(),
        ])
        .await?;
        if forward.protocol == Protocol::Tcp && !self.tcp_reachable(forward.external_port).await {
            return Err(BackendError::NotVerified(format!(
                "no TCP connection to {}:{} through the WAN address; check the virtual server entry and that {} listens",
                self.config.wan_address, forward.external_port, forward.target
            )));
        }
        if forward.protocol == Protocol::Udp {
            tracing::warn!(forward = %forward.name, "a UDP forward cannot be checked on the wire; recorded as confirmed");
        }
        let mut recorded = self.load();
        recorded.forwards.retain(|f| f.name != forward.name);
        recorded.forwards.push(RecordedForward {
            name: forward.name.clone(),
            protocol: forward.protocol.to_string(),
            external_port: forward.external_port,
            target: forward.target,
        });
        self.save(&recorded)
    }

    async fn remove_forward(&self, name: &str) -> Result<(), BackendError> {
        let mut recorded = self.load();
        let Some(existing) = recorded.forwards.iter().find(|f| f.name == name).cloned() else { return Ok(()) };
        self.ask(&[
            "Open Transmission > NAT > Virtual Servers.".to_string(),
            format!("Delete the entry named {name} (external port {}).", existing.external_port),
        ])
        .await?;
        if existing.protocol == "tcp" && self.tcp_reachable(existing.external_port).await {
            return Err(BackendError::NotVerified(format!(
                "{}:{} still accepts TCP connections; the virtual server entry is still active",
                self.config.wan_address, existing.external_port
            )));
        }
        recorded.forwards.retain(|f| f.name != name);
        self.save(&recorded)
    }

    async fn set_remote_management(&self, management: &RemoteManagement) -> Result<(), BackendError> {
        let mut steps = vec!["Open System Tools > Admin Setup > Remote Management.".to_string()];
        if management.enabled {
            for cidr in &management.allowed_from {
                steps.push(format!("Add a rule: IP/Network {cidr}, Status Enable."));
            }
        } else {
            steps.push("Delete (or disable) every remote management rule.".to_string());
        }
        steps.push("Click Save.".to_string());
        self.ask(&steps).await?;
        // The management page is only reachable from outside, so there is no wire check from the LAN side.
        tracing::warn!("remote management cannot be checked from here; recorded as confirmed");
        let mut recorded = self.load();
        recorded.remote_management_enabled = management.enabled;
        recorded.remote_management_from = management.allowed_from.iter().map(ToString::to_string).collect();
        self.save(&recorded)
    }

    async fn reset(&self, dhcp_as_found: Option<bool>) -> Result<(), BackendError> {
        let names: Vec<String> = self.load().forwards.iter().map(|f| f.name.clone()).collect();
        for name in names {
            self.remove_forward(&name).await?;
        }
        if let Some(found) = dhcp_as_found
            && self.load().dhcp_enabled != Some(found)
        {
            self.set_dhcp(found).await?;
        }
        Ok(())
    }
}
