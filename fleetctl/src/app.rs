//! The command line: fleetctl's flags and subcommands (clap), and what each command does.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use metalfleet_common::config::ProcessEnv;
use metalfleet_common::exit;

use crate::client::{self, FleetClient};
use crate::output::{self, Format, Output, Text};
use crate::{CliError, GlobalArgs, lab, maas, operations, security, settings, verify};

/// fleetctl's flags and command, as parsed from the command line.
#[derive(Debug, Parser)]
#[command(name = "fleetctl", version, about = "Look after a metalfleet fleet")]
pub struct Cli {
    /// Client config (client.toml). Default: $METALFLEET_CLIENT_CONFIG, ~/.config/metalfleet/client.toml,
    /// then /var/lib/metalfleet/client.toml.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Coordinator address, e.g. https://127.0.0.1:7443 [env: METALFLEET_COORDINATOR].
    #[arg(long, global = true, value_name = "URL")]
    coordinator: Option<String>,
    /// CA certificate that signed the coordinator's certificate.
    #[arg(long, global = true, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// Talk plaintext gRPC (to a coordinator started with --insecure).
    #[arg(long, global = true)]
    insecure: bool,
    /// File (mode 0600) holding an operator bearer token [env: METALFLEET_TOKEN_FILE].
    #[arg(long, global = true, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = OutputArg::Table)]
    output: OutputArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputArg {
    Table,
    Json,
    /// Only `report`: the lab report as Markdown (other commands print their table).
    Markdown,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check each machine's hardware: expected (profile) vs commissioned (baseline) vs live (agent).
    /// Exit 0 all pass, 1 any fail or drift, 2 only unknowns.
    Verify {
        /// Hostnames, machine ids or system_ids; every machine when none is given.
        names: Vec<String>,
        /// Record a new baseline for this machine on purpose (after a disk was replaced, say).
        #[arg(long, value_name = "NAME", conflicts_with = "names")]
        accept: Option<String>,
        /// Where the accepted baseline comes from: live (the agent; the default when it reported) or
        /// commissioned (MAAS's current data).
        #[arg(long = "from", value_name = "SOURCE", requires = "accept", value_parser = ["live", "commissioned"])]
        from: Option<String>,
    },
    /// Compare a lab plan (lab.toml) with live MAAS and the router; changes nothing.
    Plan {
        file: PathBuf,
        /// Also list what the plan does not mention and apply --prune would remove.
        #[arg(long)]
        prune: bool,
        /// Show unchanged steps too.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Apply a lab plan in the safe order, with progress; safe to run again.
    Apply {
        file: PathBuf,
        /// Remove ranges, SSH keys and forwards the plan does not mention.
        #[arg(long)]
        prune: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Print the plan file (lab.toml) that describes the live lab.
    Export,
    /// Tear the lab of a plan down in the reverse safe order.
    Destroy {
        file: PathBuf,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// The lab report from live data (--output markdown, the default, or json).
    Report,
    /// Every machine's health at a glance.
    Status {
        /// Exit 1 when any machine is not healthy.
        #[arg(long)]
        check: bool,
    },
    /// Enrolled machines.
    Machines {
        #[command(subcommand)]
        command: MachinesCommand,
    },
    /// Enrollment tokens for agents.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Agent certificates.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// Redeploy machines through MAAS: named ones, or a rolling redeploy of --tag, --pool or --all.
    Redeploy(RedeployCli),
    /// Redeploy operations: list, show, watch live, cancel.
    Operations {
        #[command(subcommand)]
        command: OperationsCommand,
    },
    /// Power a machine on, off, or off then on, through MAAS.
    Power {
        #[arg(value_enum)]
        action: PowerCli,
        /// Hostname or MAAS system_id.
        name: String,
    },
    /// State-changing operator calls: who, what, when, result.
    Audit {
        /// Only the newest N entries.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Fleet events (enrollments, health changes).
    Events {
        /// Keep printing new events as they happen.
        #[arg(long)]
        follow: bool,
        /// Only the newest N stored events.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Mint an enrollment token; prints it once.
    Create {
        /// How long it is valid, e.g. 1h, 30m.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
        /// Only this machine (hostname or MAAS system_id) may use it.
        #[arg(long, value_name = "NAME")]
        machine: Option<String>,
        /// How many enrollments it allows.
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
    /// Tokens with their uses left and expiry (never the secrets).
    List,
    /// Make a token unusable.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum AgentsCommand {
    /// Client certificates issued to agents.
    List,
    /// Revoke every certificate of a machine; its next call is refused.
    Revoke {
        /// Hostname, machine id or MAAS system_id.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum MachinesCommand {
    /// List enrolled machines.
    List,
    /// One machine: inventory, latest sample and recent history.
    Show {
        /// Hostname, machine id or MAAS system_id.
        name: String,
        /// How many stored samples to show, newest last.
        #[arg(long, default_value_t = 30)]
        history: u32,
    },
    /// Forget a machine's MAAS match and match it again (after a NIC was replaced).
    Rematch {
        /// Hostname, machine id or MAAS system_id.
        name: String,
    },
    /// Revoke a machine's certificates (its history is kept); with --release, release it in MAAS too.
    Forget {
        /// Hostname or MAAS system_id.
        name: String,
        #[arg(long)]
        release: bool,
    },
}

#[derive(Debug, clap::Args)]
struct RedeployCli {
    /// Hostnames or MAAS system_ids.
    names: Vec<String>,
    /// Rolling redeploy of every machine with this MAAS tag.
    #[arg(long)]
    tag: Option<String>,
    /// Rolling redeploy of every machine in this MAAS resource pool.
    #[arg(long)]
    pool: Option<String>,
    /// Rolling redeploy of every MAAS machine (asks first unless --yes).
    #[arg(long)]
    all: bool,
    /// The Ubuntu series, e.g. jammy or focal.
    #[arg(long)]
    distro: Option<String>,
    /// A cloud-init template used instead of the built-in one (same {{PLACEHOLDERS}}).
    #[arg(long, value_name = "FILE")]
    user_data: Option<PathBuf>,
    /// Show the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Follow the operation until it ends; exit 1 when a machine failed.
    #[arg(long)]
    wait: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
    /// How many machines may be down at once.
    #[arg(long, default_value_t = 1)]
    max_unavailable: u32,
    /// Stop the rollout once more than this many machines failed.
    #[arg(long, default_value_t = 0)]
    max_failures: u32,
}

#[derive(Debug, Subcommand)]
enum OperationsCommand {
    /// Operations, newest first.
    List {
        #[arg(long, value_name = "N", default_value_t = 0)]
        limit: u32,
    },
    /// One operation with every machine's steps.
    Show { id: String },
    /// Live progress until the operation ends.
    Watch { id: String },
    /// Stop an operation before its next step.
    Cancel { id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PowerCli {
    On,
    Off,
    Cycle,
}

/// What a command ended in as the process's exit code: a failure is printed to stderr first; a closed stdout
/// (`fleetctl status | head`) is a quiet exit 0.
pub fn exit_code(result: Result<i32, CliError>) -> i32 {
    match result {
        Ok(code) => code,
        // The reader of stdout went away (`| head`): nothing more to say, and nobody to say it to.
        Err(CliError::OutputClosed) => exit::OK,
        Err(error) => {
            output::note(format!("error: {error}"));
            error.exit_code()
        }
    }
}

/// Runs one command against the coordinator the settings name; `Ok` holds the exit code of a command that ran
/// (a check that failed is `Ok(1)`).
///
/// # Errors
/// [`CliError`] when the settings are unusable, the coordinator cannot be reached, or it refused the call.
pub async fn run(cli: Cli) -> Result<i32, CliError> {
    let global = GlobalArgs {
        config: cli.config,
        coordinator: cli.coordinator,
        ca_file: cli.ca_file,
        insecure: cli.insecure,
        token_file: cli.token_file,
    };
    let target = settings::resolve_target(&global, &ProcessEnv)?;
    let settings = settings::client_settings(&target)?;
    tracing::debug!(url = %target.url, config = ?target.from_file, "connecting");
    let client = client::connect(&settings).await?;
    let format = match cli.output {
        OutputArg::Table => Format::Table,
        OutputArg::Json => Format::Json,
        OutputArg::Markdown => Format::Markdown,
    };
    let out = &mut Output::stdout(format);
    match cli.command {
        Command::Plan { file, prune, verbose } => lab::plan(&client, out, &file, prune, verbose).await,
        Command::Apply { file, prune, yes } => lab::apply(&client, out, &file, prune, yes, false).await,
        Command::Export => lab::export(&client, out).await,
        Command::Destroy { file, yes } => lab::apply(&client, out, &file, false, yes, true).await,
        Command::Report => lab::report(&client, out).await,
        Command::Status { check } => status(&client, out, check).await,
        Command::Verify { names, accept: None, .. } => {
            let reports = client.verify(names).await?;
            print(out, verify::document(&reports), || verify::table(&reports))?;
            Ok(verify::exit_code(&reports))
        }
        Command::Verify { accept: Some(name), from, .. } => {
            let (report, source) = client.accept(&name, from.as_deref()).await?;
            print(out, verify::accepted_json(&report, &source), || verify::accepted_text(&report, &source))?;
            Ok(exit::OK)
        }
        Command::Machines { command: MachinesCommand::Rematch { name } } => {
            let rematched = client.rematch(&name).await?;
            print(out, verify::rematched_json(&rematched), || verify::rematched_text(&rematched))?;
            Ok(exit::OK)
        }
        Command::Machines { command: MachinesCommand::Forget { name, release } } => {
            operations::forget(&client, out, &name, release).await
        }
        Command::Redeploy(args) => {
            let args = operations::RedeployArgs {
                names: args.names,
                tag: args.tag,
                pool: args.pool,
                all: args.all,
                distro: args.distro,
                user_data: args.user_data,
                dry_run: args.dry_run,
                wait: args.wait,
                yes: args.yes,
                max_unavailable: args.max_unavailable,
                max_failures: args.max_failures,
            };
            operations::redeploy(&client, out, args).await
        }
        Command::Operations { command } => match command {
            OperationsCommand::List { limit } => operations::list(&client, out, limit).await,
            OperationsCommand::Show { id } => operations::show(&client, out, &id).await,
            OperationsCommand::Watch { id } => operations::watch(&client, out, &id).await,
            OperationsCommand::Cancel { id } => operations::cancel(&client, out, &id).await,
        },
        Command::Power { action, name } => {
            let action = match action {
                PowerCli::On => proto::v1::PowerAction::On,
                PowerCli::Off => proto::v1::PowerAction::Off,
                PowerCli::Cycle => proto::v1::PowerAction::Cycle,
            };
            operations::power(&client, out, action, &name).await
        }
        Command::Machines { command: MachinesCommand::List } => machines_list(&client, out).await,
        Command::Machines { command: MachinesCommand::Show { name, history } } => {
            machines_show(&client, out, &name, history).await
        }
        Command::Events { follow, limit } => events(&client, out, follow, limit.unwrap_or(0)).await,
        Command::Tokens { command } => match command {
            TokensCommand::Create { ttl, machine, uses } => {
                security::tokens_create(&client, out, ttl, machine.as_deref(), uses).await
            }
            TokensCommand::List => security::tokens_list(&client, out).await,
            TokensCommand::Revoke { id } => security::tokens_revoke(&client, out, &id).await,
        },
        Command::Agents { command } => match command {
            AgentsCommand::List => security::agents_list(&client, out).await,
            AgentsCommand::Revoke { name } => security::agents_revoke(&client, out, &name).await,
        },
        Command::Audit { limit } => security::audit(&client, out, limit.unwrap_or(0)).await,
    }
}

/// JSON when asked for, else the text (built only then).
fn print(out: &mut Output, json: serde_json::Value, text: impl FnOnce() -> Text) -> Result<(), CliError> {
    if out.is_json() {
        out.json(&json)?
    } else {
        out.text(&text())?
    }
    Ok(())
}

async fn status(client: &FleetClient, out: &mut Output, check: bool) -> Result<i32, CliError> {
    let (machines, degraded) = client.fleet_status().await?;
    // The lost-node verdicts; an older coordinator without VerifyService gives none.
    let verdicts = client.node_verdicts().await?;
    let mut document = verify::status_document(&machines, &verdicts);
    document["coordinator"] = crate::view::coordinator_json(degraded.as_ref());
    print(out, document, || {
        let mut text = Text::new();
        if let Some(banner) = crate::view::degraded_banner(degraded.as_ref()) {
            for line in banner.lines() {
                text.line(line);
            }
        }
        text.append(verify::status_table(&machines, &verdicts, chrono::Utc::now()));
        text
    })?;
    Ok(if check { crate::view::status_exit_code(&machines) } else { exit::OK })
}

async fn machines_list(client: &FleetClient, out: &mut Output) -> Result<i32, CliError> {
    let machines = client.list_machines().await?;
    if let Some((maas, sync)) = client.list_maas_machines().await? {
        print(out, maas::list_document(&maas, &sync, &machines), || maas::list_table(&maas, &sync, &machines))?;
        return Ok(exit::OK);
    }
    let list: Vec<_> = machines.iter().map(crate::view::machine_json).collect();
    print(out, serde_json::json!({ "machines": list }), || crate::view::machines_table(&machines, chrono::Utc::now()))?;
    Ok(exit::OK)
}

/// The agent's view, plus the MAAS part when the coordinator polls MAAS; a machine only MAAS knows shows
/// its MAAS part alone.
async fn machines_show(client: &FleetClient, out: &mut Output, name: &str, history: u32) -> Result<i32, CliError> {
    let (view, not_found) = match client.machine(name, history).await {
        Ok(view) => (Some(view), None),
        Err(client::ClientError::Status(status)) if status.code() == tonic::Code::NotFound => {
            (None, Some(client::ClientError::Status(status)))
        }
        Err(error) => return Err(error.into()),
    };
    let maas = client.list_maas_machines().await?;
    let found = maas.as_ref().and_then(|(machines, sync)| {
        maas::find(machines, name, view.as_ref()).map(|machine| (machine.clone(), sync.clone()))
    });
    let now = chrono::Utc::now();
    match (view, found) {
        (None, None) => {
            Err(not_found.map(CliError::from).unwrap_or_else(|| CliError::Usage(format!("no machine {name}"))))
        }
        (Some(view), found) if out.is_json() => {
            let mut value = crate::view::machine_detail_json(&view);
            if let Some((machine, sync)) = found {
                value["maas"] = maas::machine_json(&machine);
                value["maas_sync"] = maas::sync_json(&sync);
            }
            out.json(&value)?;
            Ok(exit::OK)
        }
        (Some(view), found) => {
            let mut text = crate::view::machine_detail_text(&view, now);
            if let Some((machine, sync)) = found {
                text.line("");
                text.append(maas::detail_text(&machine, &sync, now));
            }
            out.text(&text)?;
            Ok(exit::OK)
        }
        (None, Some((machine, sync))) if out.is_json() => {
            let value = serde_json::json!({
                "hostname": machine.hostname,
                "system_id": machine.system_id,
                "agent": null,
                "maas": maas::machine_json(&machine),
                "maas_sync": maas::sync_json(&sync),
            });
            out.json(&value)?;
            Ok(exit::OK)
        }
        (None, Some((machine, sync))) => {
            let mut text = Text::of("agent:         not enrolled");
            text.line("").append(maas::detail_text(&machine, &sync, now));
            out.text(&text)?;
            Ok(exit::OK)
        }
    }
}

async fn events(client: &FleetClient, out: &mut Output, follow: bool, limit: u32) -> Result<i32, CliError> {
    let mut stream = Box::pin(client.events(0, follow, limit).await?);
    while let Some(event) = stream.next().await {
        let event = event?;
        if out.is_json() {
            out.json_line(&crate::view::event_json(&event))?;
        } else {
            out.line(crate::view::event_line(&event))?;
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_closed_stdout_is_a_quiet_success_and_a_failure_its_own_code() {
        assert_eq!(exit_code(Ok(exit::CHECK_FAILED)), exit::CHECK_FAILED);
        assert_eq!(exit_code(Err(CliError::OutputClosed)), exit::OK);
        assert_eq!(exit_code(Err(CliError::Usage("no coordinator address".into()))), exit::USAGE);
        assert_eq!(exit_code(Err(CliError::Unreachable("down".into()))), exit::UNAVAILABLE);
    }
}
