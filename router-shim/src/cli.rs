//! The `router-shim` command line: `serve`, and local subcommands that act on the backend directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use clap::{Parser, Subcommand, ValueEnum};
use metalfleet_common::{config::ProcessEnv, exit};
use router_shim_api::dhcp_off;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::backend::{BackendError, Confirmer};
use crate::client::{Client, ClientError};
use crate::config::{self, Config};
use crate::model::{self, PortForward, RemoteManagement, RouterState};
use crate::probe::{self, ProbeReport, ProbeRequest};
use crate::shim::{Change, ChangeOutcome, Shim, ShimError, ShimSettings};

#[derive(Debug, Parser)]
#[command(
    name = "router-shim",
    version,
    about = "Switch a router's DHCP, port-forwards and remote management; probe for DHCP servers"
)]
pub struct Cli {
    /// The config file (default /etc/metalfleet/router-shim.toml, or METALFLEET_ROUTER_SHIM_CONFIG).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Toggle {
    Enable,
    Disable,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the RouterShim gRPC API (plus health and reflection).
    Serve {
        /// Plaintext gRPC (tests, loopback); otherwise TLS from [serve] tls_cert/tls_key.
        #[arg(long)]
        insecure: bool,
        /// Overrides [serve] listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Show DHCP on/off and its pool, the port-forwards and remote management.
    State {
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Switch the router's DHCP server.
    Dhcp {
        #[arg(value_enum)]
        action: Toggle,
    },
    /// Manage port-forwards.
    Forward {
        #[command(subcommand)]
        action: ForwardCommand,
    },
    /// Allow or refuse managing the router from the WAN side.
    RemoteManagement {
        #[arg(value_enum)]
        action: Toggle,
        /// Allowed source CIDR (repeatable; default 0.0.0.0/0).
        #[arg(long = "from")]
        from: Vec<String>,
        /// How long to wait for `yes` before rolling a protected change back.
        #[arg(long, value_parser = humantime::parse_duration)]
        confirm_timeout: Option<Duration>,
    },
    /// Send DHCPDISCOVERs on an interface and list the servers that answer.
    ProbeDhcp {
        #[arg(long)]
        interface: String,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
        window: Duration,
        /// `none`, or the one server identifier that may answer; exit 1 when it does not hold.
        #[arg(long)]
        expect: Option<String>,
        /// Stop at the first offer.
        #[arg(long)]
        stop_at_first: bool,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Remove everything the shim created and put DHCP back as it was found.
    Reset,
    /// The coordinator's check from MAIN: ask a running shim to switch DHCP off, then prove it with
    /// the local probe on `--interface` (exit 1 with the offers as evidence when anyone answers).
    #[command(hide = true)]
    EnsureDhcpOff {
        /// The shim's address, e.g. `http://172.16.0.1:7443` or `https://router:7443`.
        #[arg(long)]
        shim: String,
        #[arg(long)]
        interface: String,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
        window: Duration,
        /// CA of the shim's TLS certificate (for an https address).
        #[arg(long)]
        ca: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Accept TCP connections and greet each with a banner line (a stand-in for MAIN:22 in tests).
    #[command(hide = true)]
    TcpServe {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value = "metalfleet-tcp-serve")]
        banner: String,
    },
    /// Open a TCP connection and print the first line the server sends (tests, manual checks).
    #[command(hide = true)]
    TcpCheck {
        address: SocketAddr,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
        timeout: Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum ForwardCommand {
    /// Add a forward; the same forward twice is a no-op.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long = "proto")]
        protocol: String,
        #[arg(long)]
        external_port: u32,
        /// IP:PORT inside the LAN.
        #[arg(long)]
        to: String,
        /// Change a forward of the same name that points elsewhere.
        #[arg(long)]
        replace: bool,
        #[arg(long, value_parser = humantime::parse_duration)]
        confirm_timeout: Option<Duration>,
    },
    /// Remove a forward by name.
    Remove {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = humantime::parse_duration)]
        confirm_timeout: Option<Duration>,
    },
    /// List the forwards the shim manages.
    List {
        #[arg(long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

/// A failure with the exit code it maps to.
struct Failure {
    code: i32,
    error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        let error = error.into();
        let code = exit_code(&error);
        Failure { code, error }
    }
}

fn exit_code(error: &anyhow::Error) -> i32 {
    if error.downcast_ref::<config::ConfigError>().is_some() || error.downcast_ref::<model::InvalidInput>().is_some() {
        return exit::USAGE;
    }
    let backend = error.downcast_ref::<BackendError>().or_else(|| match error.downcast_ref::<ShimError>() {
        Some(ShimError::Backend(b)) => Some(b),
        _ => None,
    });
    match (error.downcast_ref::<ShimError>(), backend) {
        (Some(ShimError::Invalid(_)), _) => exit::USAGE,
        (_, Some(BackendError::Config(_))) => exit::USAGE,
        (_, Some(BackendError::Unreachable { .. })) => exit::UNAVAILABLE,
        _ => exit::CHECK_FAILED,
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async {
        let _telemetry = metalfleet_common::telemetry::init("router-shim", "info");
        match run(cli).await {
            Ok(code) => code,
            Err(Failure { code, error }) => {
                eprintln!("error: {error:#}");
                code
            }
        }
    });
    // A pending read of stdin (the confirmation prompt) must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(100));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

async fn run(cli: Cli) -> Result<i32, Failure> {
    let load = || -> Result<Config, Failure> {
        let path = config::resolve_path(cli.config.as_deref(), &ProcessEnv)?;
        Ok(Config::load(&path)?)
    };
    let stdin = Arc::new(StdinConfirmer::default());
    match cli.command {
        Command::ProbeDhcp { interface, window, expect, stop_at_first, output } => {
            if let Some(expect) = expect.as_deref().filter(|e| *e != "none") {
                expect.parse::<std::net::Ipv4Addr>().map_err(|_| {
                    usage(anyhow::anyhow!("--expect {expect:?}: give `none` or the server's IPv4 address"))
                })?;
            }
            let report = probe::probe(&ProbeRequest { interface, window, stop_at_first }).await?;
            print_probe(&report, output);
            Ok(check_expect(&report, expect.as_deref())?)
        }
        Command::TcpCheck { address, timeout } => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    let mut line = String::new();
                    let mut reader = BufReader::new(stream);
                    let _ = tokio::time::timeout(timeout, reader.read_line(&mut line)).await;
                    println!("connected {address} {}", line.trim());
                    Ok(exit::OK)
                }
                Ok(Err(error)) => {
                    println!("failed {address}: {error}");
                    Ok(exit::CHECK_FAILED)
                }
                Err(_) => {
                    println!("failed {address}: timed out after {timeout:?}");
                    Ok(exit::CHECK_FAILED)
                }
            }
        }
        Command::EnsureDhcpOff { shim, interface, window, ca, output } => {
            let tls = match ca {
                Some(path) => {
                    let pem = std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))
                        .map_err(usage)?;
                    Some(
                        tonic::transport::ClientTlsConfig::new()
                            .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                    )
                }
                None => None,
            };
            let mut client = Client::connect(&shim, tls, Duration::from_secs(10))
                .await
                .map_err(|error| Failure { code: exit::UNAVAILABLE, error: error.into() })?;
            match dhcp_off::switch_off_and_prove(&mut client, &interface, window).await {
                Ok(report) => {
                    print_probe(&report, output);
                    Ok(exit::OK)
                }
                Err(dhcp_off::Error::Proof(error @ dhcp_off::ProofError::StillAnswered { .. })) => {
                    Err(Failure { code: exit::CHECK_FAILED, error: error.into() })
                }
                Err(dhcp_off::Error::SwitchOff(ClientError::Rpc(status)))
                    if status.code() == tonic::Code::Unavailable =>
                {
                    Err(Failure { code: exit::UNAVAILABLE, error: ClientError::Rpc(status).into() })
                }
                Err(dhcp_off::Error::SwitchOff(error)) => Err(error.into()),
                Err(dhcp_off::Error::Proof(error)) => Err(error.into()),
            }
        }
        Command::TcpServe { listen, banner } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            metalfleet_common::readiness::announce(listener.local_addr()?);
            loop {
                let (mut stream, _) = listener.accept().await?;
                let banner = format!("{banner}\n");
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let _ = stream.write_all(banner.as_bytes()).await;
                });
            }
        }
        Command::Serve { insecure, listen } => {
            let config = load()?;
            serve(config, insecure, listen).await
        }
        Command::State { output } => {
            let shim = Shim::from_config(&load()?, stdin)?;
            let state = shim.state().await?;
            print_state(&state, output);
            Ok(exit::OK)
        }
        Command::Forward { action: ForwardCommand::List { output } } => {
            let shim = Shim::from_config(&load()?, stdin)?;
            let state = shim.state().await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&state.forwards).unwrap_or_default()),
                Output::Table => print_forwards(&state.forwards),
            }
            Ok(exit::OK)
        }
        Command::Dhcp { action } => {
            let change = Change::Dhcp { enabled: action == Toggle::Enable };
            local_change(load()?, change, None, stdin).await
        }
        Command::Forward {
            action: ForwardCommand::Add { name, protocol, external_port, to, replace, confirm_timeout },
        } => {
            let forward = PortForward {
                name,
                protocol: protocol.parse()?,
                external_port: model::validate_port(external_port)?,
                target: model::parse_target(&to)?,
                protected: false,
            };
            local_change(load()?, Change::AddForward { forward, replace }, confirm_timeout, stdin).await
        }
        Command::Forward { action: ForwardCommand::Remove { name, confirm_timeout } } => {
            local_change(load()?, Change::RemoveForward { name }, confirm_timeout, stdin).await
        }
        Command::RemoteManagement { action, from, confirm_timeout } => {
            let enabled = action == Toggle::Enable;
            let mut allowed_from = from.iter().map(|c| model::parse_cidr(c)).collect::<Result<Vec<_>, _>>()?;
            if enabled && allowed_from.is_empty() {
                allowed_from.push(ipnet::Ipv4Net::default());
            }
            if !enabled {
                allowed_from.clear();
            }
            let change = Change::RemoteManagement(RemoteManagement { enabled, allowed_from });
            local_change(load()?, change, confirm_timeout, stdin).await
        }
        Command::Reset => local_change(load()?, Change::Reset, None, stdin).await,
    }
}

