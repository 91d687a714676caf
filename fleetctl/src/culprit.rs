//! Reading which service behind the coordinator made a call fail (MAAS, the router shim) off a gRPC status.
//!
//! The coordinator sets the metadata (its `grpc::culprit::attach`); the keys and values are shared through
//! `model::wire::culprit`. With a culprit, fleetctl names that service instead of saying the coordinator is
//! unreachable.

use tonic::Status;

pub use model::wire::culprit::{ADDRESS_KEY, Culprit, SERVICE_KEY, Service};

/// The culprit a coordinator attached to `status`, if any.
pub fn of(status: &Status) -> Option<Culprit> {
    let metadata = status.metadata();
    let text = |key| metadata.get(key).and_then(|v| v.to_str().ok());
    Culprit::from_metadata(text(SERVICE_KEY), text(ADDRESS_KEY))
}

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    #[test]
    fn a_culprit_is_read_from_the_status_metadata_and_an_unknown_one_ignored() {
        let mut status = Status::unavailable("MAAS down");
        status.metadata_mut().insert(SERVICE_KEY, MetadataValue::from_static("maas"));
        status.metadata_mut().insert(ADDRESS_KEY, MetadataValue::from_static("http://10.0.0.1:5240/MAAS/"));
        assert_eq!(of(&status), Some(Culprit { service: Service::Maas, address: "http://10.0.0.1:5240/MAAS/".into() }));
        assert_eq!(of(&Status::unavailable("coordinator draining")), None);
        let mut unknown = Status::unavailable("x");
        unknown.metadata_mut().insert(SERVICE_KEY, MetadataValue::from_static("dns"));
        assert_eq!(of(&unknown), None);
    }
}
