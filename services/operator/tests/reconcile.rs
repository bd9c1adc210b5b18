//! Reconcile scenarios against kube's mocked API service (`tower-test`), as kube-rs's own
//! controller tests do: a small in-memory API server answers the operator's calls (and fails
//! the ones a scenario injects), while the store (SQLite) and the bus (in-process) are real.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::{Value, json};
use vigil_auth::{MasterKey, Role, TokenSettings, Verifier};
use vigil_bus::inprocess::InProcessBus;
use vigil_bus::{Bus, ConsumerSpec};
use vigil_operator::crd::{FINALIZER, Tenant, TenantSpec, TenantStatus};
use vigil_operator::nats::NatsIssuer;
use vigil_operator::reconcile::ReconcileError;
use vigil_operator::{Context, Provisioner, reconcile};
use vigil_schema::{Stage, TenantId};
use vigil_store::{Store, TenantState};

const NAMESPACE: &str = "tenants";

/// What the fake API server holds and how it misbehaves.
#[derive(Default)]
struct ApiState {
    tenant: Option<Value>,
    secrets: BTreeMap<String, Value>,
    /// (method, path suffix, status): answer the first matching call with this error.
    failures: Vec<(Method, String, u16)>,
    /// Every call but Events, as `METHOD path`.
    calls: Vec<String>,
    /// Events published: (type, reason).
    events: Vec<(String, String)>,
}

impl ApiState {
    fn answer(&mut self, method: &Method, path: &str, body: &[u8]) -> (u16, Value) {
        if path == format!("/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events") {
            let event: Value = serde_json::from_slice(body).unwrap();
            self.events.push((
                event["type"].as_str().unwrap_or_default().to_owned(),
                event["reason"].as_str().unwrap_or_default().to_owned(),
            ));
            return (201, event);
        }
        self.calls.push(format!("{method} {path}"));
        if let Some(index) = self
            .failures
            .iter()
            .position(|(m, suffix, _)| m == method && path.ends_with(suffix.as_str()))
        {
            let (_, _, code) = self.failures.remove(index);
            return (code, status(code, "injected failure"));
        }
        let secrets = format!("/api/v1/namespaces/{NAMESPACE}/secrets/");
        let tenants = format!("/apis/vigil.io/v1alpha1/namespaces/{NAMESPACE}/tenants/");
        if let Some(name) = path.strip_prefix(&secrets) {
            return match *method {
                Method::GET => match self.secrets.get(name) {
                    Some(secret) => (200, secret.clone()),
                    None => (404, status(404, "secrets not found")),
                },
                Method::PATCH => {
                    let secret: Value = serde_json::from_slice(body).unwrap();
                    self.secrets.insert(name.to_owned(), secret.clone());
                    (200, secret)
                }
                Method::DELETE => {
                    self.secrets.remove(name);
                    (200, status(200, "deleted"))
                }
                _ => (405, status(405, "method not allowed")),
            };
        }
        if let Some(rest) = path.strip_prefix(&tenants) {
            let tenant = self.tenant.as_mut().expect("a tenant");
            if rest.ends_with("/status") && *method == Method::PATCH {
                let patch: Value = serde_json::from_slice(body).unwrap();
                tenant["status"] = patch["status"].clone();
                return (200, tenant.clone());
            }
            if *method == Method::PATCH {
                // The finalizer helper's JSON patch: add or remove finalizers.
                let ops: Vec<Value> = serde_json::from_slice(body).unwrap();
                for op in ops {
                    let target = op["path"].as_str().unwrap_or_default();
                    match op["op"].as_str() {
                        Some("add") if target == "/metadata/finalizers" => {
                            tenant["metadata"]["finalizers"] = op["value"].clone();
                        }
                        Some("add") if target == "/metadata/finalizers/-" => {
                            let list = tenant["metadata"]["finalizers"]
                                .as_array_mut()
                                .expect("finalizers");
                            list.push(op["value"].clone());
                        }
                        Some("remove") if target.starts_with("/metadata/finalizers/") => {
                            let index: usize = target.rsplit('/').next().unwrap().parse().unwrap();
                            tenant["metadata"]["finalizers"]
                                .as_array_mut()
                                .unwrap()
                                .remove(index);
                        }
                        _ => {}
                    }
                }
                return (200, tenant.clone());
            }
        }
        (404, status(404, "not served by the test API"))
    }
}