async fn local_change(
    mut config: Config,
    change: Change,
    confirm_timeout: Option<Duration>,
    stdin: Arc<StdinConfirmer>,
) -> Result<i32, Failure> {
    if let Some(timeout) = confirm_timeout {
        config.confirm_timeout = timeout;
    }
    let timeout = config.confirm_timeout;
    let settings = ShimSettings { auto_rollback: false, ..ShimSettings::from_config(&config) };
    let shim = Shim::from_settings(&config, settings, stdin.clone())?;
    let outcome = shim.apply(change).await?;
    print_outcome(&outcome);
    let Some(pending) = outcome.pending else { return Ok(exit::OK) };
    let prompt = format!(
        "This change can cut off access to the router or to MAIN:\n  before: {}\n  after:  {}\nIt is applied now. Type `yes` within {}s to keep it; anything else, Ctrl-C or the timeout rolls it back: ",
        summary(&outcome.before),
        summary(&outcome.after),
        timeout.as_secs()
    );
    let confirmed = tokio::select! {
        answer = tokio::time::timeout(timeout, stdin.confirm(&prompt)) => matches!(answer, Ok(true)),
        _ = tokio::signal::ctrl_c() => false,
    };
    if confirmed && shim.confirm(&pending.id) {
        println!("confirmed");
        return Ok(exit::OK);
    }
    match shim.rollback(&pending.id).await {
        Ok(()) | Err(ShimError::UnknownPending(_)) => {}
        Err(error) => return Err(error.into()),
    }
    let state = shim.state().await?;
    println!("rolled back: {}", summary(&state));
    Ok(exit::CHECK_FAILED)
}

