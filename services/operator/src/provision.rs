//! What the operator does outside Kubernetes: the tenant in the store, its signing key and
//! ingest token, its JetStream consumers and its NATS user. Every change is audited as the
//! `operator` acting for the resource that asked for it.

use std::sync::Arc;
use std::time::Duration;

use vigil_auth::{MasterKey, Role, Scope, SigningKey, TokenRequest, TokenSettings};
use vigil_bus::{Bus, ConsumerSpec};
use vigil_schema::{Actor, AuditId, AuditOutcome, AuditRecord, TenantId};
use vigil_store::{Store, StoreError, TenantRecord, TenantState};

use crate::crd::{PipelineService, Retention};
use crate::nats::{NatsIssuer, TenantUser};

/// Why a step failed: a CamelCase reason for the `Degraded` condition, a message saying what to
/// do, and whether trying again later can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Failure {
    /// Condition reason.
    pub reason: &'static str,
    /// For people.
    pub message: String,
    /// Whether the same spec may succeed later (an unreachable store) or needs a change (a
    /// conflicting id).
    pub transient: bool,
}

impl Failure {
    /// A failure only a change of the spec (or of the other party) can fix.
    pub fn permanent(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            transient: false,
        }
    }

    /// A failure retried with backoff.
    pub fn transient(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            transient: true,
        }
    }
}

fn store_failure(err: StoreError) -> Failure {
    Failure::transient("StoreUnavailable", err.to_string())
}

/// The durable consumers a per-tenant service reads through: the same specs the service itself
/// ensures when it starts as the tenant chart configures it (for detect: the events, and each
/// of [`vigil_detect::TENANT_CORRELATION_PARTITIONS`] correlation partitions).
pub fn consumers_for(service: PipelineService, tenant: &TenantId) -> Vec<ConsumerSpec> {
    match service {
        PipelineService::Ingest => Vec::new(),
        PipelineService::Detect => vigil_detect::Config {
            tenant: Some(tenant.clone()),
            correlation_partitions: vigil_detect::TENANT_CORRELATION_PARTITIONS,
            ..vigil_detect::Config::default()
        }
        .consumers(),
    }
}

/// The consumers of every per-tenant service, for offboarding.
pub fn all_consumers(tenant: &TenantId) -> Vec<ConsumerSpec> {
    [PipelineService::Ingest, PipelineService::Detect]
        .into_iter()
        .flat_map(|service| consumers_for(service, tenant))
        .collect()
}

/// The tenant's credentials, fresh.
#[derive(Debug)]
pub struct Credentials {
    /// The ingest token.
    pub ingest_token: String,
    /// Its id.
    pub token_id: String,
    /// When it expires, seconds since the epoch.
    pub expires: i64,
    /// The NATS user, when NATS users are managed.
    pub nats: Option<TenantUser>,
}

/// Store, bus and keys, shared by every reconcile.
#[derive(Debug, Clone)]
pub struct Provisioner {
    /// The store.
    pub store: Store,
    /// The bus, for consumers.
    pub bus: Arc<dyn Bus>,
    /// Seals new tenant keys and opens existing ones.
    pub master: Arc<MasterKey>,
    /// Issuer and audience of ingest tokens (the control plane's).
    pub tokens: TokenSettings,
    /// Mints NATS users; `None` when the operator has no account key.
    pub nats: Option<Arc<NatsIssuer>>,
}

