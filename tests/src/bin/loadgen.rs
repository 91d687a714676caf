//! `loadgen`: many fake agents against one coordinator, to measure what it absorbs.
//!
//! It enrolls `--agents` fake agents over a few shared HTTP/2 channels, opens one Heartbeat stream
//! per agent and sends one sample per `--interval` on each (start times spread over the first
//! interval, SetInterval directives obeyed), for `--duration`. It reports:
//! - heartbeats sent: messages handed to the gRPC streams;
//! - heartbeats stored: samples the coordinator wrote to its store, counted afterwards through
//!   GetMachine's history for every fake agent (each run uses fresh agent ids, so history starts
//!   empty; keep `history_samples` above the samples per agent);
//! - probe latency p50/p99/max: Heartbeat is a stream without per-message acks, so latency is
//!   measured on an extra unary call made 10 times a second under the load: ReportInventory
//!   for one of the fake agents, which is a full round trip including a SQLite write
//!   transaction that competes with the heartbeat batch writer;
//! - with `--coordinator-pid`, the coordinator's CPU time during the run and its RSS (from /proc).
//!
//! Every fake agent enrolls from 127.0.0.1, so give the coordinator a config that lifts the
//! per-address enrollment limit: `[enroll]` `enroll_per_minute = 100000`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use proto::v1 as pb;
use proto::v1::agent_service_client::AgentServiceClient;
use proto::v1::fleet_service_client::FleetServiceClient;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Fake agents against a coordinator: heartbeats/s, latency, coordinator CPU and RSS"
)]
struct Args {
    /// Coordinator URL, e.g. http://127.0.0.1:7443 (with --insecure) or https://127.0.0.1:7443.
    #[arg(long)]
    coordinator: String,
    /// CA certificate for https (the coordinator's ca.pem).
    #[arg(long, conflicts_with = "insecure")]
    ca_file: Option<std::path::PathBuf>,
    /// Plaintext gRPC.
    #[arg(long)]
    insecure: bool,
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Interval between heartbeats of one agent.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: Duration,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Shared HTTP/2 connections the agents are spread over.
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// The coordinator's process id, to read its CPU time and RSS from /proc.
    #[arg(long)]
    coordinator_pid: Option<u32>,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    directives: AtomicU64,
    stream_errors: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let channels = connect(&args).await?;
    let run = format!("{:x}", rand::rng().random::<u32>());
    let started_cpu = args.coordinator_pid.map(cpu_seconds).transpose()?;

