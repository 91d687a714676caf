//! Which service behind the coordinator made a call fail (MAAS, the router shim), carried beside the gRPC status.
//!
//! A `UNAVAILABLE` status alone reads as "the coordinator is unreachable", and that is what fleetctl used to say
//! when MAAS was down during `report`. The coordinator attaches the culprit and its address as status metadata
//! ([`attach`]); the client reads it back ([`of`]) and names that service instead of the coordinator. Typed both
//! ways, so no one matches on message text.

use tonic::Status;
use tonic::metadata::MetadataValue;

/// The metadata key naming the failing service: `maas` or `router`.
pub const SERVICE_KEY: &str = "metalfleet-culprit";
/// The metadata key holding the failing service's address (MAAS's API URL, the shim's address).
pub const ADDRESS_KEY: &str = "metalfleet-culprit-address";

/// A service the coordinator depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Maas,
    Router,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Maas => "maas",
            Service::Router => "router",
        }
    }

    /// The name an operator knows it by.
    pub fn display_name(self) -> &'static str {
        match self {
            Service::Maas => "MAAS",
            Service::Router => "the router shim",
        }
    }

    fn parse(text: &str) -> Option<Service> {
        [Service::Maas, Service::Router].into_iter().find(|s| s.as_str() == text)
    }
}

/// The service that failed and where the coordinator reached it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Culprit {
    pub service: Service,
    /// Empty when the address cannot travel as metadata (it is in the status message too).
    pub address: String,
}

/// `status` with `service` at `address` named as the culprit.
pub fn attach(mut status: Status, service: Service, address: &str) -> Status {
    let metadata = status.metadata_mut();
    metadata.insert(SERVICE_KEY, MetadataValue::from_static(service.as_str()));
    // An address with characters a header cannot carry stays only in the message.
    if let Ok(value) = address.parse() {
        metadata.insert(ADDRESS_KEY, value);
    }
    status
}

/// The culprit a coordinator attached to `status`, if any.
pub fn of(status: &Status) -> Option<Culprit> {
    let metadata = status.metadata();
    let service = Service::parse(metadata.get(SERVICE_KEY)?.to_str().ok()?)?;
    let address = metadata.get(ADDRESS_KEY).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    Some(Culprit { service, address })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_culprit_travels_with_the_status() {
        let status = attach(Status::unavailable("MAAS down"), Service::Maas, "http://10.0.0.1:5240/MAAS/api/2.0/");
        let culprit = of(&status).expect("attached");
        assert_eq!(culprit, Culprit { service: Service::Maas, address: "http://10.0.0.1:5240/MAAS/api/2.0/".into() });
        assert_eq!(of(&Status::unavailable("coordinator draining")), None);
        let odd = attach(Status::unavailable("x"), Service::Router, "bad\naddress");
        assert_eq!(of(&odd), Some(Culprit { service: Service::Router, address: String::new() }));
    }
}
