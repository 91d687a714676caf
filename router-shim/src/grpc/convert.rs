//! Domain -> wire conversions that only the server sends: a change's outcome and a probe's report.
//!
//! The model's conversions (state, forwards, remote management, both directions) are the client's too, so they
//! live in `router_shim_api::convert` and are re-exported here; this file keeps what needs the shim core
//! ([`ChangeOutcome`]) or answers `ProbeDhcp`, which no client reads back into domain types.

use std::time::SystemTime;

use proto::v1 as pb;
pub use router_shim_api::convert::*;

use crate::probe::{DhcpOffer, ProbeReport};
use crate::shim::ChangeOutcome;

pub fn outcome_to_wire(outcome: &ChangeOutcome) -> pb::ChangeResult {
    let now = SystemTime::now();
    pb::ChangeResult {
        changed: outcome.changed,
        before: Some(state_to_wire(&outcome.before, now)),
        after: Some(state_to_wire(&outcome.after, now)),
        pending_change_id: outcome.pending.as_ref().map(|p| p.id.clone()).unwrap_or_default(),
        confirm_deadline: outcome.pending.as_ref().map(|p| p.deadline.into()),
    }
}

pub fn offer_to_wire(offer: &DhcpOffer) -> pb::DhcpOffer {
    let DhcpOffer { server_identifier, source_ip, source_mac, offered_ip, next_server, boot_file, xid } = offer;
    pb::DhcpOffer {
        server_identifier: server_identifier.to_string(),
        source_ip: source_ip.to_string(),
        source_mac: source_mac.clone(),
        offered_ip: offered_ip.to_string(),
        next_server: next_server.clone(),
        boot_file: boot_file.clone(),
        xid: *xid,
    }
}

pub fn report_to_wire(report: &ProbeReport) -> pb::ProbeDhcpResponse {
    pb::ProbeDhcpResponse {
        offers: report.offers.iter().map(offer_to_wire).collect(),
        discovers_sent: report.discovers_sent,
        window_ms: u32::try_from(report.window_ms).unwrap_or(u32::MAX),
        interface: report.interface.clone(),
    }
}
