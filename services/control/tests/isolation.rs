//! The isolation matrix: every RPC × every role × own tenant / other tenant / all tenants.
//! Allowed calls succeed; every other call is PERMISSION_DENIED and returns nothing; a request
//! that cannot name a tenant is INVALID_ARGUMENT for everyone. An RPC without a row fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};

use support::{Harness, rule_yaml, with_token};
use tonic::{Code, Status};
use vigil_proto::control::v1 as pb;
use vigil_proto::control::v1::alert_service_client::AlertServiceClient;
use vigil_proto::control::v1::audit_service_client::AuditServiceClient;
use vigil_proto::control::v1::intel_service_client::IntelServiceClient;
use vigil_proto::control::v1::rule_service_client::RuleServiceClient;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    Analyst,
    Responder,
    Viewer,
    Ingest,
}

const ROLES: [Role; 5] = [Admin, Analyst, Responder, Viewer, Ingest];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Own,
    Other,
    All,
}

/// What "all tenants" (an empty tenant id) means for an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AllTenants {
    /// The platform: global rules and feeds, the tenant list, the whole audit log.
    Platform,
    /// The RPC needs a tenant: INVALID_ARGUMENT.
    Invalid,
}

struct Row {
    rpc: &'static str,
    /// Roles allowed on a tenant in their scope.
    roles: &'static [Role],
    all: AllTenants,
}

use Role::*;

const READERS: &[Role] = &[Admin, Analyst, Responder, Viewer];
const ADMIN: &[Role] = &[Admin];
const WRITERS: &[Role] = &[Admin, Analyst];

/// The policy, written out independently of the code that enforces it.
const MATRIX: &[Row] = &[
    Row {
        rpc: "TenantService/CreateTenant",
        roles: ADMIN,
        all: AllTenants::Invalid,
    },
    Row {
        rpc: "TenantService/ListTenants",
        roles: READERS,
        all: AllTenants::Platform,
    },
    Row {
        rpc: "TenantService/GetTenant",
        roles: READERS,
        all: AllTenants::Invalid,
    },
    Row {
        rpc: "TenantService/SuspendTenant",
        roles: ADMIN,
        all: AllTenants::Invalid,
    },
    Row {
        rpc: "TenantService/DeleteTenant",
        roles: ADMIN,
        all: AllTenants::Invalid,
    },
    Row {
        rpc: "TenantService/IssueToken",
        roles: ADMIN,
        all: AllTenants::Platform,
    },
    Row {
        rpc: "TenantService/ListTokens",
        roles: ADMIN,
        all: AllTenants::Invalid,
    },
    Row {
        rpc: "TenantService/RevokeToken",
        roles: ADMIN,
        all: AllTenants::Platform,
    },
    Row {
        rpc: "TenantService/CreatePrincipal",
        roles: ADMIN,
        all: AllTenants::Platform,
    },
    Row {
        rpc: "TenantService/ListPrincipals",
        roles: ADMIN,
        all: AllTenants::Platform,
    },
    Row {
        rpc: "TenantService/DisablePrincipal",
        roles: ADMIN,
        all: AllTenants::Platform,
    },
    Row {
        rpc: "TenantService/RotateSigningKey",
        roles: ADMIN,
        all: AllTenants::Platform,
    },
    Row {
        rpc: "RuleService/PushRules",
        roles: WRITERS,
        all: AllTenants::Platform,
    },
    Row {
        rpc: "RuleService/ListRules",
        roles: READERS,
        all: AllTenants::Platform,
    },
    Row {
        rpc: "RuleService/SetRuleEnabled",
        roles: WRITERS,
        all: AllTenants::Platform,
    },
    Row {
        rpc: "RuleService/OverrideRule",
        roles: WRITERS,
        all: AllTenants::Invalid,
    },
    Row {
        rpc: "RuleService/DeleteRule",
        roles: WRITERS,
        all: AllTenants::Platform,
    },
    Row {
        rpc: "RuleService/TestRule",
        roles: &[Admin, Analyst, Responder],
        all: AllTenants::Platform,
    },
    Row {
        rpc: "IntelService/PushFeed",
        roles: WRITERS,
        all: AllTenants::Platform,
    },
    Row {
        rpc: "IntelService/ListFeeds",
        roles: READERS,
        all: AllTenants::Platform,
    },
    Row {
        rpc: "IntelService/DeleteFeed",
        roles: WRITERS,
        all: AllTenants::Platform,
    },
    Row {
        rpc: "AlertService/ListAlerts",
        roles: READERS,
        all: AllTenants::Invalid,
    },
    Row {
        rpc: "AlertService/StreamAlerts",
        roles: READERS,
        all: AllTenants::Invalid,
    },
    Row {
        rpc: "AuditService/ListAudit",
        roles: READERS,
        all: AllTenants::Platform,
    },
];

