use std::fmt;
use std::str::FromStr;

use vigil_schema::{Stage, TenantId};

use crate::BusError;

/// A tenant's subject of one stage: `vigil.<tenant>.<stage>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    /// The tenant.
    pub tenant: TenantId,
    /// The stage.
    pub stage: Stage,
}

impl Subject {
    /// The subject of `tenant`'s `stage`.
    pub fn new(tenant: TenantId, stage: Stage) -> Self {
        Self { tenant, stage }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vigil.{}.{}", self.tenant, self.stage)
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
        let (Some("vigil"), Some(tenant), Some(stage), None) =
            (tokens.next(), tokens.next(), tokens.next(), tokens.next())
        else {
            return Err(invalid("expected vigil.<tenant>.<stage>".into()));
        };
        let tenant = TenantId::new(tenant).map_err(|err| invalid(err.to_string()))?;
        let stage = stage.parse::<Stage>().map_err(invalid)?;
        Ok(Subject { tenant, stage })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_foreign_subjects() {
        let subject: Subject = "vigil.acme.events".parse().unwrap();
        assert_eq!(subject.to_string(), "vigil.acme.events");
        for bad in [
            "vigil.acme",
            "vigil.acme.events.x",
            "other.acme.events",
            "vigil.ACME.events",
            "vigil.acme.nope",
            "vigil.control.events",
        ] {
            assert!(bad.parse::<Subject>().is_err(), "{bad}");
        }
    }
}