fn status(code: u16, message: &str) -> Value {
    let reason = match code {
        404 => "NotFound",
        409 => "Conflict",
        500 => "InternalError",
        _ => "",
    };
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": if code < 300 { "Success" } else { "Failure" }, "message": message, "reason": reason, "code": code})
}

struct Harness {
    api: Arc<Mutex<ApiState>>,
    ctx: Arc<Context>,
    writer: reflector::store::Writer<Tenant>,
    store: Store,
    bus: Arc<dyn Bus>,
    master: Arc<MasterKey>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new(nats: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let bus: Arc<dyn Bus> = Arc::new(InProcessBus::new(Default::default()));
        let master = Arc::new(MasterKey::generate().unwrap());
        let issuer = nats.then(|| {
            let account = nkeys::KeyPair::new_account();
            Arc::new(
                NatsIssuer::new(
                    &account.seed().unwrap(),
                    None,
                    Some("nats://nats.nats:4222".into()),
                )
                .unwrap(),
            )
        });
        let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(mock, "default");
        let api = Arc::new(Mutex::new(ApiState::default()));
        serve(handle, Arc::clone(&api));
        let (reader, writer) = reflector::store::<Tenant>();
        let recorder = kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "vigil-operator".into(),
                instance: None,
            },
        );
        let ctx = Arc::new(Context {
            recorder,
            client,
            provisioner: Provisioner {
                store: store.clone(),
                bus: Arc::clone(&bus),
                master: Arc::clone(&master),
                tokens: TokenSettings::default(),
                nats: issuer,
            },
            tenants: reader,
            failures: Mutex::new(HashMap::new()),
            resync: Duration::from_secs(3600),
        });
        Self {
            api,
            ctx,
            writer,
            store,
            bus,
            master,
            _dir: dir,
        }
    }

    /// Puts `tenant` on the server and in the controller's cache.
    fn hold(&mut self, tenant: &Tenant) {
        self.api.lock().unwrap().tenant = Some(serde_json::to_value(tenant).unwrap());
        self.writer
            .apply_watcher_event(&watcher::Event::Apply(tenant.clone()));
    }

    /// The tenant as the server holds it now.
    fn current(&self) -> Tenant {
        serde_json::from_value(self.api.lock().unwrap().tenant.clone().unwrap()).unwrap()
    }

    fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.api.lock().unwrap().calls)
    }

    /// The Events published since the last call, as `Type:Reason`.
    fn take_events(&self) -> Vec<String> {
        std::mem::take(&mut self.api.lock().unwrap().events)
            .into_iter()
            .map(|(type_, reason)| format!("{type_}:{reason}"))
            .collect()
    }

    fn fail(&self, method: Method, suffix: &str, code: u16) {
        self.api
            .lock()
            .unwrap()
            .failures
            .push((method, suffix.to_owned(), code));
    }

    /// Reconciles the tenant the server holds, as the controller would after a watch event.
    async fn reconcile(&mut self) -> Result<Action, ReconcileError> {
        let tenant = self.current();
        self.writer
            .apply_watcher_event(&watcher::Event::Apply(tenant.clone()));
        reconcile(Arc::new(tenant), Arc::clone(&self.ctx)).await
    }

    fn secret(&self, name: &str) -> Option<Secret> {
        self.api
            .lock()
            .unwrap()
            .secrets
            .get(name)
            .map(|s| serde_json::from_value(s.clone()).unwrap())
    }
}

fn serve(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    api: Arc<Mutex<ApiState>>,
) {
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let body = request.into_body().collect_bytes().await.unwrap();
            let (code, value) = api.lock().unwrap().answer(&method, &path, &body);
            send.send_response(
                Response::builder()
                    .status(StatusCode::from_u16(code).unwrap())
                    .body(Body::from(serde_json::to_vec(&value).unwrap()))
                    .unwrap(),
            );
        }
    });
}

