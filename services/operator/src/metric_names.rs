//! Metric names of the operator. No label carries a tenant (unbounded).

/// Reconciles, by `outcome` (`ok` or `error`).
pub(crate) const RECONCILES: &str = "vigil_operator_reconciles_total";
