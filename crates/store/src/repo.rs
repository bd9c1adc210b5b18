//! Repositories. Tenant data is reachable only through a [`TenantScope`], which adds its
//! tenant to every statement; platform objects (the tenant list, signing keys, global rules
//! and feeds, the whole audit log) only through [`Platform`]. Both work on a pooled connection
//! or inside a [`Transaction`], so a change and its audit record commit together.

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use vigil_schema::{Alert, AuditRecord, Incident, TenantId};

use crate::entity::{
    alert, audit, detect_state, incident, intel_feed, principal, rule, rule_override, signing_key,
    tenant, token,
};
use crate::{Result, Store, StoreError, micros};

/// The owner column value of global rules and feeds. No tenant id is empty.
const GLOBAL: &str = "";

fn query_error(err: sea_orm::DbErr) -> StoreError {
    StoreError::Query(err.to_string())
}

impl Store {
    /// Platform objects, on the pool.
    pub fn platform(&self) -> Platform<'_, sea_orm::DatabaseConnection> {
        Platform {
            db: &self.connection,
        }
    }

    /// One tenant's data, on the pool.
    pub fn tenant(&self, tenant: &TenantId) -> TenantScope<'_, sea_orm::DatabaseConnection> {
        TenantScope {
            db: &self.connection,
            tenant: tenant.clone(),
        }
    }

    /// Starts a transaction: everything done through it commits or rolls back together.
    ///
    /// While it is open, read and write through the transaction only: on SQLite the pool holds
    /// one connection (sea-orm's default, which keeps writers from failing with "database is
    /// locked"), so a query on the pool would wait for the transaction that waits for it.
    pub async fn begin(&self) -> Result<Transaction> {
        let inner = self.connection.begin().await.map_err(query_error)?;
        Ok(Transaction { inner })
    }
}

/// A database transaction. Dropping it without [`Transaction::commit`] rolls it back.
#[derive(Debug)]
pub struct Transaction {
    inner: DatabaseTransaction,
}

impl Transaction {
    /// Platform objects, in this transaction.
    pub fn platform(&self) -> Platform<'_, DatabaseTransaction> {
        Platform { db: &self.inner }
    }

    /// One tenant's data, in this transaction.
    pub fn tenant(&self, tenant: &TenantId) -> TenantScope<'_, DatabaseTransaction> {
        TenantScope {
            db: &self.inner,
            tenant: tenant.clone(),
        }
    }

    /// Commits.
    pub async fn commit(self) -> Result<()> {
        self.inner.commit().await.map_err(query_error)
    }
}

/// A tenant's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TenantState {
    /// Ingesting and detecting.
    Active,
    /// Kept, but its credentials are refused.
    Suspended,
    /// Offboarded; its data kept by request.
    Deleted,
}

impl TenantState {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Active => "active",
            TenantState::Suspended => "suspended",
            TenantState::Deleted => "deleted",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        match text {
            "active" => Ok(TenantState::Active),
            "suspended" => Ok(TenantState::Suspended),
            "deleted" => Ok(TenantState::Deleted),
            other => Err(StoreError::Query(format!("unknown tenant state {other:?}"))),
        }
    }
}

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    /// Id.
    pub id: TenantId,
    /// Name for people.
    pub display_name: String,
    /// State.
    pub state: TenantState,
    /// Creation time, µs since the epoch.
    pub created_at: i64,
    /// Last change, µs since the epoch.
    pub updated_at: i64,
    /// The Kubernetes resource that manages it (`kubernetes:<namespace>/<name>`), if any.
    pub managed_by: Option<String>,
}

impl TryFrom<tenant::Model> for TenantRecord {
    type Error = StoreError;

    fn try_from(model: tenant::Model) -> Result<Self> {
        Ok(Self {
            id: TenantId::new(&model.id)
                .map_err(|err| StoreError::Query(format!("stored tenant id: {err}")))?,
            display_name: model.display_name,
            state: TenantState::parse(&model.state)?,
            created_at: model.created_at,
            updated_at: model.updated_at,
            managed_by: model.managed_by,
        })
    }
}

/// A signing key as stored: public key and the sealed private key.
pub type KeyRecord = signing_key::Model;

/// An issued token's metadata (never the token).
pub type TokenRecord = token::Model;

/// A rule as stored.
pub type RuleRecord = rule::Model;

/// A tenant's override of a global rule.
pub type OverrideRecord = rule_override::Model;

/// A threat-intel feed as stored.
pub type FeedRecord = intel_feed::Model;

/// Platform objects.
#[derive(Debug)]
pub struct Platform<'a, C> {
    db: &'a C,
}

impl<'a, C: ConnectionTrait> Platform<'a, C> {
    /// Creates a tenant; a tenant with the same id (in any state) is a conflict.
    pub async fn create_tenant(
        &self,
        id: &TenantId,
        display_name: &str,
        now: i64,
    ) -> Result<TenantRecord> {
        if self.get_tenant(id).await?.is_some() {
            return Err(StoreError::Conflict(format!("tenant {id} already exists")));
        }
        let model = tenant::ActiveModel {
            id: Set(id.to_string()),
            display_name: Set(display_name.to_owned()),
            state: Set(TenantState::Active.as_str().to_owned()),
            created_at: Set(now),
            updated_at: Set(now),
            managed_by: Set(None),
        };
        tenant::Entity::insert(model)
            .exec_without_returning(self.db)
            .await
            .map_err(query_error)?;
        self.get_tenant(id)
            .await?
            .ok_or_else(|| StoreError::Query("the tenant vanished after insert".into()))
    }

    /// One tenant, in any state.
    pub async fn get_tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>> {
        tenant::Entity::find_by_id(id.to_string())
            .one(self.db)
            .await
            .map_err(query_error)?
            .map(TenantRecord::try_from)
            .transpose()
    }