fn tenant(name: &str, spec: Value) -> Tenant {
    let mut tenant = Tenant::new(name, serde_json::from_value::<TenantSpec>(spec).unwrap());
    tenant.metadata.namespace = Some(NAMESPACE.into());
    tenant.metadata.uid = Some(format!("uid-{name}"));
    tenant.metadata.generation = Some(1);
    tenant.metadata.creation_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-11-27T10:00:00Z".parse().unwrap(),
        ));
    tenant.metadata.finalizers = Some(vec![FINALIZER.into()]);
    tenant
}

fn condition<'a>(status: &'a TenantStatus, type_: &str) -> (&'a str, &'a str) {
    let c = status.condition(type_).expect(type_);
    (c.status.as_str(), c.reason.as_str())
}

fn data(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

async fn verify_ingest(store: &Store, token: &str) -> vigil_auth::Principal {
    let verifier = Verifier::new(TokenSettings::default());
    vigil_runtime::trust::refresh_trust(store, &verifier)
        .await
        .unwrap();
    verifier.verify(token).unwrap()
}

fn id(text: &str) -> TenantId {
    TenantId::new(text).unwrap()
}

#[tokio::test]
async fn create_provisions_everything_then_reconciles_idempotently() {
    let mut h = Harness::new(true).await;
    h.hold(&tenant(
        "acme",
        json!({"tenantId": "acme", "displayName": "ACME Corp", "services": ["ingest", "detect"]}),
    ));
    let action = h.reconcile().await.unwrap();
    assert!(
        action != Action::await_change(),
        "a healthy tenant is looked at again"
    );
    assert_eq!(
        h.take_calls(),
        [
            "GET /api/v1/namespaces/tenants/secrets/acme-vigil-credentials",
            "PATCH /api/v1/namespaces/tenants/secrets/acme-vigil-credentials",
            "PATCH /apis/vigil.io/v1alpha1/namespaces/tenants/tenants/acme/status",
        ]
    );

    // The store: the tenant, managed by this resource, active.
    let record = h
        .store
        .platform()
        .require_tenant(&id("acme"))
        .await
        .unwrap();
    assert_eq!(record.display_name, "ACME Corp");
    assert_eq!(record.state, TenantState::Active);
    assert_eq!(
        record.managed_by.as_deref(),
        Some("kubernetes:tenants/acme")
    );

    // The Secret: owned by the Tenant, an ingest token that verifies for this tenant only, a
    // NATS user and its inbox prefix.
    let secret = h.secret("acme-vigil-credentials").unwrap();
    let owners = secret.metadata.owner_references.clone().unwrap();
    assert_eq!(owners[0].uid, "uid-acme");
    assert_eq!(owners[0].controller, Some(true));
    assert_eq!(data(&secret, "tenant-id"), "acme");
    let principal = verify_ingest(&h.store, &data(&secret, "ingest-token")).await;
    assert_eq!(principal.role, Role::Ingest);
    assert!(principal.scope.covers(&id("acme")));
    assert!(!principal.scope.covers(&id("globex")));
    assert!(data(&secret, "nats.creds").contains("BEGIN NATS USER JWT"));
    assert_eq!(data(&secret, "nats-inbox-prefix"), "_INBOX_acme");
    assert_eq!(data(&secret, "nats-url"), "nats://nats.nats:4222");

    // The detect consumer for this tenant exists (removing it says it was there).
    let detect = ConsumerSpec::new("detect", Stage::Events, Some(id("acme")));
    assert!(h.bus.remove_consumer(&detect).await.unwrap());
    h.bus.ensure_consumer(&detect).await.unwrap();

    // Status.
    let status = h.current().status.unwrap();
    assert_eq!(condition(&status, "Ready"), ("True", "Ready"));
    assert_eq!(condition(&status, "Provisioned"), ("True", "Provisioned"));
    assert_eq!(condition(&status, "Degraded"), ("False", "AsExpected"));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.tenant_id.as_deref(), Some("acme"));
    let token_id = status.ingest_token_id.clone().unwrap();

    assert_eq!(
        h.take_events(),
        ["Normal:CredentialsIssued", "Normal:Ready"]
    );

    // Again: nothing to do, nothing written, the same token, no event.
    h.reconcile().await.unwrap();
    assert!(h.take_events().is_empty());
    assert_eq!(
        h.take_calls(),
        ["GET /api/v1/namespaces/tenants/secrets/acme-vigil-credentials"]
    );
    assert_eq!(h.current().status.unwrap().ingest_token_id, Some(token_id));
    assert_eq!(h.store.platform().list_tenants().await.unwrap().len(), 1);

    // The audit log says the operator did it.
    let audit = h
        .store
        .tenant(&id("acme"))
        .audit(&vigil_store::AuditPage {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert!(actions.contains(&"tenant.create"), "{actions:?}");
    assert!(actions.contains(&"token.issue"), "{actions:?}");
    assert!(
        audit
            .iter()
            .all(|a| a.actor.subject == "operator/kubernetes:tenants/acme")
    );
}

#[tokio::test]
async fn update_suspends_renames_rotates_and_drops_consumers() {
    let mut h = Harness::new(true).await;
    h.hold(&tenant(
        "acme",
        json!({"tenantId": "acme", "services": ["ingest", "detect"], "credentials": {"ingestTokenDays": 1}}),
    ));
    h.reconcile().await.unwrap();
    let first = h.current().status.unwrap().ingest_token_id.unwrap();
    h.take_calls();

    // Suspend, rename, a longer token life (the 1-day token is now inside its last third),
    // and no per-tenant detect any more.
    let mut changed = h.current();
    changed.spec = serde_json::from_value(json!({"tenantId": "acme", "displayName": "ACME",
        "suspended": true, "services": ["ingest"], "credentials": {"ingestTokenDays": 90}}))
    .unwrap();
    changed.metadata.generation = Some(2);
    h.hold(&changed);
    h.reconcile().await.unwrap();

    let record = h
        .store
        .platform()
        .require_tenant(&id("acme"))
        .await
        .unwrap();
    assert_eq!(record.state, TenantState::Suspended);
    assert_eq!(record.display_name, "ACME");
    let status = h.current().status.unwrap();
    assert_eq!(condition(&status, "Ready"), ("False", "Suspended"));
    assert!(h.take_events().contains(&"Normal:Suspended".to_owned()));
    assert_eq!(condition(&status, "Provisioned"), ("True", "Provisioned"));
    assert_eq!(status.observed_generation, Some(2));
    let second = status.ingest_token_id.clone().unwrap();
    assert_ne!(first, second, "the short-lived token was replaced");
    let old = h.store.platform().get_token(&first).await.unwrap().unwrap();
    assert!(old.revoked_at.is_some(), "the replaced token is revoked");
    let detect = ConsumerSpec::new("detect", Stage::Events, Some(id("acme")));
    assert!(
        !h.bus.remove_consumer(&detect).await.unwrap(),
        "detect's consumer went with the service"
    );

    // Resumed.
    let mut resumed = h.current();
    resumed.spec.suspended = false;
    h.hold(&resumed);
    h.reconcile().await.unwrap();
    let status = h.current().status.unwrap();
    assert_eq!(condition(&status, "Ready"), ("True", "Ready"));
    assert_eq!(
        h.store
            .platform()
            .require_tenant(&id("acme"))
            .await
            .unwrap()
            .state,
        TenantState::Active
    );
}

#[tokio::test]
async fn delete_keeps_data_by_default_and_purges_on_request() {
    for (retention, kept) in [("Keep", true), ("Purge", false)] {
        let mut h = Harness::new(false).await;
        h.hold(&tenant(
            "acme",
            json!({"tenantId": "acme", "retention": retention, "services": ["detect"], "credentials": {"nats": false}}),
        ));
        h.reconcile().await.unwrap();
        let token_id = h.current().status.unwrap().ingest_token_id.unwrap();
        assert!(
            !h.secret("acme-vigil-credentials")
                .unwrap()
                .data
                .unwrap()
                .contains_key("nats.creds")
        );
        h.take_calls();
        h.take_events();

        let mut deleting = h.current();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-11-27T11:00:00Z".parse().unwrap(),
            ));
        h.hold(&deleting);
        let action = h.reconcile().await.unwrap();
        assert_eq!(action, Action::await_change());
        // The finalizer went (a JSON patch on the resource); the Secret goes with its owner.
        assert_eq!(
            h.take_calls(),
            ["PATCH /apis/vigil.io/v1alpha1/namespaces/tenants/tenants/acme"]
        );
        assert_eq!(h.current().metadata.finalizers, Some(vec![]));
        assert_eq!(h.take_events(), ["Normal:Offboarded"]);

        let record = h.store.platform().get_tenant(&id("acme")).await.unwrap();
        if kept {
            let record = record.expect("kept");
            assert_eq!(record.state, TenantState::Deleted, "{retention}");
            assert_eq!(record.managed_by, None, "released for a later resource");
            let token = h
                .store
                .platform()
                .get_token(&token_id)
                .await
                .unwrap()
                .unwrap();
            assert!(token.revoked_at.is_some());
        } else {
            assert!(record.is_none(), "{retention}");
        }
        let detect = ConsumerSpec::new("detect", Stage::Events, Some(id("acme")));
        assert!(
            !h.bus.remove_consumer(&detect).await.unwrap(),
            "{retention}"
        );
    }
}

