//! fleetctl's `redeploy`, `operations list|show|watch|cancel`, `power` and `machines forget`.

use std::io::IsTerminal as _;
use std::io::Write as _;
use std::path::Path;

use chrono::SecondsFormat;
use futures::StreamExt as _;
use metalfleet_common::exit;
use proto::v1 as pb;
use serde_json::{Value, json};

use model::operations::{OpState, Operation};
use model::wire::operations::operation_from_wire;

use crate::CliError;
use crate::client::FleetClient;
use crate::output::{self, NAME_WIDTH, Output, Table, Text, clip};

/// What `fleetctl redeploy` was asked.
#[derive(Debug, Clone, Default)]
pub struct RedeployArgs {
    pub names: Vec<String>,
    pub tag: Option<String>,
    pub pool: Option<String>,
    pub all: bool,
    pub distro: Option<String>,
    pub user_data: Option<std::path::PathBuf>,
    pub dry_run: bool,
    pub wait: bool,
    pub yes: bool,
    pub max_unavailable: u32,
    pub max_failures: u32,
}

fn wire(op: pb::Operation) -> Result<Operation, CliError> {
    operation_from_wire(op).map_err(|e| CliError::Failed(format!("cannot read the coordinator's operation: {e}")))
}

/// The exit code an ended operation means: 0 succeeded, 1 failed or cancelled.
pub fn exit_code(op: &Operation) -> i32 {
    if op.state == OpState::Succeeded { exit::OK } else { exit::CHECK_FAILED }
}

