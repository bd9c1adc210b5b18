//! Metric names of detect. No label carries a tenant or rule (unbounded); `outcome` is
//! `success` or `failure`.

/// Events evaluated.
pub(crate) const EVENTS: &str = "vigil_detect_events_total";
/// Alerts published.
pub(crate) const ALERTS: &str = "vigil_detect_alerts_total";
/// Hits suppressed by tenant overrides' exceptions.
pub(crate) const SUPPRESSED: &str = "vigil_detect_suppressed_total";
/// Events too late for correlation windows (still evaluated by the detection rules).
pub(crate) const LATE: &str = "vigil_detect_late_events_total";
/// Batches whose correlation state another process saved first (redone).
pub(crate) const STATE_CONFLICTS: &str = "vigil_detect_state_conflicts_total";
/// Event batches refused (an event of another tenant inside).
pub(crate) const BATCHES_REFUSED: &str = "vigil_detect_batches_refused_total";
/// Content reloads, by outcome.
pub(crate) const RELOADS: &str = "vigil_detect_reloads_total";
/// Global rules loaded.
pub(crate) const RULES_LOADED: &str = "vigil_detect_rules_loaded";
/// Global rules rejected.
pub(crate) const RULES_REJECTED: &str = "vigil_detect_rules_rejected";
/// Threat-intel indicators loaded, every owner's.
pub(crate) const INDICATORS: &str = "vigil_detect_indicators";