#[tokio::test]
async fn a_new_resource_gets_the_finalizer_first() {
    let mut h = Harness::new(false).await;
    let mut fresh = tenant(
        "acme",
        json!({"tenantId": "acme", "credentials": {"nats": false}}),
    );
    fresh.metadata.finalizers = None;
    h.hold(&fresh);
    h.reconcile().await.unwrap();
    assert_eq!(
        h.take_calls(),
        ["PATCH /apis/vigil.io/v1alpha1/namespaces/tenants/tenants/acme"]
    );
    assert_eq!(
        h.current().metadata.finalizers,
        Some(vec![FINALIZER.to_owned()])
    );
    assert!(h.store.platform().list_tenants().await.unwrap().is_empty());
}

/// A bad spec: Degraded with the reason, nothing created anywhere.
async fn degraded(h: &mut Harness, expected_reason: &str) -> TenantStatus {
    let action = h.reconcile().await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let status = h.current().status.expect("status written");
    assert_eq!(condition(&status, "Degraded"), ("True", expected_reason));
    assert_eq!(condition(&status, "Ready"), ("False", expected_reason));
    assert_eq!(
        condition(&status, "Provisioned"),
        ("False", expected_reason)
    );
    assert_eq!(h.take_events(), [format!("Warning:{expected_reason}")]);
    status
}

