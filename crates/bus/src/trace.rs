//! W3C trace context in bus headers, so that one event's path through the services is one trace.
//!
//! Uses the global text-map propagator that `vigil-telemetry` installs (W3C `traceparent` and
//! `tracestate`); without it nothing is injected and extraction yields an empty context.

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::Headers;

struct HeaderInjector<'a>(&'a mut Headers);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value);
    }
}

struct HeaderExtractor<'a>(&'a Headers);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.names().collect()
    }
}

/// Writes the current span's context into `headers`.
pub fn inject_current(headers: &mut Headers) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}

/// Reads the publisher's context from `headers`.
pub fn extract(headers: &Headers) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    })
}
