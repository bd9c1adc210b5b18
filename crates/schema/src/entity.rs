use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The entities an event or alert is about, extracted once at ingest so that baseline, triage
/// and response do not need to know each log shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entities {
    /// The acting or affected user account, as the source names it (`DOMAIN\user`, `user@realm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The host the event happened on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The source (client) IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<IpAddr>,
    /// The destination (server) IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<IpAddr>,
    /// The process image or name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
}

impl Entities {
    /// Whether no entity was extracted.
    pub fn is_empty(&self) -> bool {
        *self == Entities::default()
    }

    /// Every extracted entity as a typed reference.
    pub fn refs(&self) -> Vec<EntityRef> {
        let mut refs = Vec::new();
        if let Some(user) = &self.user {
            refs.push(EntityRef::new(EntityKind::User, user.clone()));
        }
        if let Some(host) = &self.host {
            refs.push(EntityRef::new(EntityKind::Host, host.clone()));
        }
        if let Some(ip) = self.src_ip {
            refs.push(EntityRef::new(EntityKind::Ip, ip.to_string()));
        }
        if let Some(ip) = self.dst_ip {
            refs.push(EntityRef::new(EntityKind::Ip, ip.to_string()));
        }
        if let Some(process) = &self.process {
            refs.push(EntityRef::new(EntityKind::Process, process.clone()));
        }
        refs
    }
}

/// What kind of thing an entity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// A user account.
    User,
    /// A host.
    Host,
    /// An IP address.
    Ip,
    /// A process image or name.
    Process,
    /// A domain name.
    Domain,
    /// A URL.
    Url,
    /// A file hash.
    Hash,
}

impl EntityKind {
    /// The lowercase name used in keys and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::User => "user",
            EntityKind::Host => "host",
            EntityKind::Ip => "ip",
            EntityKind::Process => "process",
            EntityKind::Domain => "domain",
            EntityKind::Url => "url",
            EntityKind::Hash => "hash",
        }
    }
}

/// A typed reference to one entity, e.g. `user:alice` or `ip:10.0.0.1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityRef {
    /// What kind of entity.
    pub kind: EntityKind,
    /// Its value as the source names it.
    pub value: String,
}

impl EntityRef {
    /// A reference to an entity of `kind` named `value`.
    pub fn new(kind: EntityKind, value: impl Into<String>) -> Self {
        Self {
            kind,
            value: value.into(),
        }
    }
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.value)
    }
}
