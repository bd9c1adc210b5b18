//! The services `vigil run` knows, and which of them this build can start.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A Vigil service, named as in `--services` and the Helm charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceName {
    /// Log intake: syslog, HTTP JSON, Splunk HEC, OTLP, EVTX.
    Ingest,
    /// Entity profiles and anomaly signals.
    Baseline,
    /// Sigma, correlation and threat-intel detection.
    Detect,
    /// Scoring and grouping alerts into incidents.
    Triage,
    /// Playbooks, approvals and undo.
    Response,
    /// Cases, metrics and the analyst console.
    Reporting,
    /// The gRPC control plane.
    Control,
    /// The Kubernetes operator.
    Operator,
}

impl ServiceName {
    /// Every service, in pipeline order.
    pub const ALL: [ServiceName; 8] = [
        ServiceName::Ingest,
        ServiceName::Baseline,
        ServiceName::Detect,
        ServiceName::Triage,
        ServiceName::Response,
        ServiceName::Reporting,
        ServiceName::Control,
        ServiceName::Operator,
    ];

    /// The service's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Ingest => "ingest",
            ServiceName::Baseline => "baseline",
            ServiceName::Detect => "detect",
            ServiceName::Triage => "triage",
            ServiceName::Response => "response",
            ServiceName::Reporting => "reporting",
            ServiceName::Control => "control",
            ServiceName::Operator => "operator",
        }
    }

    /// Whether this build contains the service. Services land one issue at a time; asking for
    /// one that has not landed is an error rather than a silent no-op.
    pub fn is_available(self) -> bool {
        AVAILABLE.contains(&self)
    }

    /// Whether `vigil run` with no `--services` starts it. The operator runs only where asked:
    /// it needs a Kubernetes API.
    pub fn runs_by_default(self) -> bool {
        self != ServiceName::Operator
    }
}

/// The services this build can start.
pub const AVAILABLE: &[ServiceName] = &[
    ServiceName::Ingest,
    ServiceName::Detect,
    ServiceName::Control,
    ServiceName::Operator,
];

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        ServiceName::ALL
            .into_iter()
            .find(|name| name.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = ServiceName::ALL.iter().map(|n| n.as_str()).collect();
                format!(
                    "unknown service {s:?}: expected one of {}",
                    known.join(", ")
                )
            })
    }
}
