//! Reconciling one `Tenant`: validate, provision, write the credentials Secret and the status;
//! offboard through the finalizer when the resource is deleted.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::Store as Reflector;
use kube::{Resource, ResourceExt};
use serde_json::json;
use vigil_schema::TenantId;

use crate::crd::{Condition, FINALIZER, PipelineService, Tenant, TenantStatus};
use crate::metric_names::RECONCILES;
use crate::provision::{Failure, Provisioner, now_secs};

/// The field manager of everything the operator writes.
pub const MANAGER: &str = "vigil-operator";

/// Shared by every reconcile.
pub struct Context {
    /// The Kubernetes API.
    pub client: kube::Client,
    /// Store, bus and keys.
    pub provisioner: Provisioner,
    /// Every `Tenant` the controller watches, to find two resources claiming one id.
    pub tenants: Reflector<Tenant>,
    /// Consecutive failures per resource, for backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// How often a healthy tenant is looked at again (token renewal, drift).
    pub resync: Duration,
    /// Kubernetes Events on the Tenant (`kubectl describe tenant`): provisioned, credentials
    /// issued, degraded, offboarded.
    pub recorder: Recorder,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("provisioner", &self.provisioner)
            .field("resync", &self.resync)
            .finish_non_exhaustive()
    }
}

impl Context {
    fn failed(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    /// Publishes an Event on `tenant`; a failure is logged, never fails the reconcile.
    async fn record(&self, tenant: &Tenant, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &tenant.object_ref(&())).await {
            tracing::warn!(error = %err, reason, "cannot publish a Kubernetes event");
        }
    }

    fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Why a reconcile must be retried.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Provisioning failed for a reason that may pass.
    #[error("{0}")]
    Provision(Failure),
    /// The Kubernetes API refused or failed a call.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The resource has no namespace (the CRD is namespaced; only a broken client sends one).
    #[error("the Tenant has no namespace")]
    NoNamespace,
    /// The resource has no name, or the finalizer name is invalid (kube's finalizer helper).
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// Backoff after `failures` consecutive failures: 5 s doubling to at most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    Duration::from_secs(5u64 << exponent).min(Duration::from_secs(300))
}

/// The controller's error policy: requeue with backoff.
pub fn error_policy(tenant: Arc<Tenant>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let failures = ctx.failed(&key(&tenant));
    let delay = backoff(failures);
    tracing::warn!(
        namespace = tenant.namespace().unwrap_or_default(),
        name = %tenant.name_any(),
        error = %error,
        failures,
        retry_secs = delay.as_secs(),
        "reconcile failed"
    );
    Action::requeue(delay)
}

fn key(tenant: &Tenant) -> String {
    format!(
        "{}/{}",
        tenant.namespace().unwrap_or_default(),
        tenant.name_any()
    )
}

/// Who manages a tenant in the store: `kubernetes:<namespace>/<name>`.
pub fn manager(tenant: &Tenant) -> String {
    format!("kubernetes:{}", key(tenant))
}

/// Reconciles one `Tenant`: one trace span per call.
#[tracing::instrument(skip_all, fields(namespace = tenant.namespace().unwrap_or_default(), name = %tenant.name_any(), tenant = %tenant.spec.tenant_id))]
pub async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = tenant.namespace().ok_or(ReconcileError::NoNamespace)?;
    let api: Api<Tenant> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, tenant, |event| async {
        match event {
            Finalizer::Apply(tenant) => apply(tenant, &ctx).await,
            Finalizer::Cleanup(tenant) => cleanup(tenant, &ctx).await,
        }
    })
    .await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(_) => "error",
    };
    metrics::counter!(RECONCILES, "outcome" => outcome).increment(1);
    result.map_err(|err| match err {
        kube::runtime::finalizer::Error::ApplyFailed(err)
        | kube::runtime::finalizer::Error::CleanupFailed(err) => err,
        kube::runtime::finalizer::Error::AddFinalizer(err)
        | kube::runtime::finalizer::Error::RemoveFinalizer(err) => ReconcileError::Kube(err),
        other @ (kube::runtime::finalizer::Error::UnnamedObject
        | kube::runtime::finalizer::Error::InvalidFinalizer) => {
            ReconcileError::Finalizer(other.to_string())
        }
    })
}

