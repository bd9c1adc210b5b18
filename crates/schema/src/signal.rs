use serde::{Deserialize, Serialize};

use crate::{EntityRef, EventId, Payload, SignalId, Stage, TenantId, Timestamp};

/// An anomaly signal from baseline: an entity behaved unlike its learned profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// Stable id.
    pub id: SignalId,
    /// The tenant.
    pub tenant: TenantId,
    /// The kind of anomaly, e.g. `rare_process_for_host`, `login_at_unusual_hour`.
    pub kind: String,
    /// The entity that behaved unusually.
    pub entity: EntityRef,
    /// How unusual, from 0 (normal) to 1 (never seen).
    pub score: f64,
    /// A sentence an analyst can read.
    pub description: String,
    /// The events that showed the behaviour.
    #[serde(default)]
    pub event_ids: Vec<EventId>,
    /// When the behaviour was observed (event time).
    #[serde(with = "time::serde::rfc3339")]
    pub observed_time: Timestamp,
    /// The profile's numbers behind the score (expected, observed, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Payload for Signal {
    const KIND: &'static str = "signal";
    const VERSION: u16 = 1;
    const STAGE: Stage = Stage::Signals;

    fn tenant(&self) -> Option<&TenantId> {
        Some(&self.tenant)
    }
}