    /// One tenant, in any state; `NotFound` when there is none.
    pub async fn require_tenant(&self, id: &TenantId) -> Result<TenantRecord> {
        self.get_tenant(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("tenant {id}")))
    }

    /// Every tenant, by id.
    pub async fn list_tenants(&self) -> Result<Vec<TenantRecord>> {
        tenant::Entity::find()
            .order_by_asc(tenant::Column::Id)
            .all(self.db)
            .await
            .map_err(query_error)?
            .into_iter()
            .map(TenantRecord::try_from)
            .collect()
    }

    /// Sets a tenant's state; `NotFound` when there is no such tenant.
    pub async fn set_tenant_state(
        &self,
        id: &TenantId,
        state: TenantState,
        now: i64,
    ) -> Result<TenantRecord> {
        let result = tenant::Entity::update_many()
            .col_expr(tenant::Column::State, Expr::value(state.as_str()))
            .col_expr(tenant::Column::UpdatedAt, Expr::value(now))
            .filter(tenant::Column::Id.eq(id.as_str()))
            .exec(self.db)
            .await
            .map_err(query_error)?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("tenant {id}")));
        }
        self.get_tenant(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("tenant {id}")))
    }

    /// Sets who manages a tenant (`None`: the API) and its display name; `NotFound` when there
    /// is no such tenant.
    pub async fn set_tenant_manager(
        &self,
        id: &TenantId,
        managed_by: Option<&str>,
        display_name: &str,
        now: i64,
    ) -> Result<TenantRecord> {
        let result = tenant::Entity::update_many()
            .col_expr(tenant::Column::ManagedBy, Expr::value(managed_by))
            .col_expr(tenant::Column::DisplayName, Expr::value(display_name))
            .col_expr(tenant::Column::UpdatedAt, Expr::value(now))
            .filter(tenant::Column::Id.eq(id.as_str()))
            .exec(self.db)
            .await
            .map_err(query_error)?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("tenant {id}")));
        }
        self.require_tenant(id).await
    }

    /// Deletes a tenant and every row of its data (alerts, incidents, rules, overrides, feeds,
    /// detection state, tokens, keys). Its audit records stay: they are the record of the deletion.
    pub async fn purge_tenant(&self, id: &TenantId) -> Result<()> {
        let tenant_id = id.as_str();
        alert::Entity::delete_many()
            .filter(alert::Column::Tenant.eq(tenant_id))
            .exec(self.db)
            .await
            .map_err(query_error)?;
        incident::Entity::delete_many()
            .filter(incident::Column::Tenant.eq(tenant_id))
            .exec(self.db)
            .await
            .map_err(query_error)?;
        rule::Entity::delete_many()
            .filter(rule::Column::Tenant.eq(tenant_id))
            .exec(self.db)
            .await
            .map_err(query_error)?;
        rule_override::Entity::delete_many()
            .filter(rule_override::Column::Tenant.eq(tenant_id))
            .exec(self.db)
            .await
            .map_err(query_error)?;
        intel_feed::Entity::delete_many()
            .filter(intel_feed::Column::Tenant.eq(tenant_id))
            .exec(self.db)
            .await
            .map_err(query_error)?;
        detect_state::Entity::delete_many()
            .filter(detect_state::Column::Tenant.eq(tenant_id))
            .exec(self.db)
            .await
            .map_err(query_error)?;
        principal::Entity::delete_many()
            .filter(principal::Column::Tenant.eq(tenant_id))
            .exec(self.db)
            .await
            .map_err(query_error)?;
        token::Entity::delete_many()
            .filter(token::Column::Tenant.eq(tenant_id))
            .exec(self.db)
            .await
            .map_err(query_error)?;
        signing_key::Entity::delete_many()
            .filter(signing_key::Column::Tenant.eq(tenant_id))
            .exec(self.db)
            .await
            .map_err(query_error)?;
        tenant::Entity::delete_many()
            .filter(tenant::Column::Id.eq(tenant_id))
            .exec(self.db)
            .await
            .map_err(query_error)?;
        Ok(())
    }

    /// Stores a signing key.
    pub async fn insert_key(&self, key: KeyRecord) -> Result<()> {
        let model = signing_key::ActiveModel {
            kid: Set(key.kid),
            tenant: Set(key.tenant),
            public_key: Set(key.public_key),
            sealed_private_key: Set(key.sealed_private_key),
            created_at: Set(key.created_at),
            not_after: Set(key.not_after),
        };
        signing_key::Entity::insert(model)
            .exec_without_returning(self.db)
            .await
            .map_err(query_error)?;
        Ok(())
    }

    /// The newest unretired key of `tenant` (`None`: the platform key).
    pub async fn active_key(&self, tenant: Option<&TenantId>) -> Result<Option<KeyRecord>> {
        let query = signing_key::Entity::find().filter(signing_key::Column::NotAfter.is_null());
        let query = match tenant {
            Some(tenant) => query.filter(signing_key::Column::Tenant.eq(tenant.as_str())),
            None => query.filter(signing_key::Column::Tenant.is_null()),
        };
        query
            .order_by_desc(signing_key::Column::CreatedAt)
            .one(self.db)
            .await
            .map_err(query_error)
    }

    /// Every key verifiers should know: unretired, or retired after `now`.
    pub async fn trusted_keys(&self, now: i64) -> Result<Vec<KeyRecord>> {
        signing_key::Entity::find()
            .filter(
                signing_key::Column::NotAfter
                    .is_null()
                    .or(signing_key::Column::NotAfter.gt(now)),
            )
            .all(self.db)
            .await
            .map_err(query_error)
    }

    /// Retires every unretired key of `tenant` (`None`: the platform) at `not_after`.
    pub async fn retire_keys(&self, tenant: Option<&TenantId>, not_after: i64) -> Result<u64> {
        let update = signing_key::Entity::update_many()
            .col_expr(signing_key::Column::NotAfter, Expr::value(not_after))
            .filter(signing_key::Column::NotAfter.is_null());
        let update = match tenant {
            Some(tenant) => update.filter(signing_key::Column::Tenant.eq(tenant.as_str())),
            None => update.filter(signing_key::Column::Tenant.is_null()),
        };
        Ok(update
            .exec(self.db)
            .await
            .map_err(query_error)?
            .rows_affected)
    }

    /// Records an issued token.
    pub async fn insert_token(&self, record: TokenRecord) -> Result<()> {
        let model = token::ActiveModel {
            jti: Set(record.jti),
            tenant: Set(record.tenant),
            tenants: Set(record.tenants),
            subject: Set(record.subject),
            role: Set(record.role),
            kid: Set(record.kid),
            issued_at: Set(record.issued_at),
            expires_at: Set(record.expires_at),
            revoked_at: Set(record.revoked_at),
            revoked_by: Set(record.revoked_by),
        };
        token::Entity::insert(model)
            .exec_without_returning(self.db)
            .await
            .map_err(query_error)?;
        Ok(())
    }

    /// One token's metadata.
    pub async fn get_token(&self, jti: &str) -> Result<Option<TokenRecord>> {
        token::Entity::find_by_id(jti.to_owned())
            .one(self.db)
            .await
            .map_err(query_error)
    }

    /// Revokes a token by id (any tenant's, or a platform token).
    pub async fn revoke_token(&self, jti: &str, by: &str, now: i64) -> Result<TokenRecord> {
        revoke(self.db, jti, None, by, now).await
    }

    /// Ids of revoked tokens that have not expired by `now`.
    pub async fn revoked_tokens(&self, now: i64) -> Result<Vec<String>> {
        Ok(token::Entity::find()
            .filter(token::Column::RevokedAt.is_not_null())
            .filter(token::Column::ExpiresAt.gt(now))
            .all(self.db)
            .await
            .map_err(query_error)?
            .into_iter()
            .map(|record| record.jti)
            .collect())
    }

    /// Every principal: created here, platform-wide ones (every tenant); listed and disabled
    /// here, any tenant's.
    pub fn principals(&self) -> Principals<'a, C> {
        Principals {
            db: self.db,
            tenant: None,
        }
    }

    /// Global rules (the MSSP's).
    pub fn global_rules(&self) -> Rules<'a, C> {
        Rules {
            db: self.db,
            owner: GLOBAL.to_owned(),
        }
    }

    /// Global threat-intel feeds.
    pub fn global_feeds(&self) -> Feeds<'a, C> {
        Feeds {
            db: self.db,
            owner: GLOBAL.to_owned(),
        }
    }

    /// A cheap summary of every owner's detection content (rules, overrides, feeds), for
    /// services that reload it when it changes: per owner, the row count and the latest
    /// change time of each table. A changed, added or deleted row changes its owner's entry.
    pub async fn content_versions(&self) -> Result<ContentVersions> {
        let mut versions = ContentVersions::default();
        let rules = owner_versions::<rule::Entity, _>(
            self.db,
            rule::Column::Tenant,
            rule::Column::RuleId,
            rule::Column::UpdatedAt,
        )
        .await?;
        for (owner, count, latest) in rules {
            if let Some(entry) = versions.entry(owner) {
                entry.rules = (count, latest.unwrap_or(0));
            }
        }
        let overrides = owner_versions::<rule_override::Entity, _>(
            self.db,
            rule_override::Column::Tenant,
            rule_override::Column::RuleId,
            rule_override::Column::UpdatedAt,
        )
        .await?;
        for (owner, count, latest) in overrides {
            if let Some(entry) = versions.entry(owner) {
                entry.overrides = (count, latest.unwrap_or(0));
            }
        }
        let feeds = owner_versions::<intel_feed::Entity, _>(
            self.db,
            intel_feed::Column::Tenant,
            intel_feed::Column::Name,
            intel_feed::Column::UpdatedAt,
        )
        .await?;
        for (owner, count, latest) in feeds {
            if let Some(entry) = versions.entry(owner) {
                entry.feeds = (count, latest.unwrap_or(0));
            }
        }
        Ok(versions)
    }

    /// Appends an audit record, for any tenant or none.
    pub async fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        insert_audit(self.db, record).await
    }

    /// The audit log across every tenant, newest first.
    pub async fn audit(&self, page: &AuditPage) -> Result<Vec<AuditRecord>> {
        let query = audit::Entity::find();
        read_audit(self.db, query, page).await
    }
}

