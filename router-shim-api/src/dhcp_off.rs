//! The one rule "switch the router's DHCP off, then prove it from here".
//!
//! The router's word that its DHCP is off is not proof. The proof is a probe from this machine's side of the
//! segment (MAIN's, for the coordinator) that hears no offer during the whole window; an offer is evidence of a
//! server still answering, and every server that answers is named.
//! The coordinator's lab plan runs the two halves as two steps of its safe order ([`switch_off`], then
//! [`prove`]); the shim's `ensure-dhcp-off` command runs both at once ([`switch_off_and_prove`]).
//! Each caller words the consequence (the plan adds that MAAS DHCP stays off) from the typed errors.

use std::time::Duration;

use crate::client::{Applied, Client, ClientError};
use crate::probe::{self, DhcpOffer, ProbeError, ProbeReport, ProbeRequest};

/// Why DHCP could not be switched off and proven off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The shim did not switch DHCP off (unreachable, refused, an invalid answer).
    #[error(transparent)]
    SwitchOff(#[from] ClientError),
    #[error(transparent)]
    Proof(#[from] ProofError),
}

/// Why the proof from this machine failed.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The probe could not run here (no such interface, no privileges, a window too short).
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// Someone answered; `offers` is the evidence (server identifier, source IP and MAC, offered address, xid).
    #[error(
        "DHCP is still answered on {interface} after the router's DHCP was switched off: {}; find and stop that server",
        probe::describe_offers(.offers)
    )]
    StillAnswered { interface: String, offers: Vec<DhcpOffer> },
}

/// The first half: asks the shim to switch the router's DHCP off (the shim reads its state back).
///
/// # Errors
/// When the shim cannot be reached, refuses, or answers something invalid.
pub async fn switch_off(shim: &mut Client) -> Result<Applied, ClientError> {
    shim.set_dhcp(false).await
}

/// The second half: proves from this machine that nobody answers a DHCPDISCOVER on `interface` within `window`.
///
/// The probe listens for the whole window rather than stopping at the first offer, so every server that
/// answers is named in the evidence.
///
/// # Errors
/// `StillAnswered` when anyone answers; `Probe` when the probe cannot run here.
pub async fn prove(interface: &str, window: Duration) -> Result<ProbeReport, ProofError> {
    let request = ProbeRequest { interface: interface.to_string(), window, stop_at_first: false };
    let report = probe::probe(&request).await?;
    if report.offers.is_empty() {
        Ok(report)
    } else {
        Err(ProofError::StillAnswered { interface: interface.to_string(), offers: report.offers })
    }
}

/// Both halves: switches the router's DHCP off through `shim`, then proves it on `interface` (on this machine).
///
/// # Errors
/// As [`switch_off`] (nothing is probed then), then as [`prove`].
pub async fn switch_off_and_prove(shim: &mut Client, interface: &str, window: Duration) -> Result<ProbeReport, Error> {
    switch_off(shim).await?;
    Ok(prove(interface, window).await?)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[tokio::test]
    async fn a_window_too_short_is_refused_before_anything_is_sent() {
        let error = prove("lo", Duration::from_millis(10)).await.unwrap_err();
        assert!(matches!(error, ProofError::Probe(ProbeError::Window(_))), "{error:?}");
    }

    #[test]
    fn an_answer_names_the_interface_and_every_server_as_evidence() {
        let offer = |server: [u8; 4], mac: &str| DhcpOffer {
            server_identifier: Ipv4Addr::from(server),
            source_ip: Ipv4Addr::from(server),
            source_mac: mac.to_string(),
            offered_ip: Ipv4Addr::new(172, 16, 0, 210),
            next_server: String::new(),
            boot_file: String::new(),
            xid: 0x1234,
        };
        let error = ProofError::StillAnswered {
            interface: "main0".into(),
            offers: vec![offer([172, 16, 0, 1], "52:54:00:00:00:01"), offer([172, 16, 0, 60], "")],
        };
        assert_eq!(
            error.to_string(),
            "DHCP is still answered on main0 after the router's DHCP was switched off: \
             server 172.16.0.1 (from 172.16.0.1 mac 52:54:00:00:00:01) offered 172.16.0.210 xid 0x00001234; \
             server 172.16.0.60 (from 172.16.0.60 mac unknown) offered 172.16.0.210 xid 0x00001234; \
             find and stop that server"
        );
    }
}
