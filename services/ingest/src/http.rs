//! `POST /v1/events`: a JSON object, a JSON array or NDJSON, identity, gzip or zstd, with a
//! Bearer ingest token. The tenant comes from the verified token only. The answer is 200 only
//! after the bus durably accepted every event of the request.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use vigil_auth::{Action, Principal, Role, Scope, Target};
use vigil_bus::{Bus, OutgoingMessage};
use vigil_runtime::trust::OnDemandVerifier;
use vigil_schema::{EventBatch, TenantId};

use crate::body::{self, BodyError};
use crate::normalize::{Normalizer, Origin};
use crate::{Config, metric_names};

/// What the HTTP endpoints share.
#[derive(Debug, Clone)]
pub struct IngestState {
    /// The bus events are published to.
    pub bus: Arc<dyn Bus>,
    /// Verifies ingest tokens (reloading keys from the store on an unknown key).
    pub verifier: OnDemandVerifier,
    /// Turns records into events.
    pub normalizer: Normalizer,
    /// Limits.
    pub config: Arc<Config>,
    /// Splunk HEC acknowledgement channels.
    pub channels: crate::hec::Channels,
    /// Per-tenant rate limits.
    pub rates: Arc<crate::limits::TenantRates>,
    /// The configuration of tenants with limits of their own.
    pub tenant_configs: Arc<std::collections::HashMap<TenantId, Arc<Config>>>,
}

impl IngestState {
    /// The configuration as it applies to `tenant`'s requests.
    pub fn config_for(&self, tenant: &TenantId) -> Arc<Config> {
        self.tenant_configs
            .get(tenant)
            .map_or_else(|| Arc::clone(&self.config), Arc::clone)
    }
}

/// Refuses a body over the tenant's own bound (the listener reads up to the ingest-wide one).
pub(crate) fn check_body_size(config: &Config, body: &[u8]) -> Result<(), Refusal> {
    if body.len() > config.max_body_bytes {
        return Err(refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body exceeds {} bytes", config.max_body_bytes),
        ));
    }
    Ok(())
}

/// The ingest HTTP router.
pub fn router(state: IngestState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/v1/events", post(events))
        .merge(crate::hec::routes())
        .merge(crate::otlp::routes())
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            std::time::Duration::from_secs(state.config.body_timeout_secs.max(1)),
        ))
        .layer(axum::middleware::from_fn(count_refusals))
        .with_state(state)
}

/// Why a request was refused, carried on its response for [`count_refusals`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused(pub(crate) &'static str);

/// The tenant whose token a request carried, carried on its response for [`count_refusals`].
#[derive(Debug, Clone)]
pub(crate) struct Authenticated(pub(crate) TenantId);

/// Marks `response` as the answer to a request of `tenant`.
pub(crate) fn of_tenant(mut response: Response, tenant: TenantId) -> Response {
    response.extensions_mut().insert(Authenticated(tenant));
    response
}

/// Counts every refused request of every endpoint once, by tenant (empty when no token was
/// verified) and reason.
async fn count_refusals(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    if let Some(Refused(reason)) = response.extensions().get::<Refused>().copied() {
        let tenant = response
            .extensions()
            .get::<Authenticated>()
            .map_or_else(String::new, |Authenticated(tenant)| tenant.to_string());
        metrics::counter!(metric_names::REFUSED, "tenant" => tenant, "reason" => reason)
            .increment(1);
    }
    response
}

/// A refused request: status and a JSON body `{"error": "..."}` naming the problem.
#[derive(Debug)]
pub struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    /// Seconds after which a retry may succeed (rate limits).
    pub(crate) retry_after: Option<u64>,
    /// The reason it is counted under.
    pub(crate) reason: &'static str,
    /// The tenant whose verified token the request carried, when it is refused after all.
    pub(crate) tenant: Option<TenantId>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
            reason: "internal",
            tenant: None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message }).to_string();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        response.extensions_mut().insert(Refused(self.reason));
        if let Some(tenant) = self.tenant {
            response.extensions_mut().insert(Authenticated(tenant));
        }
        if let Some(seconds) = self.retry_after {
            // Over the tenant's rate: nothing was acknowledged, retry after this long.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        } else if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // The bus is slow or down: nothing was acknowledged, and the sender should retry.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

fn refused(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        ..Refusal::new(status, message)
    }
}

