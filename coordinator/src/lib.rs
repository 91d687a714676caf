//! Placeholder.
pub mod maas;
