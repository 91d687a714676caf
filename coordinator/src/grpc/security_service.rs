//! SecurityService: enrollment tokens, agent certificates and the audit log, for operators.
//!
//! Served behind [`crate::grpc::gate::OperatorGate`], which authenticates the caller, refuses read-only
//! operators the state-changing methods ([`STATE_CHANGING`]) and writes the audit log; handlers here
//! only say what the arguments were ([`AuditArgs`]), never a secret.

use std::sync::Arc;
use std::time::Duration;

use proto::v1 as pb;
use proto::v1::security_service_server::SecurityService;
use serde_json::json;
use tonic::{Request, Response, Status};

use super::convert::timestamp;
use crate::auth::{AuditArgs, Operator, Security};
use crate::fleet::Fleet;
use crate::security_store::{AgentCertRecord, TokenRecord};
use crate::store::StoreError;

/// The methods read-only operators may not call.
pub const STATE_CHANGING: &[&str] = &["CreateToken", "RevokeToken", "RevokeAgent"];

pub struct SecurityApi {
    fleet: Arc<Fleet>,
    security: Arc<Security>,
}

impl SecurityApi {
    pub fn new(fleet: Arc<Fleet>, security: Arc<Security>) -> Self {
        SecurityApi { fleet, security }
    }

    /// The machine id for a machine id, hostname or system_id.
    fn resolve(&self, name: &str) -> Result<String, Status> {
        self.fleet
            .machines()
            .into_iter()
            .map(|view| view.machine)
            .find(|m| m.id == name || m.hostname == name || m.system_id.as_deref() == Some(name))
            .map(|m| m.id)
            .ok_or_else(|| Status::not_found(format!("no machine {name:?}; see `fleetctl agents list`")))
    }
}

fn store_status(error: StoreError) -> Status {
    tracing::error!(%error, "security store failure");
    Status::internal("the coordinator's store failed; see its log")
}

fn audit_args<T>(request: &Request<T>, args: serde_json::Value) {
    if let Some(slot) = request.extensions().get::<AuditArgs>() {
        slot.set(args);
    }
}

fn caller<T>(request: &Request<T>) -> String {
    request.extensions().get::<Operator>().map_or_else(|| "unknown".to_string(), |op| op.name.clone())
}

fn token_to_wire(record: &TokenRecord) -> pb::EnrollToken {
    pb::EnrollToken {
        id: record.id.clone(),
        machine: record.machine.clone().unwrap_or_default(),
        uses_left: record.uses_left,
        expires_at: Some(timestamp(record.expires_at)),
        created_at: Some(timestamp(record.created_at)),
        created_by: record.created_by.clone(),
        revoked: record.revoked,
    }
}

#[tonic::async_trait]
impl SecurityService for SecurityApi {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let created_by = caller(&request);
        let pb::CreateTokenRequest { ttl_seconds, machine, uses } = request.get_ref().clone();
        audit_args(&request, json!({ "ttl_seconds": ttl_seconds, "machine": machine, "uses": uses.max(1) }));
        let ttl = if ttl_seconds == 0 { self.security.config.token_ttl } else { Duration::from_secs(ttl_seconds) };
        let machine = (!machine.is_empty()).then_some(machine.as_str());
        let (record, secret) = crate::enroll::mint_token_by(&self.security.store, machine, ttl, uses, &created_by)
            .await
            .map_err(store_status)?;
        tracing::info!(token_id = %record.id, machine = ?record.machine, uses = record.uses_left, "enrollment token created");
        Ok(Response::new(pb::CreateTokenResponse {
            token: Some(token_to_wire(&record)),
            secret: secret.expose().to_string(),
        }))
    }

    async fn list_tokens(
        &self,
        _request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let tokens = self.security.store.tokens().await.map_err(store_status)?;
        Ok(Response::new(pb::ListTokensResponse { tokens: tokens.iter().map(token_to_wire).collect() }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let id = request.get_ref().id.clone();
        audit_args(&request, json!({ "id": id }));
        let revoked = self.security.store.revoke_token(id.clone(), chrono::Utc::now()).await.map_err(store_status)?;
        if !revoked {
            return Err(Status::not_found(format!("no token {id:?}; see `fleetctl tokens list`")));
        }
        Ok(Response::new(pb::RevokeTokenResponse { revoked }))
    }

    async fn list_agents(
        &self,
        _request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let machines: std::collections::HashMap<String, String> =
            self.fleet.machines().into_iter().map(|v| (v.machine.id.clone(), v.machine.hostname.clone())).collect();
        let certs = self.security.store.agent_certs().await.map_err(store_status)?;
        let certificates = certs
            .iter()
            .map(|c: &AgentCertRecord| pb::AgentCertificate {
                machine_id: c.machine_id.clone(),
                hostname: machines.get(&c.machine_id).cloned().unwrap_or_default(),
                serial: c.serial.clone(),
                issued_at: Some(timestamp(c.issued_at)),
                expires_at: Some(timestamp(c.expires_at)),
                revoked: c.revoked,
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { certificates }))
    }

    async fn revoke_agent(
        &self,
        request: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::RevokeAgentResponse>, Status> {
        let name = request.get_ref().name.clone();
        audit_args(&request, json!({ "name": name }));
        let machine_id = self.resolve(&name)?;
        let count = self.security.revoke_machine(&machine_id).await.map_err(store_status)?;
        self.fleet.mark_revoked(&machine_id);
        tracing::warn!(%machine_id, certificates = count, "agent certificates revoked");
        Ok(Response::new(pb::RevokeAgentResponse { machine_id, certificates_revoked: count }))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let limit = request.get_ref().limit;
        let entries = self.security.store.audit((limit > 0).then_some(limit)).await.map_err(store_status)?;
        let entries = entries
            .into_iter()
            .map(|e| pb::AuditEntry {
                id: e.id,
                at: Some(timestamp(e.at)),
                operator: e.operator,
                role: e.role,
                action: e.action,
                args: e.args,
                result: e.result,
            })
            .collect();
        Ok(Response::new(pb::ListAuditResponse { entries }))
    }
}
