//! The gRPC side: the `RouterShim` service over a [`Shim`], plus health and reflection.

pub mod convert;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proto::v1 as pb;
use proto::v1::router_shim_server::{RouterShim, RouterShimServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::backend::BackendError;
use crate::probe::{self, ProbeRequest};
use crate::shim::{Change, Shim, ShimError};

/// The `RouterShim` service.
pub struct Service {
    shim: Arc<Shim>,
}

impl Service {
    pub fn new(shim: Arc<Shim>) -> Self {
        Service { shim }
    }

    async fn change(&self, change: Change) -> Result<Response<pb::ChangeResult>, Status> {
        let outcome = self.shim.apply(change).await.map_err(status)?;
        Ok(Response::new(convert::outcome_to_wire(&outcome)))
    }
}

/// Maps a shim error to a gRPC status with the message a person can act on.
pub fn status(error: ShimError) -> Status {
    let message = error.to_string();
    match error {
        ShimError::Invalid(_) => Status::invalid_argument(message),
        ShimError::UnknownPending(_) => Status::not_found(message),
        ShimError::ReadBack(_) => Status::internal(message),
        ShimError::Backend(BackendError::Unreachable { .. }) => Status::unavailable(message),
        ShimError::Backend(BackendError::Auth { .. }) => Status::permission_denied(message),
        ShimError::Backend(BackendError::Config(_)) => Status::failed_precondition(message),
        ShimError::Backend(BackendError::NotVerified(_)) => Status::failed_precondition(message),
        ShimError::Backend(_) => Status::internal(message),
    }
}

#[tonic::async_trait]
impl RouterShim for Service {
    async fn get_state(&self, _: Request<pb::GetStateRequest>) -> Result<Response<pb::RouterState>, Status> {
        let state = self.shim.state().await.map_err(status)?;
        Ok(Response::new(convert::state_to_wire(&state, SystemTime::now())))
    }

    async fn set_dhcp(&self, request: Request<pb::SetDhcpRequest>) -> Result<Response<pb::ChangeResult>, Status> {
        self.change(Change::Dhcp { enabled: request.into_inner().enabled }).await
    }

    async fn list_port_forwards(
        &self,
        _: Request<pb::ListPortForwardsRequest>,
    ) -> Result<Response<pb::ListPortForwardsResponse>, Status> {
        let state = self.shim.state().await.map_err(status)?;
        Ok(Response::new(pb::ListPortForwardsResponse {
            forwards: state.forwards.iter().map(convert::forward_to_wire).collect(),
        }))
    }

    async fn add_port_forward(
        &self,
        request: Request<pb::AddPortForwardRequest>,
    ) -> Result<Response<pb::ChangeResult>, Status> {
        let pb::AddPortForwardRequest { forward, replace } = request.into_inner();
        let forward = forward.ok_or_else(|| Status::invalid_argument("forward is missing; send one PortForward"))?;
        let forward = convert::forward_from_wire(forward).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.change(Change::AddForward { forward, replace }).await
    }

    async fn remove_port_forward(
        &self,
        request: Request<pb::RemovePortForwardRequest>,
    ) -> Result<Response<pb::ChangeResult>, Status> {
        self.change(Change::RemoveForward { name: request.into_inner().name }).await
    }

    async fn set_remote_management(
        &self,
        request: Request<pb::SetRemoteManagementRequest>,
    ) -> Result<Response<pb::ChangeResult>, Status> {
        let pb::SetRemoteManagementRequest { enabled, allowed_from } = request.into_inner();
        let management = convert::management_from_wire(enabled, &allowed_from)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.change(Change::RemoteManagement(management)).await
    }

    async fn confirm(&self, request: Request<pb::ConfirmRequest>) -> Result<Response<pb::ConfirmResponse>, Status> {
        let confirmed = self.shim.confirm(&request.into_inner().pending_change_id);
        Ok(Response::new(pb::ConfirmResponse { confirmed }))
    }

    async fn probe_dhcp(
        &self,
        request: Request<pb::ProbeDhcpRequest>,
    ) -> Result<Response<pb::ProbeDhcpResponse>, Status> {
        let pb::ProbeDhcpRequest { interface, window_ms, stop_at_first } = request.into_inner();
        if interface.is_empty() {
            return Err(Status::invalid_argument("interface is empty; name the LAN interface to probe"));
        }
        let window = if window_ms == 0 { probe::DEFAULT_WINDOW } else { Duration::from_millis(u64::from(window_ms)) };
        let report = probe::probe(&ProbeRequest { interface, window, stop_at_first })
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(convert::report_to_wire(&report)))
    }

    async fn reset(&self, _: Request<pb::ResetRequest>) -> Result<Response<pb::ChangeResult>, Status> {
        self.change(Change::Reset).await
    }
}

/// The largest request or answer the shim handles; its messages are a few hundred bytes, so anything near this
/// is hostile and refused (OUT_OF_RANGE) before it is decoded.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Serves `RouterShim`, health and reflection on `listener` until `stop` is cancelled.
///
/// # Errors
/// When the server fails (TLS set-up, transport).
pub async fn serve(
    listener: TcpListener,
    shim: Arc<Shim>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    rpc_timeout: Duration,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<RouterShimServer<Service>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the compiled-in descriptor set is valid");
    let mut builder = tonic::transport::Server::builder().timeout(rpc_timeout);
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            RouterShimServer::new(Service::new(shim))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await
}
