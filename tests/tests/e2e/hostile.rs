//! Issue 10's end-to-end checks: an enrolled agent sending hostile values, a store that cannot write
//! (a full disk, a database deleted under the coordinator), through the real coordinator binary and a
//! hand-written gRPC agent that keeps every sample until the coordinator acknowledges it.
//!
//! The coordinator runs plaintext here (`--insecure`): what is checked is what an enrolled agent can do
//! once it is in, and how the store behaves, neither of which depends on how the agent got in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use metalfleet_tests::{Proc, bin, run, stderr, stdout};
use proto::v1 as pb;
use proto::v1::agent_service_client::AgentServiceClient;
use proto::v1::fleet_service_client::FleetServiceClient;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const START: Duration = Duration::from_secs(30);

struct Coordinator {
    proc: Proc,
    addr: std::net::SocketAddr,
    config: PathBuf,
}

impl Coordinator {
    /// `coordinator serve --insecure` with a history long enough to keep every sample of a test, and
    /// health thresholds a busy CI machine does not trip.
    fn start(dir: &Path, state: &Path) -> Result<Self> {
        let config = dir.join("coordinator.toml");
        std::fs::write(
            &config,
            "heartbeat_interval = \"1s\"\nhistory_samples = 100000\n\n\
             [health]\nload_per_cpu = 1000.0\ndisk_used_percent = 99.9\nmemory_available_percent = 0.1\n",
        )?;
        Self::start_with(state, &config)
    }

    fn start_with(state: &Path, config: &Path) -> Result<Self> {
        let mut command = Command::new(bin("coordinator"));
        command.args(["serve", "--insecure", "--listen", "127.0.0.1:0", "--config"]).arg(config);
        command.arg("--state-dir").arg(state);
        let mut proc = Proc::spawn("coordinator", command)?;
        let addr = proc.wait_listening(START)?;
        Ok(Coordinator { proc, addr, config: config.to_path_buf() })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn fleetctl(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut command = Command::new(bin("fleetctl"));
        command.args(["--insecure", "--coordinator"]).arg(self.url()).args(args);
        run(command, Duration::from_secs(20))
    }

    fn fleetctl_json(&self, args: &[&str]) -> Result<Value> {
        let output = self.fleetctl(args)?;
        if !output.status.success() {
            bail!("fleetctl {args:?} failed ({}): {}", output.status, stderr(&output));
        }
        serde_json::from_str(&stdout(&output)).with_context(|| format!("fleetctl {args:?} printed no JSON"))
    }

    async fn fleet(&self) -> Result<FleetServiceClient<Channel>> {
        Ok(FleetServiceClient::connect(self.url()).await?)
    }

    /// Whether the coordinator says it is degraded (its store cannot write).
    async fn degraded(&self) -> Result<bool> {
        let response = self.fleet().await?.list_machines(pb::ListMachinesRequest {}).await?.into_inner();
        Ok(response.coordinator.is_some_and(|c| c.degraded))
    }

    /// The seqs of every stored sample of `machine_id`.
    async fn stored_seqs(&self, machine_id: &str) -> Result<BTreeSet<u64>> {
        let request = pb::GetMachineRequest { name: machine_id.to_string(), history: 100_000 };
        let machine = self.fleet().await?.get_machine(request).await?.into_inner();
        Ok(machine.history.iter().map(|s| s.seq).collect())
    }

    async fn event_kinds(&self) -> Result<Vec<String>> {
        let request = pb::WatchEventsRequest { after_id: 0, follow: false, limit: 0 };
        let mut stream = self.fleet().await?.watch_events(request).await?.into_inner();
        let mut kinds = Vec::new();
        while let Some(event) = tokio::time::timeout(Duration::from_secs(10), stream.message()).await?? {
            kinds.push(event.kind);
        }
        Ok(kinds)
    }
}

/// What the agent side knows: the highest acknowledged seq, and the refusals.
#[derive(Default)]
struct Acks {
    stored_through: u64,
    refused: BTreeMap<u64, pb::Refusal>,
    /// Acknowledgements received, in order (to see that they stop).
    count: u64,
}

/// A hand-written agent: enrolls, opens the heartbeat stream and reads acknowledgements in the background.
struct RawAgent {
    machine_id: String,
    tx: mpsc::Sender<pb::HeartbeatRequest>,
    acks: Arc<Mutex<Acks>>,
    next_seq: u64,
    /// Every sample sent, by seq, until acknowledged or refused.
    unacked: BTreeMap<u64, pb::HealthSample>,
}

impl RawAgent {
    async fn enroll(url: &str, agent_id: &str, hostname: &str) -> Result<Self> {
        let mut client = AgentServiceClient::connect(url.to_string()).await?;
        let request = pb::EnrollRequest {
            agent_id: agent_id.into(),
            hostname: hostname.into(),
            agent_version: "raw".into(),
            ..Default::default()
        };
        let machine_id = client.enroll(request).await?.into_inner().machine_id;
        let (tx, rx) = mpsc::channel(64);
        let hello = pb::HeartbeatRequest { machine_id: machine_id.clone(), interval_ms: 1000, ..Default::default() };
        tx.send(hello).await?;
        let mut directives = client.heartbeat(ReceiverStream::new(rx)).await?.into_inner();
        let acks = Arc::new(Mutex::new(Acks::default()));
        let sink = acks.clone();
        tokio::spawn(async move {
            while let Ok(Some(directive)) = directives.message().await {
                if let Some(pb::directive::Kind::Ack(ack)) = directive.kind {
                    let mut acks = sink.lock().expect("acks");
                    acks.stored_through = acks.stored_through.max(ack.stored_through);
                    acks.count += 1;
                    for refusal in ack.refused {
                        acks.refused.insert(refusal.seq, refusal);
                    }
                }
            }
        });
        Ok(RawAgent { machine_id, tx, acks, next_seq: 1, unacked: BTreeMap::new() })
    }

