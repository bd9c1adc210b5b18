//! The gRPC services. Each handler: authenticate (the interceptor), parse and validate the
//! request, authorize against the principal's role and scope before reading anything, then act
//! in one transaction that also writes the audit record.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use vigil_auth::{
    Action, MasterKey, Principal, Role, Scope, SigningKey, Target, TokenRequest, Verifier,
};
use vigil_proto::control::v1 as pb;
use vigil_proto::control::v1::alert_service_server::{AlertService, AlertServiceServer};
use vigil_proto::control::v1::audit_service_server::{AuditService, AuditServiceServer};
use vigil_proto::control::v1::intel_service_server::{IntelService, IntelServiceServer};
use vigil_proto::control::v1::rule_service_server::{RuleService, RuleServiceServer};
use vigil_proto::control::v1::tenant_service_server::{TenantService, TenantServiceServer};
use vigil_schema::{Actor, Alert, AuditId, AuditOutcome, AuditRecord, Level, TenantId};
use vigil_store::{
    AlertQuery, AuditPage, NewRule, OverrideRecord, PrincipalRecord, RuleRecord, Store, StoreError,
    TenantRecord, TenantState, TokenRecord, Transaction,
};

use crate::{Config, Shared, intel, key_record, now_micros, token_record};
use vigil_runtime::trust;

/// Longest validity of any token.
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// Most rules in one push.
const MAX_RULES_PER_PUSH: usize = 10_000;
/// Most sample events in one rule test.
const MAX_TEST_EVENTS: usize = 10_000;
/// Largest page of alerts or audit records.
const MAX_PAGE: u32 = 1000;

/// The control-plane API; one value serves every service.
#[derive(Debug, Clone)]
pub struct ControlApi {
    shared: Shared,
}

impl ControlApi {
    /// The API over `store`, trusting what `verifier` trusts.
    pub fn new(store: Store, verifier: Verifier, master: MasterKey, config: Config) -> Self {
        Self {
            shared: Shared {
                store,
                verifier,
                master: Arc::new(master),
                config: Arc::new(config),
            },
        }
    }
}

type Intercepted<S> = InterceptedService<S, Authenticate>;

/// Verifies the bearer token of every call and attaches the [`Principal`] to the request.
#[derive(Debug, Clone)]
pub struct Authenticate {
    verifier: Verifier,
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
        let header = header
            .to_str()
            .map_err(|_| Status::unauthenticated("the authorization metadata is not text"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization must be Bearer <token>"))?;
        let principal = self.verifier.verify(token.trim()).map_err(|err| {
            metrics::counter!(crate::metric_names::UNAUTHENTICATED, "reason" => auth_reason(&err))
                .increment(1);
            Status::unauthenticated(err.to_string())
        })?;
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

fn auth_reason(err: &vigil_auth::AuthError) -> &'static str {
    use vigil_auth::AuthError::*;
    match err {
        Malformed => "malformed",
        Algorithm => "algorithm",
        UnknownKey => "unknown_key",
        Signature => "signature",
        Expired => "expired",
        NotYetValid => "not_yet_valid",
        Issuer => "issuer",
        Audience => "audience",
        Revoked => "revoked",
        TenantSuspended => "tenant_suspended",
        KeyRetired => "key_retired",
        Claims(_) => "claims",
        Key(_) => "key",
    }
}

fn intercept<S>(service: S, verifier: &Verifier) -> Intercepted<S> {
    InterceptedService::new(
        service,
        Authenticate {
            verifier: verifier.clone(),
        },
    )
}

/// Serves every service, health and reflection on `listener` until `shutdown`.
pub async fn serve(
    api: ControlApi,
    listener: tokio::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let verifier = api.shared.verifier.clone();
    let limit = api.shared.config.max_request_bytes;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<TenantServiceServer<ControlApi>>()
        .await;
    health.set_serving::<RuleServiceServer<ControlApi>>().await;
    health.set_serving::<IntelServiceServer<ControlApi>>().await;
    health.set_serving::<AlertServiceServer<ControlApi>>().await;
    health.set_serving::<AuditServiceServer<ControlApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vigil_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|err| err.to_string())?;
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server
            .tls_config(tls)
            .map_err(|err| format!("control.tls: {err}"))?;
    }
    server
        .trace_fn(vigil_telemetry::grpc::server_span)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(intercept(
            TenantServiceServer::new(api.clone()).max_decoding_message_size(limit),
            &verifier,
        ))
        .add_service(intercept(
            RuleServiceServer::new(api.clone()).max_decoding_message_size(limit),
            &verifier,
        ))
        .add_service(intercept(
            IntelServiceServer::new(api.clone()).max_decoding_message_size(limit),
            &verifier,
        ))
        .add_service(intercept(
            AlertServiceServer::new(api.clone()).max_decoding_message_size(limit),
            &verifier,
        ))
        .add_service(intercept(
            AuditServiceServer::new(api).max_decoding_message_size(limit),
            &verifier,
        ))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await
        .map_err(|err| err.to_string())
}

// -------------------------------------------------------------------------------------------
// Helpers.

fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no verified token"))
}

fn parse_tenant(text: &str) -> Result<TenantId, Status> {
    if text.is_empty() {
        return Err(Status::invalid_argument("tenant_id is required"));
    }
    TenantId::new(text).map_err(|err| Status::invalid_argument(format!("tenant_id: {err}")))
}

fn optional_tenant(text: &str) -> Result<Option<TenantId>, Status> {
    if text.is_empty() {
        Ok(None)
    } else {
        parse_tenant(text).map(Some)
    }
}

fn target(tenant: Option<&TenantId>) -> Target<'_> {
    tenant.map_or(Target::Platform, Target::Tenant)
}

fn store_status(err: StoreError) -> Status {
    match err {
        StoreError::NotFound(what) => Status::not_found(format!("{what} not found")),
        StoreError::Conflict(what) => Status::already_exists(what),
        StoreError::Invalid(what) => Status::invalid_argument(what),
        other => {
            tracing::warn!(error = %other, "store error in the control plane");
            Status::unavailable("the store is not available; retry later")
        }
    }
}

fn rfc3339(micros: i64) -> String {
    format_time(vigil_store::from_micros(micros))
}

fn format_time(time: time::OffsetDateTime) -> String {
    time.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn parse_time(field: &str, text: &str) -> Result<Option<i64>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|time| Some(vigil_store::micros(time)))
        .map_err(|err| Status::invalid_argument(format!("{field}: not an RFC 3339 time: {err}")))
}

fn parse_level(field: &str, text: &str) -> Result<Option<Level>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|err: String| Status::invalid_argument(format!("{field}: {err}")))
}

fn page_size(size: u32, default: u32) -> Result<u64, Status> {
    match size {
        0 => Ok(u64::from(default)),
        size if size <= MAX_PAGE => Ok(u64::from(size)),
        size => Err(Status::invalid_argument(format!(
            "page_size {size} is above the maximum of {MAX_PAGE}"
        ))),
    }
}

impl Shared {
    fn audit_record(
        principal: &Principal,
        action: &'static str,
        tenant: Option<&TenantId>,
        target: Option<&str>,
        outcome: AuditOutcome,
        details: serde_json::Map<String, serde_json::Value>,
    ) -> AuditRecord {
        let outcome_label = match outcome {
            AuditOutcome::Success => "success",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Failed => "failed",
        };
        metrics::counter!(crate::metric_names::MUTATIONS, "action" => action, "outcome" => outcome_label)
            .increment(1);
        AuditRecord {
            id: AuditId::new_random(),
            tenant: tenant.cloned(),
            time: time::OffsetDateTime::now_utc(),
            actor: Actor {
                subject: principal.subject.clone(),
                role: principal.role.to_string(),
            },
            action: action.to_owned(),
            target: target.map(str::to_owned),
            outcome,
            details,
        }
    }

