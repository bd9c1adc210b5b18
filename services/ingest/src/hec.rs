//! Splunk HTTP Event Collector compatibility, so that existing HEC senders (Splunk forwarders,
//! Vector, Fluent Bit, the OpenTelemetry Collector's splunk_hec exporter) work unchanged:
//! `POST /services/collector/event` (concatenated HEC JSON events), `POST
//! /services/collector/raw` (lines), `GET /services/collector/health`, `POST
//! /services/collector/ack`, `Authorization: Splunk <token>`, and HEC's status codes and bodies.
//!
//! Indexer acknowledgement: a request with a channel (`X-Splunk-Request-Channel` or
//! `?channel=`) gets an `ackId`. Vigil answers only after the bus durably accepted the events,
//! so every ack id it has handed out is already acknowledged. Channels are the tenant's own:
//! another tenant naming the same channel has its own ids and learns nothing of these.
//! A sender that retries a request with the same `Idempotency-Key` header has its events
//! stored once, as on `/v1/events`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value};
use vigil_schema::TenantId;

use crate::body::{self, BodyError};
use crate::http::{IngestState, Refused, of_tenant, publish, verify_ingest};
use crate::metric_names;
use crate::normalize::{Incoming, Origin};

/// The most channels remembered per tenant for acknowledgements; beyond it that tenant's are
/// forgotten (its senders see their ids as unacknowledged and resend, which idempotency keys
/// make harmless), never another tenant's.
const MAX_CHANNELS_PER_TENANT: usize = 10_000;

/// Ack ids handed out per tenant and channel: every id below the counter is acknowledged.
#[derive(Debug, Default, Clone)]
pub struct Channels {
    next: Arc<Mutex<HashMap<TenantId, HashMap<String, u64>>>>,
}

impl Channels {
    fn issue(&self, tenant: &TenantId, channel: &str) -> u64 {
        let mut next = match self.next.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let channels = next.entry(tenant.clone()).or_default();
        if channels.len() >= MAX_CHANNELS_PER_TENANT && !channels.contains_key(channel) {
            channels.clear();
        }
        let counter = channels.entry(channel.to_owned()).or_insert(0);
        let id = *counter;
        *counter += 1;
        id
    }

    fn acknowledged(&self, tenant: &TenantId, channel: &str, id: u64) -> bool {
        let next = match self.next.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        next.get(tenant)
            .and_then(|channels| channels.get(channel))
            .is_some_and(|counter| id < *counter)
    }
}

/// HEC's answer: `{"text": ..., "code": ...}` plus extras.
fn answer(status: StatusCode, code: u16, text: &str, extra: Option<(&str, Value)>) -> Response {
    let mut body = serde_json::json!({ "text": text, "code": code });
    if let Some((key, value)) = extra {
        body[key] = value;
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let mut response = (
            status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::RETRY_AFTER, "1"),
            ],
            body.to_string(),
        )
            .into_response();
        response.extensions_mut().insert(Refused("bus"));
        response.headers_mut().remove(header::CONTENT_LENGTH);
        return response;
    }
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if status != StatusCode::OK {
        let reason = match code {
            2..=4 => "token",
            5 | 6 | 12 | 13 => "body",
            9 => "bus",
            10 => "channel",
            _ => "other",
        };
        response.extensions_mut().insert(Refused(reason));
    }
    response
}

/// A refused HEC request: status, HEC code and text, and the event it is about.
#[derive(Debug)]
struct HecError {
    status: StatusCode,
    code: u16,
    text: String,
    event: Option<usize>,
}

impl HecError {
    fn new(status: StatusCode, code: u16, text: impl Into<String>) -> Self {
        Self {
            status,
            code,
            text: text.into(),
            event: None,
        }
    }

    fn at(mut self, event: usize) -> Self {
        self.event = Some(event);
        self
    }
}

impl IntoResponse for HecError {
    fn into_response(self) -> Response {
        answer(
            self.status,
            self.code,
            &self.text,
            self.event
                .map(|index| ("invalid-event-number", Value::from(index))),
        )
    }
}

/// Turns a decoded body into records.
type Parser = fn(&[u8], &Params, &crate::Config) -> Result<Vec<Incoming>, HecError>;

