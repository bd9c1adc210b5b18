//! The `audit_log` table.

use sea_orm::entity::prelude::*;

/// One row of `audit_log`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    /// Record id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The tenant affected; `None` for platform changes.
    pub tenant: Option<String>,
    /// When, microseconds since the epoch.
    pub time: i64,
    /// The token subject.
    pub actor_subject: String,
    /// The role it acted in.
    pub actor_role: String,
    /// `noun.verb`.
    pub action: String,
    /// The object acted on.
    pub target: Option<String>,
    /// `success`, `denied` or `failed`.
    pub outcome: String,
    /// Details as JSON.
    #[sea_orm(column_type = "Text")]
    pub details: String,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
