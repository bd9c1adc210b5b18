use std::fmt;
use std::str::FromStr;

use vigil_schema::{Stage, TenantId};

use crate::BusError;

/// A tenant's subject of one stage: `vigil.<tenant>.<stage>`, or
/// `vigil.<tenant>.<stage>.<partition>` for a partitioned stage ([`Stage::is_partitioned`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    /// The tenant.
    pub tenant: TenantId,
    /// The stage.
    pub stage: Stage,
    /// The partition, on a partitioned stage's subjects only.
    pub partition: Option<u32>,
}

impl Subject {
    /// The subject of `tenant`'s `stage`.
    pub fn new(tenant: TenantId, stage: Stage) -> Self {
        Self {
            tenant,
            stage,
            partition: None,
        }
    }

    /// The subject of one partition of `tenant`'s partitioned `stage`.
    pub fn partitioned(tenant: TenantId, stage: Stage, partition: u32) -> Self {
        Self {
            tenant,
            stage,
            partition: Some(partition),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vigil.{}.{}", self.tenant, self.stage)?;
        match self.partition {
            Some(partition) => write!(f, ".{partition}"),
            None => Ok(()),
        }
    }
}

impl FromStr for Subject {
    type Err = BusError;

    fn from_str(subject: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| BusError::Subject {
            subject: subject.to_owned(),
            reason,
        };
        let mut tokens = subject.split('.');
        let (Some("vigil"), Some(tenant), Some(stage), partition, None) = (
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
            tokens.next(),
        ) else {
            return Err(invalid("expected vigil.<tenant>.<stage>".into()));
        };
        let tenant = TenantId::new(tenant).map_err(|err| invalid(err.to_string()))?;
        let stage = stage.parse::<Stage>().map_err(invalid)?;
        let partition = match (stage.is_partitioned(), partition) {
            (false, None) => None,
            (false, Some(_)) => return Err(invalid("expected vigil.<tenant>.<stage>".into())),
            (true, Some(token)) => Some(
                token
                    .parse::<u32>()
                    .map_err(|_| invalid(format!("partition {token:?} is not a number")))?,
            ),
            (true, None) => {
                return Err(invalid(format!(
                    "expected vigil.<tenant>.{stage}.<partition>"
                )));
            }
        };
        Ok(Subject {
            tenant,
            stage,
            partition,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_subjects() {
        let subject: Subject = "vigil.acme.events".parse().unwrap();
        assert_eq!(subject.to_string(), "vigil.acme.events");
        let partition: Subject = "vigil.acme.correlate.7".parse().unwrap();
        assert_eq!(partition.partition, Some(7));
        assert_eq!(partition.to_string(), "vigil.acme.correlate.7");
        for bad in [
            "vigil.acme",
            "vigil.acme.events.x",
            "other.acme.events",
            "vigil.ACME.events",
            "vigil.acme.nope",
            "vigil.control.events",
            "vigil.acme.correlate",
            "vigil.acme.correlate.x",
            "vigil.acme.correlate.-1",
            "vigil.acme.alerts.3",
        ] {
            assert!(bad.parse::<Subject>().is_err(), "{bad}");
        }
    }
}