/// The HEC routes, to be merged into the ingest router.
pub fn routes() -> Router<IngestState> {
    Router::new()
        .route("/services/collector", post(event))
        .route("/services/collector/event", post(event))
        .route("/services/collector/event/1.0", post(event))
        .route("/services/collector/raw", post(raw))
        .route("/services/collector/raw/1.0", post(raw))
        .route("/services/collector/health", get(health))
        .route("/services/collector/health/1.0", get(health))
        .route("/services/collector/ack", post(ack))
}

async fn health() -> Response {
    answer(StatusCode::OK, 17, "HEC is healthy", None)
}

async fn authenticate(state: &IngestState, headers: &HeaderMap) -> Result<TenantId, Response> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(answer(
            StatusCode::UNAUTHORIZED,
            2,
            "Token is required",
            None,
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Splunk "))
        .ok_or_else(|| answer(StatusCode::UNAUTHORIZED, 3, "Invalid authorization", None))?;
    let tenant = verify_ingest(state, token.trim())
        .await
        .map_err(|_| answer(StatusCode::FORBIDDEN, 4, "Invalid token", None))?;
    if let Err((status, message)) = crate::http::check_tenant_headers(headers, &tenant) {
        let mut response = answer(status, 4, &message, None);
        response.extensions_mut().insert(Refused("tenant_header"));
        return Err(of_tenant(response, tenant));
    }
    Ok(tenant)
}

/// Request parameters HEC senders pass in the query string.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Params {
    channel: Option<String>,
    host: Option<String>,
    source: Option<String>,
    sourcetype: Option<String>,
    index: Option<String>,
}

fn channel(headers: &HeaderMap, params: &Params) -> Option<String> {
    headers
        .get("x-splunk-request-channel")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| params.channel.clone())
        .filter(|channel| !channel.is_empty() && channel.len() <= 128)
}

fn body_error(err: &BodyError) -> HecError {
    match err {
        BodyError::Empty => HecError::new(StatusCode::BAD_REQUEST, 5, "No data"),
        BodyError::TooLarge { .. } | BodyError::TooManyRecords { .. } => {
            HecError::new(StatusCode::PAYLOAD_TOO_LARGE, 6, err.to_string())
        }
        BodyError::Json { index, .. } | BodyError::NotObject { index, .. } => {
            HecError::new(StatusCode::BAD_REQUEST, 6, "Invalid data format").at(*index)
        }
        BodyError::TooDeep { index, .. } => {
            HecError::new(StatusCode::BAD_REQUEST, 6, err.to_string()).at(*index)
        }
        _ => HecError::new(StatusCode::BAD_REQUEST, 6, err.to_string()),
    }
}

/// HEC metadata kept on the record under `hec`.
fn metadata(event: &Map<String, Value>, params: &Params) -> Map<String, Value> {
    let mut hec = Map::new();
    for (key, fallback) in [
        ("host", &params.host),
        ("source", &params.source),
        ("sourcetype", &params.sourcetype),
        ("index", &params.index),
    ] {
        let value = event
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| fallback.clone());
        if let Some(value) = value {
            hec.insert(key.to_owned(), value.into());
        }
    }
    hec
}

fn hec_time(value: Option<&Value>) -> Option<time::OffsetDateTime> {
    let seconds = match value? {
        Value::Number(number) => number.as_f64()?,
        Value::String(text) => text.trim().parse().ok()?,
        _ => return None,
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return None;
    }
    time::OffsetDateTime::from_unix_timestamp_nanos((seconds * 1e9) as i128).ok()
}

