use serde::{Deserialize, Serialize};

use crate::{ActionId, EntityRef, IncidentId, Payload, Stage, TenantId, Timestamp};

/// One response action of a playbook run, with its approval and outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Stable id.
    pub id: ActionId,
    /// The tenant.
    pub tenant: TenantId,
    /// The incident that caused it, when any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<IncidentId>,
    /// The playbook that requested it.
    pub playbook: String,
    /// What to do.
    pub kind: ActionKind,
    /// To what.
    pub target: EntityRef,
    /// Where it stands.
    pub status: ActionStatus,
    /// The principal or playbook that requested it.
    pub requested_by: String,
    /// The principal that approved or rejected it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// For an undo, the action it reverses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo_of: Option<ActionId>,
    /// Connector parameters (never secrets: connectors hold their credentials).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// The connector's result or error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// When it was requested.
    #[serde(with = "time::serde::rfc3339")]
    pub requested_time: Timestamp,
    /// When its status last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_time: Timestamp,
}

impl Payload for Action {
    const KIND: &'static str = "action";
    const VERSION: u16 = 1;
    const STAGE: Stage = Stage::Actions;

    fn tenant(&self) -> Option<&TenantId> {
        Some(&self.tenant)
    }
}

/// What a response action does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Block an IP address at the perimeter.
    BlockIp,
    /// Disable a user account.
    DisableUser,
    /// Isolate a host from the network.
    IsolateHost,
    /// Kill a process.
    KillProcess,
    /// A connector-specific action named by the playbook.
    Custom(String),
}

/// Lifecycle of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Waiting for a responder's approval.
    PendingApproval,
    /// Approved, not yet run.
    Approved,
    /// Rejected by a responder.
    Rejected,
    /// Running.
    Running,
    /// Done.
    Succeeded,
    /// The connector failed.
    Failed,
    /// Reversed by a later undo action.
    Undone,
}