async fn serve(config: Config, insecure_flag: bool, listen: Option<SocketAddr>) -> Result<i32, Failure> {
    let insecure = insecure_flag || config.serve.insecure;
    let tls = if insecure {
        None
    } else {
        let (Some(cert), Some(key)) = (&config.serve.tls_cert, &config.serve.tls_key) else {
            return Err(Failure {
                code: exit::USAGE,
                error: anyhow::anyhow!("[serve] needs tls_cert and tls_key, or run with --insecure (insecure = true)"),
            });
        };
        let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        let mut tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(read(cert).map_err(usage)?, read(key).map_err(usage)?));
        if let Some(ca) = &config.serve.tls_ca {
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca).map_err(usage)?));
        }
        Some(tls)
    };
    // The config holds paths, never secrets (credentials live in 0600 files), so it is logged whole.
    tracing::info!(?config, "config loaded");
    let shim = Shim::from_config(&config, Arc::new(RefuseConfirmer))?;
    let addr = listen.unwrap_or(config.serve.listen);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| usage(anyhow::anyhow!("cannot listen on {addr}: {e}; pick a free address in [serve] listen")))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, backend = shim.backend_name(), insecure, "router shim listening");
    metalfleet_common::readiness::announce(local);
    let stop = CancellationToken::new();
    tokio::spawn(metalfleet_common::shutdown::cancel_on_signals(stop.clone()));
    crate::grpc::serve(listener, shim, tls, config.serve.rpc_timeout, stop).await?;
    tracing::info!("stopped");
    Ok(exit::OK)
}

