//! The operators' client of SecurityService: tokens, agent certificates, the audit log.

use chrono::{DateTime, Utc};
use metalfleet_common::secret::Secret;
use proto::v1 as pb;

use super::{ClientError, FleetClient};

/// An enrollment token as listed (never its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    pub id: String,
    pub machine: Option<String>,
    pub uses_left: u32,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub revoked: bool,
}

/// A client certificate issued to an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentCert {
    pub machine_id: String,
    pub hostname: String,
    pub serial: String,
    pub issued_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: u64,
    pub at: Option<DateTime<Utc>>,
    pub operator: String,
    pub role: String,
    pub action: String,
    pub args: String,
    pub result: String,
}

fn time(ts: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    ts.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
}

fn token(wire: pb::EnrollToken) -> TokenInfo {
    TokenInfo {
        id: wire.id,
        machine: (!wire.machine.is_empty()).then_some(wire.machine),
        uses_left: wire.uses_left,
        expires_at: time(wire.expires_at),
        created_at: time(wire.created_at),
        created_by: wire.created_by,
        revoked: wire.revoked,
    }
}

impl FleetClient {
    /// Mints a token; the secret is in the answer only.
    ///
    /// # Errors
    /// See [`ClientError`]; a read-only operator gets `PERMISSION_DENIED`.
    pub async fn create_token(
        &self,
        ttl_seconds: u64,
        machine: Option<&str>,
        uses: u32,
    ) -> Result<(TokenInfo, Secret), ClientError> {
        let mut client = self.security.clone();
        let request = pb::CreateTokenRequest { ttl_seconds, machine: machine.unwrap_or_default().to_string(), uses };
        let response = self.unary(client.create_token(request)).await?;
        let info =
            response.token.map(token).ok_or_else(|| ClientError::Usage("the coordinator sent no token".into()))?;
        Ok((info, Secret::new(response.secret)))
    }

    /// # Errors
    /// See [`ClientError`].
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        let mut client = self.security.clone();
        let response = self.unary(client.list_tokens(pb::ListTokensRequest {})).await?;
        Ok(response.tokens.into_iter().map(token).collect())
    }

    /// # Errors
    /// See [`ClientError`]; an unknown id is `NOT_FOUND`.
    pub async fn revoke_token(&self, id: &str) -> Result<(), ClientError> {
        let mut client = self.security.clone();
        self.unary(client.revoke_token(pb::RevokeTokenRequest { id: id.to_string() })).await?;
        Ok(())
    }

    /// # Errors
    /// See [`ClientError`].
    pub async fn list_agents(&self) -> Result<Vec<AgentCert>, ClientError> {
        let mut client = self.security.clone();
        let response = self.unary(client.list_agents(pb::ListAgentsRequest {})).await?;
        Ok(response
            .certificates
            .into_iter()
            .map(|c| AgentCert {
                machine_id: c.machine_id,
                hostname: c.hostname,
                serial: c.serial,
                issued_at: time(c.issued_at),
                expires_at: time(c.expires_at),
                revoked: c.revoked,
            })
            .collect())
    }

    /// Revokes every certificate of the machine; returns its id and how many were revoked.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn revoke_agent(&self, name: &str) -> Result<(String, u32), ClientError> {
        let mut client = self.security.clone();
        let response = self.unary(client.revoke_agent(pb::RevokeAgentRequest { name: name.to_string() })).await?;
        Ok((response.machine_id, response.certificates_revoked))
    }

    /// # Errors
    /// See [`ClientError`].
    pub async fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, ClientError> {
        let mut client = self.security.clone();
        let response = self.unary(client.list_audit(pb::ListAuditRequest { limit })).await?;
        Ok(response
            .entries
            .into_iter()
            .map(|e| AuditEntry {
                id: e.id,
                at: time(e.at),
                operator: e.operator,
                role: e.role,
                action: e.action,
                args: e.args,
                result: e.result,
            })
            .collect())
    }
}
