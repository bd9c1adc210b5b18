//! Every payload type survives a JSON round trip unchanged.

// Test helpers panic with the value: the clearest failure a test can give.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use time::macros::datetime;
use vigil_schema::*;

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn round_trip<T: Payload + PartialEq + std::fmt::Debug>(value: &T) {
    let bytes = serde_json::to_vec(value).unwrap();
    let back: T = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(&back, value, "{}", String::from_utf8_lossy(&bytes));
    assert!(T::schema_header().ends_with("/1"));
}

#[test]
fn signal() {
    let mut details = serde_json::Map::new();
    details.insert("expected_per_hour".into(), serde_json::json!(0.2));
    round_trip(&Signal {
        id: SignalId::new_random(),
        tenant: tenant(),
        kind: "rare_process_for_host".into(),
        entity: EntityRef::new(EntityKind::Host, "ws-01"),
        score: 0.97,
        description: "mimikatz.exe never ran on ws-01".into(),
        event_ids: vec![EventId::new_random()],
        observed_time: datetime!(2026-11-27 06:00 UTC),
        details,
    });
}

fn sample_alert() -> Alert {
    Alert {
        id: AlertId::derive(&[b"rule", b"event"]),
        tenant: tenant(),
        source: AlertSource::Sigma,
        rule_id: "5f5b3c6a-0000-4000-8000-000000000001".into(),
        rule_title: "Whoami Execution".into(),
        level: Level::High,
        attack: vec![AttackTechnique {
            id: "T1033".into(),
            name: "System Owner/User Discovery".into(),
            tactics: vec!["discovery".into()],
        }],
        event_ids: vec![EventId::new_random()],
        matched: vec![MatchedField {
            field: "Image".into(),
            value: "C:\\Windows\\System32\\whoami.exe".into(),
        }],
        entities: Entities {
            host: Some("ws-01".into()),
            ..Entities::default()
        },
        intel: Some(IntelMatch {
            feed: "abuse-ch".into(),
            indicator: "198.51.100.7".into(),
            confidence: Some(80),
            labels: vec!["c2".into()],
        }),
        event_time: datetime!(2026-11-27 06:00 UTC),
        detected_time: datetime!(2026-11-27 06:00:00.5 UTC),
    }
}

#[test]
fn alert() {
    let alert = sample_alert();
    round_trip(&alert);
    let json = serde_json::to_value(&alert).unwrap();
    assert_eq!(json["level"], "high");
    assert_eq!(json["attack"][0]["id"], "T1033");
}

#[test]
fn alert_batch_round_trips_with_a_stable_id_and_keeps_to_its_tenant() {
    let first = sample_alert();
    let mut second = sample_alert();
    second.id = AlertId::derive(&[b"rule", b"another event"]);
    let mut batch = AlertBatch {
        tenant: tenant(),
        alerts: vec![first.clone(), second.clone()],
    };
    round_trip(&batch);
    assert_eq!(AlertBatch::schema_header(), "alert-batch/1");
    assert!(batch.validate().is_ok());
    // The id depends on the alerts and their order, nothing else.
    let mut later = batch.clone();
    later.alerts[0].detected_time = datetime!(2026-11-27 07:00 UTC);
    assert_eq!(later.message_id(), batch.message_id());
    let reordered = AlertBatch {
        tenant: tenant(),
        alerts: vec![second, first],
    };
    assert_ne!(reordered.message_id(), batch.message_id());
    batch.alerts[1].tenant = TenantId::new("globex").unwrap();
    let err = batch.validate().unwrap_err();
    assert!(
        err.contains("tenant globex inside a batch of tenant acme"),
        "{err}"
    );
}

#[test]
fn level_rejects_unknown_values_with_reason() {
    let err = serde_json::from_str::<Level>("\"severe\"").unwrap_err();
    assert!(
        err.to_string().contains("unknown level \"severe\""),
        "{err}"
    );
    assert!(Level::Critical > Level::High);
}

#[test]
fn incident() {
    round_trip(&Incident {
        id: IncidentId::new_random(),
        tenant: tenant(),
        title: "Credential dumping on ws-01".into(),
        severity: Level::Critical,
        score: 93.5,
        status: IncidentStatus::InProgress,
        alert_ids: vec![AlertId::new_random(), AlertId::new_random()],
        entities: vec![EntityRef::new(EntityKind::User, "ACME\\alice")],
        first_seen: datetime!(2026-11-27 05:00 UTC),
        last_seen: datetime!(2026-11-27 06:00 UTC),
        updated_time: datetime!(2026-11-27 06:01 UTC),
        assignee: Some("bob@mssp.example".into()),
    });
}

#[test]
fn action() {
    for kind in [
        ActionKind::BlockIp,
        ActionKind::Custom("quarantine_mail".into()),
    ] {
        round_trip(&Action {
            id: ActionId::new_random(),
            tenant: tenant(),
            incident_id: Some(IncidentId::new_random()),
            playbook: "contain-host".into(),
            kind,
            target: EntityRef::new(EntityKind::Ip, "198.51.100.7"),
            status: ActionStatus::PendingApproval,
            requested_by: "playbook:contain-host".into(),
            decided_by: None,
            undo_of: None,
            parameters: serde_json::Map::new(),
            result: None,
            requested_time: datetime!(2026-11-27 06:00 UTC),
            updated_time: datetime!(2026-11-27 06:00 UTC),
        });
    }
}

#[test]
fn audit_record() {
    round_trip(&AuditRecord {
        id: AuditId::new_random(),
        tenant: Some(tenant()),
        time: datetime!(2026-11-27 06:00 UTC),
        actor: Actor {
            subject: "admin".into(),
            role: "mssp-admin".into(),
        },
        action: "tenant.create".into(),
        target: Some("acme".into()),
        outcome: AuditOutcome::Success,
        details: serde_json::Map::new(),
    });
}
