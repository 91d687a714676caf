//! Benchmark hook: the time of one `machines/` list call against maas-sim holding 1,000 Ready machines.
//!
//! Run with `cargo run -p maas-client --example maas_list_1000` (add `-- 5000` for another fleet size).
//! It prints one line per measured call and a summary; nothing here is a test.

use std::time::Instant;

use maas_client::{self as maas, ApiKey, Client, MachineFilter};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let mut config = maas_sim::Config::for_tests();
    config.enlisted = true;
    config.machines = (0..count).map(maas_sim::MachineSpec::generated).collect();
    let sim = maas_sim::start(config).await?;

    let cfg = maas::Config::new(url::Url::parse(&sim.base_url())?, "/unused".into());
    let client = Client::with_key(&cfg, ApiKey::parse(&sim.api_key()).map_err(anyhow::Error::msg)?)?;

    // One warm-up call (connection set-up), then five measured ones.
    let listed = client.machines(&MachineFilter::default()).await?.len();
    anyhow::ensure!(listed == count, "expected {count} machines, listed {listed}");
    let mut times = Vec::new();
    for round in 1..=5 {
        let started = Instant::now();
        let machines = client.machines(&MachineFilter::default()).await?;
        let elapsed = started.elapsed();
        println!("list call {round}: {} machines in {:.1} ms", machines.len(), elapsed.as_secs_f64() * 1e3);
        times.push(elapsed);
    }
    // Where the time goes: the raw HTTP answer (the sim building the JSON) versus the client decoding it.
    let key = ApiKey::parse(&sim.api_key()).map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let body = reqwest::Client::new()
        .get(format!("{}machines/", cfg.api_root()))
        .header("Authorization", maas::oauth::authorization_header(&key))
        .send()
        .await?
        .bytes()
        .await?;
    let fetch = started.elapsed();
    let started = Instant::now();
    let decoded: Vec<maas::Machine> = serde_json::from_slice(&body)?;
    let decode = started.elapsed();
    println!(
        "raw fetch: {} bytes in {:.1} ms; decode of {} machines: {:.1} ms",
        body.len(),
        fetch.as_secs_f64() * 1e3,
        decoded.len(),
        decode.as_secs_f64() * 1e3
    );
    times.sort();
    println!(
        "machines={count} list_ms_median={:.1} list_ms_min={:.1} list_ms_max={:.1}",
        times[2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[4].as_secs_f64() * 1e3
    );
    sim.shutdown().await;
    Ok(())
}
