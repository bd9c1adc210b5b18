//! The `incidents` table.

use sea_orm::entity::prelude::*;

/// One row of `incidents`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "incidents")]
pub struct Model {
    /// The tenant.
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    /// Incident id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Status.
    pub status: String,
    /// Severity as a number, 0 to 4.
    pub severity: i16,
    /// Opened, microseconds since the epoch.
    pub created_at: i64,
    /// Last change, microseconds since the epoch.
    pub updated_at: i64,
    /// The incident as JSON.
    #[sea_orm(column_type = "Text")]
    pub body: String,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
