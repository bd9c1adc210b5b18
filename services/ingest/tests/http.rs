//! `POST /v1/events` over real HTTP, with tokens verified against the store, events on the bus
//! (in-process and JetStream), and a corpus of bad requests that reach nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vigil_auth::{MasterKey, Role, Scope, SigningKey, TokenRequest, TokenSettings};
use vigil_bus::{Bus, ConsumerSpec, Subscription};
use vigil_schema::{EventBatch, Stage, TenantId};
use vigil_store::{KeyRecord, Store, TokenRecord};

struct Ingest {
    url: String,
    acme: String,
    globex: String,
    viewer: String,
    revoked: String,
    /// Signs further acme tokens.
    acme_key: SigningKey,
    bus: Arc<dyn Bus>,
    store: Store,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn tenant(id: &str) -> TenantId {
    TenantId::new(id).unwrap()
}

async fn key(store: &Store, master: &MasterKey, tenant: Option<TenantId>) -> SigningKey {
    let key = SigningKey::generate(tenant).unwrap();
    store
        .platform()
        .insert_key(KeyRecord {
            kid: key.kid().to_owned(),
            tenant: key.tenant().map(|t| t.to_string()),
            public_key: key.public_key().to_vec(),
            sealed_private_key: key.seal(master).unwrap(),
            created_at: 0,
            not_after: None,
        })
        .await
        .unwrap();
    key
}

fn token(key: &SigningKey, role: Role, tenant: &str) -> vigil_auth::IssuedToken {
    vigil_auth::issue(
        &TokenSettings::default(),
        key,
        &TokenRequest {
            subject: format!("{role}:{tenant}"),
            role,
            scope: Scope::tenant(TenantId::new(tenant).unwrap()),
            ttl: Duration::from_secs(3600),
        },
    )
    .unwrap()
}

/// Records an acme ingest token in the store, as the control plane does when it issues one,
/// so that it can be revoked.
async fn record_acme_token(store: &Store, token: &vigil_auth::IssuedToken) {
    store
        .platform()
        .insert_token(TokenRecord {
            jti: token.claims.jti.clone(),
            tenant: Some("acme".into()),
            tenants: "[\"acme\"]".into(),
            subject: "ingest:acme".into(),
            role: "ingest".into(),
            kid: token.kid.clone(),
            issued_at: 0,
            expires_at: i64::MAX / 2,
            revoked_at: None,
            revoked_by: None,
        })
        .await
        .unwrap();
}

impl Ingest {
    async fn start(bus: Arc<dyn Bus>) -> Self {
        Self::start_with(bus, vigil_ingest::syslog::SyslogConfig::default()).await
    }

    async fn start_with(bus: Arc<dyn Bus>, syslog: vigil_ingest::syslog::SyslogConfig) -> Self {
        Self::start_full(bus, syslog, None).await
    }

    async fn start_full(
        bus: Arc<dyn Bus>,
        syslog: vigil_ingest::syslog::SyslogConfig,
        tls: Option<vigil_ingest::syslog::TlsFiles>,
    ) -> Self {
        Self::start_tuned(bus, |config| {
            config.syslog = syslog;
            config.tls = tls;
        })
        .await
    }

    async fn start_tuned(bus: Arc<dyn Bus>, tune: impl FnOnce(&mut vigil_ingest::Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("v.db").display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let master = MasterKey::generate().unwrap();
        for id in ["acme", "globex"] {
            store
                .platform()
                .create_tenant(&tenant(id), id, 0)
                .await
                .unwrap();
        }
        let acme_key = key(&store, &master, Some(tenant("acme"))).await;
        let globex_key = key(&store, &master, Some(tenant("globex"))).await;
        let platform = key(&store, &master, None).await;
        let revoked = token(&acme_key, Role::Ingest, "acme");
        record_acme_token(&store, &revoked).await;
        store
            .platform()
            .revoke_token(&revoked.claims.jti, "admin", 1)
            .await
            .unwrap();

        for id in ["acme", "globex"] {
            bus.ensure_consumer(&ConsumerSpec::new("test", Stage::Events, Some(tenant(id))))
                .await
                .unwrap();
        }
        let port = vigil_e2e::free_port().unwrap();
        let shutdown = CancellationToken::new();
        let context = vigil_runtime::ServiceContext {
            bus: Arc::clone(&bus),
            store: store.clone(),
            shutdown: shutdown.clone(),
            readiness: Default::default(),
        };
        let mut config = vigil_ingest::Config {
            http_listen: ([127, 0, 0, 1], port).into(),
            max_body_bytes: 1024 * 1024,
            max_decoded_bytes: 4 * 1024 * 1024,
            max_events_per_request: 1000,
            ..Default::default()
        };
        tune(&mut config);
        tokio::spawn(async move { vigil_ingest::run(context, config).await.unwrap() });
        let url = format!("http://127.0.0.1:{port}/v1/events");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            url,
            acme: token(&acme_key, Role::Ingest, "acme").token,
            globex: token(&globex_key, Role::Ingest, "globex").token,
            viewer: token(&platform, Role::TenantViewer, "acme").token,
            revoked: revoked.token,
            acme_key,
            bus,
            store,
            shutdown,
            _dir: dir,
        }
    }

    async fn post(
        &self,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        let mut request = reqwest::Client::new().post(&self.url).body(body);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    async fn subscribe(&self, id: &str) -> Subscription {
        self.bus
            .subscribe(ConsumerSpec::new("test", Stage::Events, Some(tenant(id))))
            .await
            .unwrap()
    }
}

/// A nats-server of the test's own (it will be killed) and a bus on it whose publishes give up
/// after `publish_timeout`.
async fn own_nats(publish_timeout: Duration) -> (vigil_e2e::NatsServer, Arc<dyn Bus>) {
    let nats = vigil_e2e::NatsServer::start().unwrap();
    let mut config = vigil_bus::jetstream::JetStreamConfig::new(nats.url());
    config.publish_timeout = publish_timeout;
    let bus = vigil_bus::jetstream::JetStreamBus::connect(config)
        .await
        .unwrap();
    (nats, Arc::new(bus))
}

async fn next_batch(subscription: &mut Subscription) -> EventBatch {
    let (batch, delivery) = tokio::time::timeout(
        Duration::from_secs(10),
        subscription.next_payload::<EventBatch>(),
    )
    .await
    .expect("a batch within 10 s")
    .unwrap()
    .unwrap();
    delivery.ack().await.unwrap();
    batch
}

/// Posts one record `{"message": marker}` with `token` and asserts that the next batch on
/// `subscription` is that record alone: nothing sent before it reached the stream.
async fn marker_is_next(
    ingest: &Ingest,
    token: &str,
    subscription: &mut Subscription,
    marker: &str,
) {
    let body = serde_json::json!({ "message": marker })
        .to_string()
        .into_bytes();
    let (status, answer) = ingest.post(Some(token), &[], body).await;
    assert_eq!(status, 200, "{answer}");
    let batch = next_batch(subscription).await;
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].fields.get_str("message"), Some(marker));
}

fn regression_records() -> String {
    let path = vigil_e2e::shared_dir().join(
        "data/sigma/regression_data/rules/windows/process_creation/proc_creation_win_amsi_registry_tampering/7dbbcac2-57a0-45ac-b306-ff30a8bd2981.json",
    );
    std::fs::read_to_string(path).unwrap()
}

