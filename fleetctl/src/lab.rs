//! fleetctl's lab commands: `plan`, `apply`, `export`, `destroy`, `report`.

use std::io::{BufRead, Write};
use std::path::Path;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use metalfleet_common::exit;
use proto::v1 as pb;
use serde_json::{Value, json};

use model::plan::{Action, Change, LabFile};

use crate::CliError;
use crate::client::FleetClient;
use crate::output::{self, Output, Text};

/// Reads, checks and prepares a plan file: ssh key `file`s are read here and sent inline.
///
/// # Errors
/// [`CliError::Usage`] (exit 64) naming file, line and key.
pub fn load(path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read the plan file {}: {e}; check the path", path.display())))?;
    let mut lab = LabFile::parse(path, &text).map_err(|e| CliError::Usage(e.to_string()))?;
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    lab.inline_ssh_keys(home.as_deref()).map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(lab.to_toml())
}

fn step_json(step: &Change) -> Value {
    json!({"action": step.action.as_str(), "kind": step.kind, "summary": step.summary})
}

/// The plan as text; unchanged steps only with `verbose`.
pub fn plan_text(steps: &[Change], verbose: bool) -> Text {
    let mut out = Text::new();
    for step in steps.iter().filter(|s| verbose || s.action != Action::Unchanged) {
        out.line(step);
    }
    let changes = steps.iter().filter(|s| s.action.is_change()).count();
    let unchanged = steps.iter().filter(|s| s.action == Action::Unchanged).count();
    if changes == 0 {
        out.line(format!("No changes. The lab matches the plan ({unchanged} unchanged)."));
    } else {
        out.line(format!("Plan: {changes} to change, {unchanged} unchanged."));
    }
    out
}

fn stale_text(stale: &pb::LabStale) -> Text {
    let age = if stale.age_seconds < 0.0 { "never read".to_string() } else { format!("{:.0}s ago", stale.age_seconds) };
    let mut out = Text::of(format!("MAAS unreachable: {}", stale.reason));
    out.line(format!(
        "Showing the last known MAAS state from {} ({age}, stale):",
        if stale.last_success_at.is_empty() { "never" } else { &stale.last_success_at }
    ));
    for m in &stale.machines {
        out.line(format!("  {m}"));
    }
    out
}

/// `fleetctl plan FILE [--prune] [-v]`.
///
/// # Errors
/// The file is bad or the coordinator unreachable.
pub async fn plan(
    client: &FleetClient,
    out: &mut Output,
    path: &Path,
    prune: bool,
    verbose: bool,
) -> Result<i32, CliError> {
    let text = load(path)?;
    let answer = client.lab_plan(text, prune).await?;
    if let Some(stale) = &answer.stale {
        if out.is_json() {
            out.json(&json!({"stale": {"reason": stale.reason, "age_seconds": stale.age_seconds,
                "last_success_at": stale.last_success_at, "machines": stale.machines}, "steps": []}))?;
        } else {
            out.text(&stale_text(stale))?;
        }
        return Ok(exit::UNAVAILABLE);
    }
    if out.is_json() {
        let changes = answer.steps.iter().filter(|s| s.action.is_change()).count();
        out.json(
            &json!({"steps": answer.steps.iter().map(step_json).collect::<Vec<_>>(), "changes": changes, "stale": null}),
        )?;
    } else {
        out.text(&plan_text(&answer.steps, verbose))?;
    }
    Ok(exit::OK)
}

