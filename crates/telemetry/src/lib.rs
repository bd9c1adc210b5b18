//! Vigil's telemetry: the `tracing` subscriber (filter, text or JSON logs), OpenTelemetry trace
//! export over OTLP switched on by the standard `OTEL_*` variables, W3C trace-context
//! propagation (bus headers use the global propagator installed here; gRPC metadata helpers are
//! in [`grpc`]) and the Prometheus recorder behind `/metrics`.

pub mod grpc;
mod otlp;

use std::str::FromStr;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

pub use otlp::{OtlpProtocol, OtlpSettings};

/// What went wrong setting telemetry up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("invalid log filter {filter:?}: {reason}")]
    Filter {
        /// The filter.
        filter: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The OTLP exporter could not be built.
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(String),
    /// A global subscriber or recorder was already installed.
    #[error("telemetry is already initialized: {0}")]
    AlreadyInitialized(String),
}

/// Result with [`TelemetryError`].
pub type Result<T, E = TelemetryError> = std::result::Result<T, E>;

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?}: expected text or json"
            )),
        }
    }
}

/// Telemetry settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Log filter in `tracing`'s `EnvFilter` syntax, e.g. `info,vigil_bus=debug`. `RUST_LOG`
    /// overrides it.
    pub log_filter: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// `service.name` reported to OpenTelemetry unless `OTEL_SERVICE_NAME` is set.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            // async-nats reports every connection event at INFO, and sea-orm-migration every
            // migration step; Vigil logs the ones an operator needs itself, so the libraries'
            // own lines would only repeat them.
            log_filter: "info,async_nats=warn,sea_orm_migration=warn".into(),
            log_format: LogFormat::Text,
            service_name: "vigil".into(),
        }
    }
}

/// Keeps exporters alive; [`TelemetryGuard::shutdown`] flushes spans not yet exported.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(mut self) {
        if let Some(Err(err)) = self.tracer_provider.take().map(|p| p.shutdown()) {
            tracing::warn!(error = %err, "flushing spans on shutdown failed");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber and propagator. OTLP export is on when `otlp` is given
/// (see [`OtlpSettings::from_env`]).
pub fn init(config: &TelemetryConfig, otlp: Option<OtlpSettings>) -> Result<TelemetryGuard> {
    install_propagator();
    let filter_text = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log_filter.clone());
    let filter = EnvFilter::try_new(&filter_text).map_err(|err| TelemetryError::Filter {
        filter: filter_text.clone(),
        reason: err.to_string(),
    })?;
    let fmt_layer: Box<dyn Layer<Registry> + Send + Sync> = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let mut guard = TelemetryGuard::default();
    let otel_layer = match otlp {
        Some(settings) => {
            let provider = settings.tracer_provider(&config.service_name)?;
            let tracer = provider.tracer("vigil");
            guard.tracer_provider = Some(provider);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .with(filter)
        .try_init()
        .map_err(|err| TelemetryError::AlreadyInitialized(err.to_string()))?;
    Ok(guard)
}

/// Checks a log filter in `EnvFilter` syntax without installing it.
pub fn validate_filter(filter: &str) -> Result<()> {
    EnvFilter::try_new(filter)
        .map(drop)
        .map_err(|err| TelemetryError::Filter {
            filter: filter.to_owned(),
            reason: err.to_string(),
        })
}

/// Installs the W3C trace-context propagator globally (idempotent). The bus and gRPC helpers
/// inject and extract through it.
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

/// Installs the global Prometheus recorder for the `metrics` facade and returns the handle that
/// renders `/metrics`. Also records `vigil_build_info`.
pub fn init_metrics() -> Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|err| TelemetryError::AlreadyInitialized(err.to_string()))?;
    metrics::gauge!("vigil_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_parses_with_reason() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!(
            "xml"
                .parse::<LogFormat>()
                .unwrap_err()
                .contains("expected text or json")
        );
    }
}
