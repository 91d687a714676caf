//! fleetctl's logic.
