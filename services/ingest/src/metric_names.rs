//! Metric names of ingest. Labels are bounded: `transport` by the listeners, `reason` by the
//! refusal kinds in `http.rs`.

/// Events acknowledged to senders (durably on the bus).
pub(crate) const ACCEPTED: &str = "vigil_ingest_events_accepted_total";
/// Syslog messages dropped, by reason (too long, unattributed sender, idle timeout, bus).
pub(crate) const SYSLOG_DROPPED: &str = "vigil_ingest_syslog_dropped_total";
/// Requests refused, by reason.
pub(crate) const REFUSED: &str = "vigil_ingest_requests_refused_total";
/// Events refused because their tenant was over its rate, by tenant.
pub(crate) const RATE_LIMITED: &str = "vigil_ingest_rate_limited_events_total";
/// Records a tenant's custom parser failed on (they entered as generic text), by tenant.
pub(crate) const PARSER_FAILURES: &str = "vigil_ingest_parser_failures_total";
