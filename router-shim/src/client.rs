//! The coordinator's typed client of a router shim.
//!
//! The coordinator runs on MAIN, on the same segment as the router's LAN, so
//! [`Client::ensure_dhcp_off_and_prove`] asks the shim to switch DHCP off and then proves it with
//! the LOCAL probe library: the evidence comes from MAIN's side of the wire, not from the router.

use std::time::Duration;

use proto::v1 as pb;
use proto::v1::router_shim_client::RouterShimClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::grpc::convert;
use crate::model::{InvalidInput, PortForward, RouterState};
use crate::probe::{self, DhcpOffer, ProbeError, ProbeReport, ProbeRequest};

/// Why a call to the shim failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("router shim unreachable at {address}: {message}; check that `router-shim serve` runs there")]
    Connect { address: String, message: String },
    #[error("router shim answered {}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("router shim sent an invalid answer: {0}")]
    Invalid(#[from] InvalidInput),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("DHCP is still answered on {interface} after the router's DHCP was switched off: {}; find and stop that server", probe::describe_offers(.offers))]
    DhcpStillAnswered { interface: String, offers: Vec<DhcpOffer> },
}

/// A change the shim applied, as the client sees it.
#[derive(Debug, Clone)]
pub struct Applied {
    pub changed: bool,
    pub after: RouterState,
    pub pending_change_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Client {
    inner: RouterShimClient<Channel>,
}

impl Client {
    /// Connects to `address` (`http://host:port` or `https://host:port`).
    ///
    /// # Errors
    /// `ClientError::Connect` when the address is bad or nothing answers within `timeout`.
    pub async fn connect(address: &str, tls: Option<ClientTlsConfig>, timeout: Duration) -> Result<Self, ClientError> {
        let error = |message: String| ClientError::Connect { address: address.to_string(), message };
        let mut endpoint = Endpoint::from_shared(address.to_string())
            .map_err(|e| error(e.to_string()))?
            .connect_timeout(timeout)
            .timeout(timeout);
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(|e| error(e.to_string()))?;
        }
        let channel = endpoint.connect().await.map_err(|e| error(e.to_string()))?;
        Ok(Client { inner: RouterShimClient::new(channel) })
    }

    pub async fn state(&mut self) -> Result<RouterState, ClientError> {
        let state = self.inner.get_state(pb::GetStateRequest {}).await?.into_inner();
        Ok(convert::state_from_wire(state)?)
    }

    fn applied(result: pb::ChangeResult) -> Result<Applied, ClientError> {
        let after = result.after.map(convert::state_from_wire).transpose()?;
        Ok(Applied {
            changed: result.changed,
            after: after.ok_or_else(|| InvalidInput::Target("ChangeResult without `after`".to_string()))?,
            pending_change_id: Some(result.pending_change_id).filter(|id| !id.is_empty()),
        })
    }

    pub async fn set_dhcp(&mut self, enabled: bool) -> Result<Applied, ClientError> {
        Self::applied(self.inner.set_dhcp(pb::SetDhcpRequest { enabled }).await?.into_inner())
    }

    /// Keeps a protected change; false when it was already rolled back.
    pub async fn confirm(&mut self, pending_change_id: &str) -> Result<bool, ClientError> {
        let request = pb::ConfirmRequest { pending_change_id: pending_change_id.to_string() };
        Ok(self.inner.confirm(request).await?.into_inner().confirmed)
    }

    /// Switches the router's DHCP off, then proves on `probe_interface` (on this machine) that
    /// nobody answers a DHCPDISCOVER within `window`.
    ///
    /// # Errors
    /// `DhcpStillAnswered` with the offers as evidence when anyone answers.
    pub async fn ensure_dhcp_off_and_prove(
        &mut self,
        probe_interface: &str,
        window: Duration,
    ) -> Result<ProbeReport, ClientError> {
        self.set_dhcp(false).await?;
        let request = ProbeRequest { interface: probe_interface.to_string(), window, stop_at_first: false };
        let report = probe::probe(&request).await?;
        if report.offers.is_empty() {
            Ok(report)
        } else {
            Err(ClientError::DhcpStillAnswered { interface: probe_interface.to_string(), offers: report.offers })
        }
    }

    /// Makes these forwards exist as given (replacing a same-named forward that points elsewhere).
    ///
    /// A protected forward that had to change is confirmed at once: this client just reached the
    /// shim again, which is what the confirmation proves. Returns whether anything changed.
    pub async fn ensure_forwards(&mut self, forwards: &[PortForward]) -> Result<bool, ClientError> {
        let mut changed = false;
        for forward in forwards {
            let request = pb::AddPortForwardRequest { forward: Some(convert::forward_to_wire(forward)), replace: true };
            let applied = Self::applied(self.inner.add_port_forward(request).await?.into_inner())?;
            if let Some(id) = &applied.pending_change_id {
                self.confirm(id).await?;
            }
            changed |= applied.changed;
        }
        Ok(changed)
    }

    /// Asks the shim to probe from the router's side.
    pub async fn probe_dhcp_remote(
        &mut self,
        interface: &str,
        window: Duration,
    ) -> Result<pb::ProbeDhcpResponse, ClientError> {
        let request = pb::ProbeDhcpRequest {
            interface: interface.to_string(),
            window_ms: u32::try_from(window.as_millis()).unwrap_or(u32::MAX),
            stop_at_first: false,
        };
        Ok(self.inner.probe_dhcp(request).await?.into_inner())
    }

    /// The generated client, for calls this type does not wrap.
    pub fn raw(&mut self) -> &mut RouterShimClient<Channel> {
        &mut self.inner
    }
}