impl Provisioner {
    /// Makes sure the tenant exists, is managed by `manager`, and has `display_name` and the
    /// state `suspended` asks for. Never takes over a tenant another resource manages, nor one
    /// made through the API unless `adopt` is set.
    pub async fn ensure_tenant(
        &self,
        tenant: &TenantId,
        display_name: &str,
        manager: &str,
        adopt: bool,
        suspended: bool,
    ) -> Result<TenantRecord, Failure> {
        let now = now_micros();
        let tx = self.store.begin().await.map_err(store_failure)?;
        let existing = tx
            .platform()
            .get_tenant(tenant)
            .await
            .map_err(store_failure)?;
        let mut changes = Vec::new();
        let record = match existing {
            None => {
                let key = SigningKey::generate(Some(tenant.clone()))
                    .map_err(|err| Failure::transient("KeyGenerationFailed", err.to_string()))?;
                let key = vigil_runtime::trust::key_record(&key, &self.master, now)
                    .map_err(|err| Failure::transient("KeyGenerationFailed", err.to_string()))?;
                tx.platform()
                    .create_tenant(tenant, display_name, now)
                    .await
                    .map_err(store_failure)?;
                tx.platform().insert_key(key).await.map_err(store_failure)?;
                changes.push("tenant.create");
                tx.platform()
                    .set_tenant_manager(tenant, Some(manager), display_name, now)
                    .await
                    .map_err(store_failure)?
            }
            Some(record) => {
                match record.managed_by.as_deref() {
                    Some(owner) if owner == manager => {}
                    Some(owner) => {
                        return Err(Failure::permanent(
                            "TenantIdConflict",
                            format!(
                                "tenant {tenant} is managed by {owner}; choose another tenantId or \
                                 delete that resource first"
                            ),
                        ));
                    }
                    None if !adopt => {
                        return Err(Failure::permanent(
                            "TenantExists",
                            format!(
                                "tenant {tenant} already exists and no resource manages it; set \
                                 spec.adopt: true to manage it from this resource"
                            ),
                        ));
                    }
                    None => changes.push("tenant.adopt"),
                }
                if record.managed_by.as_deref() != Some(manager)
                    || record.display_name != display_name
                {
                    if !changes.contains(&"tenant.adopt") {
                        changes.push("tenant.update");
                    }
                    tx.platform()
                        .set_tenant_manager(tenant, Some(manager), display_name, now)
                        .await
                        .map_err(store_failure)?
                } else {
                    record
                }
            }
        };
        let wanted = if suspended {
            TenantState::Suspended
        } else {
            TenantState::Active
        };
        let record = if record.state == wanted {
            record
        } else {
            changes.push(if suspended {
                "tenant.suspend"
            } else {
                "tenant.resume"
            });
            tx.platform()
                .set_tenant_state(tenant, wanted, now)
                .await
                .map_err(store_failure)?
        };
        for action in &changes {
            let audit = audit(manager, action, Some(tenant), Some(tenant.as_str()), &[]);
            tx.platform()
                .append_audit(&audit)
                .await
                .map_err(store_failure)?;
        }
        tx.commit().await.map_err(store_failure)?;
        if !changes.is_empty() {
            tracing::info!(tenant = %tenant, changes = ?changes, "tenant provisioned");
        }
        Ok(record)
    }

    /// Creates (or updates the delivery rules of) the consumers of the tenant's own services.
    pub async fn ensure_consumers(
        &self,
        tenant: &TenantId,
        services: &[PipelineService],
    ) -> Result<Vec<ConsumerSpec>, Failure> {
        let mut specs = Vec::new();
        for service in services {
            for spec in consumers_for(*service, tenant) {
                self.bus.ensure_consumer(&spec).await.map_err(|err| {
                    Failure::transient(
                        "BusUnavailable",
                        format!("consumer {}: {err}", spec.durable_name()),
                    )
                })?;
                specs.push(spec);
            }
        }
        Ok(specs)
    }

    /// Removes the consumers of per-tenant services this tenant no longer runs (so the streams
    /// stop keeping its messages for them).
    pub async fn remove_consumers(
        &self,
        tenant: &TenantId,
        keep: &[ConsumerSpec],
    ) -> Result<Vec<String>, Failure> {
        let mut removed = Vec::new();
        for spec in all_consumers(tenant) {
            if keep.iter().any(|k| k.durable_name() == spec.durable_name()) {
                continue;
            }
            let existed = self.bus.remove_consumer(&spec).await.map_err(|err| {
                Failure::transient(
                    "BusUnavailable",
                    format!("consumer {}: {err}", spec.durable_name()),
                )
            })?;
            if existed {
                removed.push(spec.durable_name());
            }
        }
        Ok(removed)
    }

