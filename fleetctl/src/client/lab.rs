//! The operators' client of LabService.

use futures::{Stream, StreamExt};
use model::plan::Change;
use model::wire::lab as wire;
use proto::v1 as pb;

use super::{ClientError, FleetClient};

/// A plan as the coordinator computed it, or the stale state it could offer instead.
#[derive(Debug, Clone)]
pub struct PlanAnswer {
    pub steps: Vec<Change>,
    pub stale: Option<pb::LabStale>,
}

impl FleetClient {
    /// # Errors
    /// See [`ClientError`].
    pub async fn lab_plan(&self, lab_toml: String, prune: bool) -> Result<PlanAnswer, ClientError> {
        let mut client = self.lab.clone();
        let answer = self.unary(client.plan(pb::LabPlanRequest { lab_toml, prune })).await?;
        Ok(PlanAnswer { steps: answer.steps.into_iter().map(wire::change_from_wire).collect(), stale: answer.stale })
    }

    /// The progress of an apply (or, with `destroy`, of a teardown), as the coordinator streams it.
    ///
    /// # Errors
    /// See [`ClientError`]; a refused apply (MAAS unreachable) is `Unreachable` with the reason.
    pub async fn lab_apply(
        &self,
        lab_toml: String,
        prune: bool,
        destroy: bool,
    ) -> Result<impl Stream<Item = Result<pb::LabProgress, ClientError>> + use<>, ClientError> {
        let mut client = self.lab.clone();
        let request = pb::LabApplyRequest { lab_toml, prune };
        let call = async { if destroy { client.destroy(request).await } else { client.apply(request).await } };
        let stream = self.unary(call).await?;
        let url = self.url.clone();
        Ok(stream.map(move |item| item.map_err(|status| ClientError::from_status(&url, status))))
    }

    /// # Errors
    /// See [`ClientError`].
    pub async fn lab_export(&self) -> Result<String, ClientError> {
        let mut client = self.lab.clone();
        Ok(self.unary(client.export(pb::LabExportRequest {})).await?.lab_toml)
    }

    /// The report as (JSON text, Markdown).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn lab_report(&self) -> Result<(String, String), ClientError> {
        let mut client = self.lab.clone();
        let answer = self.unary(client.report(pb::LabReportRequest {})).await?;
        Ok((answer.json, answer.markdown))
    }
}
