//! The wire schema of Vigil: tenant identity and the versioned payload types that travel between
//! stages (`events`, `correlate`, `signals`, `alerts`, `incidents`, `actions`, `audit`).
//!
//! Every service reads and writes these types only; no service defines its own wire format.
//!
//! # Schema evolution
//!
//! Each payload type carries a [`Payload::KIND`] and a [`Payload::VERSION`]; the bus sends both
//! in the `Vigil-Schema` header (`event/1`). Within one version a change must be readable by the
//! previous release and the previous release's payloads must be readable by the new one:
//!
//! - new fields are optional (`Option`, or `#[serde(default)]`) and old readers ignore them, so
//!   no wire type uses `deny_unknown_fields`;
//! - no field is renamed, removed or given a new meaning;
//! - wire enums have no catch-all variant (an unknown [`Level`] must fail loudly, not read as
//!   another level), so adding or removing an enum variant is a breaking change;
//! - anything else is a breaking change: it gets a new `VERSION`, and for one release consumers
//!   accept both the old and the new version.
//!
//! `docs/adr/0002-schema-evolution.md` records the reasoning.

mod action;
mod alert;
mod audit;
mod correlate;
mod entity;
mod event;
mod field_key;
mod fields;
mod ids;
mod incident;
mod signal;
mod stage;
mod tenant;

pub use action::{Action, ActionKind, ActionStatus};
pub use alert::{Alert, AlertBatch, AlertSource, AttackTechnique, IntelMatch, Level, MatchedField};
pub use audit::{Actor, AuditOutcome, AuditRecord};
pub use correlate::{CorrelationBatch, CorrelationEvent, CorrelationFeed, RuleScope};
pub use entity::{Entities, EntityKind, EntityRef};
pub use event::{
    Event, EventBatch, EventBatchWithoutRaw, Logsource, RAW_RECORD_MAX_BYTES, RawRecord, Source,
};
pub use fields::{FieldValue, Fields};
pub use ids::{ActionId, AlertId, AuditId, EventId, IncidentId, SignalId};
pub use incident::{Incident, IncidentStatus};
pub use signal::Signal;
pub use stage::Stage;
pub use tenant::{InvalidTenantId, TenantId};

/// A type that travels on the bus: names its kind and schema version.
pub trait Payload: serde::Serialize + serde::de::DeserializeOwned {
    /// The payload kind, e.g. `event`.
    const KIND: &'static str;
    /// The schema version of this kind; see the crate documentation for when it changes.
    const VERSION: u16;
    /// The stage whose subjects carry this payload.
    const STAGE: Stage;

    /// The tenant the payload belongs to; `None` only for platform-wide records. The bus checks
    /// it against the subject's tenant so that a payload can never cross into another tenant.
    fn tenant(&self) -> Option<&TenantId>;

    /// The partition of a partitioned stage ([`Stage::is_partitioned`]) the payload goes to.
    fn partition(&self) -> Option<u32> {
        None
    }

    /// The value of the `Vigil-Schema` header, `KIND/VERSION`.
    fn schema_header() -> String {
        format!("{}/{}", Self::KIND, Self::VERSION)
    }
}

/// Timestamps on the wire are RFC 3339 in UTC.
pub type Timestamp = time::OffsetDateTime;
