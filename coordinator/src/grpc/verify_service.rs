//! VerifyService: spec verification, baseline acceptance, lost-node verdicts and rematching, over
//! [`crate::verify::task::VerifyHandle`]. Accept and Rematch change state: the operator gate ([`STATE_CHANGING`])
//! lets only admins call them and audits them with the arguments given here.

use proto::v1 as pb;
use proto::v1::verify_service_server::VerifyService;
use serde_json::json;
use tonic::{Request, Response, Status};

use super::convert::verify as wire;
use crate::auth::{AuditArgs, Operator};
use crate::verify::task::{VerifyError, VerifyHandle};

/// The methods the operator gate treats as state-changing (admin only, audited).
pub const STATE_CHANGING: &[&str] = &["Accept", "Rematch"];

pub struct VerifyApi {
    handle: VerifyHandle,
}

impl VerifyApi {
    pub fn new(handle: VerifyHandle) -> Self {
        VerifyApi { handle }
    }
}

fn status(error: VerifyError) -> Status {
    match &error {
        VerifyError::NoSuchMachine(_) => Status::not_found(error.to_string()),
        VerifyError::NotMatched(_) | VerifyError::NoData(_) => Status::failed_precondition(error.to_string()),
        VerifyError::Store(_) => {
            tracing::error!(%error, "store failure");
            Status::internal(format!("{error}; see the coordinator's log"))
        }
    }
}

#[tonic::async_trait]
impl VerifyService for VerifyApi {
    async fn verify(&self, request: Request<pb::VerifyRequest>) -> Result<Response<pb::VerifyResponse>, Status> {
        let pb::VerifyRequest { names } = request.into_inner();
        let rows = self.handle.pass().await.map_err(|e| status(e.into()))?;
        let mut chosen = Vec::new();
        for name in &names {
            let found: Vec<_> = rows.iter().filter(|r| r.is_named(name)).collect();
            if found.is_empty() {
                return Err(status(VerifyError::NoSuchMachine(name.clone())));
            }
            chosen.extend(found);
        }
        let machines = if names.is_empty() { rows.iter().collect() } else { chosen };
        Ok(Response::new(pb::VerifyResponse { machines: machines.into_iter().map(wire::report_to_wire).collect() }))
    }

    async fn accept(&self, request: Request<pb::AcceptRequest>) -> Result<Response<pb::AcceptResponse>, Status> {
        let by = request.extensions().get::<Operator>().map(|o| o.name.clone()).unwrap_or_else(|| "local".into());
        let audit = request.extensions().get::<AuditArgs>().cloned();
        let pb::AcceptRequest { name, source } = request.into_inner();
        if let Some(audit) = audit {
            audit.set(json!({ "name": name, "source": source }));
        }
        let source = match source.as_str() {
            "" => None,
            text => Some(wire::source_from_wire(text).map_err(super::invalid)?),
        };
        let (report, source) = self.handle.accept(&name, source, &by).await.map_err(status)?;
        Ok(Response::new(pb::AcceptResponse {
            machine: Some(wire::report_to_wire(&report)),
            source: source.as_str().to_string(),
        }))
    }

    async fn list_node_verdicts(
        &self,
        _request: Request<pb::ListNodeVerdictsRequest>,
    ) -> Result<Response<pb::ListNodeVerdictsResponse>, Status> {
        let verdicts = self.handle.node_verdicts().iter().map(wire::node_to_wire).collect();
        Ok(Response::new(pb::ListNodeVerdictsResponse { verdicts }))
    }

    async fn rematch(&self, request: Request<pb::RematchRequest>) -> Result<Response<pb::RematchResponse>, Status> {
        let audit = request.extensions().get::<AuditArgs>().cloned();
        let pb::RematchRequest { name } = request.into_inner();
        if let Some(audit) = audit {
            audit.set(json!({ "name": name }));
        }
        let rematched = self.handle.rematch(&name).await.map_err(status)?;
        Ok(Response::new(wire::rematched_to_wire(&rematched)))
    }
}
