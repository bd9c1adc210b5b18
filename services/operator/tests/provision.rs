//! Provisioning against the real services: PostgreSQL for the tenant, its key and its token,
//! and a `nats-server` of the test's own in decentralized-auth (operator/JWT) mode for the
//! consumers and the tenant's NATS user. The user the operator mints may use its own subjects
//! and consumers, and nothing of another tenant's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use vigil_auth::{MasterKey, TokenSettings};
use vigil_bus::jetstream::{JetStreamBus, JetStreamConfig};
use vigil_bus::{Bus, ConsumerSpec, OutgoingMessage, Subject};
use vigil_e2e::{JwtNats, TestDatabase};
use vigil_operator::Provisioner;
use vigil_operator::crd::PipelineService;
use vigil_operator::nats::NatsIssuer;
use vigil_schema::{Stage, TenantId};
use vigil_store::{Store, TenantState};

fn id(text: &str) -> TenantId {
    TenantId::new(text).unwrap()
}

async fn tenant_bus(url: &str, creds: &std::path::Path, tenant: &TenantId) -> JetStreamBus {
    let mut config = JetStreamConfig::new(url);
    config.credentials_file = Some(creds.to_owned());
    config.inbox_prefix = Some(vigil_operator::nats::inbox_prefix(tenant));
    config.manage_streams = false;
    config.publish_timeout = Duration::from_secs(3);
    JetStreamBus::connect(config).await.unwrap()
}

/// A raw client as `creds`, reporting the server's permission errors.
async fn raw_client(
    url: &str,
    creds: &str,
    inbox: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (errors, received) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_credentials(creds)
        .unwrap()
        .custom_inbox_prefix(inbox)
        .event_callback(move |event| {
            let errors = errors.clone();
            async move {
                if let async_nats::Event::ServerError(err) = event {
                    let _ = errors.send(err.to_string());
                }
            }
        })
        .connect(url)
        .await
        .unwrap();
    (client, received)
}