    /// Authorizes a mutation; a refusal is audited and answered with PERMISSION_DENIED.
    async fn authorize_change(
        &self,
        principal: &Principal,
        permission: Action,
        change: &Change<'_>,
    ) -> Result<(), Status> {
        if principal.may(permission, target(change.tenant)) {
            return Ok(());
        }
        let record = Self::audit_record(
            principal,
            change.action,
            change.tenant,
            change.target.as_deref(),
            AuditOutcome::Denied,
            serde_json::Map::new(),
        );
        if let Err(err) = self.store.platform().append_audit(&record).await {
            tracing::warn!(error = %err, "writing a denied audit record failed");
        }
        Err(denied(principal))
    }

    /// Authorizes a read.
    fn authorize_read(
        principal: &Principal,
        permission: Action,
        tenant: Option<&TenantId>,
    ) -> Result<(), Status> {
        if principal.may(permission, target(tenant)) {
            Ok(())
        } else {
            Err(denied(principal))
        }
    }

    /// Audits a failed mutation (the transaction already rolled back) and passes the result on.
    async fn finish<T>(
        &self,
        principal: &Principal,
        change: &Change<'_>,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        if let Err(status) = &result {
            let mut details = serde_json::Map::new();
            details.insert("code".into(), format!("{:?}", status.code()).into());
            details.insert("message".into(), status.message().into());
            let record = Self::audit_record(
                principal,
                change.action,
                change.tenant,
                change.target.as_deref(),
                AuditOutcome::Failed,
                details,
            );
            if let Err(err) = self.store.platform().append_audit(&record).await {
                tracing::warn!(error = %err, "writing a failed audit record failed");
            }
        }
        result
    }

    /// Authorizes the change (a refusal is audited), then runs `body` in one transaction and
    /// commits it together with the success audit record; any failure rolls back and is
    /// audited as failed. Every mutation goes through here, so none
    /// can skip its audit record.
    async fn mutate<T, F, Fut>(
        &self,
        principal: &Principal,
        permission: Action,
        change: &Change<'_>,
        body: F,
    ) -> Result<T, Status>
    where
        F: FnOnce(Transaction) -> Fut,
        Fut: Future<Output = Result<(T, Transaction, Details), Status>>,
    {
        self.authorize_change(principal, permission, change).await?;
        let result = async {
            let tx = self.store.begin().await.map_err(store_status)?;
            let (value, tx, details) = body(tx).await?;
            tx.platform()
                .append_audit(&Self::success(principal, change, details))
                .await
                .map_err(store_status)?;
            tx.commit().await.map_err(store_status)?;
            Ok(value)
        }
        .await;
        self.finish(principal, change, result).await
    }

    fn success(principal: &Principal, change: &Change<'_>, details: Details) -> AuditRecord {
        Self::audit_record(
            principal,
            change.action,
            change.tenant,
            change.target.as_deref(),
            AuditOutcome::Success,
            details,
        )
    }

    /// The active signing key of `tenant` (or the platform), created when there is none.
    async fn signing_key(
        &self,
        tx: &Transaction,
        tenant: Option<&TenantId>,
    ) -> Result<SigningKey, Status> {
        match tx
            .platform()
            .active_key(tenant)
            .await
            .map_err(store_status)?
        {
            Some(record) => SigningKey::unseal(
                &record.kid,
                tenant.cloned(),
                &record.sealed_private_key,
                &self.master,
            )
            .map_err(internal),
            None => {
                let key = SigningKey::generate(tenant.cloned()).map_err(internal)?;
                let record = key_record(&key, &self.master).map_err(internal)?;
                tx.platform()
                    .insert_key(record)
                    .await
                    .map_err(store_status)?;
                Ok(key)
            }
        }
    }

    async fn existing_tenant(&self, tenant: &TenantId) -> Result<TenantRecord, Status> {
        self.store
            .platform()
            .require_tenant(tenant)
            .await
            .map_err(store_status)
    }

    async fn refresh(&self) {
        if let Err(err) = trust::refresh_trust(&self.store, &self.verifier).await {
            tracing::warn!(error = %err, "reloading keys and revocations failed");
        }
    }
}

/// What a mutation is, for its audit record.
struct Change<'a> {
    action: &'static str,
    tenant: Option<&'a TenantId>,
    target: Option<String>,
}

fn denied(principal: &Principal) -> Status {
    Status::permission_denied(format!(
        "permission denied for role {} on this tenant or operation",
        principal.role
    ))
}

fn internal(err: impl std::fmt::Display) -> Status {
    tracing::warn!(error = %err, "control plane internal error");
    Status::internal("internal error; see the control plane's log")
}

/// Non-secret details of an audited change.
type Details = serde_json::Map<String, serde_json::Value>;

/// The tenant, read in the mutation's transaction; NOT_FOUND when it does not exist and
/// FAILED_PRECONDITION when `active` is asked and it is suspended or deleted.
async fn tenant_in(
    tx: &Transaction,
    tenant: &TenantId,
    active: bool,
) -> Result<TenantRecord, Status> {
    let record = tx
        .platform()
        .require_tenant(tenant)
        .await
        .map_err(store_status)?;
    if active && record.state != TenantState::Active {
        return Err(Status::failed_precondition(format!(
            "tenant {tenant} is {}",
            record.state.as_str()
        )));
    }
    Ok(record)
}

fn details(pairs: &[(&str, serde_json::Value)]) -> Details {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.clone()))
        .collect()
}

fn tenant_message(record: &TenantRecord) -> pb::Tenant {
    pb::Tenant {
        id: record.id.to_string(),
        display_name: record.display_name.clone(),
        state: record.state.as_str().to_owned(),
        created_time: rfc3339(record.created_at),
        updated_time: rfc3339(record.updated_at),
    }
}

fn principal_message(
    record: &PrincipalRecord,
    live_tokens: u64,
    revoked: u64,
) -> pb::PrincipalInfo {
    pb::PrincipalInfo {
        subject: record.subject.clone(),
        role: record.role.clone(),
        tenant_id: record.tenant.clone().unwrap_or_default(),
        display_name: record.display_name.clone(),
        created_time: rfc3339(record.created_at),
        created_by: record.created_by.clone(),
        disabled_time: record.disabled_at.map(rfc3339).unwrap_or_default(),
        disabled_by: record.disabled_by.clone().unwrap_or_default(),
        live_tokens,
        revoked_tokens: revoked,
    }
}

/// A role for `tenant` (or every tenant): known, and allowed that scope.
fn role_and_scope(text: &str, tenant: Option<&TenantId>) -> Result<(Role, Scope), Status> {
    let role: Role = text
        .parse()
        .map_err(|err: String| Status::invalid_argument(format!("role: {err}")))?;
    let scope = tenant.cloned().map_or(Scope::All, Scope::tenant);
    role.check_scope(&scope)
        .map_err(|err| Status::invalid_argument(format!("role {role}: {err}")))?;
    Ok((role, scope))
}

/// A principal's subject: 1 to 200 characters, no whitespace or control characters, not the
/// form the platform gives unnamed tokens (`role:tenant`).
fn parse_subject(text: &str) -> Result<String, Status> {
    let subject = text.trim();
    if subject.is_empty() || subject.chars().count() > 200 {
        return Err(Status::invalid_argument("subject: 1 to 200 characters"));
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Status::invalid_argument(
            "subject: no spaces or control characters",
        ));
    }
    if subject.parse::<Role>().is_ok()
        || subject
            .split_once(':')
            .is_some_and(|(role, _)| role.parse::<Role>().is_ok())
    {
        return Err(Status::invalid_argument(
            "subject: role names and role:tenant are kept for unnamed tokens",
        ));
    }
    Ok(subject.to_owned())
}

