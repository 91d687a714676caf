//! Benchmark: the MAAS poller's load on MAAS and the time of one poll, against maas-sim in-process.
//!
//! Run with `cargo run -p coordinator --example maas_poll_bench` (add `-- 5000` for another large fleet size).
//! For a steady fleet of 4 and of N machines it runs the real poll loop for a fixed time at the default interval
//! (30 s) scaled down 100 times, counts the MAAS requests per poll in maas-sim's request log, and derives the calls
//! per minute at the default interval (calls per poll times two polls a minute). Then it times single polls of the large fleet (list + store
//! update): the first one (every machine new) and steady ones (nothing changed). Nothing here is a test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coordinator::domain::NewEvent;
use coordinator::maas::{self, ApiKey, Client};
use coordinator::poller::{EventSink, Poller, Settings};
use coordinator::store::SqliteStore;
use tokio_util::sync::CancellationToken;

/// The default `[maas] poll_interval`, and how much faster the timed run goes.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const SCALE: u32 = 100;
const RUN_FOR: Duration = Duration::from_secs(3);

struct Discard;

impl EventSink for Discard {
    fn emit(&self, _event: NewEvent) {}
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let large: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(1000);
    for count in [4, large] {
        let sim = start_sim(count).await?;
        let dir = tempfile::tempdir()?;
        let store = Arc::new(SqliteStore::open(dir.path(), 10)?);
        let scaled = DEFAULT_INTERVAL / SCALE;
        let settings = Settings { interval: scaled, poll_timeout: Duration::from_secs(30) };
        let mut poller = Poller::new(client(&sim)?, store.clone(), Arc::new(Discard), settings).await?;
        // The first poll stores every machine; what follows is the steady state.
        let first = poller.poll_once().await?;
        anyhow::ensure!(first.machines == count, "listed {} of {count} machines", first.machines);

        sim.clear_request_log();
        let stop = CancellationToken::new();
        let started = Instant::now();
        let task = tokio::spawn(poller.run(stop.clone()));
        tokio::time::sleep(RUN_FOR).await;
        stop.cancel();
        task.await?;
        let elapsed = started.elapsed();
        let log = sim.request_log();
        let lists = log.iter().filter(|r| r.method == "GET" && r.path == "/MAAS/api/2.0/machines/").count();
        let calls_per_poll = log.len() as f64 / lists.max(1) as f64;
        let per_minute_scaled = log.len() as f64 * 60.0 / elapsed.as_secs_f64();
        // At the default interval a poll (about a second even for 1,000 machines) fits in its 30 s slot, so the
        // rate is calls per poll times polls per minute; the scaled run shows that each poll is one call.
        let per_minute_default = calls_per_poll * 60.0 / DEFAULT_INTERVAL.as_secs_f64();
        println!(
            "machines={count}: {} MAAS calls, {lists} of them GET machines/, in {:.2} s of polling every {:?} \
             ({:.0}/min) -> {:.2} calls per poll -> {:.1} MAAS calls/min at the default {:?} interval",
            log.len(),
            elapsed.as_secs_f64(),
            scaled,
            per_minute_scaled,
            calls_per_poll,
            per_minute_default,
            DEFAULT_INTERVAL,
        );

        if count == large {
            // Fresh store: the first poll inserts every machine; the following ones find nothing changed.
            let dir = tempfile::tempdir()?;
            let store = Arc::new(SqliteStore::open(dir.path(), 10)?);
            let mut poller = Poller::new(client(&sim)?, store, Arc::new(Discard), settings).await?;
            let first = poller.poll_once().await?;
            let mut steady = Vec::new();
            for _ in 0..5 {
                steady.push(poller.poll_once().await?.elapsed);
            }
            steady.sort();
            println!(
                "one poll of {count} machines (list + store update): first (all new) {:.1} ms; steady median {:.1} ms \
                 (min {:.1}, max {:.1})",
                ms(first.elapsed),
                ms(steady[2]),
                ms(steady[0]),
                ms(steady[4]),
            );
        }
        sim.shutdown().await;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn start_sim(count: usize) -> anyhow::Result<maas_sim::Handle> {
    let mut config = maas_sim::Config::for_tests();
    config.enlisted = true;
    config.machines = (0..count).map(maas_sim::MachineSpec::generated).collect();
    maas_sim::start(config).await
}

fn client(sim: &maas_sim::Handle) -> anyhow::Result<Client> {
    let cfg = maas::Config::new(url::Url::parse(&sim.base_url())?, "/unused".into());
    Ok(Client::with_key(&cfg, ApiKey::parse(&sim.api_key()).map_err(anyhow::Error::msg)?)?)
}