async fn permission_error(errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(5), errors.recv())
        .await
        .expect("the server reported a permissions violation")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_users_reach_their_own_subjects_and_consumers_only() {
    let nats = JwtNats::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let platform_creds = nats.platform_creds().unwrap();
    let mut platform = JetStreamConfig::new(nats.url());
    platform.credentials_file = Some(platform_creds.clone());
    let platform = Arc::new(JetStreamBus::connect(platform).await.unwrap());

    let database = TestDatabase::create("operator").await.unwrap();
    let store = Store::connect(&database.url).await.unwrap();
    store.migrate().await.unwrap();
    let provisioner = Provisioner {
        store: store.clone(),
        bus: Arc::clone(&platform) as Arc<dyn Bus>,
        master: Arc::new(MasterKey::generate().unwrap()),
        tokens: TokenSettings::default(),
        nats: Some(Arc::new(
            NatsIssuer::new(&nats.account_seed(), None, None).unwrap(),
        )),
    };

    // Provision two tenants, each running detect on its own consumer.
    let mut creds = Vec::new();
    for name in ["acme", "globex"] {
        let tenant = id(name);
        let manager = format!("kubernetes:tenants/{name}");
        provisioner
            .ensure_tenant(&tenant, name, &manager, false, false)
            .await
            .unwrap();
        let consumers = provisioner
            .ensure_consumers(&tenant, &[PipelineService::Ingest, PipelineService::Detect])
            .await
            .unwrap();
        assert_eq!(
            consumers.len(),
            5,
            "ingest has no consumer; detect has its events' and one per correlation partition"
        );
        let issued = provisioner
            .issue_credentials(&tenant, &manager, 90, true, &consumers)
            .await
            .unwrap();
        let path = dir.path().join(format!("{name}.creds"));
        std::fs::write(&path, &issued.nats.as_ref().unwrap().creds).unwrap();
        creds.push((tenant, path, issued.nats.unwrap().creds));
    }
    let (acme, acme_path, acme_creds) = creds[0].clone();
    let (globex, _, _) = creds[1].clone();
    let record = store.platform().require_tenant(&acme).await.unwrap();
    assert_eq!(record.state, TenantState::Active);
    assert_eq!(
        record.managed_by.as_deref(),
        Some("kubernetes:tenants/acme")
    );

    // acme's services, as the tenant chart runs them: publish its events and read them through
    // its detect consumer.
    let bus = tenant_bus(&nats.url(), &acme_path, &acme).await;
    bus.check().await.unwrap();
    bus.publish_durable(OutgoingMessage::new(
        Subject::new(acme.clone(), Stage::Events),
        "acme-1",
        "acme's event",
    ))
    .await
    .unwrap();
    platform
        .publish_durable(OutgoingMessage::new(
            Subject::new(globex.clone(), Stage::Events),
            "globex-1",
            "globex's event",
        ))
        .await
        .unwrap();
    let mut detect = ConsumerSpec::new("detect", Stage::Events, Some(acme.clone()));
    detect.ack_wait = Duration::from_secs(60);
    let mut subscription = bus.subscribe(detect).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&delivery.payload[..], b"acme's event");
    delivery.ack().await.unwrap();
    let nothing_else = tokio::time::timeout(Duration::from_millis(500), subscription.next()).await;
    assert!(
        nothing_else.is_err(),
        "only acme's event reaches acme's consumer"
    );

    // Detect's correlation stage: acme's partition subjects, through its partition consumer.
    bus.publish_durable(OutgoingMessage::new(
        Subject::partitioned(acme.clone(), Stage::Correlate, 3),
        "acme-corr-3",
        "acme's correlation batch",
    ))
    .await
    .unwrap();
    let partition_spec = |tenant: &TenantId| {
        vigil_operator::provision::consumers_for(PipelineService::Detect, tenant)
            .into_iter()
            .find(|spec| spec.partition == Some(3))
            .unwrap()
    };
    let mut partition = bus.subscribe(partition_spec(&acme)).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), partition.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&delivery.payload[..], b"acme's correlation batch");
    delivery.ack().await.unwrap();
    let refused = bus
        .publish_durable(OutgoingMessage::new(
            Subject::partitioned(globex.clone(), Stage::Correlate, 3),
            "acme-as-globex-corr",
            "forged",
        ))
        .await;
    assert!(
        refused.is_err(),
        "publishing to globex's partition must fail"
    );
    if let Ok(mut stolen) = bus.subscribe(partition_spec(&globex)).await {
        let next = tokio::time::timeout(Duration::from_secs(3), stolen.next()).await;
        assert!(
            !matches!(next, Ok(Some(Ok(_)))),
            "acme must not receive from globex's partition consumer"
        );
    }

    // acme cannot publish to globex.
    let refused = bus
        .publish_durable(OutgoingMessage::new(
            Subject::new(globex.clone(), Stage::Events),
            "acme-as-globex",
            "forged",
        ))
        .await;
    assert!(refused.is_err(), "publishing to globex's subject must fail");

    // acme cannot read through globex's consumer.
    let globex_detect = ConsumerSpec::new("detect", Stage::Events, Some(globex.clone()));
    let mut stolen = bus.subscribe(globex_detect).await;
    if let Ok(subscription) = stolen.as_mut() {
        let next = tokio::time::timeout(Duration::from_secs(3), subscription.next()).await;
        assert!(
            !matches!(next, Ok(Some(Ok(_)))),
            "acme must not receive from globex's consumer"
        );
    }

    // acme cannot re-point its own consumer at globex's subject, nor listen on globex's inbox
    // or subjects.
    let (client, mut errors) = raw_client(&nats.url(), &acme_creds, "_INBOX_acme").await;
    let context = jetstream::new(client.clone());
    let redirected = tokio::time::timeout(Duration::from_secs(5), async {
        let stream = context.get_stream("VIGIL_EVENTS").await?;
        stream
            .create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some("detect-acme".into()),
                filter_subject: "vigil.globex.events".into(),
                ..Default::default()
            })
            .await
            .map_err(|err| anyhow::anyhow!(err.to_string()))
    })
    .await;
    assert!(
        !matches!(redirected, Ok(Ok(_))),
        "acme must not create a consumer on globex's subject"
    );
    client.subscribe("_INBOX_globex.>").await.unwrap();
    client.flush().await.unwrap();
    let error = permission_error(&mut errors).await;
    assert!(error.to_lowercase().contains("permission"), "{error}");
    client.subscribe("vigil.globex.events").await.unwrap();
    client.flush().await.unwrap();
    let error = permission_error(&mut errors).await;
    assert!(error.to_lowercase().contains("permission"), "{error}");

    // globex's event is still there for globex, untouched.
    let mut globex_spec = ConsumerSpec::new("detect", Stage::Events, Some(globex.clone()));
    globex_spec.ack_wait = Duration::from_secs(60);
    let mut as_platform = platform.subscribe(globex_spec).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), as_platform.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&delivery.payload[..], b"globex's event");
    delivery.ack().await.unwrap();
    let forged = tokio::time::timeout(Duration::from_millis(500), as_platform.next()).await;
    assert!(
        forged.is_err(),
        "acme's forged event never reached globex's subject"
    );

    // Offboarding removes the tenant's consumers.
    provisioner
        .offboard(
            &acme,
            "kubernetes:tenants/acme",
            vigil_operator::crd::Retention::Keep,
        )
        .await
        .unwrap();
    let acme_detect = ConsumerSpec::new("detect", Stage::Events, Some(acme.clone()));
    assert!(!platform.remove_consumer(&acme_detect).await.unwrap());
    assert_eq!(
        store.platform().require_tenant(&acme).await.unwrap().state,
        TenantState::Deleted
    );

    drop(subscription);
    drop(as_platform);
    store.close().await;
    database.drop().await.unwrap();
}
