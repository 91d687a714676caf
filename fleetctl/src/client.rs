//! The operators' client of the coordinator's services, returning `model` records (used by fleetctl and by the
//! coordinator's own tests).

mod lab;
mod security;
mod verify;

use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use metalfleet_common::secret::Secret;
use model::domain::maas::{MaasMachine, MaasSyncStatus};
use model::domain::{Event, MachineView};
use model::wire as convert;
use proto::v1 as pb;
use proto::v1::fleet_service_client::FleetServiceClient;

use crate::culprit;

pub use lab::PlanAnswer;
pub use security::{AgentCert, AuditEntry, TokenInfo};

/// How to reach a coordinator.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// `https://HOST:PORT` or `http://HOST:PORT`.
    pub url: String,
    /// PEM of the CA that signed the coordinator's certificate (needed for https).
    pub ca_pem: Option<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// The operator's client certificate and key (PEM), for https.
    pub identity: Option<(String, Secret)>,
    /// The operator's bearer token, sent as `authorization: Bearer ...`.
    pub bearer: Option<Secret>,
}

/// Adds the operator's bearer token to every call.
#[derive(Clone)]
pub struct Credentials {
    bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.bearer {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel that carries the operator's credentials.
pub type AuthChannel = InterceptedService<Channel, Credentials>;

/// Why a call to the coordinator failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the coordinator at {url}: {reason}; check that it runs and that the address is right")]
    Unreachable { url: String, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error("the coordinator answered {}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    /// The coordinator answered, but a service behind it (MAAS, the router shim) failed; `message` is the
    /// coordinator's, which names that service and its address.
    #[error("{message}")]
    Upstream { culprit: culprit::Culprit, code: tonic::Code, message: String },
}

impl ClientError {
    /// The error for `status`, answered by the coordinator at `url`: a named culprit (MAAS, the router) is that
    /// service's failure; `UNAVAILABLE` without one means the coordinator itself.
    pub fn from_status(url: &str, status: tonic::Status) -> Self {
        if let Some(culprit) = culprit::of(&status) {
            let message = if culprit.address.is_empty() || status.message().contains(&culprit.address) {
                status.message().to_string()
            } else {
                format!("{} at {}: {}", culprit.service.display_name(), culprit.address, status.message())
            };
            return ClientError::Upstream { culprit, code: status.code(), message };
        }
        match status.code() {
            tonic::Code::Unavailable => {
                ClientError::Unreachable { url: url.to_string(), reason: status.message().to_string() }
            }
            _ => ClientError::Status(status),
        }
    }
}

/// A connected FleetService client.
#[derive(Debug, Clone)]
pub struct FleetClient {
    inner: FleetServiceClient<AuthChannel>,
    security: proto::v1::security_service_client::SecurityServiceClient<AuthChannel>,
    lab: proto::v1::lab_service_client::LabServiceClient<AuthChannel>,
    verify: proto::v1::verify_service_client::VerifyServiceClient<AuthChannel>,
    operations: proto::v1::operations_service_client::OperationsServiceClient<AuthChannel>,
    url: String,
    request_timeout: Duration,
}

/// Connects (eagerly, so an unreachable coordinator is reported at once).
///
/// # Errors
/// [`ClientError::Usage`] for a bad URL or an https URL without a CA; [`ClientError::Unreachable`]
/// when the connection or TLS handshake fails.
pub async fn connect(settings: &ClientSettings) -> Result<FleetClient, ClientError> {
    let url = settings.url.clone();
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| ClientError::Usage(format!("bad coordinator address {url:?}: {e}; use https://HOST:PORT")))?
        .connect_timeout(settings.connect_timeout)
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        let ca = settings.ca_pem.as_ref().ok_or_else(|| {
            ClientError::Usage(format!(
                "{url} uses TLS but no CA is configured; pass --ca-file (the coordinator's ca.pem) or set ca_file in client.toml"
            ))
        })?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some((cert, key)) = &settings.identity {
            tls = tls.identity(Identity::from_pem(cert, key.expose()));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| ClientError::Usage(format!("bad TLS settings: {e}")))?;
    } else if !url.starts_with("http://") {
        return Err(ClientError::Usage(format!(
            "bad coordinator address {url:?}; use https://HOST:PORT or http://HOST:PORT"
        )));
    }
    let channel =
        endpoint.connect().await.map_err(|e| ClientError::Unreachable { url: url.clone(), reason: error_chain(&e) })?;
    let bearer = match &settings.bearer {
        Some(token) => Some(format!("Bearer {}", token.expose()).parse().map_err(|_| {
            ClientError::Usage("the bearer token holds characters a header cannot carry; check token_file".into())
        })?),
        None => None,
    };
    let credentials = Credentials { bearer };
    Ok(FleetClient {
        inner: FleetServiceClient::with_interceptor(channel.clone(), credentials.clone()),
        lab: proto::v1::lab_service_client::LabServiceClient::with_interceptor(channel.clone(), credentials.clone()),
        verify: proto::v1::verify_service_client::VerifyServiceClient::with_interceptor(
            channel.clone(),
            credentials.clone(),
        ),
        operations: proto::v1::operations_service_client::OperationsServiceClient::with_interceptor(
            channel.clone(),
            credentials.clone(),
        ),
        security: proto::v1::security_service_client::SecurityServiceClient::with_interceptor(channel, credentials),
        url,
        request_timeout: settings.request_timeout,
    })
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl FleetClient {
    /// The OperationsService client on the same channel (see [`crate::operations`]).
    pub fn operations(&self) -> proto::v1::operations_service_client::OperationsServiceClient<AuthChannel> {
        self.operations.clone()
    }

    /// Runs one unary call under the request timeout, mapping failures like every other call.
    ///
    /// # Errors
    /// As the call's status, or [`ClientError::Unreachable`] after the timeout.
    pub async fn call<T>(
        &self,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ClientError> {
        self.unary(call).await
    }

    /// Maps a streaming call's failure like every other call.
    pub fn error(&self, status: tonic::Status) -> ClientError {
        ClientError::from_status(&self.url, status)
    }

    async fn unary<T, F>(&self, call: F) -> Result<T, ClientError>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(self.request_timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(ClientError::from_status(&self.url, status)),
            Err(_) => Err(ClientError::Unreachable {
                url: self.url.clone(),
                reason: format!("no answer within {:?}", self.request_timeout),
            }),
        }
    }

    /// # Errors
    /// See [`ClientError`].
    pub async fn list_machines(&self) -> Result<Vec<MachineView>, ClientError> {
        let mut client = self.inner.clone();
        let response = self.unary(client.list_machines(pb::ListMachinesRequest {})).await?;
        Ok(response.machines.into_iter().map(convert::machine).collect())
    }

    /// The machines with the coordinator's own condition: `Some((since, reasons))` while it is degraded
    /// (its store cannot write, so what it shows may be behind).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn fleet_status(&self) -> Result<(Vec<MachineView>, Option<Degraded>), ClientError> {
        let mut client = self.inner.clone();
        let response = self.unary(client.list_machines(pb::ListMachinesRequest {})).await?;
        let degraded = response
            .coordinator
            .filter(|c| c.degraded)
            .map(|c| Degraded { since: convert::time(c.since), reasons: c.reasons });
        Ok((response.machines.into_iter().map(convert::machine).collect(), degraded))
    }

    /// # Errors
    /// See [`ClientError`]; an unknown name is a `NOT_FOUND` status.
    pub async fn machine(&self, name: &str, history: u32) -> Result<MachineView, ClientError> {
        let mut client = self.inner.clone();
        let request = pb::GetMachineRequest { name: name.to_string(), history };
        Ok(convert::machine(self.unary(client.get_machine(request)).await?))
    }

    /// The coordinator's MAAS view; `None` when it runs without MAAS (or predates ListMaasMachines).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn list_maas_machines(&self) -> Result<Option<(Vec<MaasMachine>, MaasSyncStatus)>, ClientError> {
        let mut client = self.inner.clone();
        let response = match self.unary(client.list_maas_machines(pb::ListMaasMachinesRequest {})).await {
            Ok(response) => response,
            Err(ClientError::Status(status)) if status.code() == tonic::Code::Unimplemented => return Ok(None),
            Err(error) => return Err(error),
        };
        let pb::ListMaasMachinesResponse { configured, sync, machines } = response;
        if !configured {
            return Ok(None);
        }
        let machines = machines.into_iter().map(convert::maas::machine).collect();
        Ok(Some((machines, sync.map(convert::maas::sync).unwrap_or_else(|| convert::maas::sync(Default::default())))))
    }

    /// Stored events after `after_id` (the newest `limit` when non-zero), then live ones with `follow`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn events(
        &self,
        after_id: u64,
        follow: bool,
        limit: u32,
    ) -> Result<impl Stream<Item = Result<Event, ClientError>> + use<>, ClientError> {
        let mut client = self.inner.clone();
        let stream = self.unary(client.watch_events(pb::WatchEventsRequest { after_id, follow, limit })).await?;
        let url = self.url.clone();
        Ok(stream.map(move |item| item.map(convert::event).map_err(|status| ClientError::from_status(&url, status))))
    }
}

/// The coordinator says it is degraded (see [`FleetClient::fleet_status`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Degraded {
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub reasons: Vec<String>,
}
