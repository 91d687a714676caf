//! Which service behind the coordinator made a call fail (MAAS, the router shim), carried beside the gRPC status.
//!
//! A `UNAVAILABLE` status alone reads as "the coordinator is unreachable", and that is what fleetctl used to say
//! when MAAS was down during `report`. The coordinator attaches the culprit and its address as status metadata
//! under [`SERVICE_KEY`] and [`ADDRESS_KEY`] (its `grpc::culprit::attach`); fleetctl reads them back
//! (`fleetctl::culprit::of`, through [`Culprit::from_metadata`]) and names that service instead of the coordinator.
//! Typed both ways, so no one matches on message text. The keys and their values live here, the one place both
//! sides reach; setting and reading the tonic metadata stays with each side.

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
    /// The value under [`SERVICE_KEY`].
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

    /// The service named by a value under [`SERVICE_KEY`]; `None` for a value this build does not know.
    pub fn parse(text: &str) -> Option<Service> {
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

impl Culprit {
    /// The culprit named by the values under [`SERVICE_KEY`] and [`ADDRESS_KEY`], as text; `None` when the
    /// service is missing or unknown (then the status is the coordinator's own).
    pub fn from_metadata(service: Option<&str>, address: Option<&str>) -> Option<Culprit> {
        let service = Service::parse(service?)?;
        Some(Culprit { service, address: address.unwrap_or_default().to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_culprit_is_read_back_from_its_metadata_values() {
        for service in [Service::Maas, Service::Router] {
            let read = Culprit::from_metadata(Some(service.as_str()), Some("http://10.0.0.1:5240/MAAS/api/2.0/"));
            assert_eq!(read, Some(Culprit { service, address: "http://10.0.0.1:5240/MAAS/api/2.0/".into() }));
        }
        assert_eq!(
            Culprit::from_metadata(Some("router"), None),
            Some(Culprit { service: Service::Router, address: String::new() })
        );
        assert_eq!(Culprit::from_metadata(None, Some("x")), None);
        assert_eq!(Culprit::from_metadata(Some("dns"), Some("x")), None);
    }
}