/// What a successful provisioning produced.
#[derive(Debug)]
struct Provisioned {
    tenant: TenantId,
    suspended: bool,
    secret_name: String,
    token_id: String,
    token_expires: i64,
    /// New credentials were written this time.
    issued: bool,
}

async fn apply(tenant: Arc<Tenant>, ctx: &Context) -> Result<Action, ReconcileError> {
    let outcome = provision(&tenant, ctx).await;
    let previous = tenant.status.clone().unwrap_or_default();
    let generation = tenant.metadata.generation;
    let mut status = previous.clone();
    status.observed_generation = generation;
    let now = rfc3339(now_secs());
    let action = match &outcome {
        Ok(done) => {
            status.tenant_id = Some(done.tenant.to_string());
            status.secret_name = Some(done.secret_name.clone());
            status.ingest_token_id = Some(done.token_id.clone());
            status.ingest_token_expires = Some(rfc3339(done.token_expires));
            let services = services_text(&tenant.spec.services);
            set_condition(
                &mut status,
                &previous,
                "Provisioned",
                true,
                "Provisioned",
                format!(
                    "tenant {} exists; credentials in Secret {}; consumers for {services}",
                    done.tenant, done.secret_name
                ),
                generation,
                &now,
            );
            set_condition(
                &mut status,
                &previous,
                "Degraded",
                false,
                "AsExpected",
                String::new(),
                generation,
                &now,
            );
            if done.suspended {
                set_condition(
                    &mut status,
                    &previous,
                    "Ready",
                    false,
                    "Suspended",
                    "the tenant is suspended: its credentials are refused".into(),
                    generation,
                    &now,
                );
            } else {
                set_condition(
                    &mut status,
                    &previous,
                    "Ready",
                    true,
                    "Ready",
                    format!("tenant {} is ready to ingest", done.tenant),
                    generation,
                    &now,
                );
            }
            ctx.succeeded(&key(&tenant));
            // Looked at again before the token enters its last third.
            let renew = (done.token_expires - now_secs()) / 3;
            let renew = Duration::from_secs(u64::try_from(renew).unwrap_or(0).max(60));
            Action::requeue(ctx.resync.min(renew))
        }
        Err(failure) => {
            set_condition(
                &mut status,
                &previous,
                "Degraded",
                true,
                failure.reason,
                failure.message.clone(),
                generation,
                &now,
            );
            set_condition(
                &mut status,
                &previous,
                "Ready",
                false,
                failure.reason,
                failure.message.clone(),
                generation,
                &now,
            );
            if !failure.transient || status.condition("Provisioned").is_none() {
                set_condition(
                    &mut status,
                    &previous,
                    "Provisioned",
                    false,
                    failure.reason,
                    failure.message.clone(),
                    generation,
                    &now,
                );
            }
            // A spec problem is looked at again when the spec changes, and now and then, since
            // the other side of a conflict may go away.
            Action::requeue(Duration::from_secs(300))
        }
    };
    if status != previous {
        patch_status(ctx, &tenant, &status).await?;
    }
    // Events for what changed: `kubectl describe tenant` tells the story.
    let reason_of = |status: &TenantStatus, type_: &str| {
        status
            .condition(type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    match &outcome {
        Ok(done) => {
            if done.issued {
                ctx.record(
                    &tenant,
                    EventType::Normal,
                    "CredentialsIssued",
                    format!(
                        "ingest token {} written to Secret {}",
                        done.token_id, done.secret_name
                    ),
                )
                .await;
            }
            if reason_of(&status, "Ready") != reason_of(&previous, "Ready") {
                let message = status
                    .condition("Ready")
                    .map(|c| c.message.clone())
                    .unwrap_or_default();
                let reason = if done.suspended { "Suspended" } else { "Ready" };
                ctx.record(&tenant, EventType::Normal, reason, message)
                    .await;
            }
        }
        Err(failure) => {
            if reason_of(&status, "Degraded") != reason_of(&previous, "Degraded") {
                ctx.record(
                    &tenant,
                    EventType::Warning,
                    failure.reason,
                    failure.message.clone(),
                )
                .await;
            }
        }
    }
    match outcome {
        Err(failure) if failure.transient => Err(ReconcileError::Provision(failure)),
        Err(failure) => {
            tracing::warn!(reason = failure.reason, message = %failure.message, "tenant degraded");
            Ok(action)
        }
        Ok(_) => Ok(action),
    }
}

fn services_text(services: &[PipelineService]) -> String {
    if services.is_empty() {
        return "no per-tenant service".into();
    }
    services
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Validates the spec: everything that can be wrong without asking anyone.
pub fn validate(tenant: &Tenant) -> Result<TenantId, Failure> {
    let spec = &tenant.spec;
    let id = TenantId::new(&spec.tenant_id).map_err(|err| {
        Failure::permanent(
            "InvalidTenantId",
            format!("spec.tenantId {:?}: {err}", spec.tenant_id),
        )
    })?;
    if let Some(previous) = tenant.status.as_ref().and_then(|s| s.tenant_id.as_deref())
        && previous != id.as_str()
    {
        return Err(Failure::permanent(
            "TenantIdImmutable",
            format!(
                "spec.tenantId changed from {previous} to {id}; a tenant id cannot change: set it \
                 back, or create a new Tenant resource"
            ),
        ));
    }
    if let Some(name) = &spec.display_name
        && (name.chars().count() > 200 || name.chars().any(char::is_control))
    {
        return Err(Failure::permanent(
            "InvalidDisplayName",
            "spec.displayName: at most 200 characters, no control characters",
        ));
    }
    if !(1..=366).contains(&spec.credentials.ingest_token_days) {
        return Err(Failure::permanent(
            "InvalidTokenLifetime",
            format!(
                "spec.credentials.ingestTokenDays is {}: it must be between 1 and 366",
                spec.credentials.ingest_token_days
            ),
        ));
    }
    if let Some(name) = &spec.credentials.secret_name
        && !is_dns_subdomain(name)
    {
        return Err(Failure::permanent(
            "InvalidSecretName",
            format!("spec.credentials.secretName {name:?} is not a valid Secret name"),
        ));
    }
    Ok(id)
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// The resource that claimed `id` first, when it is not `tenant`: the oldest wins, and on a tie
/// the first by namespace and name.
fn earlier_claim(tenant: &Tenant, id: &TenantId, ctx: &Context) -> Option<String> {
    let mine = (
        tenant.metadata.creation_timestamp.clone(),
        tenant.namespace(),
        tenant.name_any(),
    );
    ctx.tenants
        .state()
        .iter()
        .filter(|other| other.spec.tenant_id == id.as_str())
        .filter(|other| other.meta().deletion_timestamp.is_none())
        .filter(|other| (other.namespace(), other.name_any()) != (mine.1.clone(), mine.2.clone()))
        .filter(|other| {
            let theirs = (
                other.metadata.creation_timestamp.clone(),
                other.namespace(),
                other.name_any(),
            );
            theirs < mine
        })
        .map(|other| key(other))
        .min()
}

/// The Secret's default name.
pub fn default_secret_name(tenant: &Tenant) -> String {
    format!("{}-vigil-credentials", tenant.name_any())
}

async fn provision(tenant: &Tenant, ctx: &Context) -> Result<Provisioned, Failure> {
    let id = validate(tenant)?;
    if let Some(other) = earlier_claim(tenant, &id, ctx) {
        return Err(Failure::permanent(
            "TenantIdConflict",
            format!("tenant id {id} is already claimed by Tenant {other}; choose another tenantId"),
        ));
    }
    let spec = &tenant.spec;
    let manager = manager(tenant);
    let namespace = tenant.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret_name = spec
        .credentials
        .secret_name
        .clone()
        .unwrap_or_else(|| default_secret_name(tenant));
    // Checked before anything is created, so a conflict leaves nothing behind.
    let existing = secrets.get_opt(&secret_name).await.map_err(|err| {
        Failure::transient(
            "KubernetesApiError",
            format!("reading Secret {secret_name}: {err}"),
        )
    })?;
    let uid = tenant.uid().unwrap_or_default();
    if let Some(secret) = &existing
        && !secret
            .owner_references()
            .iter()
            .any(|owner| owner.uid == uid && owner.kind == "Tenant")
    {
        return Err(Failure::permanent(
            "SecretConflict",
            format!(
                "Secret {namespace}/{secret_name} exists and does not belong to this Tenant; \
                 delete it or set spec.credentials.secretName to another name"
            ),
        ));
    }
    if spec.credentials.nats && ctx.provisioner.nats.is_none() {
        return Err(Failure::permanent(
            "NatsAccountNotConfigured",
            "spec.credentials.nats is set but the operator has no NATS account key \
             (operator.nats.account_seed_file); configure it or set spec.credentials.nats: false",
        ));
    }

    let display_name = spec
        .display_name
        .clone()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| id.to_string());
    ctx.provisioner
        .ensure_tenant(
            &id,
            display_name.trim(),
            &manager,
            spec.adopt,
            spec.suspended,
        )
        .await?;
    let consumers = ctx
        .provisioner
        .ensure_consumers(&id, &spec.services)
        .await?;
    let removed = ctx.provisioner.remove_consumers(&id, &consumers).await?;
    if !removed.is_empty() {
        tracing::info!(tenant = %id, consumers = ?removed, "removed consumers of services the tenant no longer runs");
    }

    let status = tenant.status.clone().unwrap_or_default();
    let days = spec.credentials.ingest_token_days;
    let renew_after = now_secs() + i64::from(days) * 86_400 / 3;
    // The Secret says which token it holds: the status may not have been written last time.
    let held_token = existing
        .as_ref()
        .and_then(|secret| secret_value(secret, "ingest-token-id"));
    let current_token = match (&held_token, &existing) {
        (Some(token_id), Some(secret))
            if secret_value(secret, "tenant-id").as_deref() == Some(id.as_str())
                && secret_value(secret, "ingest-token").is_some()
                && secret_value(secret, "nats.creds").is_some() == spec.credentials.nats
                && ctx
                    .provisioner
                    .token_valid_until(token_id, renew_after)
                    .await? =>
        {
            Some(token_id.clone())
        }
        _ => None,
    };
    if let Some(token_id) = current_token {
        let expires = match status.ingest_token_id.as_deref() {
            Some(known) if known == token_id => status
                .ingest_token_expires
                .as_deref()
                .and_then(parse_rfc3339),
            _ => None,
        };
        let expires = match expires {
            Some(expires) => expires,
            None => ctx.provisioner.token_expiry(&token_id).await?,
        };
        return Ok(Provisioned {
            tenant: id,
            suspended: spec.suspended,
            secret_name,
            token_id,
            token_expires: expires,
            issued: false,
        });
    }

    let credentials = ctx
        .provisioner
        .issue_credentials(&id, &manager, days, spec.credentials.nats, &consumers)
        .await?;
    let mut data = BTreeMap::new();
    data.insert(
        "tenant-id".to_owned(),
        ByteString(id.to_string().into_bytes()),
    );
    data.insert(
        "ingest-token".to_owned(),
        ByteString(credentials.ingest_token.clone().into_bytes()),
    );
    data.insert(
        "ingest-token-id".to_owned(),
        ByteString(credentials.token_id.clone().into_bytes()),
    );
    if let Some(user) = &credentials.nats {
        data.insert(
            "nats.creds".to_owned(),
            ByteString(user.creds.clone().into_bytes()),
        );
        data.insert(
            "nats-inbox-prefix".to_owned(),
            ByteString(user.inbox_prefix.clone().into_bytes()),
        );
        if let Some(url) = &user.url {
            data.insert("nats-url".to_owned(), ByteString(url.clone().into_bytes()));
        }
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    MANAGER.to_owned(),
                ),
                ("app.kubernetes.io/part-of".to_owned(), "vigil".to_owned()),
                ("vigil.io/tenant".to_owned(), id.to_string()),
            ])),
            owner_references: tenant.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    let params = PatchParams::apply(MANAGER).force();
    if let Err(err) = secrets
        .patch(&secret_name, &params, &Patch::Apply(&secret))
        .await
    {
        // The new token never reached anyone: revoke it rather than leave it valid.
        ctx.provisioner
            .revoke_token(&id, &manager, &credentials.token_id)
            .await?;
        return Err(Failure::transient(
            "KubernetesApiError",
            format!("writing Secret {secret_name}: {err}"),
        ));
    }
    // The tokens this one replaces: the one the old Secret held and the one the status named.
    for old in [held_token.as_ref(), status.ingest_token_id.as_ref()]
        .into_iter()
        .flatten()
    {
        if *old != credentials.token_id {
            ctx.provisioner.revoke_token(&id, &manager, old).await?;
        }
    }
    if let Some(old_name) = &status.secret_name
        && *old_name != secret_name
    {
        delete_owned_secret(&secrets, old_name, &uid).await?;
    }
    tracing::info!(tenant = %id, secret = %secret_name, token_id = %credentials.token_id, "credentials written");
    Ok(Provisioned {
        tenant: id,
        suspended: spec.suspended,
        secret_name,
        token_id: credentials.token_id,
        token_expires: credentials.expires,
        issued: true,
    })
}