/// The tenant of a verified ingest token; the error says why the token was refused.
pub(crate) async fn verify_ingest(
    state: &IngestState,
    token: &str,
) -> Result<TenantId, (StatusCode, String)> {
    let principal: Principal = state
        .verifier
        .verify(token)
        .await
        .map_err(|err| (StatusCode::UNAUTHORIZED, err.to_string()))?;
    let tenant = match (&principal.role, &principal.scope) {
        (Role::Ingest, Scope::Tenants(tenants)) if tenants.len() == 1 => {
            tenants.iter().next().cloned()
        }
        _ => None,
    }
    .ok_or_else(|| {
        (
            StatusCode::FORBIDDEN,
            format!(
                "a {} token cannot send events; use an ingest token",
                principal.role
            ),
        )
    })?;
    principal
        .require(Action::EventWrite, Target::Tenant(&tenant))
        .map_err(|err| (StatusCode::FORBIDDEN, err.to_string()))?;
    Ok(tenant)
}

/// Request headers that name a tenant in other systems (Vigil's own, the common `X-Tenant-Id`,
/// Loki's and Mimir's `X-Scope-OrgID`). Vigil takes the tenant from the token only, so a header
/// naming another tenant is refused rather than silently overruled: the sender is misconfigured
/// or trying to write into another tenant.
const TENANT_HEADERS: [&str; 3] = ["x-vigil-tenant", "x-tenant-id", "x-scope-orgid"];

