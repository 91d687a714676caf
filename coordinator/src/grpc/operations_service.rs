//! OperationsService: redeploys, the operations records, power and forget, over [`crate::operations`].
//!
//! Served behind [`crate::grpc::gate::OperatorGate`] with [`STATE_CHANGING`]: read-only operators may list, show and
//! watch, not redeploy, cancel, power or forget. Handlers name their arguments for the audit log.

use std::pin::Pin;

use futures::Stream;
use proto::v1 as pb;
use proto::v1::operations_service_server::OperationsService;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use super::convert::operations as convert;
use crate::auth::AuditArgs;
use crate::operations::{OpError, Operations};

/// The methods that change machines (admin role, audited).
pub const STATE_CHANGING: &[&str] = &["Redeploy", "CancelOperation", "Power", "Forget"];

pub struct OperationsApi {
    ops: Operations,
}

impl OperationsApi {
    pub fn new(ops: Operations) -> Self {
        OperationsApi { ops }
    }
}

/// The gRPC status for an operations error; clients decide from the code whether to retry.
pub fn status(error: OpError) -> Status {
    match &error {
        OpError::InvalidArgument(m) => Status::invalid_argument(m.clone()),
        OpError::NotFound(m) => Status::not_found(m.clone()),
        OpError::FailedPrecondition(m) => Status::failed_precondition(m.clone()),
        OpError::NoMaas => Status::failed_precondition(error.to_string()),
        // MAAS, not the coordinator, is unavailable: say so to the client (see `grpc::culprit`).
        OpError::Maas(e) if e.is_retryable() => super::culprit::attach(
            Status::unavailable(error.to_string()),
            super::culprit::Service::Maas,
            e.url().unwrap_or_default(),
        ),
        OpError::Maas(e) if e.status() == Some(404) => Status::not_found(error.to_string()),
        OpError::Maas(_) => Status::failed_precondition(error.to_string()),
        OpError::Store(_) => {
            tracing::error!(%error, "operations store failure");
            Status::internal(format!("{error}; see the coordinator's log"))
        }
    }
}

fn audit<T>(request: &Request<T>, args: serde_json::Value) {
    if let Some(slot) = request.extensions().get::<AuditArgs>() {
        slot.set(args);
    }
}

type OperationStream = Pin<Box<dyn Stream<Item = Result<pb::Operation, Status>> + Send>>;

#[tonic::async_trait]
impl OperationsService for OperationsApi {
    async fn redeploy(&self, request: Request<pb::RedeployRequest>) -> Result<Response<pb::RedeployResponse>, Status> {
        let wire = request.get_ref();
        audit(
            &request,
            serde_json::json!({
                "machines": wire.machines, "tag": wire.tag, "pool": wire.pool, "all": wire.all,
                "distro_series": wire.distro_series, "dry_run": wire.dry_run,
                "max_unavailable": wire.max_unavailable, "max_failures": wire.max_failures,
                "user_data": !wire.user_data_template.is_empty(),
            }),
        );
        let redeploy = convert::redeploy_request(request.into_inner()).map_err(super::invalid)?;
        let (op, plan) = self.ops.redeploy(redeploy).await.map_err(status)?;
        Ok(Response::new(pb::RedeployResponse {
            operation: op.as_ref().map(convert::operation),
            plan: plan.iter().map(convert::planned).collect(),
        }))
    }

    async fn list_operations(
        &self,
        request: Request<pb::ListOperationsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        let ops = self.ops.list(request.get_ref().limit).await.map_err(status)?;
        Ok(Response::new(pb::ListOperationsResponse { operations: ops.iter().map(convert::operation).collect() }))
    }

    async fn get_operation(
        &self,
        request: Request<pb::GetOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let op = self.ops.get(&request.get_ref().id).await.map_err(status)?;
        Ok(Response::new(convert::operation(&op)))
    }

    type WatchOperationStream = OperationStream;

    async fn watch_operation(
        &self,
        request: Request<pb::GetOperationRequest>,
    ) -> Result<Response<Self::WatchOperationStream>, Status> {
        let id = request.into_inner().id;
        // Subscribed before the first read, so no change between the two is missed.
        let mut updates = self.ops.subscribe();
        let first = self.ops.get(&id).await.map_err(status)?;
        let ops = self.ops.clone();
        let stream = async_stream(move |tx| async move {
            let mut done = first.state.is_final();
            if tx.send(Ok(convert::operation(&first))).await.is_err() {
                return;
            }
            while !done {
                let op = match updates.recv().await {
                    Ok(op) if op.id == id => op,
                    Ok(_) => continue,
                    // Fell behind: the store has the newest state.
                    Err(RecvError::Lagged(_)) => match ops.get(&id).await {
                        Ok(op) => op,
                        Err(error) => {
                            let _ = tx.send(Err(status(error))).await;
                            return;
                        }
                    },
                    Err(RecvError::Closed) => return,
                };
                done = op.state.is_final();
                if tx.send(Ok(convert::operation(&op))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn cancel_operation(
        &self,
        request: Request<pb::CancelOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        audit(&request, serde_json::json!({ "id": request.get_ref().id }));
        let op = self.ops.cancel(&request.get_ref().id).await.map_err(status)?;
        Ok(Response::new(convert::operation(&op)))
    }

    async fn power(&self, request: Request<pb::PowerRequest>) -> Result<Response<pb::PowerResponse>, Status> {
        let wire = request.get_ref();
        audit(&request, serde_json::json!({ "machine": wire.machine, "action": wire.action().as_str_name() }));
        let action = convert::power_action(wire.action).map_err(super::invalid)?;
        let machine = self.ops.power(&wire.machine, action).await.map_err(status)?;
        Ok(Response::new(pb::PowerResponse {
            system_id: machine.system_id.clone(),
            hostname: machine.hostname.clone(),
            power_state: format!("{:?}", machine.power_state).to_lowercase(),
            message: machine.status_message.clone().unwrap_or_default(),
        }))
    }

    async fn forget(&self, request: Request<pb::ForgetRequest>) -> Result<Response<pb::ForgetResponse>, Status> {
        let wire = request.get_ref();
        audit(&request, serde_json::json!({ "machine": wire.machine, "release": wire.release }));
        let (machine, revoked, released) = self.ops.forget(&wire.machine, wire.release).await.map_err(status)?;
        Ok(Response::new(pb::ForgetResponse {
            system_id: machine.system_id,
            hostname: machine.hostname,
            revoked_certificates: revoked,
            released,
        }))
    }
}

/// A stream fed by a task through a bounded channel (8: a slow watcher slows only its own task).
fn async_stream<F, Fut>(body: F) -> OperationStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::Operation, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