#[tokio::test]
async fn bad_specs_degrade_with_a_reason_and_leave_nothing_behind() {
    // An id the CRD schema would refuse (an object stored before a schema change).
    let mut h = Harness::new(true).await;
    h.hold(&tenant("bad", json!({"tenantId": "ACME_Corp"})));
    let status = degraded(&mut h, "InvalidTenantId").await;
    assert!(
        status
            .condition("Degraded")
            .unwrap()
            .message
            .contains("ACME_Corp")
    );
    assert_eq!(
        h.take_calls(),
        ["PATCH /apis/vigil.io/v1alpha1/namespaces/tenants/tenants/bad/status"]
    );
    assert!(h.store.platform().list_tenants().await.unwrap().is_empty());
    // The same problem again: no status write, no new event.
    h.reconcile().await.unwrap();
    assert!(h.take_calls().is_empty());
    assert!(h.take_events().is_empty());

    // A reserved id.
    let mut h = Harness::new(true).await;
    h.hold(&tenant("all", json!({"tenantId": "all"})));
    degraded(&mut h, "InvalidTenantId").await;

    // Out-of-range token life.
    let mut h = Harness::new(true).await;
    h.hold(&tenant(
        "t",
        json!({"tenantId": "t1", "credentials": {"ingestTokenDays": 0}}),
    ));
    degraded(&mut h, "InvalidTokenLifetime").await;

    // NATS users asked for, but the operator has no account key.
    let mut h = Harness::new(false).await;
    h.hold(&tenant("acme", json!({"tenantId": "acme"})));
    let status = degraded(&mut h, "NatsAccountNotConfigured").await;
    assert!(
        status
            .condition("Degraded")
            .unwrap()
            .message
            .contains("nats: false")
    );
    assert!(h.store.platform().list_tenants().await.unwrap().is_empty());
    assert!(h.secret("acme-vigil-credentials").is_none());

    // The named Secret exists and belongs to someone else: never overwritten.
    let mut h = Harness::new(true).await;
    h.api.lock().unwrap().secrets.insert(
        "acme-vigil-credentials".into(),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "acme-vigil-credentials", "namespace": NAMESPACE}, "data": {"x": "eA=="}}),
    );
    h.hold(&tenant("acme", json!({"tenantId": "acme"})));
    degraded(&mut h, "SecretConflict").await;
    assert!(h.store.platform().list_tenants().await.unwrap().is_empty());
    assert_eq!(
        h.secret("acme-vigil-credentials").unwrap().data.unwrap()["x"].0,
        b"x"
    );
}

