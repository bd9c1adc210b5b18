//! The control API over real gRPC: token attacks, bad input, pages, streams, revocation and
//! suspension without restart, and the alert persister on the in-process bus and JetStream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use support::{Harness, rule_yaml, with_token};
use time::OffsetDateTime;
use tonic::Code;
use vigil_auth::{Claims, Role};
use vigil_bus::{Bus, ConsumerSpec, HEADER_DEAD_LETTER_REASON, OutgoingMessage};
use vigil_proto::control::v1 as pb;
use vigil_proto::control::v1::alert_service_client::AlertServiceClient;
use vigil_proto::control::v1::audit_service_client::AuditServiceClient;
use vigil_proto::control::v1::intel_service_client::IntelServiceClient;
use vigil_proto::control::v1::rule_service_client::RuleServiceClient;
use vigil_schema::{
    Alert, AlertBatch, AlertId, AlertSource, AttackTechnique, EventId, Level, Stage, TenantId,
};

async fn list_tenants(harness: &Harness, token: &str) -> Result<usize, tonic::Status> {
    harness
        .tenants()
        .list_tenants(with_token(token, pb::ListTenantsRequest {}))
        .await
        .map(|response| response.into_inner().tenants.len())
}

fn b64(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

#[tokio::test]
async fn token_attacks_are_unauthenticated() {
    let harness = Harness::start(None).await;
    let key = harness.platform_key().await;
    let settings = harness.config.tokens.clone();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claims = Claims {
        iss: settings.issuer.clone(),
        aud: settings.audience.clone(),
        sub: "mallory".into(),
        iat: now,
        nbf: now,
        exp: now + 3600,
        jti: "forged".into(),
        role: Role::MsspAdmin,
        tenants: vec!["*".into()],
    };
    // The key can sign valid tokens: the attacks below differ from this in one way each.
    let valid = vigil_auth::sign(&key, &claims).unwrap().token;
    assert_eq!(list_tenants(&harness, &valid).await.unwrap(), 0);

    let mut attacks: Vec<(&str, String)> = Vec::new();
    let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": key.kid()});
    let body = serde_json::to_value(&claims).unwrap();
    attacks.push(("alg none", format!("{}.{}.", b64(&header), b64(&body))));
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(key.kid().to_owned());
    attacks.push((
        "HS256 with the public key",
        jsonwebtoken::encode(
            &hs,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&key.public_key()),
        )
        .unwrap(),
    ));
    let stranger = vigil_auth::SigningKey::generate(None).unwrap();
    attacks.push((
        "unknown key",
        vigil_auth::sign(&stranger, &claims).unwrap().token,
    ));
    let mut expired = claims.clone();
    expired.exp = now - 3600;
    expired.nbf = now - 7200;
    attacks.push(("expired", vigil_auth::sign(&key, &expired).unwrap().token));
    let mut early = claims.clone();
    early.nbf = now + 3600;
    early.exp = now + 7200;
    attacks.push((
        "not yet valid",
        vigil_auth::sign(&key, &early).unwrap().token,
    ));
    let mut audience = claims.clone();
    audience.aud = "someone-else".into();
    attacks.push((
        "wrong audience",
        vigil_auth::sign(&key, &audience).unwrap().token,
    ));
    let mut issuer = claims.clone();
    issuer.iss = "someone-else".into();
    attacks.push((
        "wrong issuer",
        vigil_auth::sign(&key, &issuer).unwrap().token,
    ));
    let parts: Vec<&str> = valid.split('.').collect();
    let mut tampered = body.clone();
    tampered["sub"] = "admin".into();
    attacks.push((
        "tampered payload",
        format!("{}.{}.{}", parts[0], b64(&tampered), parts[2]),
    ));
    attacks.push(("garbage", "not-a-token".into()));
    attacks.push(("empty", String::new()));

    for (name, token) in &attacks {
        let status = list_tenants(&harness, token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
        assert!(
            !status.message().contains(token.as_str()) || token.is_empty(),
            "{name}"
        );
    }
    // No authorization header at all.
    let status = harness
        .tenants()
        .list_tenants(pb::ListTenantsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // Revoked: takes effect at once, without restart.
    harness.create_tenant("acme").await;
    let issued = harness.issue("acme", "tenant-viewer").await.unwrap();
    let get = |token: String| {
        let mut client = harness.tenants();
        async move {
            client
                .get_tenant(with_token(
                    &token,
                    pb::GetTenantRequest {
                        tenant_id: "acme".into(),
                    },
                ))
                .await
        }
    };
    get(issued.token.clone()).await.unwrap();
    harness
        .tenants()
        .revoke_token(with_token(
            &harness.admin,
            pb::RevokeTokenRequest {
                tenant_id: "acme".into(),
                token_id: issued.info.unwrap().token_id,
            },
        ))
        .await
        .unwrap();
    let status = get(issued.token).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("revoked"), "{status:?}");
}

#[tokio::test]
async fn suspension_rotation_and_deletion_apply_without_restart() {
    let harness = Harness::start(None).await;
    harness.create_tenant("acme").await;
    let viewer = harness.token("acme", "tenant-viewer").await;
    let ingest = harness.issue("acme", "ingest").await.unwrap();
    let get = |token: String| {
        let mut client = harness.tenants();
        async move {
            client
                .get_tenant(with_token(
                    &token,
                    pb::GetTenantRequest {
                        tenant_id: "acme".into(),
                    },
                ))
                .await
        }
    };
    get(viewer.clone()).await.unwrap();
    let suspend = |suspended: bool| {
        let mut client = harness.tenants();
        let admin = harness.admin.clone();
        async move {
            client
                .suspend_tenant(with_token(
                    &admin,
                    pb::SuspendTenantRequest {
                        tenant_id: "acme".into(),
                        suspended,
                    },
                ))
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert_eq!(suspend(true).await.state, "suspended");
    let status = get(viewer.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    // No new credentials for a suspended tenant.
    let status = harness.issue("acme", "ingest").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(suspend(false).await.state, "active");
    get(viewer.clone()).await.unwrap();

    // Rotation with no grace: the tenant's ingest tokens (signed by its key) stop working, its
    // viewer token (signed by the platform key) does not.
    let verifier = vigil_auth::Verifier::new(harness.config.tokens.clone());
    vigil_control::refresh_trust(&harness.store, &verifier)
        .await
        .unwrap();
    assert!(verifier.verify(&ingest.token).is_ok());
    let rotated = harness
        .tenants()
        .rotate_signing_key(with_token(
            &harness.admin,
            pb::RotateSigningKeyRequest {
                tenant_id: "acme".into(),
                grace_seconds: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.keys_retired, 1);
    vigil_control::refresh_trust(&harness.store, &verifier)
        .await
        .unwrap();
    assert!(verifier.verify(&ingest.token).is_err());
    let fresh = harness.issue("acme", "ingest").await.unwrap();
    assert_eq!(fresh.info.unwrap().key_id, rotated.key_id);

    let deleted = harness
        .tenants()
        .delete_tenant(with_token(
            &harness.admin,
            pb::DeleteTenantRequest {
                tenant_id: "acme".into(),
                retention: pb::Retention::Keep as i32,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.tokens_revoked >= 2);
    assert_eq!(get(viewer).await.unwrap_err().code(), Code::Unauthenticated);
    let kept = harness
        .tenants()
        .get_tenant(with_token(
            &harness.admin,
            pb::GetTenantRequest {
                tenant_id: "acme".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.state, "deleted");
}

#[tokio::test]
async fn bad_input_gets_a_precise_code_and_writes_nothing() {
    let harness = Harness::start(None).await;
    harness.create_tenant("acme").await;
    let admin = harness.admin.clone();
    let mut tenants = harness.tenants();
    let mut rules = RuleServiceClient::new(harness.channel.clone());
    let mut intel = IntelServiceClient::new(harness.channel.clone());
    let mut alerts = AlertServiceClient::new(harness.channel.clone());

    for (id, reason) in [
        ("ACME", "only lowercase"),
        ("a.b", "only lowercase"),
        ("vigil", "reserved"),
        ("-x", "start with a lowercase letter"),
        (&"a".repeat(41) as &str, "at most 40"),
    ] {
        let (status, message) = code(
            tenants
                .create_tenant(with_token(
                    &admin,
                    pb::CreateTenantRequest {
                        tenant_id: id.into(),
                        display_name: String::new(),
                    },
                ))
                .await,
        );
        assert_eq!(status, Code::InvalidArgument, "{id}");
        assert!(message.contains(reason), "{id}: {message}");
    }
    let (status, _) = code(
        tenants
            .create_tenant(with_token(
                &admin,
                pb::CreateTenantRequest {
                    tenant_id: "acme".into(),
                    display_name: String::new(),
                },
            ))
            .await,
    );
    assert_eq!(status, Code::AlreadyExists);
    let (status, message) = code(
        tenants
            .get_tenant(with_token(
                &admin,
                pb::GetTenantRequest {
                    tenant_id: "nobody".into(),
                },
            ))
            .await,
    );
    assert_eq!(status, Code::NotFound);
    assert_eq!(message, "tenant nobody not found");

    // One bad rule rejects the whole push with every reason; nothing is stored.
    let push = rules
        .push_rules(with_token(
            &admin,
            pb::PushRulesRequest {
                tenant_id: "acme".into(),
                rules: vec![
                    pb::RuleSource {
                        name: "good.yml".into(),
                        yaml: rule_yaml("good-1"),
                    },
                    pb::RuleSource {
                        name: "modifier.yml".into(),
                        yaml: rule_yaml("bad-1").replace("endswith", "sideways"),
                    },
                    pb::RuleSource {
                        name: "noid.yml".into(),
                        yaml: "title: x\n".into(),
                    },
                    pb::RuleSource {
                        name: "yaml.yml".into(),
                        yaml: "title: [unclosed\n".into(),
                    },
                    pb::RuleSource {
                        name: "level.yml".into(),
                        yaml: rule_yaml("bad-2").replace("level: medium", "level: severe"),
                    },
                ],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(push.code(), Code::InvalidArgument);
    for expected in [
        "modifier.yml (bad-1)",
        "noid.yml: the rule needs an id",
        "yaml.yml: invalid YAML",
        "level.yml (bad-2): unknown level",
    ] {
        assert!(
            push.message().contains(expected),
            "{expected}: {}",
            push.message()
        );
    }
    let listed = rules
        .list_rules(with_token(
            &admin,
            pb::ListRulesRequest {
                tenant_id: "acme".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.rules.is_empty());

    // A tenant rule may not shadow a global one.
    rules
        .push_rules(with_token(
            &admin,
            pb::PushRulesRequest {
                tenant_id: String::new(),
                rules: vec![pb::RuleSource {
                    name: "g.yml".into(),
                    yaml: rule_yaml("shared-id"),
                }],
            },
        ))
        .await
        .unwrap();
    let status = rules
        .push_rules(with_token(
            &admin,
            pb::PushRulesRequest {
                tenant_id: "acme".into(),
                rules: vec![pb::RuleSource {
                    name: "t.yml".into(),
                    yaml: rule_yaml("shared-id"),
                }],
            },
        ))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("override it instead"),
        "{status:?}"
    );

    let status = intel
        .push_feed(with_token(
            &admin,
            pb::PushFeedRequest {
                tenant_id: "acme".into(),
                name: "bad".into(),
                format: "stix".into(),
                content: b"{\"type\":\"indicator\"}".to_vec(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("bundle"), "{status:?}");
    let status = intel
        .push_feed(with_token(
            &admin,
            pb::PushFeedRequest {
                tenant_id: "acme".into(),
                name: "../etc".into(),
                format: "list".into(),
                content: b"1.2.3.4".to_vec(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let status = alerts
        .list_alerts(with_token(
            &admin,
            pb::ListAlertsRequest {
                tenant_id: "acme".into(),
                from_time: "yesterday".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert!(
        status
            .message()
            .starts_with("from_time: not an RFC 3339 time"),
        "{status:?}"
    );
    let status = alerts
        .list_alerts(with_token(
            &admin,
            pb::ListAlertsRequest {
                tenant_id: "acme".into(),
                page_size: 5000,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert!(status.message().contains("page_size 5000"), "{status:?}");
    let status = alerts
        .list_alerts(with_token(
            &admin,
            pb::ListAlertsRequest {
                tenant_id: "acme".into(),
                page_token: "!!!".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = tenants
        .issue_token(with_token(
            &admin,
            pb::IssueTokenRequest {
                tenant_id: String::new(),
                role: "ingest".into(),
                subject: String::new(),
                ttl_seconds: 0,
            },
        ))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("exactly one tenant"),
        "{status:?}"
    );
    let status = tenants
        .issue_token(with_token(
            &admin,
            pb::IssueTokenRequest {
                tenant_id: "acme".into(),
                role: "root".into(),
                subject: String::new(),
                ttl_seconds: 0,
            },
        ))
        .await
        .unwrap_err();
    assert!(
        status.message().starts_with("role: unknown role"),
        "{status:?}"
    );

    // An oversized request is refused by the server before it is decoded.
    let huge = "x".repeat(harness.config.max_request_bytes + 1);
    let status = rules
        .test_rule(with_token(
            &admin,
            pb::TestRuleRequest {
                tenant_id: "acme".into(),
                yaml: huge,
                events: Vec::new(),
            },
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );

    // Failed mutations are audited as failed.
    let records = AuditServiceClient::new(harness.channel.clone())
        .list_audit(with_token(
            &admin,
            pb::ListAuditRequest {
                tenant_id: "acme".into(),
                page_size: 100,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .records;
    assert!(
        records
            .iter()
            .any(|r| r.action == "rules.push" && r.outcome == "failed")
    );
    assert!(
        records.iter().all(|r| !r.details_json.contains("eyJ")),
        "no token in the audit log"
    );
}

fn code<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let status = result.unwrap_err();
    (status.code(), status.message().to_owned())
}

fn sample_alert(tenant: &TenantId, n: u32, seconds: i64) -> Alert {
    let time = OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).unwrap();
    Alert {
        id: AlertId::derive(&[tenant.as_str().as_bytes(), &n.to_le_bytes()]),
        tenant: tenant.clone(),
        source: AlertSource::Sigma,
        rule_id: "97a80ec7-0e2f-4d05-9ef4-65760e634f6b".into(),
        rule_title: "Security Privileges Enumeration Via Whoami.EXE".into(),
        level: if n.is_multiple_of(2) {
            Level::High
        } else {
            Level::Medium
        },
        attack: vec![AttackTechnique {
            id: "T1033".into(),
            name: "System Owner/User Discovery".into(),
            tactics: vec!["discovery".into()],
        }],
        event_ids: vec![EventId::derive(&[&n.to_le_bytes()])],
        matched: Vec::new(),
        entities: Default::default(),
        intel: None,
        event_time: time,
        detected_time: time,
    }
}

#[tokio::test]
async fn pages_are_bound_to_their_tenant_and_query() {
    let harness = Harness::start(None).await;
    harness.create_tenant("acme").await;
    harness.create_tenant("globex").await;
    let acme = TenantId::new("acme").unwrap();
    let alerts: Vec<Alert> = (0..25)
        .map(|n| sample_alert(&acme, n, i64::from(n)))
        .collect();
    harness
        .store
        .tenant(&acme)
        .insert_alerts(&alerts)
        .await
        .unwrap();
    let mut client = AlertServiceClient::new(harness.channel.clone());
    let admin = harness.admin.clone();
    let page = |tenant: &str, token: String, min_level: &str| {
        with_token(
            &admin,
            pb::ListAlertsRequest {
                tenant_id: tenant.into(),
                page_size: 10,
                page_token: token,
                min_level: min_level.into(),
                ..Default::default()
            },
        )
    };
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let response = client
            .list_alerts(page("acme", token.clone(), ""))
            .await
            .unwrap()
            .into_inner();
        ids.extend(response.alerts.iter().map(|a| a.id.clone()));
        if response.next_page_token.is_empty() {
            break;
        }
        token = response.next_page_token;
        // The token of acme's query is refused for globex and for another filter.
        let status = client
            .list_alerts(page("globex", token.clone(), ""))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("another tenant or query"));
        let status = client
            .list_alerts(page("acme", token.clone(), "high"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    assert_eq!(ids.len(), 25);
    let first = client
        .list_alerts(page("acme", String::new(), ""))
        .await
        .unwrap()
        .into_inner();
    let alert = &first.alerts[0];
    assert_eq!(alert.attack, ["T1033"]);
    assert_eq!(alert.tenant, "acme");
    let json: serde_json::Value = serde_json::from_str(&alert.json).unwrap();
    assert_eq!(json["attack"][0]["tactics"][0], "discovery");
    let other = client
        .list_alerts(page("globex", String::new(), ""))
        .await
        .unwrap()
        .into_inner();
    assert!(other.alerts.is_empty());
}

async fn persisted_once(bus: Arc<dyn Bus>, harness: &Harness) {
    let context = vigil_runtime::ServiceContext {
        bus: Arc::clone(&bus),
        store: harness.store.clone(),
        shutdown: tokio_util::sync::CancellationToken::new(),
        readiness: Default::default(),
    };
    let persister = {
        let context = context.clone();
        tokio::spawn(async move { vigil_control::persist_alerts(&context, 100).await })
    };
    let acme = TenantId::new("acme").unwrap();
    let globex = TenantId::new("globex").unwrap();
    // A viewer of acme follows acme's stream while alerts of both tenants arrive.
    let viewer = harness.token("acme", "tenant-viewer").await;
    let mut stream = AlertServiceClient::new(harness.channel.clone())
        .stream_alerts(with_token(
            &viewer,
            pb::StreamAlertsRequest {
                tenant_id: "acme".into(),
                min_level: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    // A batch on acme's subject holding a globex alert is refused whole, first: no row for
    // either, and the batch kept on acme's dead-letter subject with the reason.
    let mut dead = bus
        .subscribe(ConsumerSpec::new(
            "dlq-reader",
            Stage::Deadletter,
            Some(acme.clone()),
        ))
        .await
        .unwrap();
    let smuggled = AlertBatch {
        tenant: acme.clone(),
        alerts: vec![sample_alert(&acme, 60, 60), sample_alert(&globex, 61, 61)],
    };
    let message = OutgoingMessage::encode(&smuggled, smuggled.message_id()).unwrap();
    bus.publish_durable(message).await.unwrap();
    // As detect publishes them: batches of ten alerts per message.
    for tenant in [&acme, &globex] {
        for tens in 0..5u32 {
            let batch = AlertBatch {
                tenant: tenant.clone(),
                alerts: (0..10)
                    .map(|n| sample_alert(tenant, tens * 10 + n, i64::from(tens * 10 + n)))
                    .collect(),
            };
            let message = OutgoingMessage::encode_compressed(&batch, batch.message_id()).unwrap();
            bus.publish_durable(message).await.unwrap();
        }
    }
    // The same alerts again, one per message with other message ids, as an earlier release
    // published them (a redelivery the bus cannot recognize): one row each all the same.
    for n in 0..50u32 {
        for tenant in [&acme, &globex] {
            let alert = sample_alert(tenant, n, i64::from(n));
            let message = OutgoingMessage::encode(&alert, format!("{}-again", alert.id)).unwrap();
            bus.publish_durable(message).await.unwrap();
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let acme_count = harness.store.tenant(&acme).count_alerts().await.unwrap();
        let globex_count = harness.store.tenant(&globex).count_alerts().await.unwrap();
        if acme_count == 50 && globex_count == 50 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stored {acme_count} and {globex_count} of 50"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut streamed = std::collections::HashSet::new();
    while streamed.len() < 50 {
        let alert = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(alert.tenant, "acme");
        streamed.insert(alert.id);
    }
    let letter = tokio::time::timeout(Duration::from_secs(15), dead.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let reason = letter.headers.get(HEADER_DEAD_LETTER_REASON).unwrap();
    assert!(
        reason.contains("belongs to tenant globex inside a batch of tenant acme"),
        "{reason}"
    );
    letter.ack().await.unwrap();
    context.shutdown.cancel();
    persister.await.unwrap().unwrap();
    assert_eq!(
        harness.store.tenant(&acme).count_alerts().await.unwrap(),
        50
    );
    assert_eq!(
        harness.store.tenant(&globex).count_alerts().await.unwrap(),
        50
    );
}

#[tokio::test]
async fn persister_stores_each_alert_once_on_the_in_process_bus() {
    let harness = Harness::start(None).await;
    harness.create_tenant("acme").await;
    harness.create_tenant("globex").await;
    let bus: Arc<dyn Bus> = Arc::new(vigil_bus::inprocess::InProcessBus::new(Default::default()));
    persisted_once(bus, &harness).await;
}

#[tokio::test]
async fn persister_stores_each_alert_once_on_jetstream_and_postgres() {
    let nats = vigil_e2e::NatsServer::start().unwrap();
    let database = vigil_e2e::TestDatabase::create("persist").await.unwrap();
    let harness = Harness::start(Some(&database.url)).await;
    harness.create_tenant("acme").await;
    harness.create_tenant("globex").await;
    let bus: Arc<dyn Bus> = Arc::new(
        vigil_bus::jetstream::JetStreamBus::connect(vigil_bus::jetstream::JetStreamConfig::new(
            nats.url(),
        ))
        .await
        .unwrap(),
    );
    persisted_once(bus, &harness).await;
    drop(harness);
    tokio::time::sleep(Duration::from_millis(200)).await;
    database.drop().await.unwrap();
}

#[tokio::test]
async fn another_master_key_is_refused_at_start() {
    let harness = Harness::start(None).await;
    let elsewhere = tempfile::tempdir().unwrap();
    let err = vigil_control::prepare_keys(&harness.store, &harness.config, elsewhere.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("sealed with another master key"), "{err}");
    assert!(err.contains("control.master_key_file"), "{err}");
}

#[tokio::test]
async fn tls_serves_tokens_and_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).unwrap();
    let server_tls = vigil_control::TlsConfig {
        cert_file: cert_file.clone(),
        key_file,
        client_ca_file: None,
    }
    .load()
    .unwrap();
    let client_tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            certified.cert.pem(),
        ))
        .domain_name("localhost");
    let harness = Harness::start_with(None, Some((server_tls, client_tls))).await;
    harness.create_tenant("acme").await;
    assert_eq!(list_tenants(&harness, &harness.admin).await.unwrap(), 1);

    // The same port in plaintext does not answer gRPC.
    let port = harness.port;
    let plaintext = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    let status =
        vigil_proto::control::v1::tenant_service_client::TenantServiceClient::new(plaintext)
            .list_tenants(with_token(&harness.admin, pb::ListTenantsRequest {}))
            .await
            .unwrap_err();
    assert_ne!(status.code(), Code::Ok);

    // A missing certificate file is named at start.
    let err = vigil_control::TlsConfig {
        cert_file: dir.path().join("missing.pem"),
        key_file: cert_file,
        client_ca_file: None,
    }
    .load()
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("control.tls: cannot read"), "{err}");
    assert!(err.contains("missing.pem"), "{err}");
}

#[tokio::test]
async fn principals_are_registered_listed_and_disabled_with_their_tokens() {
    let harness = Harness::start(None).await;
    harness.create_tenant("acme").await;
    harness.create_tenant("globex").await;
    let admin = harness.admin.clone();
    let mut tenants = harness.tenants();
    let create = |subject: &str, role: &str, tenant: &str| pb::CreatePrincipalRequest {
        subject: subject.into(),
        role: role.into(),
        tenant_id: tenant.into(),
        display_name: String::new(),
    };
    let alice = tenants
        .create_principal(with_token(
            &admin,
            create("alice@acme.example", "tenant-viewer", "acme"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alice.tenant_id, "acme");
    assert_eq!(alice.created_by, "admin");
    tenants
        .create_principal(with_token(
            &admin,
            create("bob@globex.example", "analyst", "globex"),
        ))
        .await
        .unwrap();
    tenants
        .create_principal(with_token(
            &admin,
            create("soc-lead@mssp.example", "analyst", ""),
        ))
        .await
        .unwrap();

    // Bad input: each refused with its reason, nothing written.
    for (request, code, reason) in [
        (
            create("alice@acme.example", "analyst", "acme"),
            Code::AlreadyExists,
            "already exists",
        ),
        (
            create("has space", "analyst", "acme"),
            Code::InvalidArgument,
            "no spaces",
        ),
        (
            create("", "analyst", "acme"),
            Code::InvalidArgument,
            "1 to 200",
        ),
        (
            create("ingest:acme", "ingest", "acme"),
            Code::InvalidArgument,
            "unnamed tokens",
        ),
        (
            create("carol@x", "root", "acme"),
            Code::InvalidArgument,
            "role",
        ),
        (
            create("carol@x", "tenant-viewer", ""),
            Code::InvalidArgument,
            "role tenant-viewer",
        ),
        (
            create("carol@x", "analyst", "nope"),
            Code::NotFound,
            "tenant nope",
        ),
    ] {
        let status = tenants
            .create_principal(with_token(&admin, request.clone()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{request:?}: {status:?}");
        assert!(status.message().contains(reason), "{request:?}: {status:?}");
    }

    // Tokens go to a principal with its role and scope only.
    let issue = |subject: &str, role: &str, tenant: &str| pb::IssueTokenRequest {
        tenant_id: tenant.into(),
        role: role.into(),
        subject: subject.into(),
        ttl_seconds: 600,
    };
    let token = tenants
        .issue_token(with_token(
            &admin,
            issue("alice@acme.example", "tenant-viewer", "acme"),
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    for request in [
        issue("alice@acme.example", "analyst", "acme"),
        issue("alice@acme.example", "tenant-viewer", "globex"),
    ] {
        let status = tenants
            .issue_token(with_token(&admin, request))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .contains("registered as tenant-viewer for acme")
        );
    }
    let get = pb::GetTenantRequest {
        tenant_id: "acme".into(),
    };
    tenants
        .get_tenant(with_token(&token, get.clone()))
        .await
        .unwrap();

    // Listing: a tenant sees its own; the platform every one, with live token counts.
    let acme = tenants
        .list_principals(with_token(
            &admin,
            pb::ListPrincipalsRequest {
                tenant_id: "acme".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .principals;
    assert_eq!(acme.len(), 1);
    assert_eq!(acme[0].subject, "alice@acme.example");
    assert_eq!(acme[0].live_tokens, 1);
    let all = tenants
        .list_principals(with_token(&admin, pb::ListPrincipalsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .principals;
    let subjects: Vec<&str> = all.iter().map(|p| p.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "alice@acme.example",
            "bob@globex.example",
            "soc-lead@mssp.example"
        ]
    );

    // Another tenant's scope does not reach alice.
    let status = tenants
        .disable_principal(with_token(
            &admin,
            pb::DisablePrincipalRequest {
                subject: "alice@acme.example".into(),
                tenant_id: "globex".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // Disabled: her token stops working at once, no new one can be issued.
    let disabled = tenants
        .disable_principal(with_token(
            &admin,
            pb::DisablePrincipalRequest {
                subject: "alice@acme.example".into(),
                tenant_id: "acme".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(disabled.revoked_tokens, 1);
    assert!(!disabled.disabled_time.is_empty());
    let status = tenants
        .get_tenant(with_token(&token, get))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = tenants
        .issue_token(with_token(
            &admin,
            issue("alice@acme.example", "tenant-viewer", "acme"),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("disabled"));

    // Audited.
    let records = AuditServiceClient::new(harness.channel.clone())
        .list_audit(with_token(
            &admin,
            pb::ListAuditRequest {
                tenant_id: "acme".into(),
                page_size: 100,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .records;
    let actions: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.action.as_str(), r.outcome.as_str()))
        .collect();
    assert!(
        actions.contains(&("principal.create", "success")),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("principal.disable", "success")),
        "{actions:?}"
    );
}
