//! The `detect_state` table: the detect service's checkpointed state per tenant.

use sea_orm::entity::prelude::*;

/// One row of `detect_state`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "detect_state")]
pub struct Model {
    /// The tenant.
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    /// What the state is (`correlation`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// The state, as the service serialized it.
    pub body: Vec<u8>,
    /// 1 for the first write, one more for each write after it.
    pub version: i64,
    /// When it was written, µs.
    pub updated_at: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
