//! One read of the live lab: everything the plan talks about, from MAAS and (through the shim) the router.

use std::path::Path;
use std::time::Duration;

use router_shim_api::client::Client as ShimClient;
use router_shim_api::model::RouterState;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::PlanError;
use super::file::RouterPlan;
use crate::{maas, router_cert};

/// What MAAS and the router look like right now.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub upstream_dns: Vec<String>,
    pub dnssec_validation: String,
    pub kernel_opts: String,
    pub boot_source_id: Option<i64>,
    pub selections: Vec<maas::BootSourceSelection>,
    /// Each synced-or-importing resource with its sets (read one by one, since the list omits them).
    pub resources: Vec<maas::BootResource>,
    pub importing: bool,
    pub ssh_keys: Vec<maas::SshKey>,
    pub subnets: Vec<maas::Subnet>,
    pub ip_ranges: Vec<maas::IpRange>,
    pub racks: Vec<maas::RackController>,
    pub machines: Vec<maas::Machine>,
    pub devices: Vec<maas::Device>,
    /// The router as its shim reads it; `None` when the plan has no `[router]`.
    pub router: Option<RouterState>,
}

impl Live {
    pub fn subnet(&self, cidr: &str) -> Option<&maas::Subnet> {
        self.subnets.iter().find(|s| s.cidr == cidr)
    }

    /// The rack controller with an interface on `vlan_id`, and its IP inside `cidr`.
    pub fn rack_on(&self, vlan_id: i64, cidr: &str) -> Option<(&maas::RackController, Option<String>)> {
        let rack =
            self.racks.iter().find(|r| r.is_on_vlan(vlan_id)).or_else(|| {
                self.racks.iter().find(|r| r.ip_addresses.iter().any(|ip| super::cidr_contains(cidr, ip)))
            })?;
        let ip = rack.ip_addresses.iter().find(|ip| super::cidr_contains(cidr, ip)).cloned();
        Some((rack, ip))
    }
}

fn maas_error(client: &maas::Client, what: &'static str) -> impl FnOnce(maas::Error) -> PlanError {
    let url = client.api_root().to_string();
    move |source| PlanError::Maas { what, url, source: Box::new(source) }
}

/// Reads MAAS.
///
/// # Errors
/// [`PlanError::Maas`] naming what was being read.
pub async fn read_maas(client: &maas::Client) -> Result<Live, PlanError> {
    let mut live = Live {
        upstream_dns: client.upstream_dns().await.map_err(maas_error(client, "upstream_dns"))?,
        dnssec_validation: client
            .dnssec_validation()
            .await
            .map_err(maas_error(client, "dnssec_validation"))?
            .to_string(),
        kernel_opts: client.kernel_opts().await.map_err(maas_error(client, "kernel_opts"))?.unwrap_or_default(),
        ..Live::default()
    };
    let sources = client.boot_sources().await.map_err(maas_error(client, "boot sources"))?;
    live.boot_source_id = sources.first().map(|s| s.id);
    if let Some(id) = live.boot_source_id {
        live.selections =
            client.boot_source_selections(id).await.map_err(maas_error(client, "boot source selections"))?;
    }
    for resource in client.boot_resources(None).await.map_err(maas_error(client, "boot resources"))? {
        live.resources.push(client.boot_resource(resource.id).await.map_err(maas_error(client, "boot resource"))?);
    }
    live.importing = client.is_importing().await.map_err(maas_error(client, "is_importing"))?;
    live.ssh_keys = client.ssh_keys().await.map_err(maas_error(client, "ssh keys"))?;
    live.subnets = client.subnets().await.map_err(maas_error(client, "subnets"))?;
    live.ip_ranges = client.ip_ranges().await.map_err(maas_error(client, "ip ranges"))?;
    live.racks = client.rack_controllers().await.map_err(maas_error(client, "rack controllers"))?;
    live.machines = client.machines(&maas::MachineFilter::default()).await.map_err(maas_error(client, "machines"))?;
    live.devices = client.devices().await.map_err(maas_error(client, "devices"))?;
    Ok(live)
}

/// Connects to the shim named in the plan. Over `https://` the shim's certificate is checked against
/// `[router] ca_file`, or else the coordinator's own CA (which `coordinator router-cert issue` signs shim
/// certificates with), and the coordinator presents its client certificate for mTLS: `[router]
/// cert_file`/`key_file`, or else the one in `<state_dir>/router-client/` when it exists.
///
/// # Errors
/// [`PlanError::Router`] with the address tried.
pub async fn connect_router(router: &RouterPlan, state_dir: &Path, timeout: Duration) -> Result<ShimClient, PlanError> {
    let error = |message: String| PlanError::Router { address: router.shim.clone(), message };
    let tls = if router.shim.starts_with("https://") && !router.insecure {
        let ca = match &router.ca_file {
            Some(ca) => std::fs::read_to_string(ca)
                .map_err(|e| error(format!("cannot read ca_file {}: {e}; fix [router] ca_file", ca.display())))?,
            None => crate::rotation::trust_bundle(state_dir)
                .map_err(|e| error(format!("{e}; or set [router] ca_file to the CA of the shim's certificate")))?,
        };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        let identity = router_cert::client_identity(state_dir, router.cert_file.as_deref(), router.key_file.as_deref())
            .map_err(|e| error(e.to_string()))?;
        if let Some(identity) = identity {
            tls = tls.identity(Identity::from_pem(identity.cert_pem, identity.key_pem.expose()));
        }
        Some(tls)
    } else {
        None
    };
    ShimClient::connect(&router.shim, tls, timeout).await.map_err(|e| error(e.to_string()))
}

/// Reads the router through its shim.
///
/// # Errors
/// [`PlanError::Router`].
pub async fn read_router(shim: &mut ShimClient, address: &str) -> Result<RouterState, PlanError> {
    shim.state().await.map_err(|e| PlanError::Router { address: address.to_string(), message: e.to_string() })
}