/// RPCs that take no tenant: every column is the same platform call.
const NO_TENANT: &[&str] = &["TenantService/ListTenants"];

#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Ok,
    Denied,
    Invalid,
}

fn expect(row: &Row, role: Role, target: Target) -> Expect {
    let allowed = row.roles.contains(&role);
    let target = if NO_TENANT.contains(&row.rpc) {
        Target::All
    } else {
        target
    };
    match target {
        // Scoped principals hold the own tenant only; the admin spans every tenant.
        Target::Own if allowed => Expect::Ok,
        Target::Own => Expect::Denied,
        Target::Other if allowed && role == Admin => Expect::Ok,
        Target::Other => Expect::Denied,
        Target::All if row.all == AllTenants::Invalid => Expect::Invalid,
        Target::All if allowed && role == Admin => Expect::Ok,
        Target::All => Expect::Denied,
    }
}

static FRESH: AtomicU32 = AtomicU32::new(0);

fn fresh(prefix: &str) -> String {
    format!("{prefix}-{}", FRESH.fetch_add(1, Ordering::Relaxed))
}

struct World {
    harness: Harness,
    tokens: Vec<(Role, String)>,
}

impl World {
    fn token(&self, role: Role) -> &str {
        &self.tokens.iter().find(|(r, _)| *r == role).unwrap().1
    }

    /// The tenant id a call targets; destructive calls that are expected to succeed get a
    /// tenant of their own so that later rows still find acme and globex.
    async fn tenant_for(&self, rpc: &str, target: Target, expected: &Expect) -> String {
        let destructive = rpc == "TenantService/DeleteTenant";
        match target {
            Target::All => String::new(),
            _ if rpc == "TenantService/CreateTenant" => fresh("new"),
            _ if destructive && *expected == Expect::Ok => {
                let id = fresh("victim");
                self.harness.create_tenant(&id).await;
                id
            }
            Target::Own => "acme".into(),
            Target::Other => "globex".into(),
        }
    }