fn token_message(record: &TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        token_id: record.jti.clone(),
        tenant_id: record.tenant.clone().unwrap_or_default(),
        subject: record.subject.clone(),
        role: record.role.clone(),
        key_id: record.kid.clone(),
        issued_time: rfc3339(record.issued_at),
        expires_time: rfc3339(record.expires_at),
        revoked_time: record.revoked_at.map(rfc3339).unwrap_or_default(),
    }
}

/// The alert as the API shows it.
pub fn alert_message(alert: &Alert) -> pb::Alert {
    pb::Alert {
        id: alert.id.to_string(),
        tenant: alert.tenant.to_string(),
        rule_id: alert.rule_id.clone(),
        rule_title: alert.rule_title.clone(),
        level: alert.level.to_string(),
        source: serde_json::to_value(alert.source)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default(),
        attack: alert.attack.iter().map(|t| t.id.clone()).collect(),
        event_ids: alert.event_ids.iter().map(|id| id.to_string()).collect(),
        event_time: format_time(alert.event_time),
        detected_time: format_time(alert.detected_time),
        json: serde_json::to_string(alert).unwrap_or_default(),
    }
}

// -------------------------------------------------------------------------------------------
// Tenants and credentials.

#[tonic::async_trait]
impl TenantService for ControlApi {
    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let tenant = parse_tenant(&request.tenant_id)?;
        let display_name = request.display_name.trim();
        if display_name.chars().count() > 200 {
            return Err(Status::invalid_argument(
                "display_name: at most 200 characters",
            ));
        }
        let display_name = if display_name.is_empty() {
            tenant.to_string()
        } else {
            display_name.to_owned()
        };
        let change = Change {
            action: "tenant.create",
            tenant: Some(&tenant),
            target: Some(tenant.to_string()),
        };
        let shared = &self.shared;
        // Creating is a platform action: the new tenant is not in anyone's scope yet.
        if !principal.may(Action::TenantCreate, Target::Platform) {
            shared
                .authorize_change(
                    &principal,
                    Action::TenantCreate,
                    &Change {
                        action: change.action,
                        tenant: None,
                        target: change.target.clone(),
                    },
                )
                .await?;
        }
        let (principal, tenant) = (&principal, &tenant);
        let result = shared
            .mutate(principal, Action::TenantCreate, &change, |tx| async move {
                let key = SigningKey::generate(Some(tenant.clone())).map_err(internal)?;
                let key = key_record(&key, &shared.master).map_err(internal)?;
                let record = tx
                    .platform()
                    .create_tenant(tenant, &display_name, now_micros())
                    .await
                    .map_err(store_status)?;
                tx.platform().insert_key(key).await.map_err(store_status)?;
                Ok((
                    record,
                    tx,
                    details(&[("display_name", display_name.clone().into())]),
                ))
            })
            .await;
        let record = result?;
        shared.refresh().await;
        Ok(Response::new(tenant_message(&record)))
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let principal = principal(&request)?;
        Shared::authorize_read(&principal, Action::TenantRead, None)?;
        let tenants = self
            .shared
            .store
            .platform()
            .list_tenants()
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: tenants.iter().map(tenant_message).collect(),
        }))
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let principal = principal(&request)?;
        let tenant = parse_tenant(&request.get_ref().tenant_id)?;
        Shared::authorize_read(&principal, Action::TenantRead, Some(&tenant))?;
        let record = self.shared.existing_tenant(&tenant).await?;
        Ok(Response::new(tenant_message(&record)))
    }

    async fn suspend_tenant(
        &self,
        request: Request<pb::SuspendTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let tenant = parse_tenant(&request.tenant_id)?;
        let change = Change {
            action: if request.suspended {
                "tenant.suspend"
            } else {
                "tenant.resume"
            },
            tenant: Some(&tenant),
            target: Some(tenant.to_string()),
        };
        let shared = &self.shared;
        let (principal, tenant) = (&principal, &tenant);
        let result = shared
            .mutate(principal, Action::TenantUpdate, &change, |tx| async move {
                let current = tenant_in(&tx, tenant, false).await?;
                if current.state == TenantState::Deleted {
                    return Err(Status::failed_precondition(format!(
                        "tenant {tenant} is deleted"
                    )));
                }
                let state = if request.suspended {
                    TenantState::Suspended
                } else {
                    TenantState::Active
                };
                let record = tx
                    .platform()
                    .set_tenant_state(tenant, state, now_micros())
                    .await
                    .map_err(store_status)?;
                Ok((record, tx, serde_json::Map::new()))
            })
            .await;
        let record = result?;
        shared.refresh().await;
        Ok(Response::new(tenant_message(&record)))
    }

    async fn delete_tenant(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::DeleteTenantResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let tenant = parse_tenant(&request.tenant_id)?;
        let retention = match pb::Retention::try_from(request.retention) {
            Ok(pb::Retention::Unspecified | pb::Retention::Keep) => pb::Retention::Keep,
            Ok(pb::Retention::Purge) => pb::Retention::Purge,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "retention: unknown value {}",
                    request.retention
                )));
            }
        };
        let change = Change {
            action: "tenant.delete",
            tenant: Some(&tenant),
            target: Some(tenant.to_string()),
        };
        let shared = &self.shared;
        let (principal, tenant) = (&principal, &tenant);
        let result = shared
            .mutate(principal, Action::TenantDelete, &change, |tx| async move {
                tenant_in(&tx, tenant, false).await?;
                let now = now_micros();
                let mut revoked = 0u32;
                for token in tx.tenant(tenant).tokens().await.map_err(store_status)? {
                    if token.revoked_at.is_none() {
                        tx.tenant(tenant)
                            .revoke_token(&token.jti, &principal.subject, now)
                            .await
                            .map_err(store_status)?;
                        revoked += 1;
                    }
                }
                match retention {
                    pb::Retention::Purge => {
                        tx.platform()
                            .purge_tenant(tenant)
                            .await
                            .map_err(store_status)?;
                    }
                    _ => {
                        tx.platform()
                            .set_tenant_state(tenant, TenantState::Deleted, now)
                            .await
                            .map_err(store_status)?;
                        tx.platform()
                            .retire_keys(Some(tenant), now)
                            .await
                            .map_err(store_status)?;
                    }
                }
                Ok((
                    revoked,
                    tx,
                    details(&[
                        ("retention", retention.as_str_name().into()),
                        ("tokens_revoked", revoked.into()),
                    ]),
                ))
            })
            .await;
        let revoked = result?;
        shared.refresh().await;
        Ok(Response::new(pb::DeleteTenantResponse {
            tenant_id: tenant.to_string(),
            retention: retention as i32,
            tokens_revoked: revoked,
        }))
    }

    async fn issue_token(
        &self,
        request: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let tenant = optional_tenant(&request.tenant_id)?;
        let (role, scope) = role_and_scope(&request.role, tenant.as_ref())?;
        let ttl = match request.ttl_seconds {
            0 if role == Role::Ingest => Duration::from_secs(90 * 24 * 3600),
            0 => Duration::from_secs(12 * 3600),
            seconds => Duration::from_secs(seconds),
        };
        if ttl > MAX_TTL {
            return Err(Status::invalid_argument("ttl_seconds: at most 366 days"));
        }
        let subject = match (request.subject.trim(), &tenant) {
            ("", Some(tenant)) => format!("{role}:{tenant}"),
            ("", None) => role.to_string(),
            (subject, _) => subject.to_owned(),
        };
        let change = Change {
            action: "token.issue",
            tenant: tenant.as_ref(),
            target: Some(subject.clone()),
        };
        let shared = &self.shared;
        let (principal, tenant) = (&principal, &tenant);
        let result = shared
            .mutate(
                principal,
                Action::CredentialManage,
                &change,
                |tx| async move {
                    if let Some(tenant) = &tenant {
                        tenant_in(&tx, tenant, true).await?;
                    }
                    // A registered principal gets tokens with its own role and scope only,
                    // and none once disabled.
                    if let Some(registered) = tx
                        .platform()
                        .principals()
                        .get(&subject)
                        .await
                        .map_err(store_status)?
                    {
                        if registered.disabled_at.is_some() {
                            return Err(Status::failed_precondition(format!(
                                "principal {subject} is disabled"
                            )));
                        }
                        if registered.role != role.as_str()
                            || registered.tenant.as_deref() != tenant.as_ref().map(|t| t.as_str())
                        {
                            return Err(Status::invalid_argument(format!(
                                "principal {subject} is registered as {} for {}: issue its tokens \
                                 with that role and scope",
                                registered.role,
                                registered.tenant.as_deref().unwrap_or("every tenant")
                            )));
                        }
                    }
                    // Ingest tokens are signed with the tenant's own key; rotating it touches no one else.
                    let key_tenant = if role == Role::Ingest {
                        tenant.as_ref()
                    } else {
                        None
                    };
                    let key = shared.signing_key(&tx, key_tenant).await?;
                    let issued = vigil_auth::issue(
                        &shared.config.tokens,
                        &key,
                        &TokenRequest {
                            subject: subject.clone(),
                            role,
                            scope: scope.clone(),
                            ttl,
                        },
                    )
                    .map_err(|err| Status::invalid_argument(err.to_string()))?;
                    let record = token_record(&issued);
                    tx.platform()
                        .insert_token(record.clone())
                        .await
                        .map_err(store_status)?;
                    let audited = details(&[
                        ("role", role.as_str().into()),
                        ("token_id", record.jti.clone().into()),
                        ("expires_time", rfc3339(record.expires_at).into()),
                    ]);
                    Ok(((issued.token, record), tx, audited))
                },
            )
            .await;
        let (token, record) = result?;
        Ok(Response::new(pb::IssueTokenResponse {
            token,
            info: Some(token_message(&record)),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let principal = principal(&request)?;
        let tenant = parse_tenant(&request.get_ref().tenant_id)?;
        Shared::authorize_read(&principal, Action::CredentialManage, Some(&tenant))?;
        let tokens = self
            .shared
            .store
            .tenant(&tenant)
            .tokens()
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.iter().map(token_message).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let tenant = optional_tenant(&request.tenant_id)?;
        if request.token_id.is_empty() || request.token_id.len() > 64 {
            return Err(Status::invalid_argument("token_id: 1 to 64 characters"));
        }
        let change = Change {
            action: "token.revoke",
            tenant: tenant.as_ref(),
            target: Some(request.token_id.clone()),
        };
        let shared = &self.shared;
        let (principal, tenant) = (&principal, &tenant);
        let result = shared
            .mutate(
                principal,
                Action::CredentialManage,
                &change,
                |tx| async move {
                    let now = now_micros();
                    let record = match &tenant {
                        Some(tenant) => {
                            tx.tenant(tenant)
                                .revoke_token(&request.token_id, &principal.subject, now)
                                .await
                        }
                        None => {
                            // A platform revocation reaches only platform tokens; tenant tokens are
                            // revoked through their tenant.
                            match tx.platform().get_token(&request.token_id).await {
                                Ok(Some(token)) if token.tenant.is_none() => {
                                    tx.platform()
                                        .revoke_token(&request.token_id, &principal.subject, now)
                                        .await
                                }
                                Ok(_) => Err(StoreError::NotFound(format!(
                                    "platform token {}",
                                    request.token_id
                                ))),
                                Err(err) => Err(err),
                            }
                        }
                    }
                    .map_err(store_status)?;
                    Ok((record, tx, serde_json::Map::new()))
                },
            )
            .await;
        let record = result?;
        shared.verifier.revoke(&record.jti);
        Ok(Response::new(token_message(&record)))
    }

    async fn create_principal(
        &self,
        request: Request<pb::CreatePrincipalRequest>,
    ) -> Result<Response<pb::PrincipalInfo>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let subject = parse_subject(&request.subject)?;
        let tenant = optional_tenant(&request.tenant_id)?;
        let (role, _scope) = role_and_scope(&request.role, tenant.as_ref())?;
        let display_name = request.display_name.trim();
        if display_name.chars().count() > 200 || display_name.chars().any(char::is_control) {
            return Err(Status::invalid_argument(
                "display_name: at most 200 characters, no control characters",
            ));
        }
        let display_name = if display_name.is_empty() {
            subject.clone()
        } else {
            display_name.to_owned()
        };
        let change = Change {
            action: "principal.create",
            tenant: tenant.as_ref(),
            target: Some(subject.clone()),
        };
        let shared = &self.shared;
        let (principal, tenant) = (&principal, &tenant);
        let result = shared
            .mutate(
                principal,
                Action::CredentialManage,
                &change,
                |tx| async move {
                    if let Some(tenant) = &tenant {
                        tenant_in(&tx, tenant, true).await?;
                    }
                    let principals = match &tenant {
                        Some(tenant) => tx.tenant(tenant).principals(),
                        None => tx.platform().principals(),
                    };
                    let record = principals
                        .create(
                            &subject,
                            role.as_str(),
                            &display_name,
                            &principal.subject,
                            now_micros(),
                        )
                        .await
                        .map_err(store_status)?;
                    let audited = details(&[("role", role.as_str().into())]);
                    Ok((record, tx, audited))
                },
            )
            .await;
        let record = result?;
        Ok(Response::new(principal_message(&record, 0, 0)))
    }

    async fn list_principals(
        &self,
        request: Request<pb::ListPrincipalsRequest>,
    ) -> Result<Response<pb::ListPrincipalsResponse>, Status> {
        let principal = principal(&request)?;
        let tenant = optional_tenant(&request.get_ref().tenant_id)?;
        Shared::authorize_read(&principal, Action::CredentialManage, tenant.as_ref())?;
        let store = &self.shared.store;
        let records = match &tenant {
            Some(tenant) => store.tenant(tenant).principals().list().await,
            None => store.platform().principals().list().await,
        }
        .map_err(store_status)?;
        let now = now_micros();
        let mut principals = Vec::with_capacity(records.len());
        for record in &records {
            let live = store
                .platform()
                .principals()
                .live_tokens(&record.subject, now)
                .await
                .map_err(store_status)?;
            principals.push(principal_message(record, live, 0));
        }
        Ok(Response::new(pb::ListPrincipalsResponse { principals }))
    }

    async fn disable_principal(
        &self,
        request: Request<pb::DisablePrincipalRequest>,
    ) -> Result<Response<pb::PrincipalInfo>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let subject = parse_subject(&request.subject)?;
        let tenant = optional_tenant(&request.tenant_id)?;
        let change = Change {
            action: "principal.disable",
            tenant: tenant.as_ref(),
            target: Some(subject.clone()),
        };
        let shared = &self.shared;
        let (principal, tenant) = (&principal, &tenant);
        let result = shared
            .mutate(
                principal,
                Action::CredentialManage,
                &change,
                |tx| async move {
                    let principals = match &tenant {
                        Some(tenant) => tx.tenant(tenant).principals(),
                        None => tx.platform().principals(),
                    };
                    let (record, revoked) = principals
                        .disable(&subject, &principal.subject, now_micros())
                        .await
                        .map_err(store_status)?;
                    let audited = details(&[("revoked_tokens", revoked.into())]);
                    Ok(((record, revoked), tx, audited))
                },
            )
            .await;
        let (record, revoked) = result?;
        // Revocations reach this process's verifier now, the others' on their next refresh.
        shared.refresh().await;
        Ok(Response::new(principal_message(&record, 0, revoked)))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let tenant = optional_tenant(&request.tenant_id)?;
        let grace = Duration::from_secs(request.grace_seconds);
        if grace > MAX_TTL {
            return Err(Status::invalid_argument("grace_seconds: at most 366 days"));
        }
        let change = Change {
            action: "key.rotate",
            tenant: tenant.as_ref(),
            target: None,
        };
        let shared = &self.shared;
        let (principal, tenant) = (&principal, &tenant);
        let result = shared
            .mutate(
                principal,
                Action::CredentialManage,
                &change,
                |tx| async move {
                    if let Some(tenant) = &tenant {
                        tenant_in(&tx, tenant, false).await?;
                    }
                    let now = now_micros();
                    let not_after = now.saturating_add(
                        i64::try_from(grace.as_micros()).map_err(|_| internal("grace overflow"))?,
                    );
                    let key = SigningKey::generate(tenant.clone()).map_err(internal)?;
                    let record = key_record(&key, &shared.master).map_err(internal)?;
                    let retired = tx
                        .platform()
                        .retire_keys(tenant.as_ref(), not_after)
                        .await
                        .map_err(store_status)?;
                    tx.platform()
                        .insert_key(record)
                        .await
                        .map_err(store_status)?;
                    Ok((
                        (key.kid().to_owned(), retired, not_after),
                        tx,
                        details(&[
                            ("key_id", key.kid().into()),
                            ("keys_retired", retired.into()),
                            ("grace_seconds", grace.as_secs().into()),
                        ]),
                    ))
                },
            )
            .await;
        let (kid, retired, not_after) = result?;
        shared.refresh().await;
        Ok(Response::new(pb::RotateSigningKeyResponse {
            key_id: kid,
            keys_retired: u32::try_from(retired).unwrap_or(u32::MAX),
            old_keys_refused_after: rfc3339(not_after),
        }))
    }
}

