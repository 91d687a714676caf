//! The MAAS poller against maas-sim: one list call per poll, status changes as events, MAAS down -> stale
//! state with a growing age -> recovery by itself.
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use coordinator::domain::NewEvent;
use coordinator::domain::kinds;
use coordinator::domain::maas::MaasSyncStatus;
use coordinator::poller::{EventSink, MaasView, Poller, Settings};
use coordinator::store::{MaasStore, SqliteStore};
use tokio_util::sync::CancellationToken;

use self::sim::Sim;

/// maas-sim and clients for it: the part of maas-client's own test helpers (`maas-client/tests/maas_client/sim.rs`)
/// that the poller needs.
mod sim {
    use std::time::Duration;

    use coordinator::maas::{self, ApiKey, Client};

    /// A running sim.
    pub struct Sim {
        pub handle: maas_sim::Handle,
    }

    /// The sim with the reference lab enlisted, its clock sped up.
    pub async fn start() -> Sim {
        let mut cfg = maas_sim::Config::for_tests();
        cfg.enlisted = true;
        cfg.time_scale = 0.005;
        Sim { handle: maas_sim::start(cfg).await.expect("maas-sim starts") }
    }

    /// A client for the sim with fast backoff. maas-sim sends MAAS's `Retry-After: 10` with its 503s; the cap keeps
    /// the tests fast.
    pub fn client_for(handle: &maas_sim::Handle, key: &str, retries: u32) -> Client {
        let mut cfg = maas::Config::new(url::Url::parse(&handle.base_url()).unwrap(), "/nonexistent/maas.key".into());
        cfg.retries = retries;
        cfg.retry_backoff = Duration::from_millis(5);
        cfg.max_backoff = Duration::from_millis(50);
        cfg.request_timeout = Duration::from_secs(10);
        cfg.connect_timeout = Duration::from_secs(2);
        Client::with_key(&cfg, ApiKey::parse(key).unwrap()).unwrap()
    }
}

/// Every async test runs under this outer deadline.
async fn deadline<T>(limit: Duration, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, f).await.expect("test exceeded its deadline")
}

const INTERVAL: Duration = Duration::from_millis(200);

/// Collects the poller's events in memory.
#[derive(Default)]
struct Events(Mutex<Vec<NewEvent>>);

impl EventSink for Events {
    fn emit(&self, event: NewEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Events {
    fn of_kind(&self, kind: &str) -> Vec<NewEvent> {
        self.0.lock().unwrap().iter().filter(|e| e.kind == kind).cloned().collect()
    }
}

/// A running poller over a fresh store, with its events and the operators' view.
struct Running {
    sim: Sim,
    store: Arc<SqliteStore>,
    events: Arc<Events>,
    view: MaasView,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start_poller() -> Running {
    let sim = sim::start().await;
    // No client retries: a failed poll fails at once, and the next tick tries again.
    let client = sim::client_for(&sim.handle, &sim.handle.api_key(), 0);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), 10).unwrap());
    let events = Arc::new(Events::default());
    let settings = Settings { interval: INTERVAL, poll_timeout: Duration::from_secs(2) };
    let poller = Poller::new(client, store.clone(), events.clone(), settings).await.unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(poller.run(stop.clone()));
    let view = MaasView::new(store.clone(), INTERVAL);
    Running { sim, store, events, view, stop, task, _dir: dir }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task).await.expect("poller stops").unwrap();
        self.sim.handle.shutdown().await;
    }

    async fn sync(&self) -> MaasSyncStatus {
        self.view.snapshot(Utc::now()).await.unwrap().1
    }
}

/// Polls `condition` every 20 ms until it holds, failing after `limit`.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !condition().await {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn list_calls(sim: &Sim) -> usize {
    sim.handle.request_log().iter().filter(|r| r.method == "GET" && r.path == "/MAAS/api/2.0/machines/").count()
}