/// HEC events to records; the error is HEC's answer naming the event.
fn hec_events(
    decoded: &[u8],
    params: &Params,
    config: &crate::Config,
) -> Result<Vec<Incoming>, HecError> {
    // The envelope (`{"event": ...}`) is one level above the event.
    let records = body::records_within::<Value>(
        decoded,
        config.max_events_per_request,
        config.max_depth.saturating_add(1),
    )
    .map_err(|err| body_error(&err))?;
    let mut incoming = Vec::with_capacity(records.len());
    for (index, record) in records.into_iter().enumerate() {
        let Value::Object(envelope) = record.value else {
            return Err(body_error(&BodyError::NotObject {
                index,
                kind: "value",
            }));
        };
        let bad =
            |code: u16, text: &str| HecError::new(StatusCode::BAD_REQUEST, code, text).at(index);
        let event = envelope
            .get("event")
            .ok_or_else(|| bad(12, "Event field is required"))?;
        let mut value = match event {
            Value::Object(object) if !object.is_empty() => object.clone(),
            Value::String(text) if !text.trim().is_empty() => {
                let mut object = Map::new();
                object.insert("message".into(), text.clone().into());
                object
            }
            Value::Null | Value::Object(_) | Value::String(_) => {
                return Err(bad(13, "Event field cannot be blank"));
            }
            other => {
                let mut object = Map::new();
                object.insert("message".into(), other.to_string().into());
                object
            }
        };
        if let Some(Value::Object(fields)) = envelope.get("fields") {
            for (key, field) in fields {
                value.entry(key.clone()).or_insert_with(|| field.clone());
            }
        }
        let hec = metadata(&envelope, params);
        if !hec.is_empty() {
            value.entry("hec").or_insert(Value::Object(hec));
        }
        incoming.push(Incoming {
            time: hec_time(envelope.get("time")),
            text: record.text.to_owned(),
            value: Value::Object(value),
        });
    }
    Ok(incoming)
}

/// Raw HEC: one event per non-empty line, recognized as syslog where it is.
fn raw_events(
    decoded: &[u8],
    params: &Params,
    config: &crate::Config,
) -> Result<Vec<Incoming>, HecError> {
    let max = config.max_events_per_request;
    let text = std::str::from_utf8(decoded).map_err(|err| {
        body_error(&BodyError::Utf8 {
            offset: err.valid_up_to(),
        })
    })?;
    let hec = metadata(&Map::new(), params);
    let mut incoming = Vec::new();
    for line in text
        .lines()
        .map(str::trim_end)
        .filter(|line| !line.trim().is_empty())
    {
        if incoming.len() >= max {
            return Err(body_error(&BodyError::TooManyRecords { limit: max }));
        }
        let mut value = vigil_sigma::source::syslog_record(line);
        if let Value::Object(object) = &mut value
            && !hec.is_empty()
        {
            object.entry("hec").or_insert(Value::Object(hec.clone()));
        }
        incoming.push(Incoming {
            value,
            text: line.to_owned(),
            time: None,
        });
    }
    if incoming.is_empty() {
        return Err(body_error(&BodyError::Empty));
    }
    Ok(incoming)
}

async fn event(
    State(state): State<IngestState>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    accept(state, params, headers, body, hec_events).await
}

async fn raw(
    State(state): State<IngestState>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    accept(state, params, headers, body, raw_events).await
}

async fn accept(
    state: IngestState,
    params: Params,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    parse: Parser,
) -> Response {
    let tenant = match authenticate(&state, &headers).await {
        Ok(tenant) => tenant,
        Err(response) => return response,
    };
    let response = accept_for(&state, &tenant, params, &headers, body, parse).await;
    of_tenant(response, tenant)
}