/// One tenant's data.
#[derive(Debug)]
pub struct TenantScope<'a, C> {
    db: &'a C,
    tenant: TenantId,
}

impl<'a, C: ConnectionTrait> TenantScope<'a, C> {
    /// The tenant.
    pub fn id(&self) -> &TenantId {
        &self.tenant
    }

    /// Stores alerts; an alert id already stored for this tenant is skipped. Returns how many
    /// were new. Alerts of another tenant are refused, none stored.
    pub async fn insert_alerts(&self, alerts: &[Alert]) -> Result<u64> {
        if alerts.is_empty() {
            return Ok(0);
        }
        let stored_at = micros(time::OffsetDateTime::now_utc());
        let mut models = Vec::with_capacity(alerts.len());
        for alert in alerts {
            if alert.tenant != self.tenant {
                return Err(StoreError::Invalid(format!(
                    "alert {} belongs to tenant {}, not {}",
                    alert.id, alert.tenant, self.tenant
                )));
            }
            let body = serde_json::to_string(alert)
                .map_err(|err| StoreError::Invalid(format!("alert {}: {err}", alert.id)))?;
            models.push(alert::ActiveModel {
                tenant: Set(self.tenant.to_string()),
                id: Set(alert.id.to_string()),
                rule_id: Set(alert.rule_id.clone()),
                rule_title: Set(alert.rule_title.clone()),
                level: Set(level_number(alert.level)),
                source: Set(source_name(alert.source).to_owned()),
                event_time: Set(micros(alert.event_time)),
                detected_time: Set(micros(alert.detected_time)),
                stored_at: Set(stored_at),
                body: Set(body),
            });
        }
        // 2,000 rows of 10 columns stay under SQLite's 32,766 and PostgreSQL's 65,535 bind
        // parameters; fewer, larger statements are what makes bulk persistence fast.
        let mut inserted = 0;
        for chunk in models.chunks(2000) {
            inserted += alert::Entity::insert_many(chunk.to_vec())
                .on_conflict(
                    OnConflict::columns([alert::Column::Tenant, alert::Column::Id])
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(self.db)
                .await
                .map_err(query_error)?;
        }
        Ok(inserted)
    }

    /// Alerts stored at or after `since` (µs), oldest first, with the time each was stored:
    /// what an alert stream follows, so that alerts detected earlier but stored late are not
    /// missed.
    pub async fn alerts_stored_since(&self, since: i64, limit: u64) -> Result<Vec<(i64, Alert)>> {
        let rows = alert::Entity::find()
            .filter(alert::Column::Tenant.eq(self.tenant.as_str()))
            .filter(alert::Column::StoredAt.gte(since))
            .order_by_asc(alert::Column::StoredAt)
            .order_by_asc(alert::Column::Id)
            .limit(limit)
            .all(self.db)
            .await
            .map_err(query_error)?;
        rows.into_iter()
            .map(|row| {
                serde_json::from_str(&row.body)
                    .map(|alert| (row.stored_at, alert))
                    .map_err(|err| StoreError::Query(format!("stored alert {}: {err}", row.id)))
            })
            .collect()
    }

    /// A page of alerts, newest detection first.
    pub async fn alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>> {
        let mut select =
            alert::Entity::find().filter(alert::Column::Tenant.eq(self.tenant.as_str()));
        if let Some(from) = query.from {
            select = select.filter(alert::Column::DetectedTime.gte(from));
        }
        if let Some(to) = query.to {
            select = select.filter(alert::Column::DetectedTime.lt(to));
        }
        if let Some(min_level) = query.min_level {
            select = select.filter(alert::Column::Level.gte(level_number(min_level)));
        }
        if let Some(rule_id) = &query.rule_id {
            select = select.filter(alert::Column::RuleId.eq(rule_id.as_str()));
        }
        if let Some((time, id)) = &query.after {
            select = select.filter(
                alert::Column::DetectedTime
                    .lt(*time)
                    .or(alert::Column::DetectedTime
                        .eq(*time)
                        .and(alert::Column::Id.lt(id.as_str()))),
            );
        }
        let rows = select
            .order_by_desc(alert::Column::DetectedTime)
            .order_by_desc(alert::Column::Id)
            .limit(query.limit)
            .all(self.db)
            .await
            .map_err(query_error)?;
        rows.into_iter()
            .map(|row| {
                serde_json::from_str(&row.body)
                    .map_err(|err| StoreError::Query(format!("stored alert {}: {err}", row.id)))
            })
            .collect()
    }

    /// How many alerts the tenant has.
    pub async fn count_alerts(&self) -> Result<u64> {
        alert::Entity::find()
            .filter(alert::Column::Tenant.eq(self.tenant.as_str()))
            .count(self.db)
            .await
            .map_err(query_error)
    }

    /// Stores or replaces an incident.
    pub async fn upsert_incident(&self, incident: &Incident) -> Result<()> {
        if incident.tenant != self.tenant {
            return Err(StoreError::Invalid(format!(
                "incident {} belongs to tenant {}, not {}",
                incident.id, incident.tenant, self.tenant
            )));
        }
        let body = serde_json::to_string(incident)
            .map_err(|err| StoreError::Invalid(format!("incident {}: {err}", incident.id)))?;
        let model = incident::ActiveModel {
            tenant: Set(self.tenant.to_string()),
            id: Set(incident.id.to_string()),
            status: Set(serde_json::to_value(incident.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()),
            severity: Set(level_number(incident.severity)),
            created_at: Set(micros(incident.first_seen)),
            updated_at: Set(micros(incident.updated_time)),
            body: Set(body),
        };
        incident::Entity::insert(model)
            .on_conflict(
                OnConflict::columns([incident::Column::Tenant, incident::Column::Id])
                    .update_columns([
                        incident::Column::Status,
                        incident::Column::Severity,
                        incident::Column::UpdatedAt,
                        incident::Column::Body,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(self.db)
            .await
            .map_err(query_error)?;
        Ok(())
    }

    /// The tenant's incidents, most recently changed first.
    pub async fn incidents(&self, limit: u64) -> Result<Vec<Incident>> {
        incident::Entity::find()
            .filter(incident::Column::Tenant.eq(self.tenant.as_str()))
            .order_by_desc(incident::Column::UpdatedAt)
            .limit(limit)
            .all(self.db)
            .await
            .map_err(query_error)?
            .into_iter()
            .map(|row| {
                serde_json::from_str(&row.body)
                    .map_err(|err| StoreError::Query(format!("stored incident {}: {err}", row.id)))
            })
            .collect()
    }

    /// The principals scoped to this tenant.
    pub fn principals(&self) -> Principals<'a, C> {
        Principals {
            db: self.db,
            tenant: Some(self.tenant.clone()),
        }
    }

    /// The tenant's own rules (additions to the global set).
    pub fn rules(&self) -> Rules<'a, C> {
        Rules {
            db: self.db,
            owner: self.tenant.to_string(),
        }
    }

    /// The tenant's own threat-intel feeds.
    pub fn feeds(&self) -> Feeds<'a, C> {
        Feeds {
            db: self.db,
            owner: self.tenant.to_string(),
        }
    }

    /// Sets the tenant's override of a rule (global or its own).
    pub async fn set_override(&self, record: OverrideRecord) -> Result<OverrideRecord> {
        let existing =
            rule_override::Entity::find_by_id((self.tenant.to_string(), record.rule_id.clone()))
                .one(self.db)
                .await
                .map_err(query_error)?;
        let version = existing.map_or(1, |old| old.version + 1);
        let model = rule_override::ActiveModel {
            tenant: Set(self.tenant.to_string()),
            rule_id: Set(record.rule_id.clone()),
            enabled: Set(record.enabled),
            level: Set(record.level.clone()),
            exceptions: Set(record.exceptions.clone()),
            version: Set(version),
            updated_at: Set(record.updated_at),
            updated_by: Set(record.updated_by.clone()),
        };
        rule_override::Entity::insert(model)
            .on_conflict(
                OnConflict::columns([rule_override::Column::Tenant, rule_override::Column::RuleId])
                    .update_columns([
                        rule_override::Column::Enabled,
                        rule_override::Column::Level,
                        rule_override::Column::Exceptions,
                        rule_override::Column::Version,
                        rule_override::Column::UpdatedAt,
                        rule_override::Column::UpdatedBy,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(self.db)
            .await
            .map_err(query_error)?;
        Ok(OverrideRecord {
            tenant: self.tenant.to_string(),
            version,
            ..record
        })
    }

    /// The tenant's overrides.
    pub async fn overrides(&self) -> Result<Vec<OverrideRecord>> {
        rule_override::Entity::find()
            .filter(rule_override::Column::Tenant.eq(self.tenant.as_str()))
            .order_by_asc(rule_override::Column::RuleId)
            .all(self.db)
            .await
            .map_err(query_error)
    }

    /// The detect service's state called `name` for this tenant and its version, if any was
    /// written.
    pub async fn detect_state(&self, name: &str) -> Result<Option<(i64, Vec<u8>)>> {
        Ok(
            detect_state::Entity::find_by_id((self.tenant.to_string(), name.to_owned()))
                .one(self.db)
                .await
                .map_err(query_error)?
                .map(|row| (row.version, row.body)),
        )
    }

    /// The version of the detect service's state called `name`, without reading it.
    pub async fn detect_state_version(&self, name: &str) -> Result<Option<i64>> {
        detect_state::Entity::find_by_id((self.tenant.to_string(), name.to_owned()))
            .select_only()
            .column(detect_state::Column::Version)
            .into_tuple()
            .one(self.db)
            .await
            .map_err(query_error)
    }

    /// Writes the detect service's state called `name` if its stored version is still
    /// `expected` (`None`: nothing stored yet). Returns the new version, or `None` when another
    /// writer got there first (the caller rereads and retries).
    pub async fn put_detect_state(
        &self,
        name: &str,
        expected: Option<i64>,
        body: Vec<u8>,
        now: i64,
    ) -> Result<Option<i64>> {
        let written = match expected {
            None => {
                let model = detect_state::ActiveModel {
                    tenant: Set(self.tenant.to_string()),
                    name: Set(name.to_owned()),
                    body: Set(body),
                    version: Set(1),
                    updated_at: Set(now),
                };
                detect_state::Entity::insert(model)
                    .on_conflict(
                        OnConflict::columns([
                            detect_state::Column::Tenant,
                            detect_state::Column::Name,
                        ])
                        .do_nothing()
                        .to_owned(),
                    )
                    .exec_without_returning(self.db)
                    .await
                    .map_err(query_error)?
            }
            Some(version) => {
                detect_state::Entity::update_many()
                    .col_expr(detect_state::Column::Body, Expr::value(body))
                    .col_expr(detect_state::Column::Version, Expr::value(version + 1))
                    .col_expr(detect_state::Column::UpdatedAt, Expr::value(now))
                    .filter(detect_state::Column::Tenant.eq(self.tenant.as_str()))
                    .filter(detect_state::Column::Name.eq(name))
                    .filter(detect_state::Column::Version.eq(version))
                    .exec(self.db)
                    .await
                    .map_err(query_error)?
                    .rows_affected
            }
        };
        Ok((written == 1).then(|| expected.map_or(1, |version| version + 1)))
    }

    /// The tenant's tokens, newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        token::Entity::find()
            .filter(token::Column::Tenant.eq(self.tenant.as_str()))
            .order_by_desc(token::Column::IssuedAt)
            .all(self.db)
            .await
            .map_err(query_error)
    }

    /// Revokes one of the tenant's tokens; a token of another tenant is `NotFound`.
    pub async fn revoke_token(&self, jti: &str, by: &str, now: i64) -> Result<TokenRecord> {
        revoke(self.db, jti, Some(&self.tenant), by, now).await
    }

    /// Appends an audit record about this tenant.
    pub async fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        if record.tenant.as_ref() != Some(&self.tenant) {
            return Err(StoreError::Invalid(
                "an audit record about another tenant".into(),
            ));
        }
        insert_audit(self.db, record).await
    }

    /// The tenant's audit log, newest first.
    pub async fn audit(&self, page: &AuditPage) -> Result<Vec<AuditRecord>> {
        let query = audit::Entity::find().filter(audit::Column::Tenant.eq(self.tenant.as_str()));
        read_audit(self.db, query, page).await
    }
}

/// Per owner of one table: row count and latest `updated_at`.
async fn owner_versions<E, C>(
    db: &C,
    owner: E::Column,
    key: E::Column,
    updated: E::Column,
) -> Result<Vec<(String, i64, Option<i64>)>>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    E::find()
        .select_only()
        .column(owner)
        .column_as(key.count(), "n")
        .column_as(updated.max(), "latest")
        .group_by(owner)
        .into_tuple()
        .all(db)
        .await
        .map_err(query_error)
}

async fn revoke<C: ConnectionTrait>(
    db: &C,
    jti: &str,
    tenant: Option<&TenantId>,
    by: &str,
    now: i64,
) -> Result<TokenRecord> {
    let mut update = token::Entity::update_many()
        .col_expr(token::Column::RevokedAt, Expr::value(now))
        .col_expr(token::Column::RevokedBy, Expr::value(by))
        .filter(token::Column::Jti.eq(jti))
        .filter(token::Column::RevokedAt.is_null());
    let mut find = token::Entity::find_by_id(jti.to_owned());
    if let Some(tenant) = tenant {
        update = update.filter(token::Column::Tenant.eq(tenant.as_str()));
        find = find.filter(token::Column::Tenant.eq(tenant.as_str()));
    }
    update.exec(db).await.map_err(query_error)?;
    find.one(db)
        .await
        .map_err(query_error)?
        .ok_or_else(|| StoreError::NotFound(format!("token {jti}")))
}

/// A principal as stored.
pub type PrincipalRecord = principal::Model;

/// Named principals: one tenant's ([`TenantScope::principals`]) or the platform's view of all
/// ([`Platform::principals`]).
#[derive(Debug)]
pub struct Principals<'a, C> {
    db: &'a C,
    tenant: Option<TenantId>,
}

impl<C: ConnectionTrait> Principals<'_, C> {
    /// Registers a principal with a role; its subject must be new across the platform.
    pub async fn create(
        &self,
        subject: &str,
        role: &str,
        display_name: &str,
        by: &str,
        now: i64,
    ) -> Result<PrincipalRecord> {
        if principal::Entity::find_by_id(subject.to_owned())
            .one(self.db)
            .await
            .map_err(query_error)?
            .is_some()
        {
            return Err(StoreError::Conflict(format!(
                "principal {subject} already exists"
            )));
        }
        let model = principal::ActiveModel {
            subject: Set(subject.to_owned()),
            tenant: Set(self.tenant.as_ref().map(|t| t.to_string())),
            role: Set(role.to_owned()),
            display_name: Set(display_name.to_owned()),
            created_at: Set(now),
            created_by: Set(by.to_owned()),
            disabled_at: Set(None),
            disabled_by: Set(None),
        };
        principal::Entity::insert(model)
            .exec_without_returning(self.db)
            .await
            .map_err(query_error)?;
        self.get(subject)
            .await?
            .ok_or_else(|| StoreError::Query("the principal vanished after insert".into()))
    }