async fn accepted_and_normalized(bus: Arc<dyn Bus>) {
    let ingest = Ingest::start(bus).await;
    let mut acme = ingest.subscribe("acme").await;

    // SigmaHQ's regression record, as the evtx crate renders it.
    let (status, body) = ingest
        .post(Some(&ingest.acme), &[], regression_records().into_bytes())
        .await;
    assert_eq!(status, 200, "{body}");
    let count = body["accepted"].as_u64().unwrap() as usize;
    assert!(count >= 1);
    let batch = next_batch(&mut acme).await;
    assert_eq!(batch.tenant.as_str(), "acme");
    assert_eq!(batch.events.len(), count);
    let event = &batch.events[0];
    assert_eq!(event.logsource.product.as_deref(), Some("windows"));
    assert_eq!(
        event.logsource.category.as_deref(),
        Some("process_creation")
    );
    assert_eq!(event.source.transport, "http");
    assert!(event.entities.host.is_some());

    // NDJSON, gzip-compressed, with a tenant header naming the token's own tenant, and a
    // record whose `tenant` field names another: that is the record's data, stored under the
    // token's tenant (a header naming another tenant is refused: see the bad-input corpus).
    let ndjson = b"{\"message\":\"one\",\"tenant\":\"globex\"}\n{\"message\":\"two\"}\n".to_vec();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&ndjson).unwrap();
    let (status, body) = ingest
        .post(
            Some(&ingest.acme),
            &[("content-encoding", "gzip"), ("x-vigil-tenant", "acme")],
            gzip.finish().unwrap(),
        )
        .await;
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(2)));
    let batch = next_batch(&mut acme).await;
    assert!(batch.events.iter().all(|e| e.tenant.as_str() == "acme"));
    assert_eq!(batch.events[0].fields.get_str("tenant"), Some("globex"));

    // zstd, and an Idempotency-Key: the retry is the same events, which the bus drops.
    let zstd = zstd::bulk::compress(br#"[{"message":"three"}]"#, 1).unwrap();
    for _ in 0..2 {
        let (status, _) = ingest
            .post(
                Some(&ingest.acme),
                &[("content-encoding", "zstd"), ("idempotency-key", "req-1")],
                zstd.clone(),
            )
            .await;
        assert_eq!(status, 200);
    }
    let batch = next_batch(&mut acme).await;
    assert_eq!(batch.events[0].fields.get_str("message"), Some("three"));
    let (status, _) = ingest
        .post(Some(&ingest.acme), &[], br#"{"message":"four"}"#.to_vec())
        .await;
    assert_eq!(status, 200);
    let batch = next_batch(&mut acme).await;
    assert_eq!(
        batch.events[0].fields.get_str("message"),
        Some("four"),
        "the retried request was not delivered twice"
    );

    // globex's stream saw none of it.
    let mut globex = ingest.subscribe("globex").await;
    marker_is_next(&ingest, &ingest.globex, &mut globex, "g").await;
}

#[tokio::test]
async fn events_are_accepted_and_normalized_on_the_in_process_bus() {
    accepted_and_normalized(Arc::new(vigil_bus::inprocess::InProcessBus::new(
        Default::default(),
    )))
    .await;
}

#[tokio::test]
async fn events_are_accepted_and_normalized_on_jetstream() {
    let nats = vigil_e2e::NatsServer::start().unwrap();
    let bus = vigil_bus::jetstream::JetStreamBus::connect(
        vigil_bus::jetstream::JetStreamConfig::new(nats.url()),
    )
    .await
    .unwrap();
    accepted_and_normalized(Arc::new(bus)).await;
}

#[tokio::test]
async fn bad_requests_get_a_clear_4xx_and_reach_nothing() {
    let ingest = Ingest::start(Arc::new(vigil_bus::inprocess::InProcessBus::new(
        Default::default(),
    )))
    .await;
    let mut acme = ingest.subscribe("acme").await;
    let acme_token = ingest.acme.clone();
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![b' '; 20 * 1024 * 1024]).unwrap();
    let bomb = bomb.finish().unwrap();
    let deep = format!("{}1{}", "{\"a\":".repeat(1000), "}".repeat(1000));
    // acme's token with one character of its signature changed.
    let forged = {
        let mut forged = acme_token.clone().into_bytes();
        let at = acme_token.rfind('.').unwrap() + 10;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(forged).unwrap()
    };
    let other_audience = vigil_auth::issue(
        &TokenSettings {
            audience: "another-platform".into(),
            ..TokenSettings::default()
        },
        &ingest.acme_key,
        &TokenRequest {
            subject: "ingest:acme".into(),
            role: Role::Ingest,
            scope: Scope::tenant(tenant("acme")),
            ttl: Duration::from_secs(3600),
        },
    )
    .unwrap()
    .token;
    // acme's own key and claims, with the validity window moved.
    let resigned = |shift: &dyn Fn(&mut vigil_auth::Claims)| {
        let mut claims = vigil_auth::issue(
            &TokenSettings::default(),
            &ingest.acme_key,
            &TokenRequest {
                subject: "ingest:acme".into(),
                role: Role::Ingest,
                scope: Scope::tenant(tenant("acme")),
                ttl: Duration::from_secs(3600),
            },
        )
        .unwrap()
        .claims;
        shift(&mut claims);
        vigil_auth::sign(&ingest.acme_key, &claims).unwrap().token
    };
    let expired = resigned(&|claims| {
        claims.nbf = claims.iat - 7200;
        claims.exp = claims.iat - 3600;
    });
    let not_yet_valid = resigned(&|claims| {
        claims.nbf = claims.iat + 3600;
        claims.exp = claims.iat + 7200;
    });
    let mut truncated = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    truncated.write_all(br#"{"message":"cut short"}"#).unwrap();
    let mut truncated = truncated.finish().unwrap();
    truncated.truncate(truncated.len() / 2);
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
        &'a str,
    );
    let corpus: Vec<Case<'_>> = vec![
        (
            "no token",
            None,
            vec![],
            b"{}".to_vec(),
            401,
            "missing Authorization",
        ),
        (
            "garbage token",
            Some("nope"),
            vec![],
            b"{}".to_vec(),
            401,
            "not a well-formed JWT",
        ),
        (
            "revoked token",
            Some(&ingest.revoked),
            vec![],
            b"{}".to_vec(),
            401,
            "revoked",
        ),
        (
            "forged signature",
            Some(&forged),
            vec![],
            b"{}".to_vec(),
            401,
            "signature is invalid",
        ),
        (
            "another audience",
            Some(&other_audience),
            vec![],
            b"{}".to_vec(),
            401,
            "audience",
        ),
        (
            "expired token",
            Some(&expired),
            vec![],
            b"{}".to_vec(),
            401,
            "the token has expired",
        ),
        (
            "token not valid yet",
            Some(&not_yet_valid),
            vec![],
            b"{}".to_vec(),
            401,
            "the token is not valid yet",
        ),
        (
            "a header claiming another tenant",
            Some(&acme_token),
            vec![("x-vigil-tenant", "globex")],
            b"{}".to_vec(),
            403,
            "the token is tenant acme's but the x-vigil-tenant header names \"globex\"",
        ),
        (
            "Loki's tenant header naming another tenant",
            Some(&acme_token),
            vec![("x-scope-orgid", "globex")],
            b"{}".to_vec(),
            403,
            "the tenant comes from the token only",
        ),
        (
            "viewer token",
            Some(&ingest.viewer),
            vec![],
            b"{}".to_vec(),
            403,
            "use an ingest token",
        ),
        (
            "malformed JSON",
            Some(&acme_token),
            vec![],
            b"{\"a\":".to_vec(),
            400,
            "invalid JSON",
        ),
        (
            "second record malformed",
            Some(&acme_token),
            vec![],
            b"{}\n{oops}".to_vec(),
            400,
            "record 1: invalid JSON",
        ),
        (
            "invalid UTF-8",
            Some(&acme_token),
            vec![],
            b"{\"a\":\"\xff\"}".to_vec(),
            400,
            "not UTF-8",
        ),
        (
            "not an object",
            Some(&acme_token),
            vec![],
            b"[1,2]".to_vec(),
            400,
            "record 0 is a JSON number",
        ),
        (
            "empty",
            Some(&acme_token),
            vec![],
            Vec::new(),
            400,
            "no event",
        ),
        (
            "too deep",
            Some(&acme_token),
            vec![],
            deep.into_bytes(),
            400,
            "recursion limit",
        ),
        (
            "gzip bomb",
            Some(&acme_token),
            vec![("content-encoding", "gzip")],
            bomb,
            413,
            "decoded body exceeds",
        ),
        (
            "not gzip",
            Some(&acme_token),
            vec![("content-encoding", "gzip")],
            b"plain".to_vec(),
            400,
            "not valid gzip",
        ),
        (
            "truncated gzip",
            Some(&acme_token),
            vec![("content-encoding", "gzip")],
            truncated,
            400,
            "gzip",
        ),
        (
            "unknown encoding",
            Some(&acme_token),
            vec![("content-encoding", "br")],
            b"{}".to_vec(),
            415,
            "unsupported Content-Encoding",
        ),
        (
            "oversized",
            Some(&acme_token),
            vec![],
            vec![b' '; 2 * 1024 * 1024],
            413,
            "exceeds",
        ),
        (
            "too many events",
            Some(&acme_token),
            vec![],
            b"{}\n".repeat(1001),
            413,
            "more than 1000 events",
        ),
        (
            "binary garbage",
            Some(&acme_token),
            vec![],
            (0..=255u8).collect(),
            400,
            "",
        ),
    ];
    for (name, token, headers, body, status, message) in corpus {
        let (got, response) = ingest.post(token, &headers, body).await;
        assert_eq!(got, status, "{name}: {response}");
        let error = response["error"].as_str().unwrap_or_default();
        assert!(error.contains(message), "{name}: {error}");
    }
    // Nothing of the corpus reached the bus: the next batch is the next valid request's.
    marker_is_next(&ingest, &acme_token, &mut acme, "valid").await;
}

impl Ingest {
    fn base(&self) -> String {
        self.url.trim_end_matches("/v1/events").to_owned()
    }

    async fn hec(
        &self,
        path: &str,
        auth: Option<&str>,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, serde_json::Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.base()))
            .body(body.to_owned());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// [`Ingest::hec`] for a request that must succeed; its answer.
    async fn hec_ok(
        &self,
        path: &str,
        auth: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> serde_json::Value {
        let (status, answer) = self.hec(path, Some(auth), headers, body).await;
        assert_eq!(status, 200, "{path} {body}: {answer}");
        answer
    }
}