    async fn call(
        &self,
        rpc: &str,
        role: Role,
        target: Target,
        expected: &Expect,
    ) -> Result<(), Status> {
        let token = self.token(role);
        let tenant = self.tenant_for(rpc, target, expected).await;
        let channel = self.harness.channel.clone();
        let admin = &self.harness.admin;
        let mut tenants = self.harness.tenants();
        let mut rules = RuleServiceClient::new(channel.clone());
        let mut intel = IntelServiceClient::new(channel.clone());
        let mut alerts = AlertServiceClient::new(channel.clone());
        let mut audit = AuditServiceClient::new(channel);
        match rpc {
            "TenantService/CreateTenant" => {
                let response = tenants
                    .create_tenant(with_token(
                        token,
                        pb::CreateTenantRequest {
                            tenant_id: tenant,
                            display_name: String::new(),
                        },
                    ))
                    .await?;
                assert!(!response.get_ref().id.is_empty());
            }
            "TenantService/ListTenants" => {
                let response = tenants
                    .list_tenants(with_token(token, pb::ListTenantsRequest {}))
                    .await?;
                assert!(response.get_ref().tenants.len() >= 2);
            }
            "TenantService/GetTenant" => {
                let response = tenants
                    .get_tenant(with_token(
                        token,
                        pb::GetTenantRequest {
                            tenant_id: tenant.clone(),
                        },
                    ))
                    .await?;
                assert_eq!(response.get_ref().id, tenant);
            }
            "TenantService/SuspendTenant" => {
                tenants
                    .suspend_tenant(with_token(
                        token,
                        pb::SuspendTenantRequest {
                            tenant_id: tenant,
                            suspended: false,
                        },
                    ))
                    .await?;
            }
            "TenantService/DeleteTenant" => {
                tenants
                    .delete_tenant(with_token(
                        token,
                        pb::DeleteTenantRequest {
                            tenant_id: tenant,
                            retention: pb::Retention::Keep as i32,
                        },
                    ))
                    .await?;
            }
            "TenantService/IssueToken" => {
                let role = if tenant.is_empty() {
                    "analyst"
                } else {
                    "tenant-viewer"
                };
                let response = tenants
                    .issue_token(with_token(
                        token,
                        pb::IssueTokenRequest {
                            tenant_id: tenant,
                            role: role.into(),
                            subject: String::new(),
                            ttl_seconds: 600,
                        },
                    ))
                    .await?;
                assert!(!response.get_ref().token.is_empty());
            }
            "TenantService/ListTokens" => {
                tenants
                    .list_tokens(with_token(
                        token,
                        pb::ListTokensRequest { tenant_id: tenant },
                    ))
                    .await?;
            }
            "TenantService/RevokeToken" => {
                // A real token of the target, issued by the admin, for the allowed cases.
                let victim = if *expected == Expect::Ok {
                    let role = if tenant.is_empty() {
                        "analyst"
                    } else {
                        "ingest"
                    };
                    self.harness
                        .issue(&tenant, role)
                        .await
                        .unwrap()
                        .info
                        .unwrap()
                        .token_id
                } else {
                    "00000000-0000-0000-0000-000000000000".into()
                };
                tenants
                    .revoke_token(with_token(
                        token,
                        pb::RevokeTokenRequest {
                            tenant_id: tenant,
                            token_id: victim,
                        },
                    ))
                    .await?;
            }
            "TenantService/CreatePrincipal" => {
                let role = if tenant.is_empty() {
                    "analyst"
                } else {
                    "tenant-viewer"
                };
                let response = tenants
                    .create_principal(with_token(
                        token,
                        pb::CreatePrincipalRequest {
                            subject: format!("{}@mssp.example", fresh("person")),
                            role: role.into(),
                            tenant_id: tenant,
                            display_name: String::new(),
                        },
                    ))
                    .await?;
                assert!(!response.get_ref().subject.is_empty());
            }
            "TenantService/ListPrincipals" => {
                tenants
                    .list_principals(with_token(
                        token,
                        pb::ListPrincipalsRequest { tenant_id: tenant },
                    ))
                    .await?;
            }
            "TenantService/DisablePrincipal" => {
                // A real principal of the target, made by the admin, for every case: a refusal
                // must come before anything about it is looked up.
                let subject = format!("{}@mssp.example", fresh("victim"));
                let role = if tenant.is_empty() {
                    "analyst"
                } else {
                    "tenant-viewer"
                };
                tenants
                    .create_principal(with_token(
                        admin,
                        pb::CreatePrincipalRequest {
                            subject: subject.clone(),
                            role: role.into(),
                            tenant_id: tenant.clone(),
                            display_name: String::new(),
                        },
                    ))
                    .await
                    .unwrap();
                let response = tenants
                    .disable_principal(with_token(
                        token,
                        pb::DisablePrincipalRequest {
                            subject: subject.clone(),
                            tenant_id: tenant,
                        },
                    ))
                    .await?;
                assert!(!response.get_ref().disabled_time.is_empty());
            }
            "TenantService/RotateSigningKey" => {
                tenants
                    .rotate_signing_key(with_token(
                        token,
                        pb::RotateSigningKeyRequest {
                            tenant_id: tenant,
                            grace_seconds: 3600,
                        },
                    ))
                    .await?;
            }
            "RuleService/PushRules" => {
                let id = fresh("pushed");
                rules
                    .push_rules(with_token(
                        token,
                        pb::PushRulesRequest {
                            tenant_id: tenant,
                            rules: vec![pb::RuleSource {
                                name: "matrix.yml".into(),
                                yaml: rule_yaml(&id),
                            }],
                        },
                    ))
                    .await?;
            }
            "RuleService/ListRules" => {
                rules
                    .list_rules(with_token(
                        token,
                        pb::ListRulesRequest { tenant_id: tenant },
                    ))
                    .await?;
            }
            "RuleService/SetRuleEnabled" => {
                rules
                    .set_rule_enabled(with_token(
                        token,
                        pb::SetRuleEnabledRequest {
                            tenant_id: tenant,
                            rule_id: "matrix-global".into(),
                            enabled: true,
                        },
                    ))
                    .await?;
            }
            "RuleService/OverrideRule" => {
                rules
                    .override_rule(with_token(
                        token,
                        pb::OverrideRuleRequest {
                            tenant_id: tenant,
                            rule_id: "matrix-global".into(),
                            enabled: Some(true),
                            level: "low".into(),
                            exceptions: vec![pb::Exception {
                                field: "User".into(),
                                values: vec!["svc".into()],
                            }],
                        },
                    ))
                    .await?;
            }
            "RuleService/DeleteRule" => {
                let id = fresh("doomed");
                if *expected == Expect::Ok {
                    RuleServiceClient::new(self.harness.channel.clone())
                        .push_rules(with_token(
                            admin,
                            pb::PushRulesRequest {
                                tenant_id: tenant.clone(),
                                rules: vec![pb::RuleSource {
                                    name: "d.yml".into(),
                                    yaml: rule_yaml(&id),
                                }],
                            },
                        ))
                        .await
                        .unwrap();
                }
                rules
                    .delete_rule(with_token(
                        token,
                        pb::DeleteRuleRequest {
                            tenant_id: tenant,
                            rule_id: id,
                        },
                    ))
                    .await?;
            }
            "RuleService/TestRule" => {
                let response = rules
                    .test_rule(with_token(token, pb::TestRuleRequest {
                        tenant_id: tenant,
                        yaml: rule_yaml("tested"),
                        events: vec![r#"{"Channel":"Microsoft-Windows-Sysmon/Operational","EventID":1,"Image":"C:\\Windows\\System32\\whoami.exe"}"#.into()],
                    }))
                    .await?;
                assert_eq!(response.get_ref().matched, [0]);
            }
            "IntelService/PushFeed" => {
                intel
                    .push_feed(with_token(
                        token,
                        pb::PushFeedRequest {
                            tenant_id: tenant,
                            name: fresh("feed"),
                            format: "list".into(),
                            content: b"203.0.113.7\n".to_vec(),
                        },
                    ))
                    .await?;
            }
            "IntelService/ListFeeds" => {
                intel
                    .list_feeds(with_token(
                        token,
                        pb::ListFeedsRequest { tenant_id: tenant },
                    ))
                    .await?;
            }
            "IntelService/DeleteFeed" => {
                let name = fresh("gone");
                if *expected == Expect::Ok {
                    IntelServiceClient::new(self.harness.channel.clone())
                        .push_feed(with_token(
                            admin,
                            pb::PushFeedRequest {
                                tenant_id: tenant.clone(),
                                name: name.clone(),
                                format: "list".into(),
                                content: b"198.51.100.1\n".to_vec(),
                            },
                        ))
                        .await
                        .unwrap();
                }
                intel
                    .delete_feed(with_token(
                        token,
                        pb::DeleteFeedRequest {
                            tenant_id: tenant,
                            name,
                        },
                    ))
                    .await?;
            }
            "AlertService/ListAlerts" => {
                let response = alerts
                    .list_alerts(with_token(
                        token,
                        pb::ListAlertsRequest {
                            tenant_id: tenant.clone(),
                            ..Default::default()
                        },
                    ))
                    .await?;
                assert!(response.get_ref().alerts.iter().all(|a| a.tenant == tenant));
            }
            "AlertService/StreamAlerts" => {
                alerts
                    .stream_alerts(with_token(
                        token,
                        pb::StreamAlertsRequest {
                            tenant_id: tenant,
                            min_level: String::new(),
                        },
                    ))
                    .await?;
            }
            "AuditService/ListAudit" => {
                let response = audit
                    .list_audit(with_token(
                        token,
                        pb::ListAuditRequest {
                            tenant_id: tenant.clone(),
                            ..Default::default()
                        },
                    ))
                    .await?;
                if !tenant.is_empty() {
                    assert!(
                        response
                            .get_ref()
                            .records
                            .iter()
                            .all(|r| r.tenant == tenant)
                    );
                }
            }
            other => panic!("no call for {other}: add it to the matrix"),
        }
        Ok(())
    }
}

#[tokio::test]
async fn every_rpc_has_a_row() {
    let rows: BTreeSet<String> = MATRIX
        .iter()
        .map(|row| format!("vigil.control.v1.{}", row.rpc))
        .collect();
    let rpcs: BTreeSet<String> = vigil_proto::rpc_names().into_iter().collect();
    assert!(!rpcs.is_empty());
    let missing: Vec<_> = rpcs.difference(&rows).collect();
    assert!(
        missing.is_empty(),
        "RPCs without a row in the isolation matrix: {missing:?}"
    );
    let stale: Vec<_> = rows.difference(&rpcs).collect();
    assert!(
        stale.is_empty(),
        "matrix rows for RPCs that do not exist: {stale:?}"
    );
}

#[tokio::test]
async fn isolation_matrix() {
    let harness = Harness::start(None).await;
    harness.create_tenant("acme").await;
    harness.create_tenant("globex").await;
    RuleServiceClient::new(harness.channel.clone())
        .push_rules(with_token(
            &harness.admin,
            pb::PushRulesRequest {
                tenant_id: String::new(),
                rules: vec![pb::RuleSource {
                    name: "g.yml".into(),
                    yaml: rule_yaml("matrix-global"),
                }],
            },
        ))
        .await
        .unwrap();
    let mut tokens = vec![(Admin, harness.admin.clone())];
    for (role, name) in [
        (Analyst, "analyst"),
        (Responder, "responder"),
        (Viewer, "tenant-viewer"),
        (Ingest, "ingest"),
    ] {
        tokens.push((role, harness.token("acme", name).await));
    }
    let world = World { harness, tokens };

    let mut failures = Vec::new();
    let mut cells = 0;
    for row in MATRIX {
        for role in ROLES {
            for target in [Target::Own, Target::Other, Target::All] {
                cells += 1;
                let expected = expect(row, role, target);
                let result = world.call(row.rpc, role, target, &expected).await;
                let ok = match (&expected, &result) {
                    (Expect::Ok, Ok(())) => true,
                    (Expect::Denied, Err(status)) => status.code() == Code::PermissionDenied,
                    (Expect::Invalid, Err(status)) => status.code() == Code::InvalidArgument,
                    _ => false,
                };
                if !ok {
                    failures.push(format!(
                        "{} as {role:?} on {target:?}: expected {expected:?}, got {:?}",
                        row.rpc,
                        result.map_err(|s| (s.code(), s.message().to_owned()))
                    ));
                }
            }
        }
    }
    assert_eq!(cells, MATRIX.len() * 15);
    assert!(
        failures.is_empty(),
        "{} of {cells} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Refused mutations are audited as denied, with the caller and without data.
    let records = AuditServiceClient::new(world.harness.channel.clone())
        .list_audit(with_token(
            &world.harness.admin,
            pb::ListAuditRequest {
                tenant_id: "globex".into(),
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(
        records.iter().any(|r| r.outcome == "denied"
            && r.role == "tenant-viewer"
            && r.action == "rules.push")
    );
    assert!(
        records
            .iter()
            .any(|r| r.outcome == "denied" && r.role == "analyst" && r.action == "token.issue")
    );
}
