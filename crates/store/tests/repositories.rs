//! The repositories on both databases: every scenario runs on SQLite and on PostgreSQL (a
//! database of its own on the machine's server), from the same migrations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;

use time::OffsetDateTime;
use vigil_schema::{
    Actor, Alert, AlertId, AlertSource, AuditId, AuditOutcome, AuditRecord, EventId, Level,
    TenantId,
};
use vigil_store::{AlertQuery, AuditPage, NewRule, OverrideRecord, Store, StoreError, TenantState};

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).unwrap()
}

async fn on_both<F, Fut>(name: &str, scenario: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
        .await
        .unwrap();
    sqlite.migrate().await.unwrap();
    scenario(sqlite).await;

    let database = vigil_e2e::TestDatabase::create(name).await.unwrap();
    let postgres = Store::connect(&database.url).await.unwrap();
    postgres.migrate().await.unwrap();
    // Migrating twice is a no-op.
    postgres.migrate().await.unwrap();
    scenario(postgres.clone()).await;
    postgres.close().await;
    database.drop().await.unwrap();
}

fn alert(tenant_id: &TenantId, n: u32, level: Level, detected_secs: i64) -> Alert {
    let time = OffsetDateTime::from_unix_timestamp(1_800_000_000 + detected_secs).unwrap();
    Alert {
        id: AlertId::derive(&[tenant_id.as_str().as_bytes(), &n.to_le_bytes()]),
        tenant: tenant_id.clone(),
        source: AlertSource::Sigma,
        rule_id: format!("rule-{}", n % 3),
        rule_title: format!("Rule {}", n % 3),
        level,
        attack: Vec::new(),
        event_ids: vec![EventId::derive(&[&n.to_le_bytes()])],
        matched: Vec::new(),
        entities: Default::default(),
        intel: None,
        event_time: time,
        detected_time: time,
    }
}

fn audit(tenant_id: Option<&TenantId>, action: &str) -> AuditRecord {
    AuditRecord {
        id: AuditId::new_random(),
        tenant: tenant_id.cloned(),
        time: OffsetDateTime::now_utc(),
        actor: Actor {
            subject: "admin".into(),
            role: "mssp-admin".into(),
        },
        action: action.into(),
        target: None,
        outcome: AuditOutcome::Success,
        details: Default::default(),
    }
}