    /// One principal in this scope.
    pub async fn get(&self, subject: &str) -> Result<Option<PrincipalRecord>> {
        let mut find = principal::Entity::find_by_id(subject.to_owned());
        if let Some(tenant) = &self.tenant {
            find = find.filter(principal::Column::Tenant.eq(tenant.as_str()));
        }
        find.one(self.db).await.map_err(query_error)
    }

    /// Every principal in this scope, by subject.
    pub async fn list(&self) -> Result<Vec<PrincipalRecord>> {
        let mut find = principal::Entity::find().order_by_asc(principal::Column::Subject);
        if let Some(tenant) = &self.tenant {
            find = find.filter(principal::Column::Tenant.eq(tenant.as_str()));
        }
        find.all(self.db).await.map_err(query_error)
    }

    /// Disables a principal and revokes every live token issued to its subject; returns the
    /// principal and how many tokens were revoked. Disabling twice is harmless.
    pub async fn disable(
        &self,
        subject: &str,
        by: &str,
        now: i64,
    ) -> Result<(PrincipalRecord, u64)> {
        let Some(record) = self.get(subject).await? else {
            return Err(StoreError::NotFound(format!("principal {subject}")));
        };
        if record.disabled_at.is_none() {
            principal::Entity::update_many()
                .col_expr(principal::Column::DisabledAt, Expr::value(now))
                .col_expr(principal::Column::DisabledBy, Expr::value(by))
                .filter(principal::Column::Subject.eq(subject))
                .exec(self.db)
                .await
                .map_err(query_error)?;
        }
        let mut revoke = token::Entity::update_many()
            .col_expr(token::Column::RevokedAt, Expr::value(now))
            .col_expr(token::Column::RevokedBy, Expr::value(by))
            .filter(token::Column::Subject.eq(subject))
            .filter(token::Column::RevokedAt.is_null());
        if let Some(tenant) = &record.tenant {
            revoke = revoke.filter(token::Column::Tenant.eq(tenant.as_str()));
        }
        let revoked = revoke
            .exec(self.db)
            .await
            .map_err(query_error)?
            .rows_affected;
        let record = self
            .get(subject)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("principal {subject}")))?;
        Ok((record, revoked))
    }

    /// Live (unrevoked, unexpired) tokens issued to `subject`.
    pub async fn live_tokens(&self, subject: &str, now: i64) -> Result<u64> {
        token::Entity::find()
            .filter(token::Column::Subject.eq(subject))
            .filter(token::Column::RevokedAt.is_null())
            .filter(token::Column::ExpiresAt.gt(now))
            .count(self.db)
            .await
            .map_err(query_error)
    }
}

