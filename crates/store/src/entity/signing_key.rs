//! The `signing_keys` table.

use sea_orm::entity::prelude::*;

/// One row of `signing_keys`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "signing_keys")]
pub struct Model {
    /// Key id (`kid`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub kid: String,
    /// The tenant the key signs for; `None` for the platform key.
    pub tenant: Option<String>,
    /// Ed25519 public key.
    pub public_key: Vec<u8>,
    /// The private key sealed with the master key.
    pub sealed_private_key: Vec<u8>,
    /// Creation time, microseconds since the epoch.
    pub created_at: i64,
    /// Tokens signed with the key are refused after this time (set by rotation).
    pub not_after: Option<i64>,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
