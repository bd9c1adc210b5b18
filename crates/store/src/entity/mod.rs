//! sea-orm entities, one module per table. Times are microseconds since the Unix epoch in a
//! 64-bit integer: the same type, ordering and index behaviour on PostgreSQL and SQLite.

pub mod alert;
pub mod audit;
pub mod detect_state;
pub mod incident;
pub mod intel_feed;
pub mod principal;
pub mod rule;
pub mod rule_override;
pub mod signing_key;
pub mod tenant;
pub mod token;
