//! Roles, tenant scopes and the one table that says which role may do what.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use vigil_schema::TenantId;

/// What a principal is for. DESIGN.md fixes the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs the platform: every tenant, every operation.
    MsspAdmin,
    /// Investigates and tunes detection for the tenants in scope.
    Analyst,
    /// Acts on incidents for the tenants in scope.
    Responder,
    /// A customer looking at its own tenant, read only.
    TenantViewer,
    /// A log shipper: writes one tenant's events, reads nothing.
    Ingest,
}

impl Role {
    /// Every role, for tests and help texts.
    pub const ALL: [Role; 5] = [
        Role::MsspAdmin,
        Role::Analyst,
        Role::Responder,
        Role::TenantViewer,
        Role::Ingest,
    ];

    /// The role's name in tokens and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::MsspAdmin => "mssp-admin",
            Role::Analyst => "analyst",
            Role::Responder => "responder",
            Role::TenantViewer => "tenant-viewer",
            Role::Ingest => "ingest",
        }
    }

    /// The actions the role grants, on the tenants of its scope.
    pub fn allows(self, action: Action) -> bool {
        use Action::*;
        match self {
            Role::MsspAdmin => action != EventWrite,
            Role::Analyst => matches!(
                action,
                TenantRead
                    | RuleRead
                    | RuleWrite
                    | RuleTest
                    | IntelRead
                    | IntelWrite
                    | AlertRead
                    | AuditRead
            ),
            Role::Responder => matches!(
                action,
                TenantRead | RuleRead | RuleTest | IntelRead | AlertRead | AuditRead
            ),
            Role::TenantViewer => {
                matches!(
                    action,
                    TenantRead | RuleRead | IntelRead | AlertRead | AuditRead
                )
            }
            Role::Ingest => action == EventWrite,
        }
    }

    /// Checks that `scope` fits the role: an MSSP admin spans every tenant; a tenant viewer and
    /// an ingest token are bound to exactly one tenant; analysts and responders span every
    /// tenant or a named set.
    pub fn check_scope(self, scope: &Scope) -> Result<(), String> {
        match (self, scope) {
            (Role::MsspAdmin, Scope::All) => Ok(()),
            (Role::MsspAdmin, Scope::Tenants(_)) => {
                Err("an mssp-admin spans every tenant; do not name tenants".into())
            }
            (Role::TenantViewer | Role::Ingest, Scope::Tenants(tenants)) if tenants.len() == 1 => {
                Ok(())
            }
            (Role::TenantViewer | Role::Ingest, _) => Err(format!(
                "a {} is bound to exactly one tenant",
                self.as_str()
            )),
            (Role::Analyst | Role::Responder, Scope::Tenants(tenants)) if tenants.is_empty() => {
                Err(format!(
                    "a {} needs at least one tenant, or every tenant",
                    self.as_str()
                ))
            }
            (Role::Analyst | Role::Responder, _) => Ok(()),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role {s:?}: expected mssp-admin, analyst, responder, tenant-viewer or ingest"
                )
            })
    }
}

/// The tenants a principal may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant, and platform-wide objects (global rules and feeds, the tenant list).
    All,
    /// These tenants only.
    Tenants(BTreeSet<TenantId>),
}

impl Scope {
    /// A scope of one tenant.
    pub fn tenant(tenant: TenantId) -> Self {
        Scope::Tenants(BTreeSet::from([tenant]))
    }

    /// Whether the scope covers `tenant`.
    pub fn covers(&self, tenant: &TenantId) -> bool {
        match self {
            Scope::All => true,
            Scope::Tenants(tenants) => tenants.contains(tenant),
        }
    }

    /// The scope as the `tenants` claim: `["*"]` for every tenant.
    pub fn to_claim(&self) -> Vec<String> {
        match self {
            Scope::All => vec!["*".to_owned()],
            Scope::Tenants(tenants) => tenants.iter().map(|t| t.to_string()).collect(),
        }
    }

    /// Reads the `tenants` claim.
    pub fn from_claim(claim: &[String]) -> Result<Self, String> {
        if claim.len() == 1 && claim[0] == "*" {
            return Ok(Scope::All);
        }
        let mut tenants = BTreeSet::new();
        for tenant in claim {
            let tenant = TenantId::new(tenant).map_err(|err| err.to_string())?;
            tenants.insert(tenant);
        }
        Ok(Scope::Tenants(tenants))
    }
}