    /// A plausible sample now, with the next seq; `change` makes it hostile.
    fn sample(&mut self, change: impl FnOnce(&mut pb::HealthSample)) -> pb::HealthSample {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
        let mut sample = pb::HealthSample {
            seq: self.next_seq,
            taken_at: Some(prost_types::Timestamp { seconds: now.as_secs() as i64, nanos: 0 }),
            cpu_percent: 5.0,
            load1: 0.1,
            memory_total_bytes: 8 << 30,
            memory_used_bytes: 1 << 30,
            memory_available_bytes: 7 << 30,
            filesystems: vec![pb::FilesystemUsage {
                mount_point: "/".into(),
                device: "/dev/vda1".into(),
                fs_type: "ext4".into(),
                total_bytes: 100 << 30,
                available_bytes: 50 << 30,
            }],
            uptime_seconds: 1000,
            logical_cpus: 2,
            ..Default::default()
        };
        self.next_seq += 1;
        change(&mut sample);
        sample
    }

    async fn send(&mut self, samples: Vec<pb::HealthSample>) -> Result<()> {
        for sample in &samples {
            self.unacked.insert(sample.seq, sample.clone());
        }
        let request = pb::HeartbeatRequest {
            machine_id: self.machine_id.clone(),
            samples,
            interval_ms: 1000,
            dropped_samples: 0,
        };
        self.tx.send(request).await.context("the heartbeat stream closed")
    }

    /// Forgets what was acknowledged or refused; returns how many samples are still unacknowledged.
    fn settle(&mut self) -> usize {
        let acks = self.acks.lock().expect("acks");
        let through = acks.stored_through;
        self.unacked.retain(|seq, _| *seq > through && !acks.refused.contains_key(seq));
        self.unacked.len()
    }

    /// Sends everything unacknowledged again, as a reconnecting agent does (the coordinator skips
    /// what it already has by seq).
    async fn resend(&mut self) -> Result<()> {
        self.settle();
        let again: Vec<pb::HealthSample> = self.unacked.values().take(64).cloned().collect();
        if again.is_empty() {
            return Ok(());
        }
        self.send(again).await
    }

    fn stored_through(&self) -> u64 {
        self.acks.lock().expect("acks").stored_through
    }

    fn ack_count(&self) -> u64 {
        self.acks.lock().expect("acks").count
    }