#[tokio::test]
async fn one_list_call_per_poll_and_the_specs_are_stored() {
    deadline(Duration::from_secs(30), async {
        let run = start_poller().await;
        wait_for("the first poll to store the lab", Duration::from_secs(10), || async {
            run.store.maas_machines().await.unwrap().len() == 4
        })
        .await;
        // Count over several polls from a clean log: each poll is one GET machines/, nothing else.
        run.sim.handle.clear_request_log();
        let started = Instant::now();
        wait_for("five more polls", Duration::from_secs(10), || async { list_calls(&run.sim) >= 5 }).await;
        let elapsed = started.elapsed();
        let log = run.sim.handle.request_log();
        let others: Vec<_> = log.iter().filter(|r| r.path != "/MAAS/api/2.0/machines/" || r.method != "GET").collect();
        assert!(others.is_empty(), "the poller made other calls: {others:?}");
        let polls = list_calls(&run.sim);
        // At one poll per 200 ms interval, never a burst of calls per poll.
        let most = (elapsed.as_millis() / INTERVAL.as_millis()) as usize + 2;
        assert!(polls <= most, "{polls} list calls in {elapsed:?}; expected about one per {INTERVAL:?}");
        assert!(log.iter().all(|r| r.op.is_none() && r.status == 200), "{log:?}");

        let machines = run.store.maas_machines().await.unwrap();
        let hostnames: Vec<&str> = machines.iter().map(|m| m.hostname.as_str()).collect();
        assert_eq!(hostnames, ["server1", "server2", "server3", "server4"]);
        let server2 = &machines[1];
        assert_eq!((server2.status, server2.status_name.as_str()), (4, "Ready"));
        assert_eq!(server2.cpu_count, 4);
        assert_eq!(server2.cpu_speed_mhz, 3000);
        assert_eq!(server2.memory_mib, 16 * 1024);
        assert_eq!(server2.disks.len(), 2);
        assert_eq!(server2.disks[0].size_bytes, 240_057_409_536);
        assert_eq!(server2.disks[0].model, "KINGSTON SA400S37240G");
        assert_eq!(server2.interfaces[0].mac_address, "52:54:00:00:00:02");
        assert_eq!(server2.interfaces[0].link_speed_mbps, 1000);
        assert!(server2.storage_bytes >= 2 * 240_000_000_000, "{}", server2.storage_bytes);
        assert_eq!(run.events.of_kind(kinds::MAAS_MACHINE_ADDED).len(), 4);
        assert!(!run.sync().await.stale);
        run.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_status_change_becomes_an_event() {
    deadline(Duration::from_secs(30), async {
        let run = start_poller().await;
        wait_for("the first poll", Duration::from_secs(10), || async {
            run.store.maas_machines().await.unwrap().len() == 4
        })
        .await;
        assert!(run.sim.handle.force_status("server2", maas_sim::status::Status::Deployed));
        wait_for("maas_status_changed for server2", Duration::from_secs(10), || async {
            !run.events.of_kind(kinds::MAAS_STATUS_CHANGED).is_empty()
        })
        .await;
        let changed = run.events.of_kind(kinds::MAAS_STATUS_CHANGED);
        assert_eq!(changed.len(), 1, "{changed:?}");
        assert_eq!(changed[0].message, "server2: Ready -> Deployed");
        assert_eq!(changed[0].hostname, "server2");
        let stored = run.store.maas_machines().await.unwrap();
        let server2 = stored.iter().find(|m| m.hostname == "server2").unwrap();
        assert_eq!((server2.status, server2.status_name.as_str()), (6, "Deployed"));
        run.stop().await;
    })
    .await;
}

#[tokio::test]
async fn maas_down_keeps_the_state_stale_with_its_age_then_recovers() {
    deadline(Duration::from_secs(40), async {
        let run = start_poller().await;
        wait_for("the first poll", Duration::from_secs(10), || async { !run.sync().await.stale }).await;

        // Every request fails from now on, as if MAAS's region were down.
        run.sim.handle.inject(maas_sim::Fault::Status { status: 503, path_prefix: None, count: u32::MAX });
        wait_for("the view to turn stale", Duration::from_secs(10), || async { run.sync().await.stale }).await;
        let first = run.sync().await;
        assert!(first.last_error.as_deref().is_some_and(|e| e.contains("503")), "{first:?}");
        let first_age = first.age_seconds.expect("there was a success before");
        // Several failed polls later: the age grows, the machines stay, and unreachable was said once.
        let failed_before = run.sim.handle.request_log().iter().filter(|r| r.status == 503).count();
        wait_for("three more failed polls", Duration::from_secs(10), || async {
            run.sim.handle.request_log().iter().filter(|r| r.status == 503).count() >= failed_before + 3
        })
        .await;
        let later = run.sync().await;
        assert!(later.stale);
        assert!(later.age_seconds.unwrap() > first_age + 0.3, "{first:?} then {later:?}");
        assert_eq!(later.last_success_at, first.last_success_at);
        assert_eq!(run.store.maas_machines().await.unwrap().len(), 4, "the last known state stays visible");
        let unreachable = run.events.of_kind(kinds::MAAS_UNREACHABLE);
        assert_eq!(unreachable.len(), 1, "{unreachable:?}");
        assert!(unreachable[0].message.starts_with("MAAS unreachable: "), "{}", unreachable[0].message);
        assert!(run.events.of_kind(kinds::MAAS_REACHABLE).is_empty());

        run.sim.handle.clear_faults();
        wait_for("recovery", Duration::from_secs(10), || async { !run.sync().await.stale }).await;
        let recovered = run.sync().await;
        assert_eq!(recovered.last_error, None);
        assert!(recovered.age_seconds.unwrap() < 1.0, "{recovered:?}");
        assert_eq!(run.events.of_kind(kinds::MAAS_REACHABLE).len(), 1);
        assert_eq!(run.events.of_kind(kinds::MAAS_UNREACHABLE).len(), 1);
        run.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_hung_maas_cannot_hold_a_poll_beyond_its_bound() {
    deadline(Duration::from_secs(30), async {
        let sim = sim::start().await;
        let client = sim::client_for(&sim.handle, &sim.handle.api_key(), 3);
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path(), 10).unwrap());
        let events = Arc::new(Events::default());
        let settings = Settings { interval: INTERVAL, poll_timeout: Duration::from_millis(300) };
        let mut poller = Poller::new(client, store.clone(), events.clone(), settings).await.unwrap();
        sim.handle.inject(maas_sim::Fault::Latency { ms: 5_000, path_prefix: None, count: 1 });
        let started = Instant::now();
        let error = poller.poll_once().await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "a poll took {:?}", started.elapsed());
        assert!(error.to_string().contains("within 300ms"), "{error}");
        assert_eq!(store.maas_sync().await.unwrap().last_error, Some(error.to_string()));
        // The next poll (the latency fault is used up) succeeds and says MAAS is back.
        let report = poller.poll_once().await.unwrap();
        assert_eq!((report.machines, report.added), (4, 4));
        assert_eq!(events.of_kind(kinds::MAAS_REACHABLE).len(), 1);
        sim.handle.shutdown().await;
    })
    .await;
}
