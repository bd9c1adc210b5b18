//! Metric names of the control plane. Labels are bounded: `action` by the audited actions
//! (`tenant.create`, …), `outcome` by success/denied/failed, `reason` by the token errors.

/// Audited mutations, by action and outcome.
pub(crate) const MUTATIONS: &str = "vigil_control_mutations_total";
/// Calls refused before reaching a handler, by reason.
pub(crate) const UNAUTHENTICATED: &str = "vigil_control_unauthenticated_total";
/// Alerts stored by the persister (new rows only).
pub(crate) const ALERTS_STORED: &str = "vigil_alerts_stored_total";
/// Alerts received by the persister that were already stored (redeliveries).
pub(crate) const ALERTS_DUPLICATE: &str = "vigil_alerts_duplicate_total";
/// Persister batches that failed to commit and were handed back for redelivery.
pub(crate) const ALERT_BATCH_FAILURES: &str = "vigil_alert_batch_failures_total";