/// Rules of one owner: the platform (global) or one tenant.
#[derive(Debug)]
pub struct Rules<'a, C> {
    db: &'a C,
    owner: String,
}

/// A rule to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRule {
    /// Sigma id.
    pub rule_id: String,
    /// Title.
    pub title: String,
    /// Level.
    pub level: String,
    /// `detection` or `correlation`.
    pub kind: String,
    /// The YAML.
    pub yaml: String,
}

impl<C: ConnectionTrait> Rules<'_, C> {
    /// Stores a rule, or a new version of it. Returns the stored record.
    pub async fn upsert(&self, rule: NewRule, by: &str, now: i64) -> Result<RuleRecord> {
        let existing = self.get(&rule.rule_id).await?;
        let (version, enabled) = existing.map_or((1, true), |old| (old.version + 1, old.enabled));
        let record = RuleRecord {
            tenant: self.owner.clone(),
            rule_id: rule.rule_id,
            title: rule.title,
            level: rule.level,
            kind: rule.kind,
            yaml: rule.yaml,
            version,
            enabled,
            updated_at: now,
            updated_by: by.to_owned(),
        };
        let model = rule::ActiveModel {
            tenant: Set(record.tenant.clone()),
            rule_id: Set(record.rule_id.clone()),
            title: Set(record.title.clone()),
            level: Set(record.level.clone()),
            kind: Set(record.kind.clone()),
            yaml: Set(record.yaml.clone()),
            version: Set(record.version),
            enabled: Set(record.enabled),
            updated_at: Set(record.updated_at),
            updated_by: Set(record.updated_by.clone()),
        };
        rule::Entity::insert(model)
            .on_conflict(
                OnConflict::columns([rule::Column::Tenant, rule::Column::RuleId])
                    .update_columns([
                        rule::Column::Title,
                        rule::Column::Level,
                        rule::Column::Kind,
                        rule::Column::Yaml,
                        rule::Column::Version,
                        rule::Column::UpdatedAt,
                        rule::Column::UpdatedBy,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(self.db)
            .await
            .map_err(query_error)?;
        Ok(record)
    }

    /// One rule.
    pub async fn get(&self, rule_id: &str) -> Result<Option<RuleRecord>> {
        rule::Entity::find_by_id((self.owner.clone(), rule_id.to_owned()))
            .one(self.db)
            .await
            .map_err(query_error)
    }

    /// Every rule of the owner, by id.
    pub async fn list(&self) -> Result<Vec<RuleRecord>> {
        rule::Entity::find()
            .filter(rule::Column::Tenant.eq(self.owner.as_str()))
            .order_by_asc(rule::Column::RuleId)
            .all(self.db)
            .await
            .map_err(query_error)
    }

    /// Enables or disables a rule; `NotFound` when the owner has no such rule.
    pub async fn set_enabled(
        &self,
        rule_id: &str,
        enabled: bool,
        by: &str,
        now: i64,
    ) -> Result<RuleRecord> {
        let result = rule::Entity::update_many()
            .col_expr(rule::Column::Enabled, Expr::value(enabled))
            .col_expr(
                rule::Column::Version,
                Expr::col(rule::Column::Version).add(1),
            )
            .col_expr(rule::Column::UpdatedAt, Expr::value(now))
            .col_expr(rule::Column::UpdatedBy, Expr::value(by))
            .filter(rule::Column::Tenant.eq(self.owner.as_str()))
            .filter(rule::Column::RuleId.eq(rule_id))
            .exec(self.db)
            .await
            .map_err(query_error)?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("rule {rule_id}")));
        }
        self.get(rule_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("rule {rule_id}")))
    }

    /// Deletes a rule; `NotFound` when the owner has no such rule.
    pub async fn delete(&self, rule_id: &str) -> Result<()> {
        let result = rule::Entity::delete_many()
            .filter(rule::Column::Tenant.eq(self.owner.as_str()))
            .filter(rule::Column::RuleId.eq(rule_id))
            .exec(self.db)
            .await
            .map_err(query_error)?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("rule {rule_id}")));
        }
        Ok(())
    }
}