#[tokio::test]
async fn conflicting_ids_and_foreign_tenants_are_never_taken_over() {
    let mut h = Harness::new(true).await;
    // An older resource in another namespace claims acme.
    let mut first = tenant("acme", json!({"tenantId": "acme"}));
    first.metadata.namespace = Some("other".into());
    first.metadata.uid = Some("uid-other".into());
    first.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-01T00:00:00Z".parse().unwrap(),
    ));
    h.writer.apply_watcher_event(&watcher::Event::Apply(first));
    h.hold(&tenant("acme-copy", json!({"tenantId": "acme"})));
    let status = degraded(&mut h, "TenantIdConflict").await;
    assert!(
        status
            .condition("Degraded")
            .unwrap()
            .message
            .contains("other/acme"),
        "{status:?}"
    );
    assert!(h.store.platform().list_tenants().await.unwrap().is_empty());

    // A tenant made through the API: refused without adopt, managed with it.
    let mut h = Harness::new(true).await;
    h.store
        .platform()
        .create_tenant(&id("initech"), "Initech", 1)
        .await
        .unwrap();
    h.hold(&tenant("initech", json!({"tenantId": "initech"})));
    degraded(&mut h, "TenantExists").await;
    assert_eq!(
        h.store
            .platform()
            .require_tenant(&id("initech"))
            .await
            .unwrap()
            .managed_by,
        None
    );
    let mut adopting = h.current();
    adopting.spec.adopt = true;
    h.hold(&adopting);
    h.reconcile().await.unwrap();
    let status = h.current().status.unwrap();
    assert_eq!(condition(&status, "Ready"), ("True", "Ready"));
    assert_eq!(condition(&status, "Degraded"), ("False", "AsExpected"));

    // The same tenant managed by a resource the cache does not show (another operator's
    // namespace): refused by the store's record.
    let mut h = Harness::new(true).await;
    let other = h.store.begin().await.unwrap();
    other
        .platform()
        .create_tenant(&id("hooli"), "Hooli", 1)
        .await
        .unwrap();
    other
        .platform()
        .set_tenant_manager(&id("hooli"), Some("kubernetes:elsewhere/hooli"), "Hooli", 1)
        .await
        .unwrap();
    other.commit().await.unwrap();
    h.hold(&tenant(
        "hooli",
        json!({"tenantId": "hooli", "adopt": true}),
    ));
    let status = degraded(&mut h, "TenantIdConflict").await;
    assert!(
        status
            .condition("Degraded")
            .unwrap()
            .message
            .contains("elsewhere/hooli")
    );
    assert!(h.secret("hooli-vigil-credentials").is_none());
}