fn confirm(question: &str) -> bool {
    let _ = write!(std::io::stderr(), "{question} Only 'yes' will be accepted: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).is_ok() && line.trim() == "yes"
}

/// `fleetctl apply FILE [--prune] [--yes]` and `fleetctl destroy FILE [--yes]`.
///
/// # Errors
/// The file is bad, the coordinator unreachable, or MAAS unreachable (apply refused).
pub async fn apply(
    client: &FleetClient,
    out: &mut Output,
    path: &Path,
    prune: bool,
    yes: bool,
    destroy: bool,
) -> Result<i32, CliError> {
    let text = load(path)?;
    let json_out = out.is_json();
    if !destroy {
        let answer = client.lab_plan(text.clone(), prune).await?;
        if let Some(stale) = &answer.stale {
            return Err(CliError::Unreachable(format!("apply refused: {}", stale_text(stale).render().trim_end())));
        }
        let changes = answer.steps.iter().filter(|s| s.action.is_change()).count();
        if !json_out {
            out.text(&plan_text(&answer.steps, false))?;
        }
        if changes > 0 && !yes && !confirm("Apply these changes?") {
            return Err(CliError::Usage("apply cancelled; nothing was changed".into()));
        }
    } else if !yes && !confirm("Destroy the lab this plan describes (release machines, remove ranges and forwards)?") {
        return Err(CliError::Usage("destroy cancelled; nothing was changed".into()));
    }
    let mut stream = Box::pin(client.lab_apply(text, prune, destroy).await?);
    let bar = if json_out || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        None
    } else {
        Some(ProgressBar::new(100))
    };
    if let Some(bar) = &bar {
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    }
    let mut outcome = Err(CliError::Failed("the coordinator ended the apply without a result; run it again".into()));
    while let Some(item) = stream.next().await {
        let p = item?;
        if json_out {
            out.json_line(&progress_json(&p))?;
        }
        match p.kind.as_str() {
            "started" if !json_out => {
                let summary = p.step.as_ref().map(|s| s.summary.clone()).unwrap_or_default();
                output::note(format!("[{}/{}] {summary}", p.index + 1, p.total));
            }
            "working" if !json_out => match &bar {
                Some(bar) => {
                    bar.set_length(p.goal.max(1));
                    bar.set_position(p.current);
                    bar.set_message(output::escape(&p.message).into_owned());
                }
                None => output::note(format!("      {}", p.message)),
            },
            "done" => {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
            }
            "failed" => {
                let what = p.step.as_ref().map(|s| s.summary.clone()).unwrap_or_default();
                let left: Vec<String> = p.steps.iter().map(|s| format!("  {}", s.summary)).collect();
                outcome = Err(CliError::Failed(format!(
                    "step failed: {what}\nwhy: {}\nleft to do ({}):\n{}\nfix the cause and run the same command again; done steps are skipped",
                    p.message,
                    left.len(),
                    left.join("\n")
                )));
            }
            "finished" => {
                if !json_out {
                    if p.changes == 0 {
                        out.line("No changes. The lab matches the plan.")?;
                    } else {
                        out.line(format!(
                            "{} complete: {} change(s).",
                            if destroy { "Destroy" } else { "Apply" },
                            p.changes
                        ))?;
                    }
                }
                outcome = Ok(exit::OK);
            }
            _ => {}
        }
    }
    outcome
}

fn progress_json(p: &pb::LabProgress) -> Value {
    let step = |s: &pb::LabStep| json!({"action": s.action, "kind": s.kind, "summary": s.summary});
    json!({
        "kind": p.kind, "index": p.index, "total": p.total, "step": p.step.as_ref().map(step),
        "current": p.current, "goal": p.goal, "message": p.message,
        "steps": p.steps.iter().map(step).collect::<Vec<_>>(), "changes": p.changes,
    })
}

/// `fleetctl export`: the plan file of the live lab on stdout, as TOML (the table and Markdown output) or as the
/// same plan in JSON.
///
/// # Errors
/// The coordinator or MAAS unreachable.
pub async fn export(client: &FleetClient, out: &mut Output) -> Result<i32, CliError> {
    let lab_toml = client.lab_export().await?;
    if out.is_json() {
        out.json(&toml_to_json(&lab_toml)?)?;
    } else {
        out.document(&lab_toml)?;
    }
    Ok(exit::OK)
}

/// The plan file as JSON: tables become objects, arrays of tables arrays of objects, values keep their type.
fn toml_to_json(lab_toml: &str) -> Result<Value, CliError> {
    let table: toml::Table = toml::from_str(lab_toml).map_err(|e| {
        CliError::Failed(format!("the coordinator exported a plan that is not TOML ({e}); report this as a bug"))
    })?;
    serde_json::to_value(table).map_err(|e| CliError::Failed(format!("cannot turn the exported plan into JSON: {e}")))
}

/// `fleetctl report [--output markdown|json]`.
///
/// # Errors
/// The coordinator or MAAS unreachable.
pub async fn report(client: &FleetClient, out: &mut Output) -> Result<i32, CliError> {
    let (json_text, markdown) = client.lab_report().await?;
    if out.is_json() {
        let value: Value = serde_json::from_str(&json_text)
            .map_err(|e| CliError::Failed(format!("the coordinator sent a report that is not JSON: {e}")))?;
        out.json(&value)?;
    } else {
        out.document(&markdown)?;
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exported_plan_reads_the_same_in_json() {
        let lab = "[maas]\nupstream_dns = [\"172.20.129.131\"]\n\n[[machines]]\nhostname = \"server1\"\nmacs = []\n";
        let value = toml_to_json(lab).unwrap();
        assert_eq!(value["maas"]["upstream_dns"][0], "172.20.129.131");
        assert_eq!(value["machines"][0]["hostname"], "server1");
        assert!(toml_to_json("not = [toml").is_err());
    }
}