pub fn operation_json(op: &Operation) -> Value {
    let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    json!({
        "id": op.id, "kind": op.kind, "state": op.state.as_str(), "message": op.message,
        "created_at": time(op.created_at), "updated_at": time(op.updated_at), "finished_at": op.finished_at.map(time),
        "max_unavailable": op.max_unavailable, "max_failures": op.max_failures, "distro_series": op.distro_series,
        "machines": op.machines.iter().map(|m| json!({
            "system_id": m.system_id, "hostname": m.hostname, "batch": m.batch, "state": m.state.as_str(),
            "step": m.step().map(|s| s.step.as_str()), "message": m.message, "token_id": m.token_id,
            "machine_id": m.machine_id,
            "steps": m.steps.iter().map(|s| json!({
                "name": s.step.as_str(), "state": s.state.as_str(), "started_at": time(s.started_at),
                "finished_at": s.finished_at.map(time), "message": s.message,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

pub fn operation_text(op: &Operation) -> Text {
    let mut out = Text::new();
    let mut head = format!("operation {} ({}): {}", op.id, op.kind, op.state.as_str());
    if !op.message.is_empty() {
        head.push_str(&format!(" - {}", op.message));
    }
    out.line(head);
    out.line(format!(
        "max unavailable {}, max failures {}, distro {}",
        op.max_unavailable, op.max_failures, op.distro_series
    ));
    let mut table = Table::new(&["MACHINE", "BATCH", "STATE", "STEP", "MESSAGE"]).wide(&["MESSAGE"]);
    for m in &op.machines {
        let step = m.step().map(|s| format!("{} ({})", s.step.as_str(), s.state.as_str())).unwrap_or_default();
        table.row([m.hostname.clone(), m.batch.to_string(), m.state.as_str().to_string(), step, m.message.clone()]);
    }
    out.table(table);
    out
}

fn operations_table(ops: &[Operation]) -> Text {
    let mut table =
        Table::new(&["ID", "KIND", "STATE", "MACHINES", "CREATED", "MESSAGE"]).wide(&["MACHINES", "MESSAGE"]);
    for op in ops {
        table.row([
            op.id.clone(),
            op.kind.clone(),
            op.state.as_str().to_string(),
            op.machines.iter().map(|m| m.hostname.as_str()).collect::<Vec<_>>().join(","),
            op.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            op.message.clone(),
        ]);
    }
    let mut text = Text::new();
    text.table(table);
    text
}

/// `fleetctl redeploy`.
///
/// # Errors
/// Bad usage (64), the coordinator unreachable (69), or its refusal.
pub async fn redeploy(client: &FleetClient, out: &mut Output, args: RedeployArgs) -> Result<i32, CliError> {
    let rolling = args.tag.is_some() || args.pool.is_some() || args.all;
    if rolling && !args.names.is_empty() {
        return Err(CliError::Usage("name machines or use --tag/--pool/--all, not both".into()));
    }
    if !rolling && args.names.is_empty() {
        return Err(CliError::Usage("name at least one machine, or use --tag T, --pool P or --all".into()));
    }
    let user_data = match &args.user_data {
        Some(path) => std::fs::read(path)
            .map_err(|e| CliError::Usage(format!("cannot read --user-data {}: {e}", path.display())))?,
        None => Vec::new(),
    };
    let request = |dry_run: bool| pb::RedeployRequest {
        machines: args.names.clone(),
        tag: args.tag.clone().unwrap_or_default(),
        pool: args.pool.clone().unwrap_or_default(),
        all: args.all,
        distro_series: args.distro.clone().unwrap_or_default(),
        user_data_template: user_data.clone(),
        dry_run,
        max_unavailable: args.max_unavailable,
        max_failures: args.max_failures,
    };
    let mut ops = client.operations();
    if args.dry_run || (args.all && !args.yes) {
        let answer = client.call(ops.redeploy(request(true))).await?;
        if args.dry_run {
            if out.is_json() {
                out.json(&json!({"dry_run": true, "plan": plan_json(&answer.plan)}))?;
            } else {
                out.text(&plan_text(&answer.plan))?;
            }
            return Ok(exit::OK);
        }
        out.text(&plan_text(&answer.plan))?;
        if !confirm("redeploy every machine above (their disks are wiped)?")? {
            return Err(CliError::Usage("not confirmed; nothing was changed (pass --yes to skip the question)".into()));
        }
    }
    let answer = client.call(ops.redeploy(request(false))).await?;
    let op = wire(answer.operation.ok_or_else(|| CliError::Failed("the coordinator started no operation".into()))?)?;
    if !args.wait {
        if out.is_json() {
            out.json(&operation_json(&op))?;
        } else {
            let mut text = operation_text(&op);
            text.line(format!("follow it with: fleetctl operations watch {}", op.id));
            out.text(&text)?;
        }
        return Ok(exit::OK);
    }
    watch(client, out, &op.id).await
}

fn plan_json(plan: &[pb::PlannedMachine]) -> Value {
    plan.iter()
        .map(|p| {
            json!({"system_id": p.system_id, "hostname": p.hostname, "batch": p.batch,
            "refused": (!p.refused.is_empty()).then_some(&p.refused)})
        })
        .collect()
}

fn plan_text(plan: &[pb::PlannedMachine]) -> Text {
    let mut out = Text::of("plan:");
    for p in plan {
        if p.refused.is_empty() {
            out.line(format!("  batch {}: redeploy {} ({})", p.batch + 1, p.hostname, p.system_id));
        } else {
            out.line(format!("  skip {}: {}", p.hostname, p.refused));
        }
    }
    out
}

fn confirm(question: &str) -> Result<bool, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!("{question} needs confirmation and stdin is not a terminal; pass --yes")));
    }
    let _ = write!(std::io::stderr(), "{question} [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| CliError::Usage(format!("cannot read the answer: {e}")))?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// `fleetctl operations list`.
///
/// # Errors
/// The coordinator unreachable or refusing.
pub async fn list(client: &FleetClient, out: &mut Output, limit: u32) -> Result<i32, CliError> {
    let answer = client.call(client.operations().list_operations(pb::ListOperationsRequest { limit })).await?;
    let ops = answer.operations.into_iter().map(wire).collect::<Result<Vec<_>, _>>()?;
    if out.is_json() {
        out.json(&json!({"operations": ops.iter().map(operation_json).collect::<Vec<_>>()}))?;
    } else {
        out.text(&operations_table(&ops))?;
    }
    Ok(exit::OK)
}

/// `fleetctl operations show ID`.
///
/// # Errors
/// An unknown id (64), the coordinator unreachable or refusing.
pub async fn show(client: &FleetClient, out: &mut Output, id: &str) -> Result<i32, CliError> {
    let op = wire(client.call(client.operations().get_operation(pb::GetOperationRequest { id: id.into() })).await?)?;
    print_operation(out, &op)?;
    Ok(exit::OK)
}

/// `fleetctl operations cancel ID`.
///
/// # Errors
/// An unknown or ended operation, the coordinator unreachable or refusing.
pub async fn cancel(client: &FleetClient, out: &mut Output, id: &str) -> Result<i32, CliError> {
    let request = pb::CancelOperationRequest { id: id.into() };
    let op = wire(client.call(client.operations().cancel_operation(request)).await?)?;
    print_operation(out, &op)?;
    Ok(exit::OK)
}

fn print_operation(out: &mut Output, op: &Operation) -> Result<(), CliError> {
    if out.is_json() {
        out.json(&operation_json(op))?
    } else {
        out.text(&operation_text(op))?
    }
    Ok(())
}

/// `fleetctl operations watch ID` (and `redeploy --wait`): live progress until the operation ends; JSON output
/// prints one document per change. Exits 0 when it succeeded, 1 otherwise.
///
/// # Errors
/// The coordinator unreachable or refusing.
pub async fn watch(client: &FleetClient, out: &mut Output, id: &str) -> Result<i32, CliError> {
    let json_out = out.is_json();
    let mut stream = client
        .operations()
        .watch_operation(pb::GetOperationRequest { id: id.into() })
        .await
        .map_err(|s| CliError::from(client.error(s)))?
        .into_inner();
    let progress = (!json_out).then(indicatif::MultiProgress::new);
    let mut bars: Vec<indicatif::ProgressBar> = Vec::new();
    let style = indicatif::ProgressStyle::with_template("{prefix:>12} [{bar:24}] {msg}")
        .map_err(|e| CliError::Failed(e.to_string()))?
        .progress_chars("=> ");
    let steps = model::operations::Step::ALL.len() as u64;
    let mut last = None;
    while let Some(item) = stream.next().await {
        let op = wire(item.map_err(|s| CliError::from(client.error(s)))?)?;
        if json_out {
            out.json_line(&operation_json(&op))?;
        } else if let Some(progress) = &progress {
            while bars.len() < op.machines.len() {
                let m = &op.machines[bars.len()];
                let bar = progress.add(indicatif::ProgressBar::new(steps));
                bar.set_style(style.clone());
                bar.set_prefix(clip(&m.hostname, NAME_WIDTH).into_owned());
                bars.push(bar);
            }
            for (bar, m) in bars.iter().zip(&op.machines) {
                let done = m.steps.iter().filter(|s| s.state.is_final()).count() as u64;
                bar.set_position(if m.state == OpState::Succeeded { steps } else { done });
                let step = m.step().map(|s| s.step.as_str()).unwrap_or("queued");
                let message =
                    if m.state.is_final() { format!("{}: {}", m.state.as_str(), m.message) } else { step.to_string() };
                bar.set_message(output::escape(&message).into_owned());
                if m.state.is_final() && !bar.is_finished() {
                    bar.abandon();
                }
            }
        }
        let finished = op.state.is_final();
        last = Some(op);
        if finished {
            break;
        }
    }
    let op = last.ok_or_else(|| CliError::Failed(format!("the coordinator sent nothing about {id}")))?;
    if let Some(progress) = progress {
        let _ = progress.clear();
        out.text(&operation_text(&op))?;
    }
    if !op.state.is_final() {
        return Err(CliError::Unreachable(format!("the watch of {id} ended before the operation did; run it again")));
    }
    Ok(exit_code(&op))
}

/// `fleetctl power on|off|cycle NAME`.
///
/// # Errors
/// An unknown machine, MAAS's refusal, the coordinator unreachable.
pub async fn power(
    client: &FleetClient,
    out: &mut Output,
    action: pb::PowerAction,
    name: &str,
) -> Result<i32, CliError> {
    let request = pb::PowerRequest { machine: name.into(), action: action.into() };
    let answer = client.call(client.operations().power(request)).await?;
    if out.is_json() {
        out.json(
            &json!({"system_id": answer.system_id, "hostname": answer.hostname, "power_state": answer.power_state}),
        )?;
    } else {
        out.line(format!("{} ({}): power {}", answer.hostname, answer.system_id, answer.power_state))?;
    }
    Ok(exit::OK)
}

/// `fleetctl machines forget NAME [--release]`.
///
/// # Errors
/// An unknown machine, MAAS's refusal, the coordinator unreachable.
pub async fn forget(client: &FleetClient, out: &mut Output, name: &str, release: bool) -> Result<i32, CliError> {
    let answer = client.call(client.operations().forget(pb::ForgetRequest { machine: name.into(), release })).await?;
    if out.is_json() {
        out.json(&json!({"system_id": answer.system_id, "hostname": answer.hostname,
                "revoked_certificates": answer.revoked_certificates, "released": answer.released}))?;
    } else {
        out.line(format!(
            "{} ({}): {} certificate(s) revoked{}; its history is kept",
            answer.hostname,
            answer.system_id,
            answer.revoked_certificates,
            if answer.released { ", released in MAAS" } else { "" }
        ))?;
    }
    Ok(exit::OK)
}

/// Reads a `--user-data` file early, so a typo is a usage error before anything is sent.
///
/// # Errors
/// The file cannot be read.
pub fn check_user_data(path: &Path) -> Result<(), CliError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| CliError::Usage(format!("cannot read --user-data {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::operations::MachineOp;

    #[test]
    fn json_and_text_name_every_machine_and_exit_codes_follow_the_state() {
        let mut op = Operation::new("redeploy", 1, 0, "jammy".into(), None);
        op.machines.push(MachineOp::new("abc", "server1", 0));
        op.state = OpState::Failed;
        let doc = operation_json(&op);
        assert_eq!(doc["machines"][0]["hostname"], "server1");
        assert_eq!(doc["state"], "failed");
        assert!(operation_text(&op).render().contains("server1"));
        assert_eq!(exit_code(&op), exit::CHECK_FAILED);
        op.state = OpState::Succeeded;
        assert_eq!(exit_code(&op), exit::OK);
    }
}
