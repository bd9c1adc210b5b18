use serde::{Deserialize, Serialize};

use crate::{AuditId, Payload, Stage, TenantId, Timestamp};

/// Who did what, to which tenant, when, with what result. Written for every mutating call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Stable id.
    pub id: AuditId,
    /// The tenant affected; `None` for platform-wide changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub time: Timestamp,
    /// Who.
    pub actor: Actor,
    /// What, as `noun.verb`: `tenant.create`, `token.revoke`, `action.approve`.
    pub action: String,
    /// The object acted on, e.g. a rule id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The result.
    pub outcome: AuditOutcome,
    /// Non-secret details of the request.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Payload for AuditRecord {
    const KIND: &'static str = "audit";
    const VERSION: u16 = 1;
    const STAGE: Stage = Stage::Audit;

    fn tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }
}

/// The principal behind an audited change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The token's subject.
    pub subject: String,
    /// The role it acted in.
    pub role: String,
}

/// Result of an audited call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// The change was made.
    Success,
    /// The principal was not allowed.
    Denied,
    /// The change failed.
    Failed,
}
