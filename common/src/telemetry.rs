//! Logging and tracing set-up for a binary: `tracing` to stderr, OTLP when asked for.
//!
//! Library crates only emit `tracing` events; this is the one place that decides where they
//! go. Logs go to stderr so that `--output json` on stdout stays clean.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Flushes and shuts down the OTLP exporter when dropped; keep it alive in `main`.
#[must_use = "dropping the guard stops trace export"]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: flushing traces failed: {error}");
        }
    }
}

/// Installs the global subscriber for `service`.
///
/// `default_filter` applies when `RUST_LOG` is unset (for example `info` for servers and
/// `warn` for command-line tools). OTLP export over gRPC is on only when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set; it needs a running tokio runtime.
pub fn init(service: &'static str, default_filter: &str) -> Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.is_empty());
    let provider = endpoint.and_then(|endpoint| match otlp_provider(service, &endpoint) {
        Ok(provider) => Some(provider),
        Err(error) => {
            eprintln!("warning: OTLP export to {endpoint} disabled: {error}");
            None
        }
    });
    let otel = provider.as_ref().map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service)));
    // A second init (tests calling into a binary's library) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init();
    Guard { provider }
}

fn otlp_provider(
    service: &'static str,
    endpoint: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}