fn usage(error: anyhow::Error) -> Failure {
    Failure { code: exit::USAGE, error }
}

fn check_expect(report: &ProbeReport, expect: Option<&str>) -> Result<i32, Failure> {
    let Some(expect) = expect else { return Ok(exit::OK) };
    let servers: Vec<String> = report.offers.iter().map(|o| o.server_identifier.to_string()).collect();
    let holds = if expect == "none" {
        servers.is_empty()
    } else {
        let ip: std::net::Ipv4Addr = expect
            .parse()
            .map_err(|_| usage(anyhow::anyhow!("--expect {expect:?}: give `none` or the server's IPv4 address")))?;
        servers == [ip.to_string()]
    };
    if holds {
        Ok(exit::OK)
    } else {
        eprintln!("expectation {expect:?} does not hold: servers that answered: [{}]", servers.join(", "));
        Ok(exit::CHECK_FAILED)
    }
}

fn print_probe(report: &ProbeReport, output: Output) {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(report).unwrap_or_default());
        return;
    }
    println!(
        "interface {}: {} DHCPDISCOVERs (xid {:#010x}) over {} ms, {} server(s) answered",
        report.interface,
        report.discovers_sent,
        report.xid,
        report.window_ms,
        report.offers.len()
    );
    for o in &report.offers {
        println!(
            "  server {} from {} mac {} offered {} next-server {} boot-file {}",
            o.server_identifier,
            o.source_ip,
            dash(&o.source_mac),
            o.offered_ip,
            dash(&o.next_server),
            dash(&o.boot_file)
        );
    }
}

fn dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

fn summary(state: &RouterState) -> String {
    state.to_string()
}

fn print_outcome(outcome: &ChangeOutcome) {
    if outcome.changed {
        println!("changed: {}", summary(&outcome.after));
    } else {
        println!("unchanged: {}", summary(&outcome.after));
    }
}

fn print_state(state: &RouterState, output: Output) {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(state).unwrap_or_default());
        return;
    }
    println!("backend            {}", state.backend);
    println!(
        "dhcp               {}{}",
        if state.dhcp_enabled { "on" } else { "off" },
        if state.dhcp_pool.is_empty() { String::new() } else { format!(" (pool {})", state.dhcp_pool) }
    );
    let m = &state.remote_management;
    println!(
        "remote management  {}",
        if m.enabled {
            format!("on from {}", m.allowed_from.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
        } else {
            "off".to_string()
        }
    );
    print_forwards(&state.forwards);
}

fn print_forwards(forwards: &[PortForward]) {
    println!("{:<20} {:<5} {:>6}  {:<22} PROTECTED", "NAME", "PROTO", "PORT", "TARGET");
    for f in forwards {
        println!(
            "{:<20} {:<5} {:>6}  {:<22} {}",
            f.name,
            f.protocol,
            f.external_port,
            f.target.to_string(),
            if f.protected { "yes" } else { "no" }
        );
    }
}

/// Reads confirmations from stdin, one line each (`yes` confirms).
#[derive(Default)]
pub struct StdinConfirmer {
    lines: Mutex<Option<tokio::io::Lines<BufReader<tokio::io::Stdin>>>>,
}

#[async_trait]
impl Confirmer for StdinConfirmer {
    async fn confirm(&self, prompt: &str) -> bool {
        eprint!("{prompt}");
        let mut lines = self.lines.lock().await;
        let lines = lines.get_or_insert_with(|| BufReader::new(tokio::io::stdin()).lines());
        match lines.next_line().await {
            Ok(Some(line)) => matches!(line.trim().to_ascii_lowercase().as_str(), "yes" | "y"),
            _ => false,
        }
    }
}

/// `serve` has no person at a terminal: manual steps are refused there.
struct RefuseConfirmer;

#[async_trait]
impl Confirmer for RefuseConfirmer {
    async fn confirm(&self, _prompt: &str) -> bool {
        tracing::warn!("a manual step needs a person at a terminal; run the local CLI subcommand instead");
        false
    }
}
