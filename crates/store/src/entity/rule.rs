//! The `rules` table.

use sea_orm::entity::prelude::*;

/// One row of `rules`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "rules")]
pub struct Model {
    /// The owning tenant, or the empty string for a global rule.
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    /// The Sigma rule id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub rule_id: String,
    /// Title.
    pub title: String,
    /// Sigma level.
    pub level: String,
    /// `detection` or `correlation`.
    pub kind: String,
    /// The rule YAML as uploaded.
    #[sea_orm(column_type = "Text")]
    pub yaml: String,
    /// Incremented on every change.
    pub version: i64,
    /// Whether the rule runs.
    pub enabled: bool,
    /// Last change, microseconds since the epoch.
    pub updated_at: i64,
    /// Who changed it last.
    pub updated_by: String,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