// -------------------------------------------------------------------------------------------
// Rules.

/// What the control plane reads from a rule document before it is compiled.
#[derive(Debug, Clone)]
struct RuleMeta {
    id: String,
    title: String,
    level: String,
    kind: &'static str,
}

fn rule_meta(name: &str, yaml: &str) -> Result<RuleMeta, String> {
    let documents = yaml
        .split("\n---")
        .filter(|doc| !doc.trim().is_empty() && doc.trim() != "---")
        .count();
    if documents > 1 {
        return Err(format!(
            "{name}: holds {documents} YAML documents; push one rule per entry"
        ));
    }
    let value: serde_json::Value =
        yaml_serde::from_str(yaml).map_err(|err| format!("{name}: invalid YAML: {err}"))?;
    let mapping = value
        .as_object()
        .ok_or_else(|| format!("{name}: a rule is a YAML mapping"))?;
    let text = |key: &str| mapping.get(key).and_then(serde_json::Value::as_str);
    let id = text("id")
        .filter(|id| !id.trim().is_empty() && id.len() <= 128)
        .ok_or_else(|| format!("{name}: the rule needs an id (1 to 128 characters)"))?;
    let title = text("title").unwrap_or(id);
    let level = match text("level") {
        Some(level) => level
            .parse::<Level>()
            .map_err(|err| format!("{name} ({id}): {err}"))?
            .to_string(),
        None => Level::Informational.to_string(),
    };
    let kind = if mapping.contains_key("correlation") {
        "correlation"
    } else if mapping.contains_key("filter") {
        "filter"
    } else {
        "detection"
    };
    Ok(RuleMeta {
        id: id.to_owned(),
        title: title.to_owned(),
        level,
        kind,
    })
}