/// Threat-intel feeds of one owner: the platform (global) or one tenant.
#[derive(Debug)]
pub struct Feeds<'a, C> {
    db: &'a C,
    owner: String,
}

impl<C: ConnectionTrait> Feeds<'_, C> {
    /// Stores a feed, or a new version of it.
    pub async fn upsert(
        &self,
        name: &str,
        format: &str,
        content: Vec<u8>,
        indicator_count: i64,
        by: &str,
        now: i64,
    ) -> Result<FeedRecord> {
        let existing = intel_feed::Entity::find_by_id((self.owner.clone(), name.to_owned()))
            .one(self.db)
            .await
            .map_err(query_error)?;
        let version = existing.map_or(1, |old| old.version + 1);
        let record = FeedRecord {
            tenant: self.owner.clone(),
            name: name.to_owned(),
            format: format.to_owned(),
            content,
            indicator_count,
            version,
            updated_at: now,
            updated_by: by.to_owned(),
        };
        let model = intel_feed::ActiveModel {
            tenant: Set(record.tenant.clone()),
            name: Set(record.name.clone()),
            format: Set(record.format.clone()),
            content: Set(record.content.clone()),
            indicator_count: Set(record.indicator_count),
            version: Set(record.version),
            updated_at: Set(record.updated_at),
            updated_by: Set(record.updated_by.clone()),
        };
        intel_feed::Entity::insert(model)
            .on_conflict(
                OnConflict::columns([intel_feed::Column::Tenant, intel_feed::Column::Name])
                    .update_columns([
                        intel_feed::Column::Format,
                        intel_feed::Column::Content,
                        intel_feed::Column::IndicatorCount,
                        intel_feed::Column::Version,
                        intel_feed::Column::UpdatedAt,
                        intel_feed::Column::UpdatedBy,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(self.db)
            .await
            .map_err(query_error)?;
        Ok(record)
    }

    /// Every feed of the owner, by name, with its content.
    pub async fn list_with_content(&self) -> Result<Vec<FeedRecord>> {
        intel_feed::Entity::find()
            .filter(intel_feed::Column::Tenant.eq(self.owner.as_str()))
            .order_by_asc(intel_feed::Column::Name)
            .all(self.db)
            .await
            .map_err(query_error)
    }

    /// Every feed of the owner, by name, without content.
    pub async fn list(&self) -> Result<Vec<FeedRecord>> {
        Ok(intel_feed::Entity::find()
            .filter(intel_feed::Column::Tenant.eq(self.owner.as_str()))
            .order_by_asc(intel_feed::Column::Name)
            .all(self.db)
            .await
            .map_err(query_error)?
            .into_iter()
            .map(|mut record| {
                record.content = Vec::new();
                record
            })
            .collect())
    }

    /// Deletes a feed; `NotFound` when the owner has none of that name.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let result = intel_feed::Entity::delete_many()
            .filter(intel_feed::Column::Tenant.eq(self.owner.as_str()))
            .filter(intel_feed::Column::Name.eq(name))
            .exec(self.db)
            .await
            .map_err(query_error)?;
        if result.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("feed {name}")));
        }
        Ok(())
    }
}

