use std::time::Duration;

use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::{Result, TelemetryError};

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (`grpc`).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (`http/protobuf`, the specification's default).
    HttpProtobuf,
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The collector endpoint; `None` lets the exporter use its own default.
    pub endpoint: Option<String>,
    /// The transport.
    pub protocol: OtlpProtocol,
    /// `service.name`, when `OTEL_SERVICE_NAME` set it.
    pub service_name: Option<String>,
    /// Export timeout.
    pub timeout: Duration,
}

impl OtlpSettings {
    /// Reads the standard variables: export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, unless `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none`. `OTEL_EXPORTER_OTLP_PROTOCOL` picks `grpc` or
    /// `http/protobuf`; `OTEL_SERVICE_NAME` names the service. Headers and certificates are read
    /// by the exporter itself from the same variables.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`OtlpSettings::from_env`], reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let set = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        if endpoint.is_none() && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
            return Ok(None);
        }
        let protocol = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some("grpc") => OtlpProtocol::Grpc,
            Some(other) => {
                return Err(TelemetryError::Exporter(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported: use grpc or http/protobuf"
                )));
            }
        };
        Ok(Some(Self {
            endpoint,
            protocol,
            service_name: set("OTEL_SERVICE_NAME"),
            timeout: Duration::from_secs(10),
        }))
    }

    /// Settings for a gRPC collector at `endpoint` (tests, explicit configuration).
    pub fn grpc(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: Some(endpoint.into()),
            protocol: OtlpProtocol::Grpc,
            service_name: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// Builds a tracer provider exporting in batches.
    pub fn tracer_provider(&self, default_service_name: &str) -> Result<SdkTracerProvider> {
        let exporter = match self.protocol {
            OtlpProtocol::Grpc => {
                let mut builder = SpanExporter::builder()
                    .with_tonic()
                    .with_timeout(self.timeout);
                if let Some(endpoint) = &self.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                builder.build()
            }
            OtlpProtocol::HttpProtobuf => {
                let mut builder = SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_timeout(self.timeout);
                if let Some(endpoint) = &self.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                builder.build()
            }
        }
        .map_err(|err| TelemetryError::Exporter(err.to_string()))?;
        let service_name = self
            .service_name
            .clone()
            .unwrap_or_else(|| default_service_name.to_owned());
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(service_name).build())
            .build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<OtlpSettings>> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtlpSettings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(settings(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
    }

    #[test]
    fn reads_the_standard_variables() {
        let on = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "vigil-detect"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(on.protocol, OtlpProtocol::Grpc);
        assert_eq!(on.service_name.as_deref(), Some("vigil-detect"));
        // The general endpoint is left to the exporter, which appends the signal path.
        assert_eq!(on.endpoint, None);
        let traces = settings(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/v1/traces",
        )])
        .unwrap()
        .unwrap();
        assert_eq!(traces.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(traces.endpoint.as_deref(), Some("http://c:4318/v1/traces"));
    }

    #[test]
    fn can_be_switched_off_and_rejects_unknown_protocols() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
        assert_eq!(
            settings(&[endpoint, ("OTEL_SDK_DISABLED", "true")]).unwrap(),
            None
        );
        assert_eq!(
            settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(),
            None
        );
        let err = settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
        assert!(
            err.to_string().contains("\"http/json\" is not supported"),
            "{err}"
        );
    }
}