async fn accept_for(
    state: &IngestState,
    tenant: &TenantId,
    params: Params,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    parse: Parser,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let mut response = answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                6,
                &format!("the body exceeds {} bytes", state.config.max_body_bytes),
                None,
            );
            response.extensions_mut().insert(Refused("too_large"));
            return response;
        }
        Err(rejection) if crate::http::body_timed_out(&rejection) => {
            let mut response = answer(
                StatusCode::REQUEST_TIMEOUT,
                6,
                &crate::http::slow_body_message(&state.config),
                None,
            );
            response.extensions_mut().insert(Refused("slow_body"));
            return response;
        }
        Err(rejection) => {
            return answer(StatusCode::BAD_REQUEST, 6, &rejection.to_string(), None);
        }
    };
    let channel = channel(headers, &params);
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("(not text)").to_owned());
    let config = state.config_for(tenant);
    if let Err(refusal) = crate::http::check_body_size(&config, &body) {
        let mut response = answer(StatusCode::PAYLOAD_TOO_LARGE, 6, &refusal.message, None);
        response.extensions_mut().insert(Refused(refusal.reason));
        return response;
    }
    let normalizer = state.normalizer.clone();
    let received = time::OffsetDateTime::now_utc();
    // Keys are per protocol, so one key sent to two endpoints names two requests.
    let request_key = format!("hec/{}", crate::http::request_key(headers));
    let worker_tenant = tenant.clone();
    let events = tokio::task::spawn_blocking(move || {
        let decoded = body::decode(encoding.as_deref(), &body, config.max_decoded_bytes)
            .map_err(|err| body_error(&err))?;
        let incoming = parse(&decoded, &params, &config)?;
        let origin = Origin {
            tenant: &worker_tenant,
            transport: "hec",
            peer: None,
            request_key: &request_key,
            received,
        };
        Ok::<_, HecError>(normalizer.events(&origin, incoming))
    })
    .await;
    let events = match events {
        Ok(Ok(events)) => events,
        Ok(Err(refusal)) => return refusal.into_response(),
        Err(err) => {
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                8,
                &format!("Internal server error: {err}"),
                None,
            );
        }
    };
    let count = events.len() as u64;
    if let Err(refusal) = publish(state, tenant, events).await {
        // Over the tenant's rate or the bus is slow: HEC's "busy", which senders retry.
        let mut response = if refusal.status == StatusCode::PAYLOAD_TOO_LARGE {
            // An event over the size or field limits, or more events than the tenant's burst.
            answer(StatusCode::PAYLOAD_TOO_LARGE, 6, &refusal.message, None)
        } else {
            answer(StatusCode::SERVICE_UNAVAILABLE, 9, "Server is busy", None)
        };
        if let Some(seconds) = refusal.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        response.extensions_mut().insert(Refused(refusal.reason));
        return response;
    }
    metrics::counter!(metric_names::ACCEPTED, "transport" => "hec").increment(count);
    match channel {
        Some(channel) => {
            let id = state.channels.issue(tenant, &channel);
            answer(StatusCode::OK, 0, "Success", Some(("ackId", id.into())))
        }
        None => answer(StatusCode::OK, 0, "Success", None),
    }
}

async fn ack(
    State(state): State<IngestState>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let tenant = match authenticate(&state, &headers).await {
        Ok(tenant) => tenant,
        Err(response) => return response,
    };
    let response = acks(&state, &tenant, &params, &headers, &body);
    of_tenant(response, tenant)
}

fn acks(
    state: &IngestState,
    tenant: &TenantId,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let Some(channel) = channel(headers, params) else {
        return answer(StatusCode::BAD_REQUEST, 10, "Data channel is missing", None);
    };
    let ids: Vec<u64> = match serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|value| value.get("acks").cloned())
        .and_then(|acks| serde_json::from_value(acks).ok())
    {
        Some(ids) => ids,
        None => return answer(StatusCode::BAD_REQUEST, 6, "Invalid data format", None),
    };
    let acks: Map<String, Value> = ids
        .into_iter()
        .take(10_000)
        .map(|id| {
            (
                id.to_string(),
                state.channels.acknowledged(tenant, &channel, id).into(),
            )
        })
        .collect();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "acks": acks }).to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant that opens more channels than its cap forgets its own, never another's.
    #[test]
    fn the_channel_cap_is_per_tenant() {
        let channels = Channels::default();
        let (acme, globex) = (
            TenantId::new("acme").unwrap(),
            TenantId::new("globex").unwrap(),
        );
        assert_eq!(channels.issue(&globex, "forwarder"), 0);
        assert_eq!(channels.issue(&acme, "forwarder"), 0);
        for n in 0..MAX_CHANNELS_PER_TENANT {
            channels.issue(&acme, &format!("flood-{n}"));
        }
        assert!(channels.acknowledged(&globex, "forwarder", 0));
        assert!(!channels.acknowledged(&acme, "forwarder", 0));
        // The channel that came after the reset is remembered.
        let last = format!("flood-{}", MAX_CHANNELS_PER_TENANT - 1);
        assert!(channels.acknowledged(&acme, &last, 0));
    }
}
