//! OTLP logs over HTTP (`POST /v1/logs`), protobuf (`application/x-protobuf`) and JSON
//! (`application/json`), optionally gzip: what the OpenTelemetry Collector's `otlphttp`
//! exporter and the SDKs send. Each log record becomes one event: its attributes as fields, the
//! body as `message` (a string) or merged fields (a map), severity, trace context, and the
//! resource's attributes under `resource` and the scope under `scope`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::{Map, Value};
use vigil_schema::TenantId;

use crate::body;
use crate::http::{IngestState, Refused, authenticate, of_tenant, publish};
use crate::metric_names;
use crate::normalize::{Incoming, Origin};

/// The OTLP route, to be merged into the ingest router.
pub fn routes() -> Router<IngestState> {
    Router::new().route("/v1/logs", post(logs))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

fn refuse(status: StatusCode, reason: &'static str, message: String) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": message }).to_string(),
    )
        .into_response();
    response.extensions_mut().insert(Refused(reason));
    response
}

async fn logs(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let tenant = match authenticate(&state, &headers).await {
        Ok(tenant) => tenant,
        Err(refusal) => return refusal.into_response(),
    };
    let response = logs_of(&state, &tenant, &headers, body).await;
    of_tenant(response, tenant)
}

async fn logs_of(
    state: &IngestState,
    tenant: &TenantId,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if crate::http::body_timed_out(&rejection) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "slow_body",
                crate::http::slow_body_message(&state.config),
            );
        }
        Err(rejection) => {
            return refuse(
                rejection.status(),
                "body",
                format!("the body could not be read: {rejection}"),
            );
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let encoding = match content_type.as_str() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "encoding",
                format!(
                    "Content-Type {other:?} is not OTLP: use application/x-protobuf or application/json"
                ),
            );
        }
    };
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("(not text)").to_owned());
    let config = state.config_for(tenant);
    if let Err(refusal) = crate::http::check_body_size(&config, &body) {
        return refusal.into_response();
    }
    let normalizer = state.normalizer.clone();
    let worker_tenant = tenant.clone();
    let received = time::OffsetDateTime::now_utc();
    // Keys are per protocol, so one key sent to two endpoints names two requests.
    let key = format!("otlp/{}", crate::http::request_key(headers));
    let events = tokio::task::spawn_blocking(move || {
        let decoded = body::decode(content_encoding.as_deref(), &body, config.max_decoded_bytes)
            .map_err(|err| (crate::http::body_status(&err).0, err.to_string()))?;
        let request = match encoding {
            Encoding::Protobuf => {
                ExportLogsServiceRequest::decode(decoded.as_slice()).map_err(|err| {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("not an OTLP logs request (protobuf): {err}"),
                    )
                })?
            }
            Encoding::Json => serde_json::from_slice::<ExportLogsServiceRequest>(&decoded)
                .map_err(|err| {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("not an OTLP logs request (JSON): {err}"),
                    )
                })?,
        };
        let incoming = records(request);
        if incoming.len() > config.max_events_per_request {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "more than {} log records in one request; split it",
                    config.max_events_per_request
                ),
            ));
        }
        let origin = Origin {
            tenant: &worker_tenant,
            transport: "otlp",
            peer: None,
            request_key: &key,
            received,
        };
        Ok(normalizer.events(&origin, incoming))
    })
    .await;
    let events = match events {
        Ok(Ok(events)) => events,
        Ok(Err((status, message))) => {
            let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "body"
            };
            return refuse(status, reason, message);
        }
        Err(err) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, "other", err.to_string()),
    };
    let count = events.len() as u64;
    if !events.is_empty()
        && let Err(refusal) = publish(state, tenant, events).await
    {
        return refusal.into_response();
    }
    metrics::counter!(metric_names::ACCEPTED, "transport" => "otlp").increment(count);
    let response = ExportLogsServiceResponse::default();
    match encoding {
        Encoding::Protobuf => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            response.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&response).unwrap_or_else(|_| "{}".into()),
        )
            .into_response(),
    }
}

fn any_value(value: &AnyValue) -> Value {
    match &value.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(text)) => text.clone().into(),
        Some(any_value::Value::BoolValue(flag)) => (*flag).into(),
        Some(any_value::Value::IntValue(number)) => (*number).into(),
        Some(any_value::Value::DoubleValue(number)) => {
            serde_json::Number::from_f64(*number).map_or(Value::Null, Value::Number)
        }
        Some(any_value::Value::ArrayValue(array)) => {
            Value::Array(array.values.iter().map(any_value).collect())
        }
        Some(any_value::Value::KvlistValue(list)) => Value::Object(attributes(&list.values)),
        Some(any_value::Value::BytesValue(bytes)) => bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into(),
        #[allow(unreachable_patterns)]
        Some(_) => Value::Null,
    }
}

fn attributes(values: &[KeyValue]) -> Map<String, Value> {
    values
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map_or(Value::Null, any_value),
            )
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One record per OTLP log record.
fn records(request: ExportLogsServiceRequest) -> Vec<Incoming> {
    let mut incoming = Vec::new();
    for resource_logs in request.resource_logs {
        let resource = resource_logs
            .resource
            .as_ref()
            .map(|resource| attributes(&resource.attributes))
            .unwrap_or_default();
        for scope_logs in resource_logs.scope_logs {
            let scope = scope_logs.scope.as_ref().map(|scope| scope.name.clone());
            for log in scope_logs.log_records {
                let mut record = attributes(&log.attributes);
                match log.body.as_ref().map(any_value) {
                    Some(Value::Object(body)) => {
                        for (key, value) in body {
                            record.entry(key).or_insert(value);
                        }
                    }
                    Some(Value::Null) | None => {}
                    Some(Value::String(text)) => {
                        record.insert("message".into(), text.into());
                    }
                    Some(other) => {
                        record.insert("message".into(), other.to_string().into());
                    }
                }
                if !log.severity_text.is_empty() {
                    record.insert("severity".into(), log.severity_text.clone().into());
                }
                if log.severity_number != 0 {
                    record.insert("severity_number".into(), log.severity_number.into());
                }
                if !log.trace_id.is_empty() {
                    record.insert("trace_id".into(), hex(&log.trace_id).into());
                    record.insert("span_id".into(), hex(&log.span_id).into());
                }
                if !resource.is_empty() {
                    record.insert("resource".into(), Value::Object(resource.clone()));
                }
                if let Some(scope) = scope.as_ref().filter(|scope| !scope.is_empty()) {
                    record.insert("scope".into(), scope.clone().into());
                }
                let nanos = if log.time_unix_nano != 0 {
                    log.time_unix_nano
                } else {
                    log.observed_time_unix_nano
                };
                let time = (nanos != 0)
                    .then(|| {
                        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).ok()
                    })
                    .flatten();
                let value = Value::Object(record);
                incoming.push(Incoming {
                    text: value.to_string(),
                    value,
                    time,
                });
            }
        }
    }
    incoming
}
