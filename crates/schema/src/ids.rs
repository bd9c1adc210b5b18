use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace for ids derived from content (UUIDv5), so that the same input always yields the
/// same id in every process: that is what makes redeliveries idempotent downstream.
const VIGIL_NAMESPACE: Uuid = Uuid::from_u128(0x5f1c_2a4e_9b0d_4c8e_a7f3_1d2e_3b4c_5d6e);

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered id (UUIDv7) for a record seen for the first time.
            pub fn new_random() -> Self {
                Self(Uuid::now_v7())
            }

            /// The id derived from `parts`: the same parts always give the same id. Use it where
            /// a redelivered input must produce the same output id.
            pub fn derive(parts: &[&[u8]]) -> Self {
                let mut buffer = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
                for part in parts {
                    // Length-prefix each part so that ("ab", "c") and ("a", "bc") differ.
                    buffer.extend_from_slice(&(part.len() as u64).to_le_bytes());
                    buffer.extend_from_slice(part);
                }
                Self(Uuid::new_v5(&VIGIL_NAMESPACE, &buffer))
            }

            /// Wraps an existing UUID.
            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// Identifies one normalized event; also its bus message id.
    EventId
);
id_type!(
    /// Identifies one anomaly signal.
    SignalId
);
id_type!(
    /// Identifies one alert; stable under redelivery of the events that caused it.
    AlertId
);
id_type!(
    /// Identifies one incident.
    IncidentId
);
id_type!(
    /// Identifies one response action.
    ActionId
);
id_type!(
    /// Identifies one audit record.
    AuditId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_length_prefixed() {
        let a = EventId::derive(&[b"acme", b"line"]);
        assert_eq!(a, EventId::derive(&[b"acme", b"line"]));
        assert_ne!(
            EventId::derive(&[b"ab", b"c"]),
            EventId::derive(&[b"a", b"bc"])
        );
        let text = a.to_string();
        assert_eq!(text.parse::<EventId>().unwrap(), a);
    }

    #[test]
    fn random_ids_are_time_ordered() {
        let first = AlertId::new_random();
        let second = AlertId::new_random();
        assert!(first < second);
    }
}