/// Every operation the control plane and ingest authorize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Create tenants.
    TenantCreate,
    /// See tenants.
    TenantRead,
    /// Suspend or resume a tenant.
    TenantUpdate,
    /// Delete a tenant.
    TenantDelete,
    /// Issue, revoke and rotate credentials.
    CredentialManage,
    /// See rules and overrides.
    RuleRead,
    /// Upload, enable, disable and override rules.
    RuleWrite,
    /// Try a rule on sample events.
    RuleTest,
    /// See threat-intel feeds.
    IntelRead,
    /// Upload and remove threat-intel feeds.
    IntelWrite,
    /// Query and stream alerts.
    AlertRead,
    /// Read the audit log.
    AuditRead,
    /// Send events (ingest).
    EventWrite,
}

/// What an action is applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// One tenant's data.
    Tenant(&'a TenantId),
    /// The platform: every tenant at once, the tenant list, global rules and feeds.
    Platform,
}

/// Who is calling, as established from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's subject, e.g. `alice@mssp.example` or `ingest:acme`.
    pub subject: String,
    /// The role.
    pub role: Role,
    /// The tenants the principal may act on.
    pub scope: Scope,
    /// The token id (`jti`), for audit and revocation.
    pub token_id: String,
}

impl Principal {
    /// Whether the principal may apply `action` to `target`. Platform targets need a scope of
    /// every tenant; tenant targets need the tenant in scope.
    pub fn may(&self, action: Action, target: Target<'_>) -> bool {
        if !self.role.allows(action) {
            return false;
        }
        match target {
            Target::Tenant(tenant) => self.scope.covers(tenant),
            Target::Platform => self.scope == Scope::All,
        }
    }

    /// Like [`Principal::may`], as a `Result` whose error says what was refused without naming
    /// anything the principal may not see.
    pub fn require(&self, action: Action, target: Target<'_>) -> Result<(), Denied> {
        if self.may(action, target) {
            Ok(())
        } else {
            Err(Denied {
                role: self.role,
                action,
            })
        }
    }
}

/// A refused action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role {role} may not {action:?} here")]
pub struct Denied {
    /// The caller's role.
    pub role: Role,
    /// The refused action.
    pub action: Action,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::new(id).unwrap()
    }

    #[test]
    fn scopes_fit_roles() {
        let one = Scope::tenant(tenant("acme"));
        let two = Scope::Tenants(BTreeSet::from([tenant("acme"), tenant("globex")]));
        assert!(Role::MsspAdmin.check_scope(&Scope::All).is_ok());
        assert!(Role::MsspAdmin.check_scope(&one).is_err());
        assert!(Role::TenantViewer.check_scope(&one).is_ok());
        assert!(Role::TenantViewer.check_scope(&two).is_err());
        assert!(Role::Ingest.check_scope(&Scope::All).is_err());
        assert!(Role::Analyst.check_scope(&two).is_ok());
        assert!(
            Role::Analyst
                .check_scope(&Scope::Tenants(BTreeSet::new()))
                .is_err()
        );
    }

    #[test]
    fn tenant_scope_never_reaches_platform_or_other_tenants() {
        let viewer = Principal {
            subject: "v".into(),
            role: Role::TenantViewer,
            scope: Scope::tenant(tenant("acme")),
            token_id: "j".into(),
        };
        assert!(viewer.may(Action::AlertRead, Target::Tenant(&tenant("acme"))));
        assert!(!viewer.may(Action::AlertRead, Target::Tenant(&tenant("globex"))));
        assert!(!viewer.may(Action::AlertRead, Target::Platform));
        assert!(!viewer.may(Action::RuleWrite, Target::Tenant(&tenant("acme"))));
        let ingest = Principal {
            role: Role::Ingest,
            ..viewer
        };
        assert!(ingest.may(Action::EventWrite, Target::Tenant(&tenant("acme"))));
        assert!(!ingest.may(Action::AlertRead, Target::Tenant(&tenant("acme"))));
    }

    #[test]
    fn claims_round_trip() {
        assert_eq!(Scope::from_claim(&Scope::All.to_claim()), Ok(Scope::All));
        let one = Scope::tenant(tenant("acme"));
        assert_eq!(Scope::from_claim(&one.to_claim()), Ok(one));
        assert!(Scope::from_claim(&["ACME".into()]).is_err());
        assert!(Scope::from_claim(&["*".into(), "acme".into()]).is_err());
    }
}