/// Row count and latest change time (µs) of one owner's rows in one table.
pub type TableVersion = (i64, i64);

/// One owner's detection content, summarized by [`Platform::content_versions`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct OwnerVersion {
    /// Rules the owner stored.
    pub rules: TableVersion,
    /// Overrides (tenants only).
    pub overrides: TableVersion,
    /// Threat-intel feeds.
    pub feeds: TableVersion,
}

/// Every owner's [`OwnerVersion`]: the global content and each tenant's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentVersions {
    /// The MSSP's global rules and feeds.
    pub global: OwnerVersion,
    /// Each tenant with rules, overrides or feeds of its own.
    pub tenants: std::collections::BTreeMap<TenantId, OwnerVersion>,
}

impl ContentVersions {
    /// The owner's entry; `None` (and a warning) for an owner that is not a valid tenant id,
    /// so one bad row never stops every tenant's reloads.
    fn entry(&mut self, owner: String) -> Option<&mut OwnerVersion> {
        if owner == GLOBAL {
            return Some(&mut self.global);
        }
        match TenantId::new(&owner) {
            Ok(tenant) => Some(self.tenants.entry(tenant).or_default()),
            Err(err) => {
                tracing::warn!(owner = %owner, error = %err, "stored content of an invalid owner skipped");
                None
            }
        }
    }
}

