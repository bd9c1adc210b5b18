//! The `alerts` table.

use sea_orm::entity::prelude::*;

/// One row of `alerts`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "alerts")]
pub struct Model {
    /// The tenant.
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    /// Alert id, stable under redelivery.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The rule.
    pub rule_id: String,
    /// The rule title.
    pub rule_title: String,
    /// Level as a number, 0 (informational) to 4 (critical), for range filters.
    pub level: i16,
    /// `sigma`, `correlation` or `intel`.
    pub source: String,
    /// Event time, microseconds since the epoch.
    pub event_time: i64,
    /// Detection time, microseconds since the epoch.
    pub detected_time: i64,
    /// When the row was stored, microseconds since the epoch (what alert streams follow).
    pub stored_at: i64,
    /// The alert as JSON.
    #[sea_orm(column_type = "Text")]
    pub body: String,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