    fn refused(&self) -> BTreeMap<u64, pb::Refusal> {
        self.acks.lock().expect("acks").refused.clone()
    }
}

/// One tick of the load: each agent sends a new sample, and with `resend` everything unacknowledged again.
async fn step(agents: &mut [RawAgent], resend: bool) -> Result<()> {
    for agent in agents.iter_mut() {
        let sample = agent.sample(|_| {});
        agent.send(vec![sample]).await?;
        if resend {
            agent.resend().await?;
        }
    }
    Ok(())
}

/// Polls an async condition until it holds or `timeout` passes.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut condition: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition().await? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

#[test]
fn hostile_samples_are_refused_one_by_one_and_the_coordinator_survives_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let mut coordinator = Coordinator::start(dir.path(), &state)?;
    runtime()?.block_on(async {
        let mut agent = RawAgent::enroll(&coordinator.url(), "hostile-1", "hostile1").await?;
        let hour_ahead = |s: &mut pb::HealthSample| {
            s.taken_at.as_mut().expect("a time").seconds += 3600;
        };
        let samples = vec![
            agent.sample(|_| {}),
            agent.sample(|s| s.cpu_percent = f64::NAN),
            agent.sample(|s| s.load1 = f64::INFINITY),
            agent.sample(|s| s.cpu_percent = -3.0),
            agent.sample(|s| s.memory_total_bytes = u64::MAX),
            agent.sample(|s| s.cpu_percent = 1e308),
            agent.sample(hour_ahead),
            agent.sample(|s| s.taken_at = Some(prost_types::Timestamp { seconds: 4_000_000_000_000, nanos: 0 })),
            agent.sample(|s| s.filesystems[0].mount_point = "/\nfake row".into()),
            agent.sample(|_| {}),
        ];
        agent.send(samples).await?;
        wait_for("the acknowledgement and the refusals", START, || {
            let done = agent.stored_through() >= 10 && agent.refused().len() == 8;
            async move { Ok(done.then_some(())) }
        })
        .await?;
        let refused = agent.refused();
        let fields: Vec<(u64, &str)> = refused.iter().map(|(seq, r)| (*seq, r.field.as_str())).collect();
        assert_eq!(
            fields,
            vec![
                (2, "cpu_percent"),
                (3, "load1"),
                (4, "cpu_percent"),
                (5, "memory_total_bytes"),
                (6, "cpu_percent"),
                (7, "taken_at"),
                (8, "taken_at"),
                (9, "filesystems[0].mount_point"),
            ]
        );
        assert!(refused[&7].reason.contains("ahead"), "{:?}", refused[&7]);
        // The stream goes on: a good sample after the bad ones is stored and acknowledged.
        let good = agent.sample(|_| {});
        agent.send(vec![good]).await?;
        wait_for("the next acknowledgement", START, || {
            let done = agent.stored_through() >= 11;
            async move { Ok(done.then_some(())) }
        })
        .await?;
        assert_eq!(coordinator.stored_seqs(&agent.machine_id).await?, BTreeSet::from([1, 10, 11]));
        // A resend of stored samples (a lost acknowledgement) is skipped, never stored twice.
        let again: Vec<pb::HealthSample> = vec![agent.sample(|s| s.seq = 10), agent.sample(|s| s.seq = 11)];
        agent.send(again).await?;
        let kinds = wait_for("the refusal and clock events", START, || async {
            let kinds = coordinator.event_kinds().await?;
            let found = kinds.iter().any(|k| k == "samples_refused") && kinds.iter().any(|k| k == "clock_skew");
            Ok(found.then_some(kinds))
        })
        .await?;
        assert_eq!(kinds.iter().filter(|k| *k == "samples_refused").count(), 1, "one event, not one per sample");
        assert_eq!(coordinator.stored_seqs(&agent.machine_id).await?.len(), 3);

        // Hostile names are refused at enrollment and nothing is stored for them.
        for bad in ["evil\nserver9  healthy".to_string(), "x".repeat(100_000), "\u{1b}]0;pwned\u{7}".into()] {
            let status = RawAgent::enroll(&coordinator.url(), "hostile-2", &bad).await.err().context("refused")?;
            let status = status.downcast_ref::<tonic::Status>().context("a gRPC status")?;
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        }
        // A second agent may not take an enrolled name.
        let taken = RawAgent::enroll(&coordinator.url(), "hostile-3", "hostile1").await.err().context("refused")?;
        let taken = taken.downcast_ref::<tonic::Status>().context("a gRPC status")?;
        assert_eq!(taken.code(), tonic::Code::AlreadyExists, "{taken:?}");
        Ok::<_, anyhow::Error>(())
    })?;
    let shown = coordinator.fleetctl_json(&["machines", "show", "hostile1", "--output", "json"])?;
    assert_eq!(shown["hostname"], "hostile1", "{shown}");
    let status = coordinator.fleetctl_json(&["status", "--output", "json"])?;
    assert_eq!(status["machines"].as_array().map(Vec::len), Some(1), "{status}");

