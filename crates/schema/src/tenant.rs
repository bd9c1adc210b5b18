use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest tenant id accepted. A DNS label may have 63 characters; Vigil keeps room for the
/// prefixes it adds when a tenant id names a Helm release (`vigil-tenant-…`, at most 53) or a
/// Kubernetes object.
pub const TENANT_ID_MAX_LEN: usize = 40;

/// Names that would collide with Vigil's own subjects or with Kubernetes namespaces.
const RESERVED: &[&str] = &["control", "all", "system", "vigil", "default"];

/// A validated tenant identifier.
///
/// Tenant ids name NATS subjects (`vigil.<tenant>.events`), Kubernetes namespaces and Helm
/// releases, so they are DNS-label safe: 1 to 40 characters of lowercase ASCII letters, digits
/// and `-`, starting with a letter and ending with a letter or digit. A few names are reserved.
/// Cloning is cheap (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

/// Why a string is not a valid [`TenantId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTenantId {
    /// The id is empty.
    #[error("tenant id is empty")]
    Empty,
    /// The id is longer than [`TENANT_ID_MAX_LEN`].
    #[error("tenant id is {len} characters long, at most {TENANT_ID_MAX_LEN} are allowed")]
    TooLong {
        /// Length of the rejected id in bytes.
        len: usize,
    },
    /// The id holds a character outside `a-z`, `0-9` and `-`.
    #[error(
        "tenant id contains {found:?} at position {position}: only lowercase letters, digits and '-' are allowed"
    )]
    BadCharacter {
        /// The offending character.
        found: char,
        /// Its character position, from 0.
        position: usize,
    },
    /// The id does not start with a letter.
    #[error("tenant id must start with a lowercase letter")]
    BadStart,
    /// The id ends with `-`.
    #[error("tenant id must end with a letter or digit")]
    BadEnd,
    /// The id is one of Vigil's reserved names.
    #[error("tenant id {0:?} is reserved")]
    Reserved(String),
}

impl TenantId {
    /// Validates `id` and returns it as a tenant id.
    pub fn new(id: &str) -> Result<Self, InvalidTenantId> {
        validate(id)?;
        Ok(Self(Arc::from(id)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(id: &str) -> Result<(), InvalidTenantId> {
    if id.is_empty() {
        return Err(InvalidTenantId::Empty);
    }
    if id.len() > TENANT_ID_MAX_LEN {
        return Err(InvalidTenantId::TooLong { len: id.len() });
    }
    for (position, found) in id.chars().enumerate() {
        if !(found.is_ascii_lowercase() || found.is_ascii_digit() || found == '-') {
            return Err(InvalidTenantId::BadCharacter { found, position });
        }
    }
    if !id.as_bytes()[0].is_ascii_lowercase() {
        return Err(InvalidTenantId::BadStart);
    }
    if id.ends_with('-') {
        return Err(InvalidTenantId::BadEnd);
    }
    if RESERVED.contains(&id) {
        return Err(InvalidTenantId::Reserved(id.to_owned()));
    }
    Ok(())
}

impl FromStr for TenantId {
    type Err = InvalidTenantId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", &self.0)
    }
}

impl Serialize for TenantId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        TenantId::new(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["acme", "a", "acme-corp", "t1", "a-1-b", &"a".repeat(40)] {
            assert_eq!(TenantId::new(ok).map(|t| t.to_string()), Ok(ok.to_owned()));
        }
    }

    #[test]
    fn rejects_with_reason() {
        let cases: &[(&str, InvalidTenantId)] = &[
            ("", InvalidTenantId::Empty),
            (
                "Acme",
                InvalidTenantId::BadCharacter {
                    found: 'A',
                    position: 0,
                },
            ),
            (
                "ac.me",
                InvalidTenantId::BadCharacter {
                    found: '.',
                    position: 2,
                },
            ),
            (
                "a*",
                InvalidTenantId::BadCharacter {
                    found: '*',
                    position: 1,
                },
            ),
            (
                "a>",
                InvalidTenantId::BadCharacter {
                    found: '>',
                    position: 1,
                },
            ),
            (
                "a b",
                InvalidTenantId::BadCharacter {
                    found: ' ',
                    position: 1,
                },
            ),
            (
                "ünicode",
                InvalidTenantId::BadCharacter {
                    found: 'ü',
                    position: 0,
                },
            ),
            ("1acme", InvalidTenantId::BadStart),
            ("-acme", InvalidTenantId::BadStart),
            ("acme-", InvalidTenantId::BadEnd),
            ("control", InvalidTenantId::Reserved("control".into())),
        ];
        for (input, expected) in cases {
            assert_eq!(
                TenantId::new(input).as_ref(),
                Err(expected),
                "input {input:?}"
            );
        }
        assert_eq!(
            TenantId::new(&"a".repeat(41)),
            Err(InvalidTenantId::TooLong { len: 41 })
        );
    }

    #[test]
    fn serde_validates() {
        let ok: TenantId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(ok.as_str(), "acme");
        let err = serde_json::from_str::<TenantId>("\"ACME\"").unwrap_err();
        assert!(err.to_string().contains("only lowercase letters"), "{err}");
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"acme\"");
    }

    proptest! {
        #[test]
        fn never_panics_and_valid_ids_are_subject_tokens(s in "\\PC{0,50}") {
            if let Ok(id) = TenantId::new(&s) {
                prop_assert!(!id.as_str().contains(['.', '*', '>', ' ']));
                prop_assert!(id.as_str().len() <= TENANT_ID_MAX_LEN);
            }
        }

        #[test]
        fn generated_labels_round_trip(s in "[a-z]([a-z0-9-]{0,38}[a-z0-9])?") {
            prop_assume!(!RESERVED.contains(&s.as_str()));
            let id = TenantId::new(&s).unwrap();
            let back: TenantId = serde_json::from_str(&serde_json::to_string(&id).unwrap()).unwrap();
            prop_assert_eq!(id, back);
        }
    }
}
