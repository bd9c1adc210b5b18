use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A stage of the pipeline; each names a subject per tenant (`vigil.<tenant>.<stage>`) and one
/// JetStream stream (`VIGIL_<STAGE>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Normalized events from ingest.
    Events,
    /// Events that feed correlation rules, routed by detect to the partition that owns their
    /// group key: `vigil.<tenant>.correlate.<partition>`, the one stage with a fourth token.
    Correlate,
    /// Anomaly signals from baseline.
    Signals,
    /// Alerts from detect.
    Alerts,
    /// Scored, grouped incidents from triage.
    Incidents,
    /// Response actions and their outcomes.
    Actions,
    /// Audit records of every change.
    Audit,
    /// Messages no consumer could process, with the reason.
    Deadletter,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 8] = [
        Stage::Events,
        Stage::Correlate,
        Stage::Signals,
        Stage::Alerts,
        Stage::Incidents,
        Stage::Actions,
        Stage::Audit,
        Stage::Deadletter,
    ];

    /// Whether this stage's subjects end in a partition number
    /// (`vigil.<tenant>.<stage>.<partition>`).
    pub fn is_partitioned(self) -> bool {
        self == Stage::Correlate
    }

    /// The subject token of this stage, e.g. `events`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Events => "events",
            Stage::Correlate => "correlate",
            Stage::Signals => "signals",
            Stage::Alerts => "alerts",
            Stage::Incidents => "incidents",
            Stage::Actions => "actions",
            Stage::Audit => "audit",
            Stage::Deadletter => "deadletter",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.as_str() == s)
            .ok_or_else(|| format!("unknown stage {s:?}"))
    }
}
