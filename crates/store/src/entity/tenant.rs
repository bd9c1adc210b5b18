//! The `tenants` table.

use sea_orm::entity::prelude::*;

/// One row of `tenants`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    /// The tenant id (DNS label).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// A name for people.
    pub display_name: String,
    /// `active`, `suspended` or `deleted`.
    pub state: String,
    /// Creation time, microseconds since the epoch.
    pub created_at: i64,
    /// Last change, microseconds since the epoch.
    pub updated_at: i64,
    /// The Kubernetes resource that manages the tenant, `kubernetes:<namespace>/<name>`; none
    /// for tenants made through the API.
    pub managed_by: Option<String>,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
