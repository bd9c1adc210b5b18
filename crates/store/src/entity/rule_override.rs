//! The `rule_overrides` table.

use sea_orm::entity::prelude::*;

/// One row of `rule_overrides`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "rule_overrides")]
pub struct Model {
    /// The tenant.
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    /// The global rule id the override applies to.
    #[sea_orm(primary_key, auto_increment = false)]
    pub rule_id: String,
    /// Enable or disable for this tenant; `None` follows the rule.
    pub enabled: Option<bool>,
    /// Another level for this tenant.
    pub level: Option<String>,
    /// Exceptions (field/value pairs that suppress a hit) as JSON.
    #[sea_orm(column_type = "Text")]
    pub exceptions: String,
    /// Incremented on every change.
    pub version: i64,
    /// Last change, microseconds since the epoch.
    pub updated_at: i64,
    /// Who changed it last.
    pub updated_by: String,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
