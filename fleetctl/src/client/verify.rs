//! The operators' client of VerifyService: verify, accept a baseline, lost-node verdicts, rematch.

use model::verify::{MachineReport, NodeVerdict, Rematched};
use model::wire::verify as wire;
use proto::v1 as pb;

use super::{ClientError, FleetClient};

fn unreadable(error: model::wire::WireError) -> ClientError {
    ClientError::Status(tonic::Status::internal(format!("cannot read the coordinator's answer: {error}")))
}

impl FleetClient {
    /// # Errors
    /// See [`ClientError`].
    pub async fn verify(&self, names: Vec<String>) -> Result<Vec<MachineReport>, ClientError> {
        let mut client = self.verify.clone();
        let answer = self.unary(client.verify(pb::VerifyRequest { names })).await?;
        answer.machines.into_iter().map(|r| wire::report_from_wire(r).map_err(unreadable)).collect()
    }

    /// `source`: `None` lets the coordinator choose (live when the agent reported).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn accept(&self, name: &str, source: Option<&str>) -> Result<(MachineReport, String), ClientError> {
        let mut client = self.verify.clone();
        let request = pb::AcceptRequest { name: name.to_string(), source: source.unwrap_or_default().to_string() };
        let answer = self.unary(client.accept(request)).await?;
        let machine = answer
            .machine
            .ok_or_else(|| unreadable(model::wire::WireError::new("machine", "is missing from the answer")))?;
        Ok((wire::report_from_wire(machine).map_err(unreadable)?, answer.source))
    }

    /// Every enrolled machine's lost-node verdict; empty when the coordinator does not serve VerifyService.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn node_verdicts(&self) -> Result<Vec<NodeVerdict>, ClientError> {
        let mut client = self.verify.clone();
        match self.unary(client.list_node_verdicts(pb::ListNodeVerdictsRequest {})).await {
            Ok(answer) => Ok(answer.verdicts.into_iter().map(wire::node_from_wire).collect()),
            Err(ClientError::Status(status)) if status.code() == tonic::Code::Unimplemented => Ok(Vec::new()),
            Err(error) => Err(error),
        }
    }

    /// # Errors
    /// See [`ClientError`].
    pub async fn rematch(&self, name: &str) -> Result<Rematched, ClientError> {
        let mut client = self.verify.clone();
        let answer = self.unary(client.rematch(pb::RematchRequest { name: name.to_string() })).await?;
        Ok(Rematched {
            machine_id: answer.machine_id,
            hostname: answer.hostname,
            system_id: (!answer.system_id.is_empty()).then_some(answer.system_id),
            outcome: answer.outcome,
        })
    }
}