    // Enroll everyone, 64 at a time.
    let enroll_start = Instant::now();
    let machine_ids: Vec<String> = futures::stream::iter(0..args.agents)
        .map(|i| {
            let mut client = AgentServiceClient::new(channels[i % channels.len()].clone());
            let run = run.clone();
            async move {
                let request = pb::EnrollRequest {
                    agent_id: format!("loadgen-{run}-{i}"),
                    hostname: format!("load-{run}-{i:05}"),
                    mac_addresses: vec![format!(
                        "02:00:{:02x}:{:02x}:{:02x}:{:02x}",
                        (i >> 24) & 0xff,
                        (i >> 16) & 0xff,
                        (i >> 8) & 0xff,
                        i & 0xff
                    )],
                    agent_version: "loadgen".into(),
                    ..Default::default()
                };
                client.enroll(request).await.map(|r| r.into_inner().machine_id)
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .context("enrolling the fake agents (a RESOURCE_EXHAUSTED here means the coordinator's [enroll] enroll_per_minute is too low for a load run)")?;
    let enroll_time = enroll_start.elapsed();

    let counters = Arc::new(Counters::default());
    let deadline = tokio::time::Instant::now() + args.duration;
    let mut agents = Vec::new();
    for (i, machine_id) in machine_ids.iter().enumerate() {
        let channel = channels[i % channels.len()].clone();
        let offset = args.interval.mul_f64(i as f64 / args.agents as f64);
        agents.push(tokio::spawn(agent(
            channel,
            machine_id.clone(),
            args.interval,
            offset,
            deadline,
            counters.clone(),
        )));
    }
    let probe = tokio::spawn(probe(channels[0].clone(), machine_ids.clone(), deadline));
    let run_start = Instant::now();
    for agent in agents {
        agent.await?;
    }
    let run_time = run_start.elapsed();
    let mut latencies = probe.await?;
    let ended_cpu = args.coordinator_pid.map(cpu_seconds).transpose()?;
    let sent = counters.sent.load(Ordering::Relaxed);
    let stored = count_stored(&channels[0], &machine_ids, sent).await?;

    latencies.sort();
    let pick =
        |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1))).copied();
    let ms =
        |d: Option<Duration>| d.map(|d| format!("{:.2} ms", d.as_secs_f64() * 1000.0)).unwrap_or_else(|| "-".into());
    println!(
        "agents:               {} over {} HTTP/2 channels, interval {:?}",
        args.agents,
        channels.len(),
        args.interval
    );
    println!("enroll:               {} agents in {:.2} s", machine_ids.len(), enroll_time.as_secs_f64());
    println!("run:                  {:.1} s", run_time.as_secs_f64());
    println!("heartbeats sent:      {sent} ({:.1}/s)", sent as f64 / run_time.as_secs_f64());
    println!("heartbeats stored:    {stored} ({:.1}/s)", stored as f64 / run_time.as_secs_f64());
    println!("directives received:  {}", counters.directives.load(Ordering::Relaxed));
    println!("stream errors:        {}", counters.stream_errors.load(Ordering::Relaxed));
    println!(
        "probe ReportInventory latency: n={} p50={} p99={} max={}",
        latencies.len(),
        ms(pick(0.50)),
        ms(pick(0.99)),
        ms(latencies.last().copied())
    );
    if let (Some(pid), Some(before), Some(after)) = (args.coordinator_pid, started_cpu, ended_cpu) {
        let (rss, hwm) = rss_kib(pid)?;
        let cpu = after - before;
        println!(
            "coordinator pid {pid}: CPU {cpu:.2} s over the run ({:.1}% of one core), RSS {} KiB, peak RSS {} KiB",
            cpu * 100.0 / run_time.as_secs_f64(),
            rss,
            hwm
        );
    }
    Ok(())
}

async fn connect(args: &Args) -> anyhow::Result<Vec<Channel>> {
    let url = args.coordinator.clone();
    let tls = if url.starts_with("https://") {
        let path = args.ca_file.as_ref().context("https needs --ca-file (the coordinator's ca.pem)")?;
        let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
    } else if args.insecure || url.starts_with("http://") {
        None
    } else {
        bail!("use an http:// or https:// coordinator URL");
    };
    let mut channels = Vec::new();
    for _ in 0..args.channels.max(1) {
        let mut endpoint =
            Endpoint::from_shared(url.clone())?.connect_timeout(Duration::from_secs(5)).tcp_nodelay(true);
        if let Some(tls) = &tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        channels.push(endpoint.connect().await.with_context(|| format!("connecting to {url}"))?);
    }
    Ok(channels)
}

fn sample() -> pb::HealthSample {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    pb::HealthSample {
        taken_at: Some(prost_types::Timestamp { seconds: now.as_secs() as i64, nanos: now.subsec_nanos() as i32 }),
        cpu_percent: 5.0,
        load1: 0.2,
        load5: 0.2,
        load15: 0.2,
        memory_total_bytes: 16 << 30,
        memory_used_bytes: 4 << 30,
        memory_available_bytes: 12 << 30,
        filesystems: vec![pb::FilesystemUsage {
            mount_point: "/".into(),
            device: "/dev/sda1".into(),
            fs_type: "ext4".into(),
            total_bytes: 100 << 30,
            available_bytes: 60 << 30,
        }],
        uptime_seconds: 1000,
        logical_cpus: 4,
        ..Default::default()
    }
}

