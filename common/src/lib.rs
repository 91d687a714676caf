//! What every metalfleet binary shares: config loading with precise errors, exit codes,
//! telemetry, shutdown on signals and the readiness line.
//!
//! Layout:
//! - [`config`]: TOML files into typed structs; errors name the file, line and key.
//! - [`exit`]: the exit codes of DESIGN.md's conventions.
//! - [`telemetry`] (feature `telemetry`, on by default): `tracing` to stderr, plus OTLP export when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! - [`shutdown`]: SIGTERM/SIGINT cancel a root `CancellationToken`.
//! - [`readiness`]: the `listening addr=HOST:PORT` line that tests and scripts wait for.
//! - [`secret`]: the redacting [`secret::Secret`] and the checks that refuse a secret file open to group or others.
#![forbid(unsafe_code)]

pub mod config;
pub mod exit;
pub mod readiness;
pub mod secret;
pub mod shutdown;
#[cfg(feature = "telemetry")]
pub mod telemetry;
