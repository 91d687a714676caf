//! Logging set-up of the `agent` binary: a lean `tracing` subscriber on stderr.
//!
//! By default the agent does not link the OpenTelemetry exporter (it would weigh more than the rest of
//! the agent). Build with `--features otel` to use `metalfleet_common::telemetry`, which exports OTLP
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

/// Keeps the subscriber's resources alive; keep it in `main`.
#[must_use = "dropping the guard may stop log export"]
pub struct Guard {
    #[cfg(feature = "otel")]
    _inner: metalfleet_common::telemetry::Guard,
}

/// Installs the subscriber. `RUST_LOG` takes `LEVEL` or `target=LEVEL,...`; `default_filter` applies otherwise.
#[cfg(feature = "otel")]
pub fn init(default_filter: &str) -> Guard {
    Guard { _inner: metalfleet_common::telemetry::init("agent", default_filter) }
}

/// Installs the subscriber. `RUST_LOG` takes `LEVEL` or `target=LEVEL,...`; `default_filter` applies otherwise.
#[cfg(not(feature = "otel"))]
pub fn init(default_filter: &str) -> Guard {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let filter = match from_env.as_deref().map(str::parse::<Targets>) {
        Some(Ok(filter)) => filter,
        Some(Err(error)) => {
            eprintln!("warning: ignoring RUST_LOG ({error}); using {default_filter:?}");
            default_filter.parse().unwrap_or_default()
        }
        None => default_filter.parse().unwrap_or_default(),
    };
    // Colours only on a terminal: logs redirected to files and journald stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).with_ansi(ansi);
    let _ = tracing_subscriber::registry().with(filter).with(fmt).try_init();
    Guard {}
}
