//! The `tokens` table.

use sea_orm::entity::prelude::*;

/// One row of `tokens`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tokens")]
pub struct Model {
    /// Token id (`jti`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub jti: String,
    /// The tenant of a single-tenant token.
    pub tenant: Option<String>,
    /// The `tenants` claim as JSON.
    pub tenants: String,
    /// Subject.
    pub subject: String,
    /// Role.
    pub role: String,
    /// The signing key.
    pub kid: String,
    /// Issue time, microseconds since the epoch.
    pub issued_at: i64,
    /// Expiry, microseconds since the epoch.
    pub expires_at: i64,
    /// Revocation time.
    pub revoked_at: Option<i64>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