/// Refuses a request whose headers name a tenant other than its token's.
pub(crate) fn check_tenant_headers(
    headers: &HeaderMap,
    tenant: &TenantId,
) -> Result<(), (StatusCode, String)> {
    for name in TENANT_HEADERS {
        for value in headers.get_all(name) {
            let claimed = value.to_str().unwrap_or("(not text)").trim();
            if claimed != tenant.as_str() {
                return Err((
                    StatusCode::FORBIDDEN,
                    format!(
                        "the token is tenant {tenant}'s but the {name} header names {claimed:?}; the tenant comes from the token only"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The verified ingest principal and its one tenant.
pub(crate) async fn authenticate(
    state: &IngestState,
    headers: &HeaderMap,
) -> Result<TenantId, Refusal> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            refused(
                StatusCode::UNAUTHORIZED,
                "no_token",
                "missing Authorization: Bearer <ingest token>",
            )
        })?
        .to_str()
        .map_err(|_| {
            refused(
                StatusCode::UNAUTHORIZED,
                "bad_header",
                "the Authorization header is not text",
            )
        })?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| {
            refused(
                StatusCode::UNAUTHORIZED,
                "bad_header",
                "Authorization must be Bearer <ingest token>",
            )
        })?;
    let tenant = verify_ingest(state, token.trim())
        .await
        .map_err(|(status, message)| {
            let reason = if status == StatusCode::FORBIDDEN {
                "role"
            } else {
                "token"
            };
            refused(status, reason, message)
        })?;
    if let Err((status, message)) = check_tenant_headers(headers, &tenant) {
        return Err(Refusal {
            tenant: Some(tenant),
            ..refused(status, "tenant_header", message)
        });
    }
    Ok(tenant)
}

/// The status and reason of a body that cannot be read.
pub(crate) fn body_status(err: &BodyError) -> (StatusCode, &'static str) {
    match err {
        BodyError::Encoding(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "encoding"),
        BodyError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        BodyError::TooManyRecords { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many"),
        BodyError::TooDeep { .. } => (StatusCode::BAD_REQUEST, "too_deep"),
        _ => (StatusCode::BAD_REQUEST, "body"),
    }
}

fn body_refusal(err: BodyError) -> Refusal {
    let (status, reason) = body_status(&err);
    refused(status, reason, err.to_string())
}

async fn events(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // The token first: an unauthenticated sender learns nothing about body handling.
    let tenant = match authenticate(&state, &headers).await {
        Ok(tenant) => tenant,
        Err(refusal) => return refusal.into_response(),
    };
    let response = accept_events(&state, &tenant, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    of_tenant(response, tenant)
}

async fn accept_events(
    state: &IngestState,
    tenant: &TenantId,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Refusal> {
    let body = body.map_err(|rejection| {
        if body_timed_out(&rejection) {
            return refused(
                StatusCode::REQUEST_TIMEOUT,
                "slow_body",
                slow_body_message(&state.config),
            );
        }
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the body exceeds {} bytes", state.config.max_body_bytes)
        } else {
            format!("the body could not be read: {rejection}")
        };
        let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "body"
        };
        refused(status, reason, message)
    })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("(not text)"));
    let config = state.config_for(tenant);
    check_body_size(&config, &body)?;
    let normalizer = state.normalizer.clone();
    let request_key = request_key(headers);
    let encoding = encoding.map(str::to_owned);
    let received = time::OffsetDateTime::now_utc();
    let tenant_for_work = tenant.clone();
    // Decompressing, parsing and normalizing are CPU work: off the async workers.
    let events = tokio::task::spawn_blocking(move || {
        let decoded = body::decode(encoding.as_deref(), &body, config.max_decoded_bytes)?;
        let origin = Origin {
            tenant: &tenant_for_work,
            transport: "http",
            peer: None,
            request_key: &request_key,
            received,
        };
        let max = config.max_events_per_request;
        // Without a custom parser, records are read straight into fields.
        let events = if normalizer.has_parser(&tenant_for_work) {
            body::records_within::<serde_json::Value>(&decoded, max, config.max_depth)?
                .into_iter()
                .enumerate()
                .map(|(index, record)| normalizer.event(&origin, index, record.value, record.text))
                .collect::<Vec<_>>()
        } else {
            body::records_within::<body::FlatObject>(&decoded, max, config.max_depth)?
                .into_iter()
                .enumerate()
                .map(|(index, record)| {
                    normalizer.event_from_fields(&origin, index, record.value.0, record.text)
                })
                .collect()
        };
        Ok::<_, BodyError>(events)
    })
    .await
    .map_err(|err| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("normalizing failed: {err}"),
        )
    })?
    .map_err(body_refusal)?;

    let count = events.len();
    publish(state, tenant, events).await?;
    metrics::counter!(metric_names::ACCEPTED, "transport" => "http").increment(count as u64);
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "accepted": count }).to_string(),
    )
        .into_response())
}

/// The request's idempotency key: the client's `Idempotency-Key` (1-200 bytes of text), else a
/// fresh one. A retried request with the same key yields the same event ids, which the bus
/// drops as duplicates; ids also derive from the tenant, so tenants cannot collide.
pub(crate) fn request_key(headers: &HeaderMap) -> String {
    headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .filter(|key| !key.is_empty() && key.len() <= 200)
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned)
}

/// Whether the body failed because the client sent nothing for `body_timeout_secs`.
pub(crate) fn body_timed_out(rejection: &BytesRejection) -> bool {
    let mut error: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(current) = error {
        if current.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        error = current.source();
    }
    false
}

/// What a slow sender is told; nothing of its request was accepted.
pub(crate) fn slow_body_message(config: &Config) -> String {
    format!(
        "the body stalled: no data for {} s; nothing was accepted, send the request again",
        config.body_timeout_secs
    )
}