fn rule_message(record: &RuleRecord, override_: Option<&OverrideRecord>) -> pb::RuleInfo {
    let enabled = override_.and_then(|o| o.enabled).unwrap_or(record.enabled);
    pb::RuleInfo {
        rule_id: record.rule_id.clone(),
        title: record.title.clone(),
        level: record.level.clone(),
        kind: record.kind.clone(),
        owner: record.tenant.clone(),
        enabled,
        version: record.version,
        updated_time: rfc3339(record.updated_at),
        updated_by: record.updated_by.clone(),
        r#override: override_.map(override_message),
    }
}

fn override_message(record: &OverrideRecord) -> pb::RuleOverride {
    let exceptions: Vec<StoredException> =
        serde_json::from_str(&record.exceptions).unwrap_or_default();
    pb::RuleOverride {
        enabled: record.enabled,
        level: record.level.clone().unwrap_or_default(),
        exceptions: exceptions
            .into_iter()
            .map(|e| pb::Exception {
                field: e.field,
                values: e.values,
            })
            .collect(),
        version: record.version,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredException {
    field: String,
    values: Vec<String>,
}

impl ControlApi {
    /// Compiles `pushed` together with the rules it may reference (the owner's stored rules
    /// and the global rules), and returns the reasons pushed rules were rejected.
    async fn validate_rules(
        tx: &Transaction,
        tenant: Option<&TenantId>,
        pushed: &[(RuleMeta, pb::RuleSource)],
    ) -> Result<Vec<String>, Status> {
        let pushed_ids: HashSet<&str> = pushed.iter().map(|(meta, _)| meta.id.as_str()).collect();
        let mut texts = Vec::new();
        let mut stored = tx
            .platform()
            .global_rules()
            .list()
            .await
            .map_err(store_status)?;
        if let Some(tenant) = tenant {
            stored.extend(
                tx.tenant(tenant)
                    .rules()
                    .list()
                    .await
                    .map_err(store_status)?,
            );
        }
        for record in stored {
            if !pushed_ids.contains(record.rule_id.as_str()) {
                texts.push((
                    std::path::PathBuf::from(format!("stored/{}", record.rule_id)),
                    record.yaml,
                ));
            }
        }
        for (index, (_, source)) in pushed.iter().enumerate() {
            texts.push((
                std::path::PathBuf::from(format!("pushed/{index}")),
                source.yaml.clone(),
            ));
        }
        let check = tokio::task::spawn_blocking(move || {
            let mappings = vigil_sigma::Mappings::builtin().map_err(|err| err.to_string())?;
            vigil_sigma::RuleSet::from_texts(
                texts,
                Arc::new(mappings),
                &vigil_sigma::LoadOptions::default(),
            )
            .map(|rules| rules.check().clone())
            .map_err(|err| err.to_string())
        })
        .await
        .map_err(internal)?
        .map_err(internal)?;
        let mut reasons = Vec::new();
        for rejected in check.rejected {
            let path = rejected.path.to_string_lossy();
            if let Some(index) = path
                .strip_prefix("pushed/")
                .and_then(|index| index.parse::<usize>().ok())
                && let Some((meta, source)) = pushed.get(index)
            {
                reasons.push(format!(
                    "{} ({}): {}",
                    source.name, meta.id, rejected.reason
                ));
            }
        }
        Ok(reasons)
    }
}

#[tonic::async_trait]
impl RuleService for ControlApi {
    async fn push_rules(
        &self,
        request: Request<pb::PushRulesRequest>,
    ) -> Result<Response<pb::PushRulesResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let tenant = optional_tenant(&request.tenant_id)?;
        if request.rules.is_empty() {
            return Err(Status::invalid_argument("no rules to push"));
        }
        if request.rules.len() > MAX_RULES_PER_PUSH {
            return Err(Status::invalid_argument(format!(
                "{} rules in one push; at most {MAX_RULES_PER_PUSH}",
                request.rules.len()
            )));
        }
        let change = Change {
            action: "rules.push",
            tenant: tenant.as_ref(),
            target: None,
        };
        let shared = &self.shared;
        let (principal, tenant) = (&principal, &tenant);
        let result = shared
            .mutate(principal, Action::RuleWrite, &change, |tx| async move {
                if let Some(tenant) = &tenant {
                    tenant_in(&tx, tenant, false).await?;
                }
                let mut reasons = Vec::new();
                let mut pushed = Vec::new();
                let mut seen = HashSet::new();
                for source in request.rules {
                    match rule_meta(&source.name, &source.yaml) {
                        Ok(meta) if !seen.insert(meta.id.clone()) => reasons.push(format!(
                            "{} ({}): the same rule id twice in one push",
                            source.name, meta.id
                        )),
                        Ok(meta) => pushed.push((meta, source)),
                        Err(reason) => reasons.push(reason),
                    }
                }
                if tenant.is_some() {
                    let global = tx.platform().global_rules();
                    for (meta, source) in &pushed {
                        if global.get(&meta.id).await.map_err(store_status)?.is_some() {
                            reasons.push(format!(
                                "{} ({}): a global rule has this id; override it instead",
                                source.name, meta.id
                            ));
                        }
                    }
                }
                // Every reason at once: the rules whose header reads are compiled even when
                // others were already refused.
                if !pushed.is_empty() {
                    reasons.extend(Self::validate_rules(&tx, tenant.as_ref(), &pushed).await?);
                }
                if !reasons.is_empty() {
                    return Err(Status::invalid_argument(format!(
                        "{} rule(s) rejected, nothing stored: {}",
                        reasons.len(),
                        reasons.join("; ")
                    )));
                }
                let now = now_micros();
                let rules = match &tenant {
                    Some(tenant) => tx.tenant(tenant).rules(),
                    None => tx.platform().global_rules(),
                };
                let mut stored = Vec::with_capacity(pushed.len());
                for (meta, source) in pushed {
                    stored.push(
                        rules
                            .upsert(
                                NewRule {
                                    rule_id: meta.id,
                                    title: meta.title,
                                    level: meta.level,
                                    kind: meta.kind.to_owned(),
                                    yaml: source.yaml,
                                },
                                &principal.subject,
                                now,
                            )
                            .await
                            .map_err(store_status)?,
                    );
                }
                let ids: Vec<serde_json::Value> = stored
                    .iter()
                    .take(100)
                    .map(|rule| rule.rule_id.clone().into())
                    .collect();
                let audited = details(&[("count", stored.len().into()), ("rule_ids", ids.into())]);
                Ok((stored, tx, audited))
            })
            .await;
        let stored = result?;
        Ok(Response::new(pb::PushRulesResponse {
            rules: stored.iter().map(|rule| rule_message(rule, None)).collect(),
        }))
    }

    async fn list_rules(
        &self,
        request: Request<pb::ListRulesRequest>,
    ) -> Result<Response<pb::ListRulesResponse>, Status> {
        let principal = principal(&request)?;
        let tenant = optional_tenant(&request.get_ref().tenant_id)?;
        Shared::authorize_read(&principal, Action::RuleRead, tenant.as_ref())?;
        let store = &self.shared.store;
        let global = store
            .platform()
            .global_rules()
            .list()
            .await
            .map_err(store_status)?;
        let mut rules = Vec::new();
        match &tenant {
            None => rules.extend(global.iter().map(|rule| rule_message(rule, None))),
            Some(tenant) => {
                self.shared.existing_tenant(tenant).await?;
                let scope = store.tenant(tenant);
                let overrides = scope.overrides().await.map_err(store_status)?;
                let find = |id: &str| overrides.iter().find(|o| o.rule_id == id);
                rules.extend(
                    global
                        .iter()
                        .map(|rule| rule_message(rule, find(&rule.rule_id))),
                );
                for rule in scope.rules().list().await.map_err(store_status)? {
                    rules.push(rule_message(&rule, find(&rule.rule_id)));
                }
            }
        }
        Ok(Response::new(pb::ListRulesResponse { rules }))
    }

    async fn set_rule_enabled(
        &self,
        request: Request<pb::SetRuleEnabledRequest>,
    ) -> Result<Response<pb::RuleInfo>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let tenant = optional_tenant(&request.tenant_id)?;
        let change = Change {
            action: if request.enabled {
                "rule.enable"
            } else {
                "rule.disable"
            },
            tenant: tenant.as_ref(),
            target: Some(request.rule_id.clone()),
        };
        let shared = &self.shared;
        let (principal, tenant) = (&principal, &tenant);
        let result = shared
            .mutate(principal, Action::RuleWrite, &change, |tx| async move {
                if let Some(tenant) = &tenant {
                    tenant_in(&tx, tenant, false).await?;
                }
                let now = now_micros();
                let info = match &tenant {
                    None => {
                        let rule = tx
                            .platform()
                            .global_rules()
                            .set_enabled(&request.rule_id, request.enabled, &principal.subject, now)
                            .await
                            .map_err(store_status)?;
                        rule_message(&rule, None)
                    }
                    Some(tenant) => {
                        let scope = tx.tenant(tenant);
                        if scope
                            .rules()
                            .get(&request.rule_id)
                            .await
                            .map_err(store_status)?
                            .is_some()
                        {
                            let rule = scope
                                .rules()
                                .set_enabled(
                                    &request.rule_id,
                                    request.enabled,
                                    &principal.subject,
                                    now,
                                )
                                .await
                                .map_err(store_status)?;
                            rule_message(&rule, None)
                        } else {
                            let global = tx
                                .platform()
                                .global_rules()
                                .get(&request.rule_id)
                                .await
                                .map_err(store_status)?
                                .ok_or_else(|| {
                                    Status::not_found(format!("rule {} not found", request.rule_id))
                                })?;
                            let existing = scope
                                .overrides()
                                .await
                                .map_err(store_status)?
                                .into_iter()
                                .find(|o| o.rule_id == request.rule_id);
                            let record = scope
                                .set_override(OverrideRecord {
                                    tenant: tenant.to_string(),
                                    rule_id: request.rule_id.clone(),
                                    enabled: Some(request.enabled),
                                    level: existing.as_ref().and_then(|o| o.level.clone()),
                                    exceptions: existing
                                        .map_or_else(|| "[]".to_owned(), |o| o.exceptions),
                                    version: 0,
                                    updated_at: now,
                                    updated_by: principal.subject.clone(),
                                })
                                .await
                                .map_err(store_status)?;
                            rule_message(&global, Some(&record))
                        }
                    }
                };
                Ok((info, tx, serde_json::Map::new()))
            })
            .await;
        Ok(Response::new(result?))
    }

    async fn override_rule(
        &self,
        request: Request<pb::OverrideRuleRequest>,
    ) -> Result<Response<pb::RuleInfo>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let tenant = parse_tenant(&request.tenant_id)?;
        let level = parse_level("level", &request.level)?;
        let mut exceptions = Vec::new();
        for (index, exception) in request.exceptions.into_iter().enumerate() {
            if exception.field.trim().is_empty() || exception.values.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "exceptions[{index}]: a field and at least one value are required"
                )));
            }
            exceptions.push(StoredException {
                field: exception.field,
                values: exception.values,
            });
        }
        let change = Change {
            action: "rule.override",
            tenant: Some(&tenant),
            target: Some(request.rule_id.clone()),
        };
        let shared = &self.shared;
        let (principal, tenant) = (&principal, &tenant);
        let result = shared
            .mutate(principal, Action::RuleWrite, &change, |tx| async move {
                tenant_in(&tx, tenant, false).await?;
                let scope = tx.tenant(tenant);
                let rule = match scope
                    .rules()
                    .get(&request.rule_id)
                    .await
                    .map_err(store_status)?
                {
                    Some(rule) => rule,
                    None => tx
                        .platform()
                        .global_rules()
                        .get(&request.rule_id)
                        .await
                        .map_err(store_status)?
                        .ok_or_else(|| {
                            Status::not_found(format!("rule {} not found", request.rule_id))
                        })?,
                };
                let record = scope
                    .set_override(OverrideRecord {
                        tenant: tenant.to_string(),
                        rule_id: request.rule_id.clone(),
                        enabled: request.enabled,
                        level: level.map(|level| level.to_string()),
                        exceptions: serde_json::to_string(&exceptions).map_err(internal)?,
                        version: 0,
                        updated_at: now_micros(),
                        updated_by: principal.subject.clone(),
                    })
                    .await
                    .map_err(store_status)?;
                Ok((
                    rule_message(&rule, Some(&record)),
                    tx,
                    details(&[
                        ("enabled", request.enabled.into()),
                        ("level", level.map(|l| l.to_string()).into()),
                        ("exceptions", exceptions.len().into()),
                    ]),
                ))
            })
            .await;
        Ok(Response::new(result?))
    }

    async fn delete_rule(
        &self,
        request: Request<pb::DeleteRuleRequest>,
    ) -> Result<Response<pb::DeleteRuleResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let tenant = optional_tenant(&request.tenant_id)?;
        let change = Change {
            action: "rule.delete",
            tenant: tenant.as_ref(),
            target: Some(request.rule_id.clone()),
        };
        let shared = &self.shared;
        let (principal, tenant) = (&principal, &tenant);
        let result = shared
            .mutate(principal, Action::RuleWrite, &change, |tx| async move {
                match &tenant {
                    Some(tenant) => tx.tenant(tenant).rules().delete(&request.rule_id).await,
                    None => tx.platform().global_rules().delete(&request.rule_id).await,
                }
                .map_err(store_status)?;
                Ok(((), tx, serde_json::Map::new()))
            })
            .await;
        result?;
        Ok(Response::new(pb::DeleteRuleResponse {}))
    }

    async fn test_rule(
        &self,
        request: Request<pb::TestRuleRequest>,
    ) -> Result<Response<pb::TestRuleResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let tenant = optional_tenant(&request.tenant_id)?;
        Shared::authorize_read(&principal, Action::RuleTest, tenant.as_ref())?;
        if request.events.len() > MAX_TEST_EVENTS {
            return Err(Status::invalid_argument(format!(
                "{} events; at most {MAX_TEST_EVENTS}",
                request.events.len()
            )));
        }
        let meta = rule_meta("rule", &request.yaml).map_err(Status::invalid_argument)?;
        let mut events = Vec::with_capacity(request.events.len());
        for (index, text) in request.events.iter().enumerate() {
            let value: serde_json::Value = serde_json::from_str(text).map_err(|err| {
                Status::invalid_argument(format!("events[{index}]: not JSON: {err}"))
            })?;
            if !value.is_object() {
                return Err(Status::invalid_argument(format!(
                    "events[{index}]: an event is a JSON object"
                )));
            }
            events.push(value);
        }
        let yaml = request.yaml;
        let response = tokio::task::spawn_blocking(move || {
            let mappings = vigil_sigma::Mappings::builtin().map_err(internal)?;
            let rules = vigil_sigma::RuleSet::from_texts(
                vec![(std::path::PathBuf::from("rule"), yaml)],
                Arc::new(mappings),
                &vigil_sigma::LoadOptions::default(),
            )
            .map_err(internal)?;
            if let Some(rejected) = rules.check().rejected.first() {
                return Err(Status::invalid_argument(format!(
                    "rule {}: {}",
                    meta.id, rejected.reason
                )));
            }
            let mut matched = Vec::new();
            let mut logsources = Vec::with_capacity(events.len());
            for (index, event) in events.iter().enumerate() {
                if !rules.detect(event).is_empty() {
                    matched.push(u32::try_from(index).unwrap_or(u32::MAX));
                }
                let logsource = rules.logsource_of(event);
                let mut parts: Vec<String> = logsource.product.into_iter().collect();
                parts.extend(logsource.services);
                parts.extend(logsource.categories);
                logsources.push(parts.join("/"));
            }
            Ok(pb::TestRuleResponse {
                rule_id: meta.id,
                matched,
                logsources,
            })
        })
        .await
        .map_err(internal)??;
        Ok(Response::new(response))
    }
}

