//! The `principals` table: named people and services that tokens are issued to.

use sea_orm::entity::prelude::*;

/// One row of `principals`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "principals")]
pub struct Model {
    /// The tokens' subject, e.g. `alice@mssp.example`; unique across the platform.
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject: String,
    /// The one tenant of a tenant-scoped principal; none for every tenant.
    pub tenant: Option<String>,
    /// The role its tokens carry.
    pub role: String,
    /// A name for people.
    pub display_name: String,
    /// Creation time, microseconds since the epoch.
    pub created_at: i64,
    /// Who created it.
    pub created_by: String,
    /// When it was disabled.
    pub disabled_at: Option<i64>,
    /// Who disabled it.
    pub disabled_by: Option<String>,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