/// Takes the events from the tenant's rate, or refuses them all: 429 with `Retry-After` when
/// over the rate, 413 when the request alone exceeds the tenant's burst.
pub(crate) fn admit(state: &IngestState, tenant: &TenantId, events: usize) -> Result<(), Refusal> {
    match state.rates.admit(tenant, events) {
        Ok(()) => Ok(()),
        Err(limited) => {
            metrics::counter!(metric_names::RATE_LIMITED, "tenant" => tenant.to_string())
                .increment(events as u64);
            Err(match limited {
                crate::limits::Limited::Wait(wait) => {
                    let mut refusal = refused(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate",
                        format!(
                            "tenant {tenant} is over its rate of {} events per second; nothing was accepted, retry later",
                            state.rates.rate(tenant).events_per_sec
                        ),
                    );
                    refusal.retry_after = Some(wait.as_secs().max(1));
                    refusal
                }
                crate::limits::Limited::TooMany { events, burst } => refused(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "rate",
                    format!(
                        "{events} events in one request exceed tenant {tenant}'s burst of {burst}; send smaller requests"
                    ),
                ),
            })
        }
    }
}

/// Publishes the events in batches and waits until the bus acknowledged every one, once the
/// tenant's rate admits them.
pub(crate) async fn publish(
    state: &IngestState,
    tenant: &TenantId,
    events: Vec<vigil_schema::Event>,
) -> Result<(), Refusal> {
    check_events(&state.config_for(tenant), &events)?;
    admit(state, tenant, events.len())?;
    publish_admitted(state, tenant, events).await
}

/// Refuses the whole request when one event is larger, or has more fields, than the limits.
fn check_events(config: &Config, events: &[vigil_schema::Event]) -> Result<(), Refusal> {
    for (index, event) in events.iter().enumerate() {
        let size = event.raw.as_ref().map_or(0, |raw| raw.original_len);
        if size > config.max_event_bytes as u64 {
            return Err(refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                "event_too_large",
                format!(
                    "record {index} is {size} bytes; at most {} per event",
                    config.max_event_bytes
                ),
            ));
        }
        if event.fields.len() > config.max_fields {
            return Err(refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_fields",
                format!(
                    "record {index} has {} fields; at most {} per event",
                    event.fields.len(),
                    config.max_fields
                ),
            ));
        }
    }
    Ok(())
}

/// Publishes events the rate already admitted.
pub(crate) async fn publish_admitted(
    state: &IngestState,
    tenant: &TenantId,
    events: Vec<vigil_schema::Event>,
) -> Result<(), Refusal> {
    let batches = batches(state, tenant, events);
    publish_batches(state, &batches).await.map_err(|err| {
        tracing::warn!(tenant = %tenant, error = %err, "publishing events failed");
        refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "bus",
            "the events could not be stored durably; nothing was acknowledged, retry",
        )
    })
}

/// The events as the bus carries them: batches of at most `batch_events`.
pub(crate) fn batches(
    state: &IngestState,
    tenant: &TenantId,
    events: Vec<vigil_schema::Event>,
) -> Vec<EventBatch> {
    let mut batches = Vec::new();
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        batches.push(EventBatch {
            tenant: tenant.clone(),
            events: events
                .by_ref()
                .take(state.config.batch_events.max(1))
                .collect(),
        });
    }
    batches
}

/// Publishes the batches and waits until the bus acknowledged every one. Publishing the same
/// batches again after a failure stores nothing twice: a batch's message id derives from its
/// events' ids, and the bus drops a message id it already holds.
pub(crate) async fn publish_batches(
    state: &IngestState,
    batches: &[EventBatch],
) -> Result<(), vigil_bus::BusError> {
    let mut acks = Vec::with_capacity(batches.len());
    for batch in batches {
        let message = OutgoingMessage::encode_compressed(batch, batch.message_id())?;
        acks.push(state.bus.publish(message).await?);
    }
    for ack in acks {
        ack.await?;
    }
    Ok(())
}