#[tokio::test]
async fn tenant_id_cannot_change_once_provisioned() {
    let mut h = Harness::new(true).await;
    h.hold(&tenant("acme", json!({"tenantId": "acme"})));
    h.reconcile().await.unwrap();
    let mut changed = h.current();
    changed.spec.tenant_id = "acme2".into();
    h.hold(&changed);
    let action = h.reconcile().await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let status = h.current().status.unwrap();
    assert_eq!(
        condition(&status, "Degraded"),
        ("True", "TenantIdImmutable")
    );
    assert!(
        h.store
            .platform()
            .get_tenant(&id("acme2"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn api_errors_and_conflicts_are_retried_with_backoff_and_leave_no_valid_token() {
    let mut h = Harness::new(true).await;
    h.hold(&tenant("acme", json!({"tenantId": "acme"})));

    // The API server fails reading the Secret: nothing is created, the status says why, the
    // error goes to the error policy.
    h.fail(Method::GET, "/secrets/acme-vigil-credentials", 500);
    let error = h.reconcile().await.unwrap_err();
    assert!(error.to_string().contains("KubernetesApiError"), "{error}");
    let status = h.current().status.unwrap();
    assert_eq!(
        condition(&status, "Degraded"),
        ("True", "KubernetesApiError")
    );
    assert!(h.store.platform().list_tenants().await.unwrap().is_empty());
    let tenant_now = Arc::new(h.current());
    let first = vigil_operator::error_policy(Arc::clone(&tenant_now), &error, Arc::clone(&h.ctx));
    let second = vigil_operator::error_policy(Arc::clone(&tenant_now), &error, Arc::clone(&h.ctx));
    assert_eq!(first, Action::requeue(Duration::from_secs(5)));
    assert_eq!(second, Action::requeue(Duration::from_secs(10)));

    // A write conflict on the Secret: the token issued for it is revoked, not left valid.
    h.fail(Method::PATCH, "/secrets/acme-vigil-credentials", 409);
    let error = h.reconcile().await.unwrap_err();
    assert!(error.to_string().contains("KubernetesApiError"), "{error}");
    let tokens = h.store.tenant(&id("acme")).tokens().await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].revoked_at.is_some(), "{tokens:?}");

    // A conflict writing the status: the reconcile fails and is retried; the next one
    // converges and resets the backoff.
    h.fail(Method::PATCH, "/tenants/acme/status", 409);
    assert!(h.reconcile().await.is_err());
    h.reconcile().await.unwrap();
    let status = h.current().status.unwrap();
    assert_eq!(condition(&status, "Ready"), ("True", "Ready"));
    let live: Vec<_> = h
        .store
        .tenant(&id("acme"))
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.revoked_at.is_none())
        .collect();
    assert_eq!(live.len(), 1, "exactly the token in the Secret is valid");
    assert_eq!(Some(live[0].jti.clone()), status.ingest_token_id);
    let after = vigil_operator::error_policy(tenant_now, &error, Arc::clone(&h.ctx));
    assert_eq!(
        after,
        Action::requeue(Duration::from_secs(5)),
        "backoff reset"
    );
}

#[tokio::test]
async fn one_tenant_never_touches_another() {
    let mut h = Harness::new(true).await;
    h.hold(&tenant(
        "acme",
        json!({"tenantId": "acme", "services": ["detect"]}),
    ));
    h.reconcile().await.unwrap();
    let acme = h.secret("acme-vigil-credentials").unwrap();
    h.hold(&tenant(
        "globex",
        json!({"tenantId": "globex", "services": ["detect"], "retention": "Purge"}),
    ));
    h.reconcile().await.unwrap();
    let globex = h.secret("globex-vigil-credentials").unwrap();

    // Each token is good for its own tenant only; each NATS user names only its own subjects.
    let principal = verify_ingest(&h.store, &data(&globex, "ingest-token")).await;
    assert!(principal.scope.covers(&id("globex")) && !principal.scope.covers(&id("acme")));
    assert!(!data(&globex, "nats.creds").contains("acme"));
    assert!(!data(&acme, "nats.creds").contains("globex"));

    // Purging globex leaves acme, its consumer and its token alone.
    let mut deleting = h.current();
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-11-27T11:00:00Z".parse().unwrap(),
        ));
    h.hold(&deleting);
    h.reconcile().await.unwrap();
    assert!(
        h.store
            .platform()
            .get_tenant(&id("globex"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        h.store
            .platform()
            .require_tenant(&id("acme"))
            .await
            .unwrap()
            .state,
        TenantState::Active
    );
    verify_ingest(&h.store, &data(&acme, "ingest-token")).await;
    let detect = ConsumerSpec::new("detect", Stage::Events, Some(id("acme")));
    assert!(h.bus.remove_consumer(&detect).await.unwrap());
    let _ = &h.master;
}
