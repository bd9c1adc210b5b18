//! Schema migrations: one history for PostgreSQL and SQLite, applied by [`crate::Store::migrate`]
//! at start. A migration, once released, is never edited; changes are new migrations.

use sea_orm_migration::prelude::*;

/// Every migration, in order.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(ControlPlane),
            Box::new(DetectState),
            Box::new(TenantManager),
            Box::new(Principals),
        ]
    }
}

/// Tenants, keys, tokens, rules, overrides, feeds, alerts, incidents and the audit log.
#[derive(Debug)]
struct ControlPlane;

impl MigrationName for ControlPlane {
    fn name(&self) -> &str {
        "m20261127_000001_control_plane"
    }
}

fn micros(name: &'static str) -> ColumnDef {
    ColumnDef::new(Alias::new(name))
        .big_integer()
        .not_null()
        .take()
}

fn text(name: &'static str) -> ColumnDef {
    ColumnDef::new(Alias::new(name)).string().not_null().take()
}

fn long_text(name: &'static str) -> ColumnDef {
    ColumnDef::new(Alias::new(name)).text().not_null().take()
}

fn nullable_text(name: &'static str) -> ColumnDef {
    ColumnDef::new(Alias::new(name)).string().null().take()
}

fn table(name: &'static str) -> TableCreateStatement {
    Table::create().table(Alias::new(name)).to_owned()
}