#[tokio::test]
async fn splunk_hec_senders_work_unchanged() {
    let ingest = Ingest::start(Arc::new(vigil_bus::inprocess::InProcessBus::new(
        Default::default(),
    )))
    .await;
    let mut acme = ingest.subscribe("acme").await;
    let splunk = format!("Splunk {}", ingest.acme);

    let health: serde_json::Value =
        reqwest::get(format!("{}/services/collector/health", ingest.base()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        health,
        serde_json::json!({"text": "HEC is healthy", "code": 17})
    );

    // Two concatenated HEC events: an object with metadata and fields, and a string.
    let body = r#"{"time": 1700000000.5, "host": "web1", "sourcetype": "access_combined", "event": {"message": "GET /admin"}, "fields": {"env": "prod"}}
{"event": "plain text line"}"#;
    let (status, answer) = ingest
        .hec("/services/collector/event", Some(&splunk), &[], body)
        .await;
    assert_eq!(
        (status, answer.clone()),
        (200, serde_json::json!({"text": "Success", "code": 0}))
    );
    let batch = next_batch(&mut acme).await;
    assert_eq!(batch.events.len(), 2);
    let first = &batch.events[0];
    assert_eq!(first.source.transport, "hec");
    assert_eq!(first.fields.get_str("hec.host"), Some("web1"));
    assert_eq!(
        first.fields.get_str("hec.sourcetype"),
        Some("access_combined")
    );
    assert_eq!(first.fields.get_str("env"), Some("prod"));
    assert_eq!(
        first.event_time.unix_timestamp_nanos(),
        1_700_000_000_500_000_000
    );
    assert_eq!(
        batch.events[1].fields.get_str("message"),
        Some("plain text line")
    );

    // Raw lines: an sshd syslog line is recognized as Linux sshd.
    let line = "Nov 27 12:00:00 bastion sshd[4242]: Failed password for root from 203.0.113.9 port 52311 ssh2\n";
    let (status, _) = ingest
        .hec(
            "/services/collector/raw?host=bastion",
            Some(&splunk),
            &[],
            line,
        )
        .await;
    assert_eq!(status, 200);
    let batch = next_batch(&mut acme).await;
    let event = &batch.events[0];
    assert_eq!(event.logsource.product.as_deref(), Some("linux"));
    assert_eq!(event.logsource.service.as_deref(), Some("sshd"));
    assert_eq!(event.fields.get_str("hec.host"), Some("bastion"));

    // Indexer acknowledgement: ids per channel, all acknowledged once answered.
    let channel = [(
        "x-splunk-request-channel",
        "0f3c9e2a-0000-4000-8000-000000000001",
    )];
    for expected in 0..2 {
        let (status, answer) = ingest
            .hec(
                "/services/collector/event",
                Some(&splunk),
                &channel,
                r#"{"event": "acked"}"#,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(answer["ackId"], expected);
        next_batch(&mut acme).await;
    }
    let (status, answer) = ingest
        .hec(
            "/services/collector/ack",
            Some(&splunk),
            &channel,
            r#"{"acks": [0, 1, 2]}"#,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        serde_json::json!({"acks": {"0": true, "1": true, "2": false}})
    );

    // Channels are the tenant's own: globex, naming acme's channel, sees none of acme's ids
    // and gets its own.
    let globex_splunk = format!("Splunk {}", ingest.globex);
    let mut globex = ingest.subscribe("globex").await;
    let acks = r#"{"acks": [0, 1]}"#;
    let answer = ingest
        .hec_ok("/services/collector/ack", &globex_splunk, &channel, acks)
        .await;
    assert_eq!(
        answer,
        serde_json::json!({"acks": {"0": false, "1": false}})
    );
    let event = r#"{"event": "globex acked"}"#;
    let answer = ingest
        .hec_ok("/services/collector/event", &globex_splunk, &channel, event)
        .await;
    assert_eq!(answer["ackId"].as_u64(), Some(0));
    assert_eq!(next_batch(&mut globex).await.tenant.as_str(), "globex");

    // A retried request with the same Idempotency-Key is stored once.
    let retry = [("idempotency-key", "hec-retry-1")];
    for _ in 0..2 {
        let event = r#"{"event": "sent twice"}"#;
        ingest
            .hec_ok("/services/collector/event", &splunk, &retry, event)
            .await;
    }
    let event = r#"{"event": "after the retry"}"#;
    ingest
        .hec_ok("/services/collector/event", &splunk, &[], event)
        .await;
    let texts: Vec<String> = [next_batch(&mut acme).await, next_batch(&mut acme).await]
        .iter()
        .flat_map(|batch| &batch.events)
        .map(|event| event.raw.as_ref().unwrap().text.clone())
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[0].contains("sent twice"), "{texts:?}");
    assert!(texts[1].contains("after the retry"), "{texts:?}");

    // HEC's error codes; none of these requests reaches the bus.
    let bearer = format!("Bearer {}", ingest.acme);
    let viewer = format!("Splunk {}", ingest.viewer);
    let cases: Vec<(&str, Option<&str>, &str, u16, u64)> = vec![
        (
            "/services/collector/event",
            None,
            r#"{"event":"x"}"#,
            401,
            2,
        ),
        (
            "/services/collector/event",
            Some(&bearer),
            r#"{"event":"x"}"#,
            401,
            3,
        ),
        (
            "/services/collector/event",
            Some("Splunk not-a-token"),
            r#"{"event":"x"}"#,
            403,
            4,
        ),
        (
            "/services/collector/event",
            Some(&viewer),
            r#"{"event":"x"}"#,
            403,
            4,
        ),
        ("/services/collector/event", Some(&splunk), "", 400, 5),
        (
            "/services/collector/event",
            Some(&splunk),
            r#"{"event":"ok"}{"host":"h"}"#,
            400,
            12,
        ),
        (
            "/services/collector/event",
            Some(&splunk),
            r#"{"event":""}"#,
            400,
            13,
        ),
        (
            "/services/collector/event",
            Some(&splunk),
            r#"{"event":"ok"}{"event":"#,
            400,
            6,
        ),
        (
            "/services/collector/ack",
            Some(&splunk),
            r#"{"acks":[0]}"#,
            400,
            10,
        ),
    ];
    for (path, auth, body, status, code) in cases {
        let (got, answer) = ingest.hec(path, auth, &[], body).await;
        assert_eq!(
            (got, answer["code"].as_u64()),
            (status, Some(code)),
            "{path} {body}: {answer}"
        );
    }
    let (_, answer) = ingest
        .hec(
            "/services/collector/event",
            Some(&splunk),
            &[],
            r#"{"event":"ok"}{"host":"h"}"#,
        )
        .await;
    assert_eq!(answer["invalid-event-number"], 1);
    // A tenant header naming another tenant than the token's.
    let (status, answer) = ingest
        .hec(
            "/services/collector/event",
            Some(&splunk),
            &[("x-tenant-id", "globex")],
            r#"{"event":"x"}"#,
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_u64()),
        (403, Some(4)),
        "{answer}"
    );
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .contains("the tenant comes from the token only"),
        "{answer}"
    );
    let (status, _) = ingest
        .hec(
            "/services/collector/event",
            Some(&splunk),
            &[],
            r#"{"event":"after the errors"}"#,
        )
        .await;
    assert_eq!(status, 200);
    let batch = next_batch(&mut acme).await;
    assert_eq!(batch.events.len(), 1);
    assert_eq!(
        batch.events[0].fields.get_str("message"),
        Some("after the errors")
    );
}

fn logger(args: &[&str], message: &str) {
    let status = std::process::Command::new("logger")
        .args(args)
        .arg(message)
        .status()
        .expect("logger (util-linux) is installed");
    assert!(status.success(), "logger {args:?}");
}