    /// Issues an ingest token (signed with the tenant's key) and, when NATS users are managed and
    /// `nats` is set, a NATS user for the tenant's consumers; both valid for `days`.
    pub async fn issue_credentials(
        &self,
        tenant: &TenantId,
        manager: &str,
        days: u32,
        nats: bool,
        consumers: &[ConsumerSpec],
    ) -> Result<Credentials, Failure> {
        let nats_user = if nats {
            let Some(issuer) = &self.nats else {
                return Err(Failure::permanent(
                    "NatsAccountNotConfigured",
                    "spec.credentials.nats is set but the operator has no NATS account key \
                     (operator.nats.account_seed_file); configure it or set \
                     spec.credentials.nats: false",
                ));
            };
            let ttl = i64::from(days).saturating_mul(86_400);
            Some(
                issuer
                    .tenant_user(tenant, consumers, now_secs(), ttl)
                    .map_err(|err| Failure::transient("NatsCredentialsFailed", err.to_string()))?,
            )
        } else {
            None
        };
        let tx = self.store.begin().await.map_err(store_failure)?;
        let key = match tx
            .platform()
            .active_key(Some(tenant))
            .await
            .map_err(store_failure)?
        {
            Some(record) => SigningKey::unseal(
                &record.kid,
                Some(tenant.clone()),
                &record.sealed_private_key,
                &self.master,
            )
            .map_err(|_| {
                Failure::permanent(
                    "MasterKeyMismatch",
                    "the tenant's signing key was sealed with another master key: mount the \
                     control plane's master key in the operator",
                )
            })?,
            None => {
                let key = SigningKey::generate(Some(tenant.clone()))
                    .map_err(|err| Failure::transient("KeyGenerationFailed", err.to_string()))?;
                let record = vigil_runtime::trust::key_record(&key, &self.master, now_micros())
                    .map_err(|err| Failure::transient("KeyGenerationFailed", err.to_string()))?;
                tx.platform()
                    .insert_key(record)
                    .await
                    .map_err(store_failure)?;
                key
            }
        };
        let issued = vigil_auth::issue(
            &self.tokens,
            &key,
            &TokenRequest {
                subject: format!("ingest:{tenant}"),
                role: Role::Ingest,
                scope: Scope::tenant(tenant.clone()),
                ttl: Duration::from_secs(u64::from(days) * 86_400),
            },
        )
        .map_err(|err| Failure::permanent("TokenIssueFailed", err.to_string()))?;
        let record = vigil_runtime::trust::token_record(&issued);
        tx.platform()
            .insert_token(record.clone())
            .await
            .map_err(store_failure)?;
        let audit = audit(
            manager,
            "token.issue",
            Some(tenant),
            Some(&record.subject),
            &[
                ("role", "ingest".into()),
                ("token_id", record.jti.clone().into()),
                ("nats_user", nats_user.is_some().into()),
            ],
        );
        tx.platform()
            .append_audit(&audit)
            .await
            .map_err(store_failure)?;
        tx.commit().await.map_err(store_failure)?;
        Ok(Credentials {
            ingest_token: issued.token,
            token_id: record.jti,
            expires: issued.claims.exp,
            nats: nats_user,
        })
    }