// -------------------------------------------------------------------------------------------
// Threat intelligence.

fn feed_message(record: &vigil_store::FeedRecord) -> pb::FeedInfo {
    pb::FeedInfo {
        name: record.name.clone(),
        owner: record.tenant.clone(),
        format: record.format.clone(),
        indicators: record.indicator_count,
        version: record.version,
        updated_time: rfc3339(record.updated_at),
        updated_by: record.updated_by.clone(),
        skipped: 0,
        skip_reasons: Vec::new(),
    }
}

fn check_feed_name(name: &str) -> Result<(), Status> {
    let valid = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(Status::invalid_argument(
            "name: 1 to 100 characters of letters, digits, '.', '_' and '-'",
        ))
    }
}

#[tonic::async_trait]
impl IntelService for ControlApi {
    async fn push_feed(
        &self,
        request: Request<pb::PushFeedRequest>,
    ) -> Result<Response<pb::FeedInfo>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let tenant = optional_tenant(&request.tenant_id)?;
        check_feed_name(&request.name)?;
        let change = Change {
            action: "intel.push",
            tenant: tenant.as_ref(),
            target: Some(request.name.clone()),
        };
        let shared = &self.shared;
        let (principal, tenant) = (&principal, &tenant);
        let result = shared
            .mutate(principal, Action::IntelWrite, &change, |tx| async move {
                if let Some(tenant) = &tenant {
                    tenant_in(&tx, tenant, false).await?;
                }
                let check =
                    intel::check_feed(&request.format, &request.content).map_err(|reason| {
                        Status::invalid_argument(format!("feed {}: {reason}", request.name))
                    })?;
                let (count, skipped) = (check.indicators, check.skipped);
                let feeds = match &tenant {
                    Some(tenant) => tx.tenant(tenant).feeds(),
                    None => tx.platform().global_feeds(),
                };
                let record = feeds
                    .upsert(
                        &request.name,
                        &request.format,
                        request.content,
                        count,
                        &principal.subject,
                        now_micros(),
                    )
                    .await
                    .map_err(store_status)?;
                Ok((
                    (record, check),
                    tx,
                    details(&[
                        ("format", request.format.clone().into()),
                        ("indicators", count.into()),
                        ("skipped", skipped.into()),
                    ]),
                ))
            })
            .await;
        let (record, check) = result?;
        let mut message = feed_message(&record);
        message.skipped = check.skipped;
        message.skip_reasons = check.reasons;
        Ok(Response::new(message))
    }

    async fn list_feeds(
        &self,
        request: Request<pb::ListFeedsRequest>,
    ) -> Result<Response<pb::ListFeedsResponse>, Status> {
        let principal = principal(&request)?;
        let tenant = optional_tenant(&request.get_ref().tenant_id)?;
        Shared::authorize_read(&principal, Action::IntelRead, tenant.as_ref())?;
        let store = &self.shared.store;
        let feeds = match &tenant {
            Some(tenant) => store.tenant(tenant).feeds().list().await,
            None => store.platform().global_feeds().list().await,
        }
        .map_err(store_status)?;
        Ok(Response::new(pb::ListFeedsResponse {
            feeds: feeds.iter().map(feed_message).collect(),
        }))
    }

    async fn delete_feed(
        &self,
        request: Request<pb::DeleteFeedRequest>,
    ) -> Result<Response<pb::DeleteFeedResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let tenant = optional_tenant(&request.tenant_id)?;
        check_feed_name(&request.name)?;
        let change = Change {
            action: "intel.delete",
            tenant: tenant.as_ref(),
            target: Some(request.name.clone()),
        };
        let shared = &self.shared;
        let (principal, tenant) = (&principal, &tenant);
        let result = shared
            .mutate(principal, Action::IntelWrite, &change, |tx| async move {
                match &tenant {
                    Some(tenant) => tx.tenant(tenant).feeds().delete(&request.name).await,
                    None => tx.platform().global_feeds().delete(&request.name).await,
                }
                .map_err(store_status)?;
                Ok(((), tx, serde_json::Map::new()))
            })
            .await;
        result?;
        Ok(Response::new(pb::DeleteFeedResponse {}))
    }
}

