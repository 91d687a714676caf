//! The gRPC edge: AgentService and the operators' services on top of [`crate::fleet::Fleet`] (fleetctl, their
//! client, is its own crate).
//!
//! Wire types appear only in this module; [`convert`] is the one place that maps them to domain types.

pub mod agent_service;
pub mod convert;
pub mod culprit;
pub mod fleet_service;
pub mod gate;
pub mod lab_service;
pub mod operations_service;
pub mod security_service;
pub mod verify_service;

use tonic::Status;

use crate::fleet::FleetError;

/// The gRPC status for a refused caller: `UNAUTHENTICATED` and `PERMISSION_DENIED` are only ever about the
/// caller's own credentials.
pub fn auth_status(refusal: crate::auth::AuthError) -> Status {
    use crate::auth::AuthError;
    match refusal {
        AuthError::Unauthenticated(words) => Status::unauthenticated(words),
        AuthError::PermissionDenied(words) => Status::permission_denied(words),
        refusal @ AuthError::RateLimited { .. } => Status::resource_exhausted(refusal.to_string()),
        AuthError::Internal(words) => Status::internal(words),
    }
}

/// The gRPC status for a value on the wire that cannot become a record: `INVALID_ARGUMENT` naming the field.
pub fn invalid(error: model::wire::WireError) -> Status {
    Status::invalid_argument(format!("refused {}: {}", error.field, error.reason))
}

/// The gRPC status for a fleet error; messages say what the caller should do.
pub fn status(error: FleetError) -> Status {
    match &error {
        FleetError::NotEnrolled(_) => Status::not_found(error.to_string()),
        FleetError::NoSuchMachine(_) => Status::not_found(error.to_string()),
        FleetError::ShuttingDown => Status::unavailable(error.to_string()),
        FleetError::Store(crate::store::StoreError::HostnameTaken { .. }) => Status::already_exists(error.to_string()),
        FleetError::Store(crate::store::StoreError::FileGone { .. }) => Status::unavailable(error.to_string()),
        FleetError::Store(_) => {
            tracing::error!(%error, "store failure");
            Status::internal(format!("{error}; see the coordinator's log"))
        }
    }
}

#[cfg(test)]
mod security_tests;
#[cfg(test)]
mod tests;