fn index(
    name: &'static str,
    table: &'static str,
    columns: &[&'static str],
) -> IndexCreateStatement {
    let mut index = Index::create();
    index.name(name).table(Alias::new(table));
    for column in columns {
        index.col(Alias::new(*column));
    }
    index.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for ControlPlane {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                table("tenants")
                    .col(text("id").primary_key())
                    .col(text("display_name"))
                    .col(text("state"))
                    .col(micros("created_at"))
                    .col(micros("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                table("signing_keys")
                    .col(text("kid").primary_key())
                    .col(nullable_text("tenant"))
                    .col(ColumnDef::new(Alias::new("public_key")).binary().not_null())
                    .col(
                        ColumnDef::new(Alias::new("sealed_private_key"))
                            .binary()
                            .not_null(),
                    )
                    .col(micros("created_at"))
                    .col(ColumnDef::new(Alias::new("not_after")).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "signing_keys_tenant",
                "signing_keys",
                &["tenant", "created_at"],
            ))
            .await?;
        manager
            .create_table(
                table("tokens")
                    .col(text("jti").primary_key())
                    .col(nullable_text("tenant"))
                    .col(long_text("tenants"))
                    .col(text("subject"))
                    .col(text("role"))
                    .col(text("kid"))
                    .col(micros("issued_at"))
                    .col(micros("expires_at"))
                    .col(
                        ColumnDef::new(Alias::new("revoked_at"))
                            .big_integer()
                            .null(),
                    )
                    .col(nullable_text("revoked_by"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("tokens_tenant", "tokens", &["tenant", "issued_at"]))
            .await?;
        manager
            .create_index(index("tokens_expiry", "tokens", &["expires_at"]))
            .await?;
        manager
            .create_table(
                table("rules")
                    .col(text("tenant"))
                    .col(text("rule_id"))
                    .col(text("title"))
                    .col(text("level"))
                    .col(text("kind"))
                    .col(long_text("yaml"))
                    .col(micros("version"))
                    .col(ColumnDef::new(Alias::new("enabled")).boolean().not_null())
                    .col(micros("updated_at"))
                    .col(text("updated_by"))
                    .primary_key(
                        Index::create()
                            .col(Alias::new("tenant"))
                            .col(Alias::new("rule_id")),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                table("rule_overrides")
                    .col(text("tenant"))
                    .col(text("rule_id"))
                    .col(ColumnDef::new(Alias::new("enabled")).boolean().null())
                    .col(nullable_text("level"))
                    .col(long_text("exceptions"))
                    .col(micros("version"))
                    .col(micros("updated_at"))
                    .col(text("updated_by"))
                    .primary_key(
                        Index::create()
                            .col(Alias::new("tenant"))
                            .col(Alias::new("rule_id")),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                table("intel_feeds")
                    .col(text("tenant"))
                    .col(text("name"))
                    .col(text("format"))
                    .col(ColumnDef::new(Alias::new("content")).binary().not_null())
                    .col(micros("indicator_count"))
                    .col(micros("version"))
                    .col(micros("updated_at"))
                    .col(text("updated_by"))
                    .primary_key(
                        Index::create()
                            .col(Alias::new("tenant"))
                            .col(Alias::new("name")),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                table("alerts")
                    .col(text("tenant"))
                    .col(text("id"))
                    .col(text("rule_id"))
                    .col(text("rule_title"))
                    .col(
                        ColumnDef::new(Alias::new("level"))
                            .small_integer()
                            .not_null(),
                    )
                    .col(text("source"))
                    .col(micros("event_time"))
                    .col(micros("detected_time"))
                    .col(micros("stored_at"))
                    .col(long_text("body"))
                    .primary_key(
                        Index::create()
                            .col(Alias::new("tenant"))
                            .col(Alias::new("id")),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "alerts_tenant_time",
                "alerts",
                &["tenant", "detected_time", "id"],
            ))
            .await?;
        manager
            .create_table(
                table("incidents")
                    .col(text("tenant"))
                    .col(text("id"))
                    .col(text("status"))
                    .col(
                        ColumnDef::new(Alias::new("severity"))
                            .small_integer()
                            .not_null(),
                    )
                    .col(micros("created_at"))
                    .col(micros("updated_at"))
                    .col(long_text("body"))
                    .primary_key(
                        Index::create()
                            .col(Alias::new("tenant"))
                            .col(Alias::new("id")),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "alerts_tenant_stored",
                "alerts",
                &["tenant", "stored_at"],
            ))
            .await?;
        manager
            .create_index(index(
                "incidents_tenant_time",
                "incidents",
                &["tenant", "updated_at"],
            ))
            .await?;
        manager
            .create_table(
                table("audit_log")
                    .col(text("id").primary_key())
                    .col(nullable_text("tenant"))
                    .col(micros("time"))
                    .col(text("actor_subject"))
                    .col(text("actor_role"))
                    .col(text("action"))
                    .col(nullable_text("target"))
                    .col(text("outcome"))
                    .col(long_text("details"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index("audit_tenant_time", "audit_log", &["tenant", "time"]))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in [
            "audit_log",
            "incidents",
            "alerts",
            "intel_feeds",
            "rule_overrides",
            "rules",
            "tokens",
            "signing_keys",
            "tenants",
        ] {
            manager
                .drop_table(Table::drop().table(Alias::new(name)).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// State the detect service keeps per tenant (correlation windows), checkpointed so a restart
/// loses no open window; `version` lets processes sharing a tenant write it by
/// compare-and-swap.
#[derive(Debug)]
struct DetectState;

impl MigrationName for DetectState {
    fn name(&self) -> &str {
        "m20261127_000002_detect_state"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for DetectState {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                table("detect_state")
                    .col(text("tenant"))
                    .col(text("name"))
                    .col(ColumnDef::new(Alias::new("body")).binary().not_null())
                    .col(micros("version"))
                    .col(micros("updated_at"))
                    .primary_key(
                        Index::create()
                            .col(Alias::new("tenant"))
                            .col(Alias::new("name")),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Alias::new("detect_state")).to_owned())
            .await
    }
}

/// Which Kubernetes `Tenant` resource manages a tenant (`kubernetes:<namespace>/<name>`), so
/// that a second resource claiming the same id, or a tenant made by hand, is never taken over.
#[derive(Debug)]
struct TenantManager;

impl MigrationName for TenantManager {
    fn name(&self) -> &str {
        "m20261127_000003_tenant_managed_by"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for TenantManager {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("tenants"))
                    .add_column(nullable_text("managed_by"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new("tenants"))
                    .drop_column(Alias::new("managed_by"))
                    .to_owned(),
            )
            .await
    }
}

/// Named principals (people and services) that tokens are issued to, so that one can be listed
/// and disabled as a whole.
#[derive(Debug)]
struct Principals;

impl MigrationName for Principals {
    fn name(&self) -> &str {
        "m20261127_000004_principals"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Principals {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                table("principals")
                    .col(text("subject").primary_key())
                    .col(nullable_text("tenant"))
                    .col(text("role"))
                    .col(text("display_name"))
                    .col(micros("created_at"))
                    .col(text("created_by"))
                    .col(
                        ColumnDef::new(Alias::new("disabled_at"))
                            .big_integer()
                            .null()
                            .take(),
                    )
                    .col(nullable_text("disabled_by"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "principals_tenant",
                "principals",
                &["tenant", "subject"],
            ))
            .await?;
        // Disabling a principal revokes its tokens by subject.
        manager
            .create_index(index("tokens_subject", "tokens", &["subject"]))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("tokens_subject")
                    .table(Alias::new("tokens"))
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(Alias::new("principals")).to_owned())
            .await
    }
}