    // The restart that used to fail: the coordinator starts over the same store and reads it back.
    coordinator.proc.terminate(Duration::from_secs(20))?;
    let coordinator = Coordinator::start_with(&state, &coordinator.config)?;
    let shown = coordinator.fleetctl_json(&["machines", "show", "hostile1", "--history", "10", "--output", "json"])?;
    assert_eq!(shown["history"].as_array().map(Vec::len), Some(3), "{shown}");
    Ok(())
}

/// Mounts a small tmpfs on `path` (root only); unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Self> {
        std::fs::create_dir_all(path)?;
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(path).status()?;
        ensure!(status.success(), "mount -t tmpfs failed");
        Ok(Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the file system is full.
fn fill(path: &Path) -> Result<u64> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    let block = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(error) if error.kind() == std::io::ErrorKind::StorageFull => break,
            Err(error) => return Err(error.into()),
        }
    }
    let _ = file.flush();
    Ok(written)
}

#[test]
fn a_full_disk_degrades_the_coordinator_and_loses_no_acknowledged_sample() -> Result<()> {
    // Mounting the small tmpfs that fills up needs root.
    metalfleet_skip::require!(metalfleet_skip::root());
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let _tmpfs = Tmpfs::mount(&state, "16m")?;
    let coordinator = Coordinator::start(dir.path(), &state)?;
    runtime()?.block_on(async {
        let url = coordinator.url();
        let mut agents =
            vec![RawAgent::enroll(&url, "full-1", "full1").await?, RawAgent::enroll(&url, "full-2", "full2").await?];
        // Every 50 ms each agent sends a sample, and every second it resends what is unacknowledged.
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut ticks = 0u64;
        // Acknowledgements flow.
        let deadline = Instant::now() + START;
        while agents.iter().any(|a| a.stored_through() < 20) {
            ensure!(Instant::now() < deadline, "no acknowledgements within {START:?}");
            tick.tick().await;
            ticks += 1;
            step(&mut agents, ticks.is_multiple_of(20)).await?;
        }
        // The disk fills up: the coordinator turns degraded and acknowledgements stop.
        let filler = dir.path().join("state/filler");
        fill(&filler)?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            tick.tick().await;
            ticks += 1;
            step(&mut agents, ticks.is_multiple_of(20)).await?;
            if coordinator.degraded().await? {
                break;
            }
            ensure!(Instant::now() < deadline, "the coordinator did not report itself degraded with a full disk");
        }
        let acks_then: Vec<u64> = agents.iter().map(RawAgent::ack_count).collect();
        let through_then: Vec<u64> = agents.iter().map(RawAgent::stored_through).collect();
        // Two more seconds of samples on a full disk: nothing more is acknowledged (one commit that was
        // already under way may still land).
        for _ in 0..40 {
            tick.tick().await;
            ticks += 1;
            step(&mut agents, ticks.is_multiple_of(20)).await?;
        }
        for (agent, (acks, through)) in agents.iter().zip(acks_then.iter().zip(&through_then)) {
            assert!(agent.ack_count() <= acks + 1, "acknowledgements go on with a full disk");
            assert!(
                agent.stored_through() < agent.next_seq - 30,
                "recent samples acknowledged on a full disk (was {through})"
            );
        }
        let status = coordinator.fleetctl_json(&["status", "--output", "json"])?;
        assert!(status.to_string().contains("degraded"), "status shows the coordinator degraded: {status}");

        // Space returns: the coordinator writes again, and the agents' backlog arrives.
        std::fs::remove_file(&filler)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            tick.tick().await;
            ticks += 1;
            step(&mut agents, ticks.is_multiple_of(20)).await?;
            if !coordinator.degraded().await? {
                break;
            }
            ensure!(Instant::now() < deadline, "the coordinator stayed degraded after space came back");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left: usize = agents.iter_mut().map(RawAgent::settle).sum();
            if left == 0 {
                break;
            }
            ensure!(Instant::now() < deadline, "{left} samples still unacknowledged a minute after the outage");
            tokio::time::sleep(Duration::from_millis(500)).await;
            for agent in agents.iter_mut() {
                agent.resend().await?;
            }
        }
        // Every acknowledged sample is in the store: per agent, every seq up to the highest acknowledged.
        for agent in &agents {
            let through = agent.stored_through();
            let stored = coordinator.stored_seqs(&agent.machine_id).await?;
            let missing: Vec<u64> = (1..=through).filter(|seq| !stored.contains(seq)).collect();
            assert!(missing.is_empty(), "{} acknowledged but not stored: {missing:?}", missing.len());
            assert_eq!(stored.len() as u64, through, "each sample stored once");
        }
        let kinds = coordinator.event_kinds().await?;
        assert!(kinds.iter().any(|k| k == "store_degraded"), "{kinds:?}");
        assert!(kinds.iter().any(|k| k == "store_recovered"), "{kinds:?}");
        Ok::<_, anyhow::Error>(())
    })
}