#[tokio::test]
async fn real_syslog_senders_over_udp_and_tcp() {
    let udp = vigil_e2e::free_port().unwrap();
    let tcp = vigil_e2e::free_port().unwrap();
    let syslog = vigil_ingest::syslog::SyslogConfig {
        udp_listen: Some(([127, 0, 0, 1], udp).into()),
        tcp_listen: Some(([127, 0, 0, 1], tcp).into()),
        tenant: Some(tenant("acme")),
        flush_millis: 20,
        ..Default::default()
    };
    let ingest = Ingest::start_with(
        Arc::new(vigil_bus::inprocess::InProcessBus::new(Default::default())),
        syslog,
    )
    .await;
    let mut acme = ingest.subscribe("acme").await;
    let (udp, tcp) = (udp.to_string(), tcp.to_string());
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "--udp",
                "--server",
                "127.0.0.1",
                "--port",
                &udp,
                "--rfc5424",
                "--tag",
                "sshd",
            ],
            "udp 5424",
        ),
        (
            &[
                "--udp",
                "--server",
                "127.0.0.1",
                "--port",
                &udp,
                "--rfc3164",
                "--tag",
                "sshd",
            ],
            "udp 3164",
        ),
        (
            &[
                "--tcp",
                "--server",
                "127.0.0.1",
                "--port",
                &tcp,
                "--rfc5424",
                "--octet-count",
                "--tag",
                "sshd",
            ],
            "tcp octet counting",
        ),
        (
            &[
                "--tcp",
                "--server",
                "127.0.0.1",
                "--port",
                &tcp,
                "--rfc3164",
                "--tag",
                "sshd",
            ],
            "tcp newline 3164",
        ),
    ];
    for (args, name) in cases {
        let message = format!("Failed password for root from 203.0.113.9 port 52311 ssh2 ({name})");
        logger(args, &message);
        let batch = next_batch(&mut acme).await;
        assert_eq!(batch.tenant.as_str(), "acme");
        let event = &batch.events[0];
        assert_eq!(event.source.transport, "syslog", "{name}");
        assert!(
            event.raw.as_ref().unwrap().text.contains(&message),
            "{name}: {:?}",
            event.raw
        );
        assert_eq!(event.logsource.product.as_deref(), Some("linux"), "{name}");
        assert_eq!(event.logsource.service.as_deref(), Some("sshd"), "{name}");
        assert!(
            event
                .source
                .peer
                .as_deref()
                .unwrap()
                .starts_with("127.0.0.1:"),
            "{name}"
        );
    }
}

