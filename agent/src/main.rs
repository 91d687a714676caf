//! The `agent` binary: parses the command line and hands over to the `agent` library.

mod telemetry;

use std::io::Write;
use std::process::ExitCode;

use agent::cli::{Cli, Command, InventoryArgs, OutputFormat, RunArgs, SampleArgs};
use agent::client::Exit;
use agent::config::{self, Config};
use anyhow::Context;
use clap::Parser;
use metalfleet_common::config::ProcessEnv;
use metalfleet_common::exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Inventory(args) => inventory(args),
        Command::Sample(args) => sample(args),
        Command::Run(args) => run(args),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn print(text: &str) -> i32 {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => exit::OK,
        Err(error) => {
            eprintln!("error: cannot write to stdout: {error}");
            1
        }
    }
}

fn inventory(args: InventoryArgs) -> i32 {
    let _telemetry = telemetry::init("warn");
    let hide = match config::hide_disks_for_inventory(args.config.as_deref(), &ProcessEnv) {
        Ok(hide) => hide,
        Err(error) => {
            eprintln!("error: {error}");
            return exit::USAGE;
        }
    };
    let inventory = agent::inventory::collect(&agent::inventory::Root::host(), &hide);
    match args.output {
        OutputFormat::Json => match serde_json::to_string_pretty(&inventory) {
            Ok(json) => print(&(json + "\n")),
            Err(error) => {
                eprintln!("error: cannot encode the inventory: {error}");
                1
            }
        },
        OutputFormat::Table => print(&agent::output::inventory_table(&inventory)),
    }
}

fn sample(args: SampleArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return 1;
        }
    };
    runtime.block_on(async {
        let _telemetry = telemetry::init("warn");
        let result: anyhow::Result<agent::health::HealthSample> = async {
            let mut sampler = agent::health::Sampler::new()?;
            // CPU use and network rates are differences between two readings: give them a span to measure.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            Ok(tokio::task::spawn_blocking(move || sampler.sample()).await?)
        }
        .await;
        match result {
            Ok(sample) => match args.output {
                OutputFormat::Json => print(&(serde_json::to_string_pretty(&sample).unwrap_or_default() + "\n")),
                OutputFormat::Table => print(&agent::output::sample_table(&sample)),
            },
            Err(error) => {
                eprintln!("error: {error:#}");
                1
            }
        }
    })
}

fn run(args: RunArgs) -> i32 {
    // Config errors are reported before the runtime starts or anything connects (exit 64).
    let config = match Config::load(&args, &ProcessEnv) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return exit::USAGE;
        }
    };
    // tonic's TLS uses rustls; make ring the process-wide provider (never aws-lc-rs).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match serve(config) {
        Ok(Exit::Stopped) => exit::OK,
        Ok(Exit::Reexec) => {
            let error = agent::footprint::reexec();
            eprintln!("error: re-executing the agent failed: {error}; exiting so the supervisor restarts it");
            1
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            1
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn serve(config: Config) -> anyhow::Result<Exit> {
    let _telemetry = telemetry::init("info");
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(metalfleet_common::shutdown::cancel_on_signals(stop.clone()));
    agent::client::run(config, stop).await.context("the agent could not start")
}