    /// Revokes a token the operator issued before (a replaced or offboarded credential). A
    /// token that is unknown or already revoked is fine.
    pub async fn revoke_token(
        &self,
        tenant: &TenantId,
        manager: &str,
        token_id: &str,
    ) -> Result<(), Failure> {
        let platform = self.store.platform();
        match platform.get_token(token_id).await.map_err(store_failure)? {
            Some(token)
                if token.revoked_at.is_none()
                    && token.tenant.as_deref() == Some(tenant.as_str()) =>
            {
                platform
                    .revoke_token(token_id, manager, now_micros())
                    .await
                    .map_err(store_failure)?;
                let audit = audit(manager, "token.revoke", Some(tenant), Some(token_id), &[]);
                platform.append_audit(&audit).await.map_err(store_failure)?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether a token the operator issued is still usable until at least `until` (seconds).
    pub async fn token_valid_until(&self, token_id: &str, until: i64) -> Result<bool, Failure> {
        let token = self
            .store
            .platform()
            .get_token(token_id)
            .await
            .map_err(store_failure)?;
        Ok(token.is_some_and(|token| {
            token.revoked_at.is_none() && token.expires_at / 1_000_000 > until
        }))
    }

    /// When a token expires, seconds since the epoch.
    pub async fn token_expiry(&self, token_id: &str) -> Result<i64, Failure> {
        let token = self
            .store
            .platform()
            .get_token(token_id)
            .await
            .map_err(store_failure)?;
        token
            .map(|token| token.expires_at / 1_000_000)
            .ok_or_else(|| {
                Failure::transient("StoreUnavailable", format!("token {token_id} vanished"))
            })
    }

    /// Offboards a tenant this resource manages: its consumers go, and its data is kept (the
    /// tenant marked deleted, so every credential is refused) or purged. A tenant managed by
    /// someone else, or gone already, is left as it is.
    pub async fn offboard(
        &self,
        tenant: &TenantId,
        manager: &str,
        retention: Retention,
    ) -> Result<(), Failure> {
        let Some(record) = self
            .store
            .platform()
            .get_tenant(tenant)
            .await
            .map_err(store_failure)?
        else {
            self.remove_consumers(tenant, &[]).await?;
            return Ok(());
        };
        if record.managed_by.as_deref() != Some(manager) {
            tracing::info!(tenant = %tenant, "not offboarding a tenant this resource does not manage");
            return Ok(());
        }
        self.remove_consumers(tenant, &[]).await?;
        let tx = self.store.begin().await.map_err(store_failure)?;
        let action = match retention {
            Retention::Keep => {
                tx.platform()
                    .set_tenant_state(tenant, TenantState::Deleted, now_micros())
                    .await
                    .map_err(store_failure)?;
                // Released, so that a new resource may manage the kept tenant again.
                tx.platform()
                    .set_tenant_manager(tenant, None, &record.display_name, now_micros())
                    .await
                    .map_err(store_failure)?;
                "tenant.delete"
            }
            Retention::Purge => {
                tx.platform()
                    .purge_tenant(tenant)
                    .await
                    .map_err(store_failure)?;
                "tenant.purge"
            }
        };
        let audit = audit(
            manager,
            action,
            Some(tenant),
            Some(tenant.as_str()),
            &[("retention", format!("{retention:?}").into())],
        );
        tx.platform()
            .append_audit(&audit)
            .await
            .map_err(store_failure)?;
        tx.commit().await.map_err(store_failure)?;
        tracing::info!(tenant = %tenant, ?retention, "tenant offboarded");
        Ok(())
    }
}

fn audit(
    manager: &str,
    action: &str,
    tenant: Option<&TenantId>,
    target: Option<&str>,
    details: &[(&str, serde_json::Value)],
) -> AuditRecord {
    AuditRecord {
        id: AuditId::new_random(),
        tenant: tenant.cloned(),
        time: time::OffsetDateTime::now_utc(),
        actor: Actor {
            subject: format!("operator/{manager}"),
            role: "operator".into(),
        },
        action: action.to_owned(),
        target: target.map(str::to_owned),
        outcome: AuditOutcome::Success,
        details: details
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone()))
            .collect(),
    }
}

fn now_micros() -> i64 {
    vigil_store::micros(time::OffsetDateTime::now_utc())
}

/// Now, in seconds since the epoch.
pub fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
