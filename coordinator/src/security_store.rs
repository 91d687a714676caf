//! The security tables (tokens, agent certificates, operators, audit) live in the `metalfleet-store` crate;
//! `crate::security_store::...` keeps naming them.

pub use ::store::security::{AgentCertRecord, AuditRecord, OperatorRecord, SecurityStore, TokenRecord, TokenRefusal};
