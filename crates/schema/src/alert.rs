use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{AlertId, Entities, EventId, Payload, Stage, TenantId, Timestamp};

/// A detection: one rule (Sigma, correlation or threat intel) matched one or more events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable under redelivery: derived from the rule and the matched events.
    pub id: AlertId,
    /// The tenant.
    pub tenant: TenantId,
    /// What produced the alert.
    pub source: AlertSource,
    /// The rule's id (Sigma `id`, or the feed's indicator id for intel).
    pub rule_id: String,
    /// The rule's title.
    pub rule_title: String,
    /// Severity.
    pub level: Level,
    /// ATT&CK techniques the rule is tagged with.
    #[serde(default)]
    pub attack: Vec<AttackTechnique>,
    /// The events that matched.
    pub event_ids: Vec<EventId>,
    /// The fields and values that made the rule match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matched: Vec<MatchedField>,
    /// Entities of the matched events.
    #[serde(default, skip_serializing_if = "Entities::is_empty")]
    pub entities: Entities,
    /// The threat-intel indicator, for intel alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel: Option<IntelMatch>,
    /// Event time of the (last) matched event.
    #[serde(with = "time::serde::rfc3339")]
    pub event_time: Timestamp,
    /// When detect produced the alert.
    #[serde(with = "time::serde::rfc3339")]
    pub detected_time: Timestamp,
}

impl Payload for Alert {
    const KIND: &'static str = "alert";
    const VERSION: u16 = 1;
    const STAGE: Stage = Stage::Alerts;

    fn tenant(&self) -> Option<&TenantId> {
        Some(&self.tenant)
    }
}

/// Several alerts of one tenant in one bus message: what the `alerts` stage carries (ADR 0013).
///
/// A batch of attack records can raise an alert per event; one message per alert costs the
/// server and the publisher more than evaluating the events did. Each alert keeps its own
/// stable id, the idempotency key downstream; the message id is derived from the alert ids, so
/// a redelivered input that yields the same alerts yields the same message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertBatch {
    /// The tenant of every alert in the batch.
    pub tenant: TenantId,
    /// The alerts, in the order they were raised.
    pub alerts: Vec<Alert>,
}

impl AlertBatch {
    /// A stable message id for the batch, derived from the ids of its alerts.
    pub fn message_id(&self) -> String {
        let ids: Vec<[u8; 16]> = self
            .alerts
            .iter()
            .map(|a| a.id.as_uuid().into_bytes())
            .collect();
        let parts: Vec<&[u8]> = ids.iter().map(|id| id.as_slice()).collect();
        AlertId::derive(&parts).to_string()
    }

    /// Checks that every alert belongs to the batch's tenant.
    pub fn validate(&self) -> Result<(), String> {
        match self.alerts.iter().find(|a| a.tenant != self.tenant) {
            Some(alert) => Err(format!(
                "alert {} belongs to tenant {} inside a batch of tenant {}",
                alert.id, alert.tenant, self.tenant
            )),
            None => Ok(()),
        }
    }
}

impl Payload for AlertBatch {
    const KIND: &'static str = "alert-batch";
    const VERSION: u16 = 1;
    const STAGE: Stage = Stage::Alerts;

    fn tenant(&self) -> Option<&TenantId> {
        Some(&self.tenant)
    }
}

/// What produced an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertSource {
    /// A Sigma detection rule.
    Sigma,
    /// A Sigma correlation rule.
    Correlation,
    /// A threat-intelligence indicator.
    Intel,
}

/// Sigma's severity levels. An unknown level is an error, so that a typo in a rule never
/// silently changes its severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// `informational`.
    Informational,
    /// `low`.
    Low,
    /// `medium`.
    Medium,
    /// `high`.
    High,
    /// `critical`.
    Critical,
}

impl Level {
    /// Sigma's spelling of the level.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "informational" | "info" => Ok(Level::Informational),
            "low" => Ok(Level::Low),
            "medium" => Ok(Level::Medium),
            "high" => Ok(Level::High),
            "critical" => Ok(Level::Critical),
            _ => Err(format!(
                "unknown level {s:?}: expected informational, low, medium, high or critical"
            )),
        }
    }
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// One ATT&CK technique an alert maps to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttackTechnique {
    /// Technique id, e.g. `T1059.001`.
    pub id: String,
    /// Technique name, e.g. `PowerShell`.
    #[serde(default)]
    pub name: String,
    /// Tactics in matrix order, e.g. `execution`.
    #[serde(default)]
    pub tactics: Vec<String>,
}

/// A field and the value that made a rule match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchedField {
    /// The Sigma field name.
    pub field: String,
    /// The event's value.
    pub value: String,
}

/// The indicator behind an intel alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntelMatch {
    /// The feed's name.
    pub feed: String,
    /// The indicator value, e.g. an IP, domain or hash.
    pub indicator: String,
    /// The feed's confidence, 0 to 100, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<u8>,
    /// The feed's labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}
