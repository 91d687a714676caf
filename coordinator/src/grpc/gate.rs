//! [`OperatorGate`]: guards a whole operator service. Every call needs an operator credential
//! ([`Security::operator`]), read-only operators are refused the service's state-changing methods, and
//! each state-changing call is written to the audit log.

use std::convert::Infallible;
use std::sync::Arc;

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::auth::{AuditArgs, PeerCert, Security};

/// FleetService methods that change state (read-only operators are refused them). Every other
/// operator service is wrapped in [`OperatorGate`] with its own list.
pub const FLEET_STATE_CHANGING: &[&str] = &[];

/// Services that need no operator credential, should a gate ever wrap them: the agents' own
/// (checked per RPC), gRPC health and reflection.
const PUBLIC_PREFIXES: &[&str] = &["/metalfleet.v1.AgentService/", "/grpc.health.v1.Health/", "/grpc.reflection."];

/// Wraps an operator service: every call needs an operator credential, read-only operators are
/// refused the `state_changing` methods, and each state-changing call is written to the audit log.
#[derive(Clone)]
pub struct OperatorGate<S> {
    inner: S,
    security: Arc<Security>,
    state_changing: &'static [&'static str],
}

impl<S> OperatorGate<S> {
    pub fn new(inner: S, security: Arc<Security>, state_changing: &'static [&'static str]) -> Self {
        OperatorGate { inner, security, state_changing }
    }
}

impl<S: NamedService> NamedService for OperatorGate<S> {
    const NAME: &'static str = S::NAME;
}

/// The client certificate of a call, from the connection info tonic puts into the extensions.
pub fn peer_from_extensions(extensions: &http::Extensions) -> Option<PeerCert> {
    Security::peer(extensions.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(TlsConnectInfo::peer_certs))
}

impl<S> Service<http::Request<Body>> for OperatorGate<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone is not necessarily ready; the one poll_ready was called on is, so keep that one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let security = self.security.clone();
        let state_changing = self.state_changing;
        Box::pin(async move {
            let path = request.uri().path();
            if PUBLIC_PREFIXES.iter().any(|prefix| path.starts_with(prefix)) {
                return inner.call(request).await;
            }
            let method = path.rsplit('/').next().unwrap_or_default().to_string();
            let peer = peer_from_extensions(request.extensions());
            let operator = match security.operator(peer.as_ref(), request.headers()).await {
                Ok(operator) => operator,
                Err(refusal) => {
                    let status = super::auth_status(refusal);
                    tracing::info!(method, code = ?status.code(), "operator call refused");
                    return Ok(status.into_http());
                }
            };
            let changes_state = state_changing.contains(&method.as_str());
            if !changes_state {
                request.extensions_mut().insert(operator);
                return inner.call(request).await;
            }
            if !operator.is_admin() {
                let status = Status::permission_denied(format!(
                    "operator {} has role {}; {method} needs role admin",
                    operator.name, operator.role
                ));
                security.audit(&operator, &method, "{}".into(), "permission_denied".into()).await;
                return Ok(status.into_http());
            }
            let args = AuditArgs::default();
            request.extensions_mut().insert(operator.clone());
            request.extensions_mut().insert(args.clone());
            let response = inner.call(request).await?;
            let result = match Status::from_header_map(response.headers()) {
                Some(status) if status.code() != tonic::Code::Ok => {
                    format!("{:?}: {}", status.code(), status.message())
                }
                _ => "ok".to_string(),
            };
            security.audit(&operator, &method, args.take(), result).await;
            Ok(response)
        })
    }
}
