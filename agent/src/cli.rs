//! The command line: `agent inventory`, `agent sample` and `agent run`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "agent",
    version,
    about = "The metalfleet agent: a server's inventory and health, streamed to the coordinator"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print this host's inventory (CPU, memory, disks, NICs, DMI, OS) and exit.
    Inventory(InventoryArgs),
    /// Take one health sample, print it and exit.
    Sample(SampleArgs),
    /// Enroll with the coordinator and stream health until stopped (SIGTERM/SIGINT).
    Run(RunArgs),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct InventoryArgs {
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Optional config file; only `hide_disks` matters here.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Default, Clone, Args)]
pub struct RunArgs {
    /// TOML config file; environment variables and flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The coordinator's address, HOST:PORT (or https://HOST:PORT).
    #[arg(long)]
    pub coordinator: Option<String>,
    /// PEM file of the CA that signed the coordinator's certificate.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Talk plaintext HTTP/2 to the coordinator (tests and demos only).
    #[arg(long)]
    pub insecure: bool,
    /// File (mode 0600) holding a one-time enrollment token, used until the agent has its certificate
    /// [env: METALFLEET_TOKEN_FILE].
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Where the agent keeps its id and its sample buffer [default: /var/lib/metalfleet-agent].
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The hostname to enroll with [default: the OS hostname].
    #[arg(long)]
    pub hostname: Option<String>,
    /// Time between health samples, e.g. 10s or 500ms [default: 10s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// Sample and buffer without a coordinator (for footprint measurements).
    #[arg(long)]
    pub dry_run: bool,
}
