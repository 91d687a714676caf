//! `coordinator`: the binary. Parses flags, loads the config, binds, and runs [`coordinator::serve`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use coordinator::config::{Config, MaasOverrides, Overrides};
use metalfleet_common::config::ProcessEnv;
use metalfleet_common::exit;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "coordinator", version, about = "The metalfleet coordinator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve agents and operators over gRPC.
    Serve(ServeArgs),
    /// Operator credentials.
    Operators {
        #[command(subcommand)]
        command: OperatorsCommand,
    },
    /// The private CA: rotate it without re-enrolling agents.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
        /// The coordinator's state directory [env: METALFLEET_STATE_DIR].
        #[arg(long, value_name = "DIR", global = true)]
        state_dir: Option<PathBuf>,
    },
    /// mTLS to router shims: certificates for a shim and for this coordinator, from its CA.
    RouterCert {
        #[command(subcommand)]
        command: RouterCertCommand,
    },
    /// Copy every file the coordinator keeps into DIR while the server runs: the store online (consistent), the
    /// rest (CA, keys, certificates, operators, router client, lab plan files) with their modes.
    Backup {
        dir: PathBuf,
        /// The coordinator's state directory [env: METALFLEET_STATE_DIR].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Restore a backup into a fresh (empty or absent) state directory.
    Restore {
        dir: PathBuf,
        /// The state directory to create [env: METALFLEET_STATE_DIR].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Make a new CA: it signs agent certificates from the next start, both CAs are trusted.
    Rotate,
    /// Finish a rotation: drop the old CA and issue the server certificate from the new one.
    RetireOld,
}

#[derive(Debug, Subcommand)]
enum RouterCertCommand {
    /// Issue the shim's server certificate and key into DIR and the coordinator's client certificate
    /// (into STATE_DIR/router-client, used for every https:// shim); prints the router-shim.toml lines.
    Issue {
        /// Where to write router-shim.pem, router-shim.key (0600) and ca.pem for the shim.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A name or address the coordinator reaches the shim by (as in `[router] shim`); repeat for more.
        #[arg(long = "san", value_name = "NAME|IP", required = true)]
        sans: Vec<String>,
        /// The coordinator's state directory [env: METALFLEET_STATE_DIR].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum OperatorsCommand {
    /// Create (or replace) an operator: a client certificate, or with --bearer a token for scripts.
    Add {
        name: String,
        /// admin or read-only.
        #[arg(long, default_value = "read-only")]
        role: String,
        /// Also make a bearer token (printed once; stored hashed).
        #[arg(long)]
        bearer: bool,
        /// The coordinator's state directory [env: METALFLEET_STATE_DIR].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Where to write NAME.pem, NAME.key and client.toml (default STATE_DIR/operators/NAME).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML config file (see deploy/coordinator.example.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:7443 (port 0 picks a free port).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<SocketAddr>,
    /// Directory for the store, certificates and client.toml.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Serve plaintext gRPC (tests and demos only).
    #[arg(long)]
    insecure: bool,
    /// Start with an empty store even though the state directory holds a CA (the store was lost and
    /// there is no backup to restore); without it such a start is refused.
    #[arg(long)]
    new_store: bool,
    /// MAAS URL, e.g. http://172.16.0.3:5240/MAAS [env: METALFLEET_MAAS_URL]; starts the MAAS poller.
    #[arg(long, value_name = "URL")]
    maas_url: Option<url::Url>,
    /// File (mode 0600) holding the MAAS API key [env: METALFLEET_MAAS_API_KEY_FILE].
    #[arg(long, value_name = "PATH")]
    maas_api_key_file: Option<PathBuf>,
}

/// The state directory of an admin command: the flag, then METALFLEET_STATE_DIR, then the default. An empty
/// `METALFLEET_*` variable is a usage error (exit 64), as it is for `serve`.
fn admin_state_dir(flag: Option<PathBuf>) -> PathBuf {
    if let Err(error) = metalfleet_common::config::reject_empty(&ProcessEnv) {
        eprintln!("error: {error}");
        std::process::exit(exit::USAGE);
    }
    flag.or_else(|| std::env::var_os("METALFLEET_STATE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(coordinator::config::DEFAULT_STATE_DIR))
}

fn main() {
    // One crypto provider for the whole process (rustls, tonic, reqwest, rcgen); installed once, before any TLS.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = error.print();
            std::process::exit(code);
        }
    };
    let args = match cli.command {
        Command::Serve(args) => args,
        Command::Operators { command: OperatorsCommand::Add { name, role, bearer, state_dir, out } } => {
            let state_dir = admin_state_dir(state_dir);
            std::process::exit(coordinator::admin::operators_add(&state_dir, &name, &role, bearer, out));
        }
        Command::RouterCert { command: RouterCertCommand::Issue { out, sans, state_dir } } => {
            let state_dir = admin_state_dir(state_dir);
            std::process::exit(coordinator::admin::router_cert_issue(&state_dir, &out, &sans));
        }
        Command::Ca { command, state_dir } => {
            let state_dir = admin_state_dir(state_dir);
            let result = match command {
                CaCommand::Rotate => coordinator::rotation::rotate(&state_dir).map(|()| {
                    "new CA made (ca-next.pem); restart the coordinator, let agents renew (`fleetctl agents list`), \
                     then run `coordinator ca retire-old` and restart again"
                }),
                CaCommand::RetireOld => coordinator::rotation::retire_old(&state_dir)
                    .map(|()| "old CA retired; restart the coordinator to serve a certificate from the new CA"),
            };
            std::process::exit(coordinator::admin::report(result));
        }
        Command::Backup { dir, state_dir } => {
            std::process::exit(coordinator::admin::backup(&admin_state_dir(state_dir), &dir));
        }
        Command::Restore { dir, state_dir } => {
            std::process::exit(coordinator::admin::restore(&dir, &admin_state_dir(state_dir)));
        }
    };
    let overrides = Overrides { listen: args.listen, state_dir: args.state_dir, insecure: args.insecure };
    // Config errors are usage errors, reported before any port is bound.
    let maas = MaasOverrides { url: args.maas_url, api_key_file: args.maas_api_key_file };
    let config = match Config::from_sources_with_maas(args.config.as_deref(), &ProcessEnv, &overrides, &maas) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(exit::USAGE);
        }
    };
    // Secret files readable by group or others are refused before anything starts.
    if let Some(maas) = &config.maas
        && let Err(error @ coordinator::secret::SecretFileError::TooOpen { .. }) =
            coordinator::secret::check_private(&maas.api_key_file)
    {
        eprintln!("error: {error}");
        std::process::exit(exit::USAGE);
    }
    if let Err(error) = coordinator::server::guard_store(&config.state_dir, args.new_store) {
        eprintln!("error: {error}");
        std::process::exit(exit::USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            std::process::exit(exit::UNAVAILABLE);
        }
    };
    let code = runtime.block_on(run(config));
    std::process::exit(code);
}

async fn run(config: Config) -> i32 {
    let _telemetry = metalfleet_common::telemetry::init("coordinator", "info");
    tracing::info!(
        listen = %config.listen,
        state_dir = %config.state_dir.display(),
        insecure = config.insecure,
        heartbeat_interval = ?config.heartbeat_interval,
        history_samples = config.history_samples,
        maas_url = config.maas.as_ref().map(|m| m.url.to_string()),
        maas_poll_interval = ?config.maas.as_ref().map(|m| m.poll_interval),
        "config loaded"
    );
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, listen = %config.listen, "cannot listen; pick another address with --listen");
            return exit::UNAVAILABLE;
        }
    };
    let stop = CancellationToken::new();
    tokio::spawn(metalfleet_common::shutdown::cancel_on_signals(stop.clone()));
    match coordinator::serve(listener, config, stop).await {
        Ok(()) => exit::OK,
        Err(error) => {
            tracing::error!(%error, "coordinator failed");
            1
        }
    }
}