#[tokio::test]
async fn tenants_conflicts_and_states() {
    on_both("tenants", |store| async move {
        let platform = store.platform();
        let acme = tenant("acme");
        let created = platform.create_tenant(&acme, "Acme", 1).await.unwrap();
        assert_eq!(created.state, TenantState::Active);
        assert!(matches!(
            platform.create_tenant(&acme, "Again", 2).await,
            Err(StoreError::Conflict(_))
        ));
        platform
            .create_tenant(&tenant("globex"), "Globex", 3)
            .await
            .unwrap();
        let ids: Vec<String> = platform
            .list_tenants()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id.to_string())
            .collect();
        assert_eq!(ids, ["acme", "globex"]);
        let suspended = platform
            .set_tenant_state(&acme, TenantState::Suspended, 4)
            .await
            .unwrap();
        assert_eq!(suspended.state, TenantState::Suspended);
        assert_eq!(suspended.updated_at, 4);
        assert!(matches!(
            platform
                .set_tenant_state(&tenant("nobody"), TenantState::Active, 5)
                .await,
            Err(StoreError::NotFound(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn alerts_are_idempotent_and_never_cross_tenants() {
    on_both("alerts", |store| async move {
        let acme = tenant("acme");
        let globex = tenant("globex");
        let alerts: Vec<Alert> = (0..3)
            .map(|n| alert(&acme, n, Level::High, n.into()))
            .collect();
        assert_eq!(store.tenant(&acme).insert_alerts(&alerts).await.unwrap(), 3);
        // Redelivery: the same alerts again are not new rows.
        assert_eq!(store.tenant(&acme).insert_alerts(&alerts).await.unwrap(), 0);
        assert_eq!(store.tenant(&acme).count_alerts().await.unwrap(), 3);
        assert_eq!(store.tenant(&globex).count_alerts().await.unwrap(), 0);
        let query = AlertQuery {
            limit: 100,
            ..Default::default()
        };
        assert!(
            store
                .tenant(&globex)
                .alerts(&query)
                .await
                .unwrap()
                .is_empty()
        );

        // The same alert id in another tenant is another row.
        let mut theirs = alerts[0].clone();
        theirs.tenant = globex.clone();
        assert_eq!(
            store
                .tenant(&globex)
                .insert_alerts(&[theirs.clone()])
                .await
                .unwrap(),
            1
        );

        // An alert of another tenant is refused, and nothing of the batch is stored.
        let mixed = vec![alert(&acme, 10, Level::Low, 10), theirs];
        assert!(matches!(
            store.tenant(&acme).insert_alerts(&mixed).await,
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(store.tenant(&acme).count_alerts().await.unwrap(), 3);
    })
    .await;
}

#[tokio::test]
async fn alert_pages_follow_filters_and_cursor() {
    on_both("pages", |store| async move {
        let acme = tenant("acme");
        let alerts: Vec<Alert> = (0..250u32)
            .map(|n| {
                let level = if n % 2 == 0 { Level::High } else { Level::Low };
                // Pairs share a detection time, so the cursor must break ties by id.
                alert(&acme, n, level, i64::from(n / 2))
            })
            .collect();
        assert_eq!(
            store.tenant(&acme).insert_alerts(&alerts).await.unwrap(),
            250
        );
        let mut query = AlertQuery {
            limit: 40,
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = store.tenant(&acme).alerts(&query).await.unwrap();
            let Some(last) = page.last() else { break };
            query.after = Some((vigil_store::micros(last.detected_time), last.id.to_string()));
            seen.extend(page.iter().map(|a| a.id));
            if page.len() < 40 {
                break;
            }
        }
        assert_eq!(seen.len(), 250);
        let unique: std::collections::HashSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), 250);

        let high = store
            .tenant(&acme)
            .alerts(&AlertQuery {
                min_level: Some(Level::High),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(high.len(), 125);
        let base = vigil_store::micros(OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap());
        let window = store
            .tenant(&acme)
            .alerts(&AlertQuery {
                from: Some(base + 10_000_000),
                to: Some(base + 20_000_000),
                rule_id: Some("rule-0".into()),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(!window.is_empty());
        assert!(window.iter().all(|a| a.rule_id == "rule-0"
            && vigil_store::micros(a.detected_time) >= base + 10_000_000
            && vigil_store::micros(a.detected_time) < base + 20_000_000));
        // Newest first.
        assert!(
            window
                .windows(2)
                .all(|w| w[0].detected_time >= w[1].detected_time)
        );
    })
    .await;
}

#[tokio::test]
async fn rules_belong_to_their_owner() {
    on_both("rules", |store| async move {
        let acme = tenant("acme");
        let globex = tenant("globex");
        let rule = |id: &str| NewRule {
            rule_id: id.into(),
            title: format!("Title {id}"),
            level: "high".into(),
            kind: "detection".into(),
            yaml: format!("title: Title {id}\nid: {id}\n"),
        };
        let global = store.platform().global_rules();
        let first = global.upsert(rule("g1"), "admin", 1).await.unwrap();
        assert_eq!(first.version, 1);
        let second = global.upsert(rule("g1"), "admin", 2).await.unwrap();
        assert_eq!(second.version, 2);
        store
            .tenant(&acme)
            .rules()
            .upsert(rule("a1"), "ana", 3)
            .await
            .unwrap();

        let ids = |rules: Vec<vigil_store::RuleRecord>| -> Vec<String> {
            rules.into_iter().map(|r| r.rule_id).collect()
        };
        assert_eq!(ids(global.list().await.unwrap()), ["g1"]);
        assert_eq!(
            ids(store.tenant(&acme).rules().list().await.unwrap()),
            ["a1"]
        );
        assert!(
            store
                .tenant(&globex)
                .rules()
                .list()
                .await
                .unwrap()
                .is_empty()
        );
        // Another tenant cannot reach acme's rule by id.
        assert!(
            store
                .tenant(&globex)
                .rules()
                .get("a1")
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            store
                .tenant(&globex)
                .rules()
                .set_enabled("a1", false, "eve", 4)
                .await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.tenant(&globex).rules().delete("a1").await,
            Err(StoreError::NotFound(_))
        ));
        let disabled = store
            .tenant(&acme)
            .rules()
            .set_enabled("a1", false, "ana", 5)
            .await
            .unwrap();
        assert!(!disabled.enabled);
        assert_eq!(disabled.version, 2);

        let saved = store
            .tenant(&acme)
            .set_override(OverrideRecord {
                tenant: "ignored".into(),
                rule_id: "g1".into(),
                enabled: Some(false),
                level: Some("low".into()),
                exceptions: "[]".into(),
                version: 0,
                updated_at: 6,
                updated_by: "ana".into(),
            })
            .await
            .unwrap();
        assert_eq!(saved.tenant, "acme");
        assert_eq!(store.tenant(&acme).overrides().await.unwrap().len(), 1);
        assert!(store.tenant(&globex).overrides().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn tokens_revocation_is_tenant_scoped() {
    on_both("tokens", |store| async move {
        let acme = tenant("acme");
        let globex = tenant("globex");
        let token = |jti: &str, tenant: &str| vigil_store::TokenRecord {
            jti: jti.into(),
            tenant: Some(tenant.into()),
            tenants: format!("[\"{tenant}\"]"),
            subject: format!("ingest:{tenant}"),
            role: "ingest".into(),
            kid: "k".into(),
            issued_at: 1,
            expires_at: i64::MAX / 2,
            revoked_at: None,
            revoked_by: None,
        };
        store
            .platform()
            .insert_token(token("t-acme", "acme"))
            .await
            .unwrap();
        store
            .platform()
            .insert_token(token("t-globex", "globex"))
            .await
            .unwrap();
        assert!(matches!(
            store.tenant(&acme).revoke_token("t-globex", "eve", 5).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(
            store
                .platform()
                .revoked_tokens(10)
                .await
                .unwrap()
                .is_empty()
        );
        let revoked = store
            .tenant(&globex)
            .revoke_token("t-globex", "admin", 5)
            .await
            .unwrap();
        assert_eq!(revoked.revoked_at, Some(5));
        assert_eq!(
            store.platform().revoked_tokens(10).await.unwrap(),
            ["t-globex"]
        );
        assert_eq!(store.tenant(&acme).tokens().await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn transactions_roll_back_and_purge_touches_one_tenant() {
    on_both("tx", |store| async move {
        let acme = tenant("acme");
        let globex = tenant("globex");
        {
            let tx = store.begin().await.unwrap();
            tx.platform().create_tenant(&acme, "Acme", 1).await.unwrap();
            tx.platform()
                .append_audit(&audit(Some(&acme), "tenant.create"))
                .await
                .unwrap();
            // Dropped without commit.
        }
        assert!(store.platform().get_tenant(&acme).await.unwrap().is_none());
        assert!(
            store
                .platform()
                .audit(&AuditPage {
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap()
                .is_empty()
        );

        for id in [&acme, &globex] {
            let tx = store.begin().await.unwrap();
            tx.platform()
                .create_tenant(id, id.as_str(), 1)
                .await
                .unwrap();
            tx.tenant(id)
                .insert_alerts(&[alert(id, 1, Level::High, 1)])
                .await
                .unwrap();
            tx.tenant(id)
                .append_audit(&audit(Some(id), "tenant.create"))
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        assert!(matches!(
            store
                .tenant(&acme)
                .append_audit(&audit(Some(&globex), "x"))
                .await,
            Err(StoreError::Invalid(_))
        ));
        store.platform().purge_tenant(&acme).await.unwrap();
        assert!(store.platform().get_tenant(&acme).await.unwrap().is_none());
        assert_eq!(store.tenant(&acme).count_alerts().await.unwrap(), 0);
        assert_eq!(store.tenant(&globex).count_alerts().await.unwrap(), 1);
        let page = AuditPage {
            limit: 10,
            ..Default::default()
        };
        assert_eq!(store.tenant(&globex).audit(&page).await.unwrap().len(), 1);
        // The audit of the purged tenant stays.
        assert_eq!(store.tenant(&acme).audit(&page).await.unwrap().len(), 1);
        assert_eq!(store.platform().audit(&page).await.unwrap().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn detect_state_is_per_tenant_and_written_by_compare_and_swap() {
    on_both("detect_state", |store| async move {
        let acme = store.tenant(&tenant("acme"));
        let globex = store.tenant(&tenant("globex"));
        assert_eq!(acme.detect_state("correlation").await.unwrap(), None);
        // The first write expects nothing stored; a second first write loses.
        assert_eq!(
            acme.put_detect_state("correlation", None, b"one".to_vec(), 1)
                .await
                .unwrap(),
            Some(1)
        );
        assert_eq!(
            acme.put_detect_state("correlation", None, b"racer".to_vec(), 2)
                .await
                .unwrap(),
            None
        );
        // Later writes expect the version they read.
        assert_eq!(
            acme.put_detect_state("correlation", Some(1), b"two".to_vec(), 3)
                .await
                .unwrap(),
            Some(2)
        );
        assert_eq!(
            acme.put_detect_state("correlation", Some(1), b"stale".to_vec(), 4)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            acme.detect_state("correlation").await.unwrap(),
            Some((2, b"two".to_vec()))
        );
        assert_eq!(
            acme.detect_state_version("correlation").await.unwrap(),
            Some(2)
        );
        // Another tenant sees nothing of it and writes its own.
        assert_eq!(globex.detect_state("correlation").await.unwrap(), None);
        assert_eq!(
            globex.detect_state_version("correlation").await.unwrap(),
            None
        );
        assert_eq!(
            globex
                .put_detect_state("correlation", Some(2), b"x".to_vec(), 5)
                .await
                .unwrap(),
            None,
            "acme's version does not let globex write"
        );
        // Purging acme removes its state only.
        globex
            .put_detect_state("correlation", None, b"g".to_vec(), 6)
            .await
            .unwrap();
        store
            .platform()
            .purge_tenant(&tenant("acme"))
            .await
            .unwrap();
        assert_eq!(acme.detect_state("correlation").await.unwrap(), None);
        assert_eq!(
            globex.detect_state("correlation").await.unwrap(),
            Some((1, b"g".to_vec()))
        );
    })
    .await;
}

#[tokio::test]
async fn content_versions_change_with_every_owner_change() {
    on_both("content_versions", |store| async move {
        let acme = tenant("acme");
        let before = store.platform().content_versions().await.unwrap();
        assert!(before.tenants.is_empty());
        let rule = NewRule {
            rule_id: "r1".into(),
            title: "R1".into(),
            level: "low".into(),
            kind: "detection".into(),
            yaml: "title: R1\nid: r1\n".into(),
        };
        store
            .platform()
            .global_rules()
            .upsert(rule.clone(), "admin", 10)
            .await
            .unwrap();
        let global = store.platform().content_versions().await.unwrap();
        assert_ne!(global.global, before.global);
        assert!(global.tenants.is_empty(), "a global rule is no tenant's");
        store
            .tenant(&acme)
            .feeds()
            .upsert("f", "list", b"1.2.3.4\n".to_vec(), 1, "admin", 11)
            .await
            .unwrap();
        let with_feed = store.platform().content_versions().await.unwrap();
        assert_eq!(with_feed.global, global.global);
        assert_eq!(with_feed.tenants[&acme].feeds, (1, 11));
        store.tenant(&acme).feeds().delete("f").await.unwrap();
        let after = store.platform().content_versions().await.unwrap();
        assert!(!after.tenants.contains_key(&acme), "{after:?}");
    })
    .await;
}

#[tokio::test]
async fn principals_are_scoped_and_disabling_revokes_their_tokens() {
    on_both("principals", |store| async move {
        let acme = tenant("acme");
        let globex = tenant("globex");
        for id in [&acme, &globex] {
            store
                .platform()
                .create_tenant(id, id.as_str(), 1)
                .await
                .unwrap();
        }
        let token = |jti: &str, tenant: &str, subject: &str| vigil_store::TokenRecord {
            jti: jti.into(),
            tenant: Some(tenant.into()),
            tenants: format!("[\"{tenant}\"]"),
            subject: subject.into(),
            role: "tenant-viewer".into(),
            kid: "k".into(),
            issued_at: 1,
            expires_at: i64::MAX / 2,
            revoked_at: None,
            revoked_by: None,
        };
        store
            .tenant(&acme)
            .principals()
            .create("alice@acme", "tenant-viewer", "Alice", "admin", 2)
            .await
            .unwrap();
        store
            .tenant(&globex)
            .principals()
            .create("bob@globex", "tenant-viewer", "Bob", "admin", 2)
            .await
            .unwrap();
        store
            .platform()
            .principals()
            .create("lead@mssp", "analyst", "Lead", "admin", 2)
            .await
            .unwrap();
        // Subjects are unique across the platform.
        assert!(matches!(
            store
                .tenant(&globex)
                .principals()
                .create("alice@acme", "analyst", "x", "admin", 3)
                .await,
            Err(StoreError::Conflict(_))
        ));
        for (jti, tenant, subject) in [
            ("a1", "acme", "alice@acme"),
            ("a2", "acme", "alice@acme"),
            ("b1", "globex", "bob@globex"),
        ] {
            store
                .platform()
                .insert_token(token(jti, tenant, subject))
                .await
                .unwrap();
        }

        // Each tenant sees its own; the platform sees all.
        let listed = store.tenant(&acme).principals().list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].subject, "alice@acme");
        assert_eq!(listed[0].tenant.as_deref(), Some("acme"));
        assert!(
            store
                .tenant(&acme)
                .principals()
                .get("bob@globex")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(store.platform().principals().list().await.unwrap().len(), 3);
        assert_eq!(
            store
                .platform()
                .principals()
                .live_tokens("alice@acme", 5)
                .await
                .unwrap(),
            2
        );

        // Another tenant cannot disable alice; her tenant can, revoking her tokens only.
        assert!(matches!(
            store
                .tenant(&globex)
                .principals()
                .disable("alice@acme", "eve", 5)
                .await,
            Err(StoreError::NotFound(_))
        ));
        let (record, revoked) = store
            .tenant(&acme)
            .principals()
            .disable("alice@acme", "admin", 5)
            .await
            .unwrap();
        assert_eq!(revoked, 2);
        assert_eq!(record.disabled_at, Some(5));
        assert_eq!(record.disabled_by.as_deref(), Some("admin"));
        let mut revoked = store.platform().revoked_tokens(10).await.unwrap();
        revoked.sort();
        assert_eq!(revoked, ["a1", "a2"]);
        // Twice: nothing more, the first disabling stays.
        let (again, count) = store
            .tenant(&acme)
            .principals()
            .disable("alice@acme", "other", 9)
            .await
            .unwrap();
        assert_eq!((again.disabled_at, count), (Some(5), 0));

        // Purging a tenant removes its principals, not others'.
        store.platform().purge_tenant(&acme).await.unwrap();
        let left: Vec<String> = store
            .platform()
            .principals()
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.subject)
            .collect();
        assert_eq!(left, ["bob@globex", "lead@mssp"]);
    })
    .await;
}
