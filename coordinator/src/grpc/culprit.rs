//! Naming the service behind the coordinator that made a call fail (MAAS, the router shim) on the gRPC status.
//!
//! The keys and the [`Service`] values are shared with fleetctl through `model::wire::culprit`; this module only
//! sets them ([`attach`]). fleetctl reads them back (`fleetctl::culprit::of`) and names that service instead of
//! the coordinator.

use tonic::Status;
use tonic::metadata::MetadataValue;

pub use model::wire::culprit::{ADDRESS_KEY, Culprit, SERVICE_KEY, Service};

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

#[cfg(test)]
mod tests;
