//! The coordinator's typed client of a router shim.
//!
//! It speaks `metalfleet.v1.RouterShim` and returns the [`crate::model`] types. Switching DHCP off and proving it
//! from this machine is [`crate::dhcp_off`], which uses this client for the first half.

use std::time::Duration;

use proto::v1 as pb;
use proto::v1::router_shim_client::RouterShimClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::convert;
use crate::model::{InvalidInput, PortForward, RouterState};

/// Why a call to the shim failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("router shim unreachable at {address}: {message}; check that `router-shim serve` runs there")]
    Connect { address: String, message: String },
    #[error("router shim answered {}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("router shim sent an invalid answer: {0}")]
    Invalid(#[from] InvalidInput),
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