/// Filters and a cursor for an alert page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertQuery {
    /// Detected at or after, µs.
    pub from: Option<i64>,
    /// Detected before, µs.
    pub to: Option<i64>,
    /// Lowest level.
    pub min_level: Option<vigil_schema::Level>,
    /// One rule.
    pub rule_id: Option<String>,
    /// Continue after this (detected time, alert id).
    pub after: Option<(i64, String)>,
    /// Page size.
    pub limit: u64,
}

/// A page of the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditPage {
    /// At or after, µs.
    pub from: Option<i64>,
    /// Before, µs.
    pub to: Option<i64>,
    /// Page size.
    pub limit: u64,
}

async fn insert_audit<C: ConnectionTrait>(db: &C, record: &AuditRecord) -> Result<()> {
    let details = serde_json::to_string(&record.details)
        .map_err(|err| StoreError::Invalid(format!("audit details: {err}")))?;
    let model = audit::ActiveModel {
        id: Set(record.id.to_string()),
        tenant: Set(record.tenant.as_ref().map(|t| t.to_string())),
        time: Set(micros(record.time)),
        actor_subject: Set(record.actor.subject.clone()),
        actor_role: Set(record.actor.role.clone()),
        action: Set(record.action.clone()),
        target: Set(record.target.clone()),
        outcome: Set(outcome_name(record.outcome).to_owned()),
        details: Set(details),
    };
    audit::Entity::insert(model)
        .exec_without_returning(db)
        .await
        .map_err(query_error)?;
    Ok(())
}

async fn read_audit<C: ConnectionTrait>(
    db: &C,
    mut query: sea_orm::Select<audit::Entity>,
    page: &AuditPage,
) -> Result<Vec<AuditRecord>> {
    if let Some(from) = page.from {
        query = query.filter(audit::Column::Time.gte(from));
    }
    if let Some(to) = page.to {
        query = query.filter(audit::Column::Time.lt(to));
    }
    query
        .order_by_desc(audit::Column::Time)
        .order_by_desc(audit::Column::Id)
        .limit(page.limit)
        .all(db)
        .await
        .map_err(query_error)?
        .into_iter()
        .map(audit_record)
        .collect()
}

fn audit_record(row: audit::Model) -> Result<AuditRecord> {
    let bad = |what: String| StoreError::Query(format!("stored audit record {}: {what}", row.id));
    Ok(AuditRecord {
        id: row.id.parse().map_err(|err| bad(format!("{err}")))?,
        tenant: row
            .tenant
            .as_deref()
            .map(TenantId::new)
            .transpose()
            .map_err(|err| bad(err.to_string()))?,
        time: crate::from_micros(row.time),
        actor: vigil_schema::Actor {
            subject: row.actor_subject.clone(),
            role: row.actor_role.clone(),
        },
        action: row.action.clone(),
        target: row.target.clone(),
        outcome: serde_json::from_value(serde_json::Value::String(row.outcome.clone()))
            .map_err(|err| bad(err.to_string()))?,
        details: serde_json::from_str(&row.details).map_err(|err| bad(err.to_string()))?,
    })
}

/// Levels as numbers: informational 0 … critical 4.
pub fn level_number(level: vigil_schema::Level) -> i16 {
    use vigil_schema::Level::*;
    match level {
        Informational => 0,
        Low => 1,
        Medium => 2,
        High => 3,
        Critical => 4,
    }
}

fn source_name(source: vigil_schema::AlertSource) -> &'static str {
    match source {
        vigil_schema::AlertSource::Sigma => "sigma",
        vigil_schema::AlertSource::Correlation => "correlation",
        vigil_schema::AlertSource::Intel => "intel",
    }
}

fn outcome_name(outcome: vigil_schema::AuditOutcome) -> &'static str {
    match outcome {
        vigil_schema::AuditOutcome::Success => "success",
        vigil_schema::AuditOutcome::Denied => "denied",
        vigil_schema::AuditOutcome::Failed => "failed",
    }
}