async fn agent(
    channel: Channel,
    machine_id: String,
    interval: Duration,
    offset: Duration,
    deadline: tokio::time::Instant,
    counters: Arc<Counters>,
) {
    let mut client = AgentServiceClient::new(channel);
    let (sender, receiver) = mpsc::channel(4);
    let mut interval_ms = interval.as_millis() as u32;
    let message = |interval_ms: u32| pb::HeartbeatRequest {
        machine_id: machine_id.clone(),
        samples: vec![sample()],
        interval_ms,
        dropped_samples: 0,
    };
    tokio::select! {
        _ = tokio::time::sleep(offset) => {}
        _ = tokio::time::sleep_until(deadline) => return,
    }
    if sender.send(message(interval_ms)).await.is_err() {
        return;
    }
    counters.sent.fetch_add(1, Ordering::Relaxed);
    let mut directives = match client.heartbeat(ReceiverStream::new(receiver)).await {
        Ok(response) => response.into_inner(),
        Err(_) => {
            counters.stream_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let mut next = tokio::time::Instant::now() + Duration::from_millis(u64::from(interval_ms));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tokio::time::sleep_until(next) => {
                next += Duration::from_millis(u64::from(interval_ms));
                if sender.send(message(interval_ms)).await.is_err() {
                    counters.stream_errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            directive = directives.next() => match directive {
                Some(Ok(pb::Directive { kind: Some(pb::directive::Kind::SetInterval(set)), .. })) => {
                    counters.directives.fetch_add(1, Ordering::Relaxed);
                    interval_ms = set.interval_ms.max(100);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    counters.stream_errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        }
    }
    // End our half of the stream and wait for the coordinator to end its half, so messages still
    // in flight are delivered instead of cancelled with the call.
    drop(sender);
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(item) = directives.next().await {
            if item.is_err() {
                counters.stream_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    if drained.await.is_err() {
        counters.stream_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// ReportInventory round trips, 10 a second, until the deadline.
async fn probe(channel: Channel, machine_ids: Vec<String>, deadline: tokio::time::Instant) -> Vec<Duration> {
    let mut client = AgentServiceClient::new(channel);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut latencies = Vec::new();
    let mut n = 0usize;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tick.tick() => {}
        }
        let inventory =
            pb::Inventory { cpu_model: format!("loadgen probe {n}"), logical_cpus: 4, ..Default::default() };
        let request = pb::ReportInventoryRequest {
            machine_id: machine_ids[n % machine_ids.len()].clone(),
            inventory: Some(inventory),
        };
        let start = Instant::now();
        if client.report_inventory(request).await.is_ok() {
            latencies.push(start.elapsed());
        }
        n += 1;
    }
    latencies
}

/// Samples the coordinator stored for our agents; polls until all sent ones are there or 15 s pass.
async fn count_stored(channel: &Channel, machine_ids: &[String], sent: u64) -> anyhow::Result<u64> {
    let give_up = Instant::now() + Duration::from_secs(15);
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    loop {
        poll.tick().await;
        let counts: Vec<u64> = futures::stream::iter(machine_ids.iter().cloned())
            .map(|name| {
                let mut fleet = FleetServiceClient::new(channel.clone());
                async move {
                    fleet
                        .get_machine(pb::GetMachineRequest { name, history: 10_000 })
                        .await
                        .map(|m| m.into_inner().history.len() as u64)
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .context("counting stored samples")?;
        let stored: u64 = counts.iter().sum();
        if stored >= sent || Instant::now() > give_up {
            return Ok(stored);
        }
    }
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).context("unexpected /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    // USER_HZ is 100 on Linux for every architecture we run on.
    Ok((utime + stime) / 100.0)
}

/// (VmRSS, VmHWM) of `pid` in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("no {name}"))?;
        Ok(line.split_whitespace().nth(1).context("bad line")?.parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}
