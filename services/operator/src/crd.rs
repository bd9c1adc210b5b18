//! The `Tenant` custom resource: one MSSP customer, as the cluster sees it.
//!
//! `k8s/crds/tenant.yaml` is generated from these types by `cargo xtask crds`; CI fails when
//! the committed file is stale.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of Vigil's resources.
pub const GROUP: &str = "vigil.io";

/// The finalizer that offboards a tenant before its resource goes away.
pub const FINALIZER: &str = "vigil.io/offboard";

/// One tenant: its id, its state, what happens to its data when the resource is deleted, and
/// which of its pipeline services run in its own Deployments.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "vigil.io",
    version = "v1alpha1",
    kind = "Tenant",
    plural = "tenants",
    shortname = "vt",
    namespaced,
    doc = "A Vigil tenant (one MSSP customer), provisioned by the Vigil operator.",
    status = "TenantStatus",
    printcolumn = r#"{"name":"Tenant","type":"string","jsonPath":".spec.tenantId"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// The tenant id: lowercase letters, digits and hyphens, starting with a letter, at most
    /// 40 characters (`all`, `control`, `default`, `system` and `vigil` are reserved). It names
    /// the tenant's subjects, data and releases, so it cannot change.
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z]([a-z0-9-]*[a-z0-9])?$"),
        extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "tenantId is immutable"}])
    )]
    pub tenant_id: String,
    /// A name for people; the tenant id when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub display_name: Option<String>,
    /// Refuse the tenant's credentials while keeping its data and pipeline.
    #[serde(default)]
    pub suspended: bool,
    /// What happens to the tenant's data when this resource is deleted.
    #[serde(default)]
    pub retention: Retention,
    /// Manage a tenant that already exists in the store and that no resource manages (one
    /// created with `vigil tenant create`). Without it such a tenant is never taken over.
    #[serde(default)]
    pub adopt: bool,
    /// The services this tenant runs in its own Deployments (the `vigil-tenant` chart): their
    /// JetStream consumers are created for this tenant alone. Empty for a tenant served by the
    /// platform's pooled services.
    #[serde(default)]
    #[schemars(length(max = 8))]
    pub services: Vec<PipelineService>,
    /// The credentials the operator writes for the tenant's pipeline.
    #[serde(default)]
    pub credentials: CredentialsSpec,
}

/// What offboarding does with the tenant's data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Retention {
    /// Keep alerts, incidents, rules and the audit log; the tenant is marked deleted and its
    /// credentials are refused.
    #[default]
    Keep,
    /// Delete every row of the tenant's data (the audit log keeps the record of the deletion).
    Purge,
}

/// A pipeline service that can run per tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PipelineService {
    /// Log intake: publishes the tenant's events (no consumer).
    Ingest,
    /// Detection: consumes the tenant's events.
    Detect,
}

impl PipelineService {
    /// The service's name in `vigil run --services`.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineService::Ingest => "ingest",
            PipelineService::Detect => "detect",
        }
    }
}

/// Where the tenant's credentials go and how long they live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSpec {
    /// The Secret, in the resource's namespace, that receives the ingest token
    /// (`ingest-token`, its id in `ingest-token-id`), the tenant id (`tenant-id`) and, when the operator manages NATS users,
    /// the NATS credentials (`nats.creds`) and inbox prefix (`nats-inbox-prefix`). Defaults to
    /// `<resource name>-vigil-credentials`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub secret_name: Option<String>,
    /// Lifetime of the ingest token in days; the operator issues a new one when a third of
    /// it is left.
    #[serde(default = "default_token_days")]
    #[schemars(range(min = 1, max = 366))]
    pub ingest_token_days: u32,
    /// Issue a NATS user limited to the tenant's subjects (needs the operator's NATS account
    /// key).
    #[serde(default = "default_true")]
    pub nats: bool,
}

impl Default for CredentialsSpec {
    fn default() -> Self {
        Self {
            secret_name: None,
            ingest_token_days: default_token_days(),
            nats: true,
        }
    }
}

fn default_token_days() -> u32 {
    90
}

fn default_true() -> bool {
    true
}

/// What the operator last saw and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// The generation of the spec these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The tenant id provisioned for this resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// The Secret holding the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The id (`jti`) of the ingest token in the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_token_id: Option<String>,
    /// When that token expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_token_expires: Option<String>,
    /// `Ready`, `Provisioned` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A status condition, as Kubernetes' own resources write them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Provisioned` or `Degraded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason a script can match.
    pub reason: String,
    /// What happened and what to do about it.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl TenantStatus {
    /// The condition of `type_`, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The CustomResourceDefinition as YAML, with a header saying where it comes from.
pub fn crd_yaml() -> Result<String, String> {
    use kube::CustomResourceExt;
    let body = yaml_serde::to_string(&Tenant::crd())
        .map_err(|err| format!("cannot render the Tenant CRD: {err}"))?;
    Ok(format!(
        "# Generated from services/operator/src/crd.rs by `cargo xtask crds`; do not edit.\n{body}"
    ))
}
