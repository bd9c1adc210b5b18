//! The `intel_feeds` table.

use sea_orm::entity::prelude::*;

/// One row of `intel_feeds`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "intel_feeds")]
pub struct Model {
    /// The owning tenant, or the empty string for a global feed.
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    /// Feed name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// `stix`, `misp`, `csv` or `list`.
    pub format: String,
    /// The feed as uploaded.
    pub content: Vec<u8>,
    /// Indicators the feed held when validated.
    pub indicator_count: i64,
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