/// A token revoked while ingest runs is refused within the trust refresh interval, with no
/// restart; acme's other tokens still work.
#[tokio::test]
async fn a_token_revoked_while_ingest_runs_is_refused_without_a_restart() {
    let ingest = Ingest::start_tuned(
        Arc::new(vigil_bus::inprocess::InProcessBus::new(Default::default())),
        |config| config.trust_refresh_secs = 1,
    )
    .await;
    let issued = token(&ingest.acme_key, Role::Ingest, "acme");
    record_acme_token(&ingest.store, &issued).await;
    let record = br#"{"message":"m"}"#.to_vec();
    let (status, _) = ingest.post(Some(&issued.token), &[], record.clone()).await;
    assert_eq!(status, 200);
    ingest
        .store
        .platform()
        .revoke_token(&issued.claims.jti, "admin", 1)
        .await
        .unwrap();
    let mut refused = None;
    for _ in 0..50 {
        let (status, body) = ingest.post(Some(&issued.token), &[], record.clone()).await;
        if status != 200 {
            refused = Some((status, body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = refused.expect("refused within 5 s of its revocation");
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    let (status, _) = ingest.post(Some(&ingest.acme), &[], record).await;
    assert_eq!(status, 200);
}

/// Refused requests and dropped syslog messages are counted by tenant (empty when no token
/// was verified) and reason, as Prometheus renders them on `/metrics`.
#[tokio::test]
async fn refusals_and_drops_are_counted_by_tenant_and_reason() {
    use tokio::io::AsyncWriteExt;
    // This test binary's global recorder: the other tests record into it too, so only the
    // presence of series is asserted, not their values.
    static METRICS: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    let metrics = METRICS.get_or_init(|| vigil_telemetry::init_metrics().unwrap());
    let port = vigil_e2e::free_port().unwrap();
    // acme's syslog messages may be 64 bytes long, the listener's 64 KiB.
    let ingest = Ingest::start_tuned(
        Arc::new(vigil_bus::inprocess::InProcessBus::new(Default::default())),
        |config| {
            config.syslog = tcp_syslog(port);
            config.tenant_limits.insert(
                tenant("acme"),
                vigil_ingest::limits::TenantLimits {
                    syslog_max_message_bytes: Some(64),
                    ..Default::default()
                },
            );
        },
    )
    .await;
    let mut acme = ingest.subscribe("acme").await;
    let (status, _) = ingest.post(None, &[], b"{}".to_vec()).await;
    assert_eq!(status, 401);
    let (status, _) = ingest
        .post(
            Some(&ingest.globex),
            &[("x-vigil-tenant", "acme")],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = ingest
        .post(Some(&ingest.acme), &[], b"{oops".to_vec())
        .await;
    assert_eq!(status, 400);
    let (status, _) = ingest
        .hec(
            "/services/collector/event",
            Some(&format!("Splunk {}", ingest.globex)),
            &[],
            "",
        )
        .await;
    assert_eq!(status, 400);
    let mut stream = syslog_connection(port).await;
    stream
        .write_all(format!("<13>{}\n<13>short\n", "x".repeat(100)).as_bytes())
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    // The long message is dropped, the short one after it kept.
    let batch = next_batch(&mut acme).await;
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].raw.as_ref().unwrap().text, "<13>short");
    let expected = [
        r#"vigil_ingest_requests_refused_total{tenant="",reason="no_token"}"#,
        r#"vigil_ingest_requests_refused_total{tenant="globex",reason="tenant_header"}"#,
        r#"vigil_ingest_requests_refused_total{tenant="acme",reason="body"}"#,
        r#"vigil_ingest_requests_refused_total{tenant="globex",reason="body"}"#,
        r#"vigil_ingest_syslog_dropped_total{tenant="acme",reason="too_long"}"#,
    ];
    let mut rendered = String::new();
    for _ in 0..50 {
        rendered = metrics.render();
        if expected.iter().all(|series| rendered.contains(series)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let missing: Vec<_> = expected
        .iter()
        .filter(|series| !rendered.contains(*series))
        .collect();
    panic!("missing {missing:?} in\n{rendered}");
}

/// Slow HTTP senders hold nothing for long: a client that does not finish its headers is
/// disconnected, and a body that stalls is refused with 408 naming the problem; nothing of it
/// reaches the bus.
#[tokio::test]
async fn slow_http_senders_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ingest = Ingest::start_tuned(
        Arc::new(vigil_bus::inprocess::InProcessBus::new(Default::default())),
        |config| {
            config.header_timeout_secs = 1;
            config.body_timeout_secs = 1;
        },
    )
    .await;
    let mut acme = ingest.subscribe("acme").await;
    let address = ingest
        .url
        .trim_start_matches("http://")
        .trim_end_matches("/v1/events")
        .to_owned();

    // A client that connects and sends nothing.
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("a silent connection is closed within 5 s")
        .ok();

    // Headers that never end.
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: ingest\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the connection is closed within 5 s")
        .ok();

    // A body that stops halfway.
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: ingest\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n{{\"message\":",
        ingest.acme
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 5 s")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("the body stalled: no data for 1 s"),
        "{answer}"
    );

    // The stream saw nothing of these; the next request is stored.
    marker_is_next(&ingest, &ingest.acme, &mut acme, "after").await;
}

/// auditd records (audisp's syslog plugin) and web access log lines (nginx's syslog logging)
/// arriving over syslog are typed as what they are, with the sender as host; an RFC 3164
/// timestamp is read in the sender's configured time zone.
#[tokio::test]
async fn audit_and_access_lines_over_syslog_get_their_logsource() {
    use tokio::io::AsyncWriteExt;
    let port = vigil_e2e::free_port().unwrap();
    let mut syslog = tcp_syslog(port);
    syslog.timezone = Some(vigil_ingest::syslog::TimeZone(
        "America/New_York".parse().unwrap(),
    ));
    let ingest = Ingest::start_with(
        Arc::new(vigil_bus::inprocess::InProcessBus::new(Default::default())),
        syslog,
    )
    .await;
    let mut acme = ingest.subscribe("acme").await;
    let mut stream = syslog_connection(port).await;
    stream
        .write_all(
            concat!(
                "<14>Dec 10 06:55:46 db1 audispd: type=EXECVE msg=audit(1700000000.5:42): argc=2 a0=\"ls\" a1=\"-la\"\n",
                "<190>Dec 10 06:55:47 web1 nginx: 203.0.113.9 - - [10/Dec/2026:06:55:47 +0000] \"GET /?q=../../../etc/passwd HTTP/1.1\" 404 0 \"-\" \"curl/8\"\n",
                "<38>Nov 20 06:55:48 bastion sshd[7]: Accepted publickey for deploy from 203.0.113.7 port 40022 ssh2\n",
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut events = Vec::new();
    while events.len() < 3 {
        events.extend(next_batch(&mut acme).await.events);
    }
    let (audit, access, sshd) = (&events[0], &events[1], &events[2]);
    // 06:55:48 in New York in November (EST) is 11:55:48 UTC.
    let utc = sshd.event_time.to_offset(time::UtcOffset::UTC);
    assert_eq!((utc.hour(), utc.minute(), utc.second()), (11, 55, 48));
    assert_eq!(audit.source.format, "auditd");
    assert_eq!(audit.logsource.product.as_deref(), Some("linux"));
    assert_eq!(audit.logsource.service.as_deref(), Some("auditd"));
    assert_eq!(audit.entities.host.as_deref(), Some("db1"));
    assert_eq!(audit.fields.get_str("a1"), Some("-la"));
    assert_eq!(access.source.format, "webserver");
    assert_eq!(access.logsource.category.as_deref(), Some("webserver"));
    assert_eq!(access.entities.host.as_deref(), Some("web1"));
    assert_eq!(access.entities.src_ip, Some("203.0.113.9".parse().unwrap()));
    assert_eq!(access.event_time.unix_timestamp(), 1_796_885_747);
}

/// A TCP syslog listener with a short flush interval for the tests below.
fn tcp_syslog(port: u16) -> vigil_ingest::syslog::SyslogConfig {
    vigil_ingest::syslog::SyslogConfig {
        udp_listen: None,
        tcp_listen: Some(([127, 0, 0, 1], port).into()),
        tenant: Some(tenant("acme")),
        flush_millis: 20,
        ..Default::default()
    }
}

async fn syslog_connection(port: u16) -> tokio::net::TcpStream {
    for _ in 0..100 {
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            return stream;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the syslog listener on port {port} did not accept a connection");
}

/// A sender that stops in the middle of a message, for longer than the listener waits before
/// publishing what it has, loses nothing: neither the cut message nor the one before it, in
/// either framing.
#[tokio::test]
async fn a_syslog_sender_that_pauses_mid_message_loses_nothing() {
    use tokio::io::AsyncWriteExt;
    let port = vigil_e2e::free_port().unwrap();
    let ingest = Ingest::start_with(
        Arc::new(vigil_bus::inprocess::InProcessBus::new(Default::default())),
        tcp_syslog(port),
    )
    .await;
    let mut acme = ingest.subscribe("acme").await;
    let first = "<38>Dec 10 06:55:46 bastion sshd[1]: Accepted publickey for deploy from 203.0.113.7 port 40022 ssh2";
    let second = "<38>Dec 10 06:55:47 bastion sshd[2]: Failed password for root from 203.0.113.9 port 52311 ssh2";
    let (head, tail) = second.split_at(40);
    for (name, opening, cut, rest) in [
        (
            "lines",
            format!("{first}\n"),
            head.to_owned(),
            format!("{tail}\n"),
        ),
        (
            "octet counting",
            format!("{} {first}", first.len()),
            format!("{} {head}", second.len()),
            tail.to_owned(),
        ),
    ] {
        let mut stream = syslog_connection(port).await;
        stream.write_all(opening.as_bytes()).await.unwrap();
        stream.write_all(cut.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        // The first message is published on its own while the second is cut.
        let batch = next_batch(&mut acme).await;
        assert_eq!(batch.events.len(), 1, "{name}");
        assert_eq!(batch.events[0].raw.as_ref().unwrap().text, first, "{name}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream.write_all(rest.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        let batch = next_batch(&mut acme).await;
        assert_eq!(batch.events.len(), 1, "{name}");
        let event = &batch.events[0];
        assert_eq!(event.raw.as_ref().unwrap().text, second, "{name}");
        assert_eq!(event.entities.user.as_deref(), Some("root"), "{name}");
    }
}

/// While the bus is down a TCP syslog connection reads nothing and keeps its batch; when the
/// bus is back every message is stored, once.
#[tokio::test]
async fn tcp_syslog_waits_for_a_bus_that_is_down_and_loses_nothing() {
    use tokio::io::AsyncWriteExt;
    let (mut nats, bus) = own_nats(Duration::from_secs(1)).await;
    let port = vigil_e2e::free_port().unwrap();
    let ingest = Ingest::start_with(bus, tcp_syslog(port)).await;
    nats.kill().unwrap();
    let mut stream = syslog_connection(port).await;
    let lines: Vec<String> = (0..50)
        .map(|n| {
            format!(
                "<38>Dec 10 06:55:46 bastion sshd[{n}]: Connection closed by 203.0.113.{n} port 22"
            )
        })
        .collect();
    for line in &lines {
        stream
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }
    stream.flush().await.unwrap();
    // Several publish attempts fail meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.restart().unwrap();
    // The client reconnects and JetStream recovers its streams first.
    let mut subscription = None;
    for _ in 0..20 {
        match ingest
            .bus
            .subscribe(ConsumerSpec::new(
                "test",
                Stage::Events,
                Some(tenant("acme")),
            ))
            .await
        {
            Ok(subscribed) => {
                subscription = Some(subscribed);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let mut acme = subscription.expect("JetStream is back within 10 s");
    let mut stored = Vec::new();
    while stored.len() < lines.len() {
        let batch = next_batch(&mut acme).await;
        stored.extend(
            batch
                .events
                .into_iter()
                .map(|event| event.raw.unwrap().text),
        );
    }
    stored.sort();
    let mut expected = lines.clone();
    expected.sort();
    assert_eq!(stored, expected);
    // Nothing more: no message was stored twice.
    let more =
        tokio::time::timeout(Duration::from_secs(2), acme.next_payload::<EventBatch>()).await;
    assert!(more.is_err(), "a message was stored twice");
    drop(stream);
}

#[tokio::test]
async fn pooled_syslog_attributes_senders_by_network() {
    let udp = vigil_e2e::free_port().unwrap();
    let syslog = vigil_ingest::syslog::SyslogConfig {
        udp_listen: Some(([127, 0, 0, 1], udp).into()),
        tcp_listen: None,
        tenant: None,
        networks: vec![vigil_ingest::syslog::NetworkTenant {
            cidr: "127.0.0.0/8".parse().unwrap(),
            tenant: tenant("globex"),
            timezone: None,
        }],
        flush_millis: 20,
        ..Default::default()
    };
    let ingest = Ingest::start_with(
        Arc::new(vigil_bus::inprocess::InProcessBus::new(Default::default())),
        syslog,
    )
    .await;
    let mut globex = ingest.subscribe("globex").await;
    logger(
        &[
            "--udp",
            "--server",
            "127.0.0.1",
            "--port",
            &udp.to_string(),
            "--tag",
            "sudo",
        ],
        "alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/bash",
    );
    let batch = next_batch(&mut globex).await;
    assert_eq!(batch.tenant.as_str(), "globex");
    assert!(
        batch.events[0]
            .raw
            .as_ref()
            .unwrap()
            .text
            .contains("COMMAND=/bin/bash")
    );
}

#[tokio::test]
async fn otlp_logs_over_http_in_protobuf_and_json() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, InstrumentationScope, KeyValue, any_value,
    };
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    let ingest = Ingest::start(Arc::new(vigil_bus::inprocess::InProcessBus::new(
        Default::default(),
    )))
    .await;
    let mut acme = ingest.subscribe("acme").await;
    let url = ingest.url.replace("/v1/events", "/v1/logs");
    let text = |value: &str| {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        })
    };
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "host.name".into(),
                    value: text("api-1"),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "auth".into(),
                    ..Default::default()
                }),
                log_records: vec![LogRecord {
                    time_unix_nano: 1_700_000_000_000_000_000,
                    severity_text: "WARN".into(),
                    severity_number: 13,
                    body: text("login failed for bob"),
                    attributes: vec![KeyValue {
                        key: "user.name".into(),
                        value: text("bob"),
                        ..Default::default()
                    }],
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&ingest.acme)
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let batch = next_batch(&mut acme).await;
    let event = &batch.events[0];
    assert_eq!(event.source.transport, "otlp");
    assert_eq!(
        event.fields.get_str("message"),
        Some("login failed for bob")
    );
    assert_eq!(event.fields.get_str("severity"), Some("WARN"));
    assert_eq!(event.fields.get_str("resource.host.name"), Some("api-1"));
    assert_eq!(
        event.fields.get_str("trace_id"),
        Some("01010101010101010101010101010101")
    );
    assert_eq!(event.entities.user.as_deref(), Some("bob"));
    assert_eq!(event.event_time.unix_timestamp(), 1_700_000_000);

    // The OTLP JSON encoding (hex ids, string-encoded 64-bit integers), as the spec shows it.
    let json = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
        "scopeLogs":[{"scope":{"name":"app"},"logRecords":[{"timeUnixNano":"1700000001000000000","severityText":"INFO",
        "body":{"kvlistValue":{"values":[{"key":"event","value":{"stringValue":"order placed"}},{"key":"amount","value":{"intValue":"42"}}]}},
        "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"}]}]}]}"#;
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&ingest.acme)
        .header("content-type", "application/json")
        .body(json)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_eq!(status, 200, "{}", response.text().await.unwrap());
    let batch = next_batch(&mut acme).await;
    let event = &batch.events[0];
    assert_eq!(event.fields.get_str("event"), Some("order placed"));
    assert_eq!(
        event.fields.get("amount").and_then(|v| v.as_i64()),
        Some(42)
    );
    assert_eq!(
        event.fields.get_str("trace_id"),
        Some("5b8efff798038103d269b633813fc60c")
    );
    assert_eq!(event.event_time.unix_timestamp(), 1_700_000_001);

    // Refusals name the problem.
    for (content_type, body, status, message) in [
        ("text/plain", "x".to_owned(), 415, "is not OTLP"),
        (
            "application/x-protobuf",
            "\u{1}garbage".to_owned(),
            400,
            "not an OTLP logs request (protobuf)",
        ),
        (
            "application/json",
            "{\"resourceLogs\": 5}".to_owned(),
            400,
            "not an OTLP logs request (JSON)",
        ),
    ] {
        let response = reqwest::Client::new()
            .post(&url)
            .bearer_auth(&ingest.acme)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{content_type}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(message),
            "{error}"
        );
    }
    let response = reqwest::Client::new()
        .post(&url)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

/// Replays a loghub file over TCP syslog and returns the events, in order.
/// The month, day and time of day an RFC 3164 line starts with (`Jun 14 15:16:01`).
fn written_time(line: &str) -> (time::Month, u8, u8, u8, u8) {
    let mut words = line.split_whitespace();
    let month = match words.next().unwrap() {
        "Jan" => time::Month::January,
        "Feb" => time::Month::February,
        "Mar" => time::Month::March,
        "Apr" => time::Month::April,
        "May" => time::Month::May,
        "Jun" => time::Month::June,
        "Jul" => time::Month::July,
        "Aug" => time::Month::August,
        "Sep" => time::Month::September,
        "Oct" => time::Month::October,
        "Nov" => time::Month::November,
        "Dec" => time::Month::December,
        other => panic!("no month: {other}"),
    };
    let day = words.next().unwrap().parse().unwrap();
    let clock: Vec<u8> = words
        .next()
        .unwrap()
        .split(':')
        .map(|part| part.parse().unwrap())
        .collect();
    (month, day, clock[0], clock[1], clock[2])
}

/// The event's time as the line wrote it (the listener's zone is UTC).
fn event_time_parts(event: &vigil_schema::Event) -> (time::Month, u8, u8, u8, u8) {
    let at = event.event_time.to_offset(time::UtcOffset::UTC);
    (at.month(), at.day(), at.hour(), at.minute(), at.second())
}

async fn replay(
    ingest: &Ingest,
    port: u16,
    file: &str,
    subscription: &mut Subscription,
) -> (Vec<String>, Vec<vigil_schema::Event>) {
    use tokio::io::AsyncWriteExt;
    let text =
        std::fs::read_to_string(vigil_e2e::shared_dir().join("data/loghub").join(file)).unwrap();
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    for line in &lines {
        stream
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }
    stream.shutdown().await.unwrap();
    let _ = ingest;
    let mut events = Vec::new();
    while events.len() < lines.len() {
        events.extend(next_batch(subscription).await.events);
    }
    (lines, events)
}

#[tokio::test]
async fn loghub_openssh_and_linux_logs_replayed_over_syslog() {
    let tcp = vigil_e2e::free_port().unwrap();
    let syslog = vigil_ingest::syslog::SyslogConfig {
        udp_listen: None,
        tcp_listen: Some(([127, 0, 0, 1], tcp).into()),
        tenant: Some(tenant("acme")),
        ..Default::default()
    };
    let nats = vigil_e2e::NatsServer::start().unwrap();
    let bus = vigil_bus::jetstream::JetStreamBus::connect(
        vigil_bus::jetstream::JetStreamConfig::new(nats.url()),
    )
    .await
    .unwrap();
    let ingest = Ingest::start_with(Arc::new(bus), syslog).await;
    let mut acme = ingest.subscribe("acme").await;

    let (lines, events) = replay(&ingest, tcp, "OpenSSH_2k.log", &mut acme).await;
    assert_eq!(events.len(), lines.len());
    for (line, event) in lines.iter().zip(&events) {
        assert_eq!(event.tenant.as_str(), "acme");
        assert_eq!(
            &event.raw.as_ref().unwrap().text,
            line,
            "order and content kept"
        );
        assert_eq!(event.logsource.product.as_deref(), Some("linux"), "{line}");
        assert_eq!(event.logsource.service.as_deref(), Some("sshd"), "{line}");
        assert_eq!(event.entities.host.as_deref(), Some("LabSZ"), "{line}");
        assert_eq!(event.source.transport, "syslog");
        assert_eq!(event_time_parts(event), written_time(line), "{line}");
        // Failed and accepted logins name the account and the client address.
        if line.contains("Failed password for") || line.contains("Accepted password for") {
            let words: Vec<&str> = line.split_whitespace().collect();
            let from = words.iter().position(|w| *w == "from").unwrap();
            assert_eq!(
                event.entities.src_ip.map(|ip| ip.to_string()).as_deref(),
                Some(words[from + 1]),
                "{line}"
            );
            assert_eq!(
                event.entities.user.as_deref(),
                Some(words[from - 1]),
                "{line}"
            );
        }
    }
    let addressed = events
        .iter()
        .filter(|e| e.entities.src_ip.is_some())
        .count();
    assert!(
        addressed * 10 >= events.len() * 8,
        "{addressed} of {} with an address",
        events.len()
    );

    let (lines, events) = replay(&ingest, tcp, "Linux_2k.log", &mut acme).await;
    assert_eq!(events.len(), lines.len());
    let mut unrecognized = Vec::new();
    for (line, event) in lines.iter().zip(&events) {
        assert_eq!(&event.raw.as_ref().unwrap().text, line);
        // (A line syslog cannot parse gets the time it was received.)
        if event.logsource.product.is_some() {
            assert_eq!(event_time_parts(event), written_time(line), "{line}");
        }
        if event.logsource.product.as_deref() != Some("linux")
            || event.entities.host.as_deref() != Some("combo")
        {
            unrecognized.push(line.clone());
        }
    }
    // One line of the 2,000 is not RFC 3164: two spaces and `--` where the tag belongs. It is
    // kept (raw, generic), not dropped.
    assert_eq!(
        unrecognized,
        ["Jul  7 08:06:15 combo  -- root[2421]: ROOT LOGIN ON tty2"]
    );
    // Daemons other than sshd name their users and clients too: su's sessions, ftpd's and
    // klogind's connections, PAM's failures.
    for (line, event) in lines.iter().zip(&events) {
        if let Some(at) = line.find("session opened for user ") {
            let user = line[at + 24..].split_whitespace().next().unwrap();
            assert_eq!(event.entities.user.as_deref(), Some(user), "{line}");
        }
        if (line.contains("ftpd[") && line.contains(": connection from ")
            || line.contains("klogind[") && line.contains("Authentication failed from ")
            || line.contains("rhost=") && !line.contains("rhost= "))
            // (`rhost=` also names hosts by name; only addresses are entities.)
            && let Some(address) = line
                .split(|c: char| c.is_whitespace() || c == '=')
                .find_map(|word| word.parse::<std::net::IpAddr>().ok())
        {
            assert_eq!(event.entities.src_ip, Some(address), "{line}");
        }
    }
    let named = |line: &str| line.contains(" su(") || line.contains(" ftpd[");
    let daemons: Vec<_> = lines
        .iter()
        .zip(&events)
        .filter(|(line, _)| named(line))
        .collect();
    let with_entities = daemons
        .iter()
        .filter(|(_, event)| event.entities.user.is_some() || event.entities.src_ip.is_some())
        .count();
    assert!(
        with_entities * 10 >= daemons.len() * 9,
        "{with_entities} of {} su and ftpd lines name a user or client",
        daemons.len()
    );
}

#[tokio::test]
async fn a_bus_that_is_down_gets_503_with_retry_after_and_nothing_acknowledged() {
    let (mut nats, bus) = own_nats(Duration::from_secs(2)).await;
    let ingest = Ingest::start(bus).await;
    nats.kill().unwrap();
    let response = reqwest::Client::new()
        .post(&ingest.url)
        .bearer_auth(&ingest.acme)
        .body(r#"{"message":"while the bus is down"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("nothing was acknowledged"),
        "{body}"
    );
    let (status, answer) = ingest
        .hec(
            "/services/collector/event",
            Some(&format!("Splunk {}", ingest.acme)),
            &[],
            r#"{"event":"down"}"#,
        )
        .await;
    assert_eq!((status, answer["code"].as_u64()), (503, Some(9)));
}

/// A self-signed certificate for `localhost`, written as PEM files in `dir`.
fn self_signed(
    dir: &std::path::Path,
) -> (
    rcgen::CertifiedKey<rcgen::KeyPair>,
    vigil_ingest::syslog::TlsFiles,
) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let files = vigil_ingest::syslog::TlsFiles {
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
    };
    std::fs::write(&files.cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&files.key_file, certified.signing_key.serialize_pem()).unwrap();
    (certified, files)
}

/// A TLS connection to `localhost:port` trusting only `certified`.
async fn tls_client(
    certified: &rcgen::CertifiedKey<rcgen::KeyPair>,
    port: u16,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            stream,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn syslog_over_tls() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let (certified, files) = self_signed(dir.path());
    let port = vigil_e2e::free_port().unwrap();
    let syslog = vigil_ingest::syslog::SyslogConfig {
        udp_listen: None,
        tcp_listen: None,
        tls_listen: Some(([127, 0, 0, 1], port).into()),
        tls: Some(files),
        tenant: Some(tenant("acme")),
        flush_millis: 20,
        ..Default::default()
    };
    let ingest = Ingest::start_with(
        Arc::new(vigil_bus::inprocess::InProcessBus::new(Default::default())),
        syslog,
    )
    .await;
    let mut acme = ingest.subscribe("acme").await;

    let mut tls = tls_client(&certified, port).await;
    let message = "<38>1 2026-11-27T12:00:00Z bastion sshd 4242 - - Accepted publickey for alice from 198.51.100.7 port 50022 ssh2";
    tls.write_all(format!("{} {message}", message.len()).as_bytes())
        .await
        .unwrap();
    tls.shutdown().await.unwrap();
    let batch = next_batch(&mut acme).await;
    let event = &batch.events[0];
    assert_eq!(event.source.transport, "syslog");
    assert_eq!(event.raw.as_ref().unwrap().text, message);
    assert_eq!(event.logsource.service.as_deref(), Some("sshd"));

    // A plaintext sender on the TLS port gets nothing through.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    plain.write_all(b"12 hello world").await.unwrap();
    drop(plain);
    marker_is_next(&ingest, &ingest.acme, &mut acme, "marker").await;
}

#[tokio::test]
async fn http_ingest_over_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (certified, files) = self_signed(dir.path());
    let no_syslog = vigil_ingest::syslog::SyslogConfig {
        udp_listen: None,
        tcp_listen: None,
        ..Default::default()
    };
    let ingest = Ingest::start_full(
        Arc::new(vigil_bus::inprocess::InProcessBus::new(Default::default())),
        no_syslog,
        Some(files),
    )
    .await;
    let mut acme = ingest.subscribe("acme").await;
    let port: u16 = ingest
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let mut tls = tls_client(&certified, port).await;
    let body = r#"{"message":"over https"}"#;
    let request = format!(
        "POST /v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        ingest.acme,
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.ok();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#"{"accepted":1}"#), "{response}");
    let batch = next_batch(&mut acme).await;
    assert_eq!(
        batch.events[0].fields.get_str("message"),
        Some("over https")
    );

    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::Client::new()
        .post(&ingest.url)
        .bearer_auth(&ingest.acme)
        .body(body)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

#[tokio::test]
async fn limits_per_tenant_and_per_event_refuse_whole_requests_with_reasons() {
    let bus: Arc<dyn Bus> = Arc::new(vigil_bus::inprocess::InProcessBus::new(Default::default()));
    let ingest = Ingest::start_tuned(bus, |config| {
        config.max_event_bytes = 16_384;
        config.tenant_limits.insert(
            tenant("acme"),
            vigil_ingest::limits::TenantLimits {
                rate: Some(vigil_ingest::limits::Rate {
                    events_per_sec: 1,
                    burst: 10,
                }),
                ..Default::default()
            },
        );
        config.tenant_limits.insert(
            tenant("globex"),
            vigil_ingest::limits::TenantLimits {
                max_body_bytes: Some(64 * 1024),
                max_depth: Some(3),
                ..Default::default()
            },
        );
    })
    .await;
    let records = |n: usize| {
        (0..n)
            .map(|i| format!("{{\"message\": \"event {i}\"}}\n"))
            .collect::<String>()
            .into_bytes()
    };
    let mut acme = ingest.subscribe("acme").await;
    let (status, body) = ingest.post(Some(&ingest.acme), &[], records(10)).await;
    assert_eq!((status, body), (200, serde_json::json!({"accepted": 10})));
    assert_eq!(next_batch(&mut acme).await.events.len(), 10);

    // Over the rate: 429, a Retry-After, a reason, and nothing published.
    let response = reqwest::Client::new()
        .post(&ingest.url)
        .header("authorization", format!("Bearer {}", ingest.acme))
        .body(records(5))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("over its rate of 1 events per second"),
        "{body}"
    );
    // More than the burst in one request can never pass: 413 naming the burst.
    let (status, body) = ingest.post(Some(&ingest.acme), &[], records(11)).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("burst of 10"),
        "{body}"
    );
    // One event over the size or field limits refuses its request, naming the record.
    let wide: serde_json::Map<String, serde_json::Value> = (0..1001)
        .map(|i| (format!("f{i}"), serde_json::json!(i)))
        .collect();
    let (status, body) = ingest
        .post(
            Some(&ingest.globex),
            &[],
            format!("{{\"a\": 1}}\n{}\n", serde_json::Value::Object(wide)).into_bytes(),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        body["error"],
        "record 1 has 1001 fields; at most 1000 per event"
    );
    let big = format!("{{\"message\": \"{}\"}}", "x".repeat(20_000));
    let (status, body) = ingest
        .post(Some(&ingest.globex), &[], big.into_bytes())
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(
        body["error"],
        "record 0 is 20015 bytes; at most 16384 per event"
    );
    // globex's own depth (3 levels); the ingest-wide 32 for acme.
    let deep = br#"{"a": {"b": {"c": {"d": 1}}}}"#.to_vec();
    let (status, body) = ingest.post(Some(&ingest.globex), &[], deep.clone()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"],
        "record 0 nests 4 levels of objects and arrays; at most 3"
    );
    let (status, answer) = ingest
        .hec(
            "/services/collector/event",
            Some(&format!("Splunk {}", ingest.globex)),
            &[],
            r#"{"event": {"a": {"b": {"c": {"d": 1}}}}}"#,
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_u64()),
        (400, Some(6)),
        "{answer}"
    );
    assert!(
        answer["text"].as_str().unwrap().contains("at most 4"),
        "{answer}"
    );
    // globex's own body bound (64 KiB, below the listener's 1 MiB); acme keeps the wide one.
    let (status, body) = ingest.post(Some(&ingest.globex), &[], records(3000)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "the body exceeds 65536 bytes");
    // HEC senders get HEC's busy answer, which they retry.
    let (status, answer) = ingest
        .hec(
            "/services/collector/event",
            Some(&format!("Splunk {}", ingest.acme)),
            &[],
            r#"{"event": "x"}"#,
        )
        .await;
    assert_eq!(
        (status, answer["code"].clone()),
        (503, serde_json::json!(9))
    );
    // Another tenant has its own bucket.
    let (status, _) = ingest.post(Some(&ingest.globex), &[], records(500)).await;
    assert_eq!(status, 200);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), acme.next())
            .await
            .is_err(),
        "nothing refused was published"
    );
}

