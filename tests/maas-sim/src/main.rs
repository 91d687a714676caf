//! `maas-sim`: runs the MAAS 3.5 API emulator until SIGTERM/SIGINT (flags only, see `--help`).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use metalfleet_common::exit;

/// An emulator of the MAAS 3.5 region API subset metalfleet uses.
#[derive(Debug, Parser)]
#[command(name = "maas-sim", version)]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed as `listening addr=HOST:PORT`).
    #[arg(long, default_value = "127.0.0.1:5240")]
    listen: SocketAddr,
    /// TOML file of `[[machine]]` tables; without it, the reference lab's server1..server4.
    #[arg(long)]
    machines: Option<PathBuf>,
    /// Admin API key `consumer:token:secret`; without it one is generated and printed as `api_key=...`.
    #[arg(long, env = "MAAS_SIM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// 1.0 gives MAAS-like durations; 0.01 runs 100 times faster.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Where the generated key (`api-key`, mode 0600) and deploy user data are written.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Command run (through `sh -c`) when a machine is deployed, released or powered off.
    #[arg(long)]
    hook: Option<PathBuf>,
    /// Start with every machine already commissioned (READY) instead of waiting for `POST machines/`.
    #[arg(long)]
    enlisted: bool,
}

fn config(args: Args) -> anyhow::Result<maas_sim::Config> {
    let machines = match &args.machines {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
            let file: maas_sim::MachinesFile =
                toml::from_str(&text).with_context(|| format!("parse {} ([[machine]] tables)", path.display()))?;
            file.machine
        }
        None => Vec::new(),
    };
    if !(args.time_scale.is_finite() && args.time_scale >= 0.0) {
        anyhow::bail!("--time-scale must be a finite number >= 0, got {}", args.time_scale);
    }
    Ok(maas_sim::Config {
        listen: args.listen,
        machines,
        api_key: args.api_key,
        time_scale: args.time_scale,
        state_dir: args.state_dir,
        hook: args.hook,
        enlisted: args.enlisted,
    })
}

fn main() {
    let args = Args::parse();
    let cfg = match config(args) {
        Ok(c) => c,
        Err(error) => {
            eprintln!("maas-sim: {error:#}");
            std::process::exit(exit::USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(error) => {
            eprintln!("maas-sim: cannot start the runtime: {error}");
            std::process::exit(1);
        }
    };
    std::process::exit(runtime.block_on(run(cfg)));
}

async fn run(cfg: maas_sim::Config) -> i32 {
    let _telemetry = metalfleet_common::telemetry::init("maas-sim", "info");
    let generated = cfg.api_key.is_none();
    let listen = cfg.listen;
    let sim = match maas_sim::start(cfg).await {
        Ok(s) => s,
        Err(error) => {
            eprintln!("maas-sim: cannot start on {listen}: {error:#}");
            return exit::UNAVAILABLE;
        }
    };
    if generated {
        // Printed on purpose: a generated key is how the caller learns the admin credentials.
        println!("api_key={}", sim.api_key());
    }
    metalfleet_common::readiness::announce(sim.addr());
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(metalfleet_common::shutdown::cancel_on_signals(stop.clone()));
    stop.cancelled().await;
    tracing::info!("stopping");
    sim.shutdown().await;
    exit::OK
}