// -------------------------------------------------------------------------------------------
// Alerts.

/// A page token: the query it continues and where. A token is only valid for the same tenant
/// and filters, so it can never widen a query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PageToken {
    tenant: String,
    from: Option<i64>,
    to: Option<i64>,
    min_level: Option<String>,
    rule_id: Option<String>,
    after_time: i64,
    after_id: String,
}

impl PageToken {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(text: &str) -> Result<Self, Status> {
        let invalid = || Status::invalid_argument("page_token is not a token this API issued");
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        serde_json::from_slice(&bytes).map_err(|_| invalid())
    }
}

type AlertStream = Pin<Box<dyn Stream<Item = Result<pb::Alert, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AlertService for ControlApi {
    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let tenant = parse_tenant(&request.tenant_id)?;
        Shared::authorize_read(&principal, Action::AlertRead, Some(&tenant))?;
        let from = parse_time("from_time", &request.from_time)?;
        let to = parse_time("to_time", &request.to_time)?;
        let min_level = parse_level("min_level", &request.min_level)?;
        let limit = page_size(request.page_size, 100)?;
        let rule_id = Some(request.rule_id.clone()).filter(|id| !id.is_empty());
        let mut query = AlertQuery {
            from,
            to,
            min_level,
            rule_id: rule_id.clone(),
            after: None,
            limit,
        };
        let expected = |after_time: i64, after_id: String| PageToken {
            tenant: tenant.to_string(),
            from,
            to,
            min_level: min_level.map(|level| level.to_string()),
            rule_id: rule_id.clone(),
            after_time,
            after_id,
        };
        if !request.page_token.is_empty() {
            let token = PageToken::decode(&request.page_token)?;
            if token != expected(token.after_time, token.after_id.clone()) {
                return Err(Status::invalid_argument(
                    "page_token belongs to another tenant or query",
                ));
            }
            query.after = Some((token.after_time, token.after_id));
        }
        let alerts = self
            .shared
            .store
            .tenant(&tenant)
            .alerts(&query)
            .await
            .map_err(store_status)?;
        let next_page_token = match alerts.last() {
            Some(last) if alerts.len() as u64 == limit => {
                expected(vigil_store::micros(last.detected_time), last.id.to_string()).encode()
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::ListAlertsResponse {
            alerts: alerts.iter().map(alert_message).collect(),
            next_page_token,
        }))
    }

    type StreamAlertsStream = AlertStream;

    async fn stream_alerts(
        &self,
        request: Request<pb::StreamAlertsRequest>,
    ) -> Result<Response<Self::StreamAlertsStream>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let tenant = parse_tenant(&request.tenant_id)?;
        Shared::authorize_read(&principal, Action::AlertRead, Some(&tenant))?;
        let min_level = parse_level("min_level", &request.min_level)?;
        let store = self.shared.store.clone();
        let verifier = self.shared.verifier.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let mut since = now_micros();
            let mut sent_at_since: BTreeSet<String> = BTreeSet::new();
            loop {
                // A stream ends when its token is revoked or, for a tenant-scoped principal, when
                // the tenant is suspended: the same rules as for a new call.
                if let Some(status) = stream_refusal(&store, &verifier, &principal, &tenant).await {
                    let _ = sender.send(Err(status)).await;
                    return;
                }
                let page = match store.tenant(&tenant).alerts_stored_since(since, 500).await {
                    Ok(page) => page,
                    Err(err) => {
                        let _ = sender.send(Err(store_status(err))).await;
                        return;
                    }
                };
                let full = page.len() == 500;
                for (stored_at, alert) in page {
                    if stored_at > since {
                        since = stored_at;
                        sent_at_since.clear();
                    }
                    if !sent_at_since.insert(alert.id.to_string()) {
                        continue;
                    }
                    if min_level.is_some_and(|min| alert.level < min) {
                        continue;
                    }
                    if sender.send(Ok(alert_message(&alert))).await.is_err() {
                        return;
                    }
                }
                if !full {
                    tokio::select! {
                        () = sender.closed() => return,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}

async fn stream_refusal(
    store: &Store,
    verifier: &Verifier,
    principal: &Principal,
    tenant: &TenantId,
) -> Option<Status> {
    if verifier.is_revoked(&principal.token_id) {
        return Some(Status::unauthenticated("the token has been revoked"));
    }
    if principal.scope == Scope::All {
        return None;
    }
    match store.platform().get_tenant(tenant).await {
        Ok(Some(record)) if record.state == TenantState::Active => None,
        Ok(_) => Some(Status::unauthenticated("the token's tenant is suspended")),
        Err(err) => Some(store_status(err)),
    }
}

// -------------------------------------------------------------------------------------------
// Audit.

#[tonic::async_trait]
impl AuditService for ControlApi {
    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let tenant = optional_tenant(&request.tenant_id)?;
        Shared::authorize_read(&principal, Action::AuditRead, tenant.as_ref())?;
        let page = AuditPage {
            from: parse_time("from_time", &request.from_time)?,
            to: parse_time("to_time", &request.to_time)?,
            limit: page_size(request.page_size, 100)?,
        };
        let store = &self.shared.store;
        let records = match &tenant {
            Some(tenant) => store.tenant(tenant).audit(&page).await,
            None => store.platform().audit(&page).await,
        }
        .map_err(store_status)?;
        Ok(Response::new(pb::ListAuditResponse {
            records: records
                .into_iter()
                .map(|record| pb::AuditRecord {
                    id: record.id.to_string(),
                    tenant: record.tenant.map(|t| t.to_string()).unwrap_or_default(),
                    time: format_time(record.time),
                    actor: record.actor.subject,
                    role: record.actor.role,
                    action: record.action,
                    target: record.target.unwrap_or_default(),
                    outcome: serde_json::to_value(record.outcome)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    details_json: serde_json::Value::Object(record.details).to_string(),
                })
                .collect(),
        }))
    }
}