/// rsyslogd, the Debian package (`apt-get install rsyslog`); the test fails without it.
fn rsyslogd() -> std::path::PathBuf {
    ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|path| path.exists())
        .expect("rsyslogd is not installed: apt-get install rsyslog (cargo xtask ci installs it)")
}

/// An rsyslogd of the test's own: UDP in, forwarding to the TCP listener in both framings.
struct Rsyslog {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn rsyslog_forwards_to_the_tcp_listener_in_both_framings() {
    let tcp = vigil_e2e::free_port().unwrap();
    let syslog = vigil_ingest::syslog::SyslogConfig {
        udp_listen: None,
        tcp_listen: Some(([127, 0, 0, 1], tcp).into()),
        tenant: Some(tenant("acme")),
        flush_millis: 20,
        ..Default::default()
    };
    let ingest = Ingest::start_with(
        Arc::new(vigil_bus::inprocess::InProcessBus::new(Default::default())),
        syslog,
    )
    .await;
    let mut acme = ingest.subscribe("acme").await;

    let dir = tempfile::tempdir().unwrap();
    let udp = vigil_e2e::free_port().unwrap();
    let config = dir.path().join("rsyslog.conf");
    std::fs::write(
        &config,
        format!(
            r#"global(workDirectory="{work}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{udp}")
action(type="omfwd" target="127.0.0.1" port="{tcp}" protocol="tcp"
       TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
action(type="omfwd" target="127.0.0.1" port="{tcp}" protocol="tcp"
       template="RSYSLOG_ForwardFormat")
"#,
            work = dir.path().display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new(rsyslogd())
        .arg("-n")
        .arg("-f")
        .arg(&config)
        .arg("-i")
        .arg(dir.path().join("rsyslogd.pid"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _rsyslog = Rsyslog { child, _dir: dir };
    // rsyslogd is up once its UDP input is bound.
    for _ in 0..100 {
        if std::net::UdpSocket::bind(("127.0.0.1", udp)).is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let message = "Accepted publickey for deploy from 198.51.100.4 port 50022 ssh2";
    logger(
        &[
            "--udp",
            "--server",
            "127.0.0.1",
            "--port",
            &udp.to_string(),
            "--rfc3164",
            "--tag",
            "sshd",
        ],
        message,
    );
    // One copy per forwarding action: RFC 5424 octet-counted, and RFC 3164 newline-framed.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let batch = next_batch(&mut acme).await;
        assert_eq!(batch.tenant.as_str(), "acme");
        seen.extend(batch.events);
    }
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let mut texts: Vec<&str> = seen
        .iter()
        .map(|event| event.raw.as_ref().unwrap().text.as_str())
        .collect();
    texts.sort();
    for event in &seen {
        assert!(
            event.raw.as_ref().unwrap().text.contains(message),
            "{event:?}"
        );
        assert_eq!(
            event.logsource.service.as_deref(),
            Some("sshd"),
            "{event:?}"
        );
        assert!(event.entities.host.is_some(), "{event:?}");
        assert_eq!(event.entities.src_ip, Some("198.51.100.4".parse().unwrap()));
        assert_eq!(event.entities.user.as_deref(), Some("deploy"));
    }
    // The RFC 5424 copy starts with its version after the priority.
    assert!(
        texts.iter().any(|text| text.starts_with("<13>1 ")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|text| !text.starts_with("<13>1 ")),
        "{texts:?}"
    );
}

#[tokio::test]
async fn custom_vrl_parsers_per_tenant_and_generic_text_when_they_fail() {
    let bus: Arc<dyn Bus> = Arc::new(vigil_bus::inprocess::InProcessBus::new(Default::default()));
    // acme's firewall sends CEF; its parser turns it into fields normalization understands.
    let program = include_str!("data/cef_firewall.vrl");
    let ingest = Ingest::start_tuned(Arc::clone(&bus), |config| {
        config.parsers.insert(
            tenant("acme"),
            vigil_ingest::parsers::ParserConfig {
                source: Some(program.into()),
                file: None,
            },
        );
    })
    .await;
    let mut acme = ingest.subscribe("acme").await;
    let mut globex = ingest.subscribe("globex").await;
    let body = concat!(
        r#"{"message":"CEF:0|Acme|Firewall|1.0|100|Connection blocked|5|src=203.0.113.9 dst=10.0.0.5 suser=bob act=blocked"}"#,
        "\n",
        r#"{"message":"not a CEF line"}"#,
        "\n"
    );
    let (status, answer) = ingest
        .post(Some(&ingest.acme), &[], body.as_bytes().to_vec())
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 2, "a failed parse loses nothing");
    let batch = next_batch(&mut acme).await;
    assert_eq!(batch.events.len(), 2);
    let parsed = &batch.events[0];
    assert_eq!(parsed.parse_error, None);
    assert_eq!(parsed.fields.get_str("parsed_by"), Some("acme-firewall"));
    assert_eq!(parsed.fields.get_str("name"), Some("Connection blocked"));
    assert_eq!(parsed.entities.src_ip, Some("203.0.113.9".parse().unwrap()));
    assert_eq!(parsed.entities.dst_ip, Some("10.0.0.5".parse().unwrap()));
    assert_eq!(parsed.entities.user.as_deref(), Some("bob"));
    let failed = &batch.events[1];
    let error = failed
        .parse_error
        .as_deref()
        .expect("the error is recorded");
    assert!(error.starts_with("custom parser: "), "{error}");
    assert!(error.contains("CEF"), "{error}");
    assert_eq!(
        failed.fields.get_str("message"),
        Some(r#"{"message":"not a CEF line"}"#),
        "the record as received, as generic text"
    );

    // globex has no parser: its records are normalized as they are.
    let (status, _) = ingest
        .post(Some(&ingest.globex), &[], body.as_bytes().to_vec())
        .await;
    assert_eq!(status, 200);
    let batch = next_batch(&mut globex).await;
    assert_eq!(batch.events.len(), 2);
    assert!(batch.events.iter().all(|e| e.parse_error.is_none()));
    assert!(batch.events[0].fields.get_str("parsed_by").is_none());
    assert!(
        batch.events[0]
            .fields
            .get_str("message")
            .unwrap()
            .starts_with("CEF:0")
    );
}

/// `node` and the senders' directory (`tests/senders`, with its modules installed by
/// `npm ci --prefix tests/senders`, which `cargo xtask ci` runs); the test fails without them.
fn node_senders() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/senders");
    assert!(
        dir.join("node_modules/splunk-logging").is_dir()
            && dir.join("node_modules/@opentelemetry/sdk-logs").is_dir(),
        "the senders' modules are not installed: npm ci --prefix tests/senders (cargo xtask ci does)"
    );
    let node = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|path| path.join("node"))
        .find(|path| path.is_file())
        .expect("node is not installed (the senders are Node.js programs)");
    (node, dir)
}

/// Runs one sender to completion and requires it to succeed.
async fn run_sender(script: &str, args: &[&str]) {
    let (success, output) = sender(script, args).await;
    assert!(success, "{script} {args:?} failed: {output}");
}

/// Runs one sender to completion without blocking the runtime the ingest service runs on: its
/// success and what it printed.
async fn sender(script: &str, args: &[&str]) -> (bool, String) {
    let (node, dir) = node_senders();
    let mut child = std::process::Command::new(node)
        .arg(dir.join(script))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{script} did not finish in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = child.wait_with_output().unwrap();
    (
        status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Reads events of one tenant until `count` have arrived.
async fn events(subscription: &mut Subscription, count: usize) -> Vec<vigil_schema::Event> {
    let mut out = Vec::new();
    while out.len() < count {
        out.extend(next_batch(subscription).await.events);
    }
    out
}

/// Splunk's own HEC client library (`splunk-logging` for Node.js, as applications embed it):
/// its batches, its `/services/collector/event/1.0` path, its form content type and string
/// timestamps all go through; every event arrives once, and a wrong token is refused.
#[tokio::test]
async fn splunks_own_hec_logger_is_accepted() {
    let ingest = Ingest::start(Arc::new(vigil_bus::inprocess::InProcessBus::new(
        Default::default(),
    )))
    .await;
    let mut acme = ingest.subscribe("acme").await;
    let base = ingest.base();
    run_sender("hec.js", &[&base, &ingest.acme, "60"]).await;

    let received = events(&mut acme, 60).await;
    assert_eq!(received.len(), 60);
    let mut seqs: Vec<i64> = received
        .iter()
        .map(|event| {
            assert_eq!(event.source.transport, "hec");
            assert_eq!(event.fields.get_str("hec.host"), Some("web-3"));
            assert_eq!(event.fields.get_str("hec.source"), Some("auth.log"));
            assert_eq!(event.fields.get_str("message.user"), Some("alice"));
            // The logger stamps each event with its own clock, as a string of seconds.
            let age = time::OffsetDateTime::now_utc() - event.event_time;
            assert!(age.whole_seconds().abs() < 120, "{}", event.event_time);
            event
                .fields
                .get("message.seq")
                .and_then(|value| value.as_i64())
                .unwrap()
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..60).collect::<Vec<_>>());

    // A wrong token gets HEC's answer (403, code 4), and the library reports it as a failure.
    let (success, output) = sender("hec.js", &[&base, "not-a-token", "1"]).await;
    assert!(!success, "{output}");
    assert!(
        output.contains("403") && output.contains("Invalid token"),
        "{output}"
    );
}

/// The OpenTelemetry SDK's own OTLP/HTTP log exporters (Node.js), protobuf and JSON, with the
/// batching processor: every record arrives once with its body, severity, attributes and
/// resource.
#[tokio::test]
async fn the_opentelemetry_sdks_otlp_exporters_are_accepted() {
    let ingest = Ingest::start(Arc::new(vigil_bus::inprocess::InProcessBus::new(
        Default::default(),
    )))
    .await;
    let mut acme = ingest.subscribe("acme").await;
    let endpoint = format!("{}/v1/logs", ingest.base());
    for encoding in ["proto", "json"] {
        run_sender("otlp.js", &[&endpoint, &ingest.acme, "120", encoding]).await;
        let received = events(&mut acme, 120).await;
        assert_eq!(received.len(), 120, "{encoding}");
        let mut seqs: Vec<i64> = received
            .iter()
            .map(|event| {
                assert_eq!(event.source.transport, "otlp");
                assert_eq!(event.fields.get_str("severity"), Some("WARN"));
                assert_eq!(
                    event.fields.get_str("resource.service.name"),
                    Some("billing")
                );
                assert_eq!(event.fields.get_str("resource.host.name"), Some("api-7"));
                assert!(
                    event
                        .fields
                        .get_str("message")
                        .is_some_and(|message| message.starts_with("Failed password for root")),
                    "{encoding}: {:?}",
                    event.fields.get_str("message")
                );
                assert_eq!(event.entities.user.as_deref(), Some("root"), "{encoding}");
                event
                    .fields
                    .get("seq")
                    .and_then(|value| value.as_i64())
                    .unwrap()
            })
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (0..120).collect::<Vec<_>>(), "{encoding}");
    }
}
