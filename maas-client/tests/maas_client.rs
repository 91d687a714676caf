//! The MAAS client's tests: fixtures, wire format against a stub, and the client against maas-sim.
//!
//! - `fixtures`: every MAAS response document we model parses (ours always, ../shared's when present).
//! - `lab`: the reference lab's MAAS steps from zero, against maas-sim.
//! - `sim`: every client call against maas-sim, success and each error class.
//! - `stub`: the exact OAuth header, form encoding and each error class against a tiny loopback HTTP stub.
#![forbid(unsafe_code)]

#[path = "maas_client/fixtures.rs"]
mod fixtures;
#[path = "maas_client/lab.rs"]
mod lab;
#[path = "maas_client/sim.rs"]
mod sim;
#[path = "maas_client/stub.rs"]
mod stub;

use std::future::Future;
use std::time::Duration;

/// Every async test runs under this outer deadline.
pub async fn deadline<T>(limit: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f).await.expect("test exceeded its deadline")
}

/// A client config for tests: fast backoff, the given retries.
pub fn test_config(url: &str, retries: u32) -> maas_client::Config {
    let mut cfg = maas_client::Config::new(url::Url::parse(url).unwrap(), "/nonexistent/maas.key".into());
    cfg.retries = retries;
    cfg.retry_backoff = Duration::from_millis(5);
    cfg.max_backoff = Duration::from_secs(3);
    cfg.request_timeout = Duration::from_secs(10);
    cfg.connect_timeout = Duration::from_secs(2);
    cfg
}
