use serde::{Deserialize, Serialize};

use crate::{AlertId, EntityRef, IncidentId, Level, Payload, Stage, TenantId, Timestamp};

/// Alerts and signals that triage grouped into one case to work on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// Stable id.
    pub id: IncidentId,
    /// The tenant.
    pub tenant: TenantId,
    /// A title an analyst can read.
    pub title: String,
    /// The highest severity among its alerts, possibly raised by triage.
    pub severity: Level,
    /// Triage's priority score, 0 to 100.
    pub score: f64,
    /// Where the incident is in its lifecycle.
    pub status: IncidentStatus,
    /// The alerts grouped into it.
    pub alert_ids: Vec<AlertId>,
    /// The entities involved.
    #[serde(default)]
    pub entities: Vec<EntityRef>,
    /// Event time of the first alert.
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: Timestamp,
    /// Event time of the last alert.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: Timestamp,
    /// When triage last changed the incident.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_time: Timestamp,
    /// The analyst working on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
}

impl Payload for Incident {
    const KIND: &'static str = "incident";
    const VERSION: u16 = 1;
    const STAGE: Stage = Stage::Incidents;

    fn tenant(&self) -> Option<&TenantId> {
        Some(&self.tenant)
    }
}

/// Lifecycle of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    /// Not yet looked at.
    New,
    /// An analyst is investigating.
    InProgress,
    /// The threat is contained; recovery may be pending.
    Contained,
    /// Closed as a true positive.
    Resolved,
    /// Closed as a false positive (feeds back to triage and detect).
    FalsePositive,
}