#[test]
fn a_store_deleted_under_the_coordinator_stops_acknowledgements_and_blocks_the_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let mut coordinator = Coordinator::start(dir.path(), &state)?;
    runtime()?.block_on(async {
        let mut agent = RawAgent::enroll(&coordinator.url(), "gone-1", "gone1").await?;
        let deadline = Instant::now() + START;
        while agent.stored_through() < 5 {
            ensure!(Instant::now() < deadline, "no acknowledgements");
            let sample = agent.sample(|_| {});
            agent.send(vec![sample]).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::remove_file(state.join("coordinator.db"))?;
        let deleted_at = agent.next_seq;
        let removed = Instant::now();
        wait_for("the coordinator to report itself degraded", Duration::from_secs(10), || async {
            Ok(coordinator.degraded().await?.then_some(()))
        })
        .await?;
        assert!(removed.elapsed() < Duration::from_secs(5), "degraded at once, not after {:?}", removed.elapsed());
        for _ in 0..40 {
            let sample = agent.sample(|_| {});
            agent.send(vec![sample]).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            agent.stored_through() < deleted_at,
            "a sample sent after the store was deleted was acknowledged ({} >= {deleted_at})",
            agent.stored_through()
        );
        Ok::<_, anyhow::Error>(())
    })?;
    coordinator.proc.terminate(Duration::from_secs(20))?;
    let mut command = Command::new(bin("coordinator"));
    command.args(["serve", "--insecure", "--listen", "127.0.0.1:0", "--state-dir"]).arg(&state);
    let output = run(command, Duration::from_secs(20))?;
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains("coordinator.db") && message.contains("coordinator restore"), "{message}");
    assert!(message.contains("--new-store"), "{message}");
    // On purpose: a fresh store.
    let mut command = Command::new(bin("coordinator"));
    command.args(["serve", "--insecure", "--new-store", "--listen", "127.0.0.1:0", "--state-dir"]).arg(&state);
    let mut fresh = Proc::spawn("coordinator", command)?;
    fresh.wait_listening(START)?;
    Ok(())
}

#[test]
fn an_acknowledged_sample_survives_a_sigkill_right_after_its_acknowledgement() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let mut coordinator = Coordinator::start(dir.path(), &state)?;
    let (machine_id, through) = runtime()?.block_on(async {
        let mut agent = RawAgent::enroll(&coordinator.url(), "kill-1", "kill1").await?;
        let samples: Vec<pb::HealthSample> = (0..50).map(|_| agent.sample(|_| {})).collect();
        agent.send(samples).await?;
        wait_for("the acknowledgement of all 50", START, || {
            let done = agent.stored_through() >= 50;
            async move { Ok(done.then_some(())) }
        })
        .await?;
        Ok::<_, anyhow::Error>((agent.machine_id.clone(), agent.stored_through()))
    })?;
    coordinator.proc.kill()?;
    let coordinator = Coordinator::start_with(&state, &coordinator.config)?;
    let stored = runtime()?.block_on(coordinator.stored_seqs(&machine_id))?;
    assert_eq!(stored, (1..=through).collect::<BTreeSet<u64>>(), "every acknowledged sample survived the SIGKILL");
    Ok(())
}