async fn delete_owned_secret(secrets: &Api<Secret>, name: &str, uid: &str) -> Result<(), Failure> {
    let existing = secrets.get_opt(name).await.map_err(|err| {
        Failure::transient(
            "KubernetesApiError",
            format!("reading Secret {name}: {err}"),
        )
    })?;
    if existing.is_some_and(|s| s.owner_references().iter().any(|o| o.uid == uid)) {
        secrets
            .delete(name, &Default::default())
            .await
            .map_err(|err| {
                Failure::transient(
                    "KubernetesApiError",
                    format!("deleting Secret {name}: {err}"),
                )
            })?;
    }
    Ok(())
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .and_then(|value| String::from_utf8(value.0.clone()).ok())
        .filter(|value| !value.is_empty())
}

async fn cleanup(tenant: Arc<Tenant>, ctx: &Context) -> Result<Action, ReconcileError> {
    // A resource that never got a valid id (or lost a conflict) has nothing to offboard.
    let Ok(id) = TenantId::new(&tenant.spec.tenant_id) else {
        return Ok(Action::await_change());
    };
    let manager = manager(&tenant);
    if let Some(token_id) = tenant
        .status
        .as_ref()
        .and_then(|s| s.ingest_token_id.as_deref())
    {
        ctx.provisioner
            .revoke_token(&id, &manager, token_id)
            .await
            .map_err(ReconcileError::Provision)?;
    }
    ctx.provisioner
        .offboard(&id, &manager, tenant.spec.retention)
        .await
        .map_err(ReconcileError::Provision)?;
    ctx.succeeded(&key(&tenant));
    let note = match tenant.spec.retention {
        crate::crd::Retention::Keep => {
            format!("tenant {id} offboarded; its data is kept and its credentials are refused")
        }
        crate::crd::Retention::Purge => format!("tenant {id} offboarded; its data was purged"),
    };
    ctx.record(&tenant, EventType::Normal, "Offboarded", note)
        .await;
    Ok(Action::await_change())
}

async fn patch_status(
    ctx: &Context,
    tenant: &Tenant,
    status: &TenantStatus,
) -> Result<(), ReconcileError> {
    let namespace = tenant.namespace().ok_or(ReconcileError::NoNamespace)?;
    let api: Api<Tenant> = Api::namespaced(ctx.client.clone(), &namespace);
    api.patch_status(
        &tenant.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn set_condition(
    status: &mut TenantStatus,
    previous: &TenantStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &str,
) {
    let value = if value { "True" } else { "False" };
    let last_transition_time = previous
        .condition(type_)
        .filter(|c| c.status == value)
        .map_or_else(|| now.to_owned(), |c| c.last_transition_time.clone());
    let condition = Condition {
        type_: type_.to_owned(),
        status: value.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time,
        observed_generation: generation,
    };
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => *existing = condition,
        None => status.conditions.push(condition),
    }
}

fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn parse_rfc3339(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}
