//! The bus on NATS JetStream.
//!
//! One stream per stage, `VIGIL_<STAGE>` on `vigil.*.<stage>`, with interest retention and
//! `discard: new`: a message stays until every durable consumer of its subject has acknowledged
//! it, and when a stream reaches its limits, publishers wait and retry (backpressure) instead
//! of old, unprocessed messages being thrown away. The dead-letter stream keeps its messages for
//! inspection with limits retention. `docs/adr/0003-bus-semantics.md` explains the choice.
//!
//! Publishing is pipelined: `publish` waits only for a free slot in a bounded window of
//! unacknowledged publishes; the returned future resolves on the server's acknowledgement.
//! A retried publish carries the same `Nats-Msg-Id`, so the server's duplicate window makes it
//! safe.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use vigil_schema::Stage;

use crate::metrics_names::{
    DEAD_LETTERS, PUBLISH_DUPLICATES, PUBLISH_ERRORS, PUBLISHED, StageCounters,
};
use crate::{
    AckFuture, Acker, Bus, BusError, ConsumerSpec, Delivery, Headers, OutgoingMessage,
    PublishReceipt, RawSubscription, Result, Subject, Subscription, stream_name,
};

/// How Vigil uses a JetStream server.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// `nats://host:port`; several comma-separated URLs for a cluster.
    pub url: String,
    /// Name this client reports to the server.
    pub client_name: String,
    /// NATS credentials file (JWT and nkey seed), for deployments with per-tenant users.
    pub credentials_file: Option<std::path::PathBuf>,
    /// Prefix of reply subjects (`_INBOX` when unset). A per-tenant user may subscribe only to
    /// its own prefix (`_INBOX_<tenant>`), so it never sees another tenant's replies.
    pub inbox_prefix: Option<String>,
    /// Stream replicas: 1 for a single server, 3 in production.
    pub replicas: usize,
    /// Window in which a repeated `Nats-Msg-Id` is dropped.
    pub duplicate_window: Duration,
    /// Oldest message kept per stage stream.
    pub max_age: Duration,
    /// Most bytes kept per stage stream; publishers wait when it is reached.
    pub max_bytes: i64,
    /// Most messages kept per stage stream (-1: no limit); publishers wait when it is reached.
    pub max_messages: i64,
    /// Oldest dead letter kept.
    pub dead_letter_max_age: Duration,
    /// Most publishes awaiting the server's acknowledgement at once.
    pub max_publish_in_flight: usize,
    /// Most payload bytes awaiting the server's acknowledgement at once: large batches are
    /// bounded by bytes, not by count.
    pub max_publish_in_flight_bytes: usize,
    /// How long one publish may wait for room and acknowledgement before failing.
    pub publish_timeout: Duration,
    /// How long to wait for the first connection.
    pub connect_timeout: Duration,
    /// Whether to create or update the streams on connect. Off where a per-tenant user may
    /// not manage streams.
    pub manage_streams: bool,
}

impl JetStreamConfig {
    /// Settings for one URL with Vigil's defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client_name: "vigil".into(),
            credentials_file: None,
            inbox_prefix: None,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1024 * 1024 * 1024,
            max_messages: -1,
            dead_letter_max_age: Duration::from_secs(14 * 24 * 3600),
            max_publish_in_flight: 4096,
            max_publish_in_flight_bytes: 32 * 1024 * 1024,
            publish_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            manage_streams: true,
        }
    }

    /// The URL with any user info removed, for messages.
    fn display_url(&self) -> String {
        self.url
            .split(',')
            .map(|url| match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    format!("{}{}", &url[..scheme + 3], &url[at + 1..])
                }
                _ => url.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The stream configuration of `stage`.
    pub fn stream_config(&self, stage: Stage) -> stream::Config {
        let dead_letters = stage == Stage::Deadletter;
        stream::Config {
            name: stream_name(stage),
            description: Some(format!("Vigil {stage} of every tenant")),
            subjects: vec![crate::stream_subject(stage)],
            retention: if dead_letters {
                stream::RetentionPolicy::Limits
            } else {
                stream::RetentionPolicy::Interest
            },
            discard: if dead_letters {
                stream::DiscardPolicy::Old
            } else {
                stream::DiscardPolicy::New
            },
            max_age: if dead_letters {
                self.dead_letter_max_age
            } else {
                self.max_age
            },
            max_bytes: self.max_bytes,
            max_messages: self.max_messages,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            ..stream::Config::default()
        }
    }
}

/// The bus on a JetStream server or cluster.
#[derive(Debug, Clone)]
pub struct JetStreamBus {
    // One allocation shared by every clone: deliveries hold a clone (for dead-lettering), and
    // the NATS client and context are several reference counts and a string each.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: async_nats::Client,
    context: jetstream::Context,
    config: JetStreamConfig,
    /// Kibibytes of payload awaiting acknowledgement.
    in_flight_kib: Arc<tokio::sync::Semaphore>,
    /// The size of that window, in KiB.
    window_kib: u32,
    counters: Arc<PublishCounters>,
    /// Publishes awaiting their acknowledgement, driven by one task (see `drive_acks`).
    pending_acks: tokio::sync::mpsc::UnboundedSender<futures::future::BoxFuture<'static, ()>>,
}

/// Polls every pending acknowledgement in one task, so that each completes (and frees its share
/// of the windows) as the server answers, without a task per publish. Ends when the bus is
/// dropped and nothing is pending.
async fn drive_acks(
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<futures::future::BoxFuture<'static, ()>>,
) {
    let mut pending = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            next = incoming.recv() => match next {
                Some(future) => pending.push(future),
                None => break,
            },
            Some(()) = pending.next(), if !pending.is_empty() => {}
        }
    }
    while pending.next().await.is_some() {}
}

#[derive(Debug)]
struct PublishCounters {
    published: StageCounters,
    duplicates: StageCounters,
    errors: StageCounters,
}

/// One permit per KiB of payload, at most the whole window (so a single huge message can still
/// go alone).
fn kib_permits(len: usize, window_kib: u32) -> u32 {
    u32::try_from(len.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .clamp(1, window_kib)
}

impl JetStreamBus {
    /// Connects, and creates or updates the stage streams when `manage_streams` is set.
    ///
    /// Fails at once when the server cannot be reached, so that a service with a wrong URL
    /// stops with a clear message; after the first connection the client reconnects by itself.
    pub async fn connect(config: JetStreamConfig) -> Result<Self> {
        let display_url = config.display_url();
        let connect_error = |reason: String| BusError::Connect {
            url: display_url.clone(),
            reason,
        };
        let mut options = async_nats::ConnectOptions::new()
            .name(&config.client_name)
            .connection_timeout(config.connect_timeout)
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => {
                        tracing::warn!("disconnected from NATS, reconnecting")
                    }
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    async_nats::Event::SlowConsumer(sid) => {
                        tracing::warn!(subscription = sid, "NATS slow consumer")
                    }
                    other => tracing::info!(event = %other, "NATS connection event"),
                }
            });
        if let Some(path) = &config.credentials_file {
            options = options.credentials_file(path).await.map_err(|err| {
                connect_error(format!("credentials file {}: {err}", path.display()))
            })?;
        }
        if let Some(prefix) = &config.inbox_prefix {
            options = options.custom_inbox_prefix(prefix.as_str());
        }
        let servers: Vec<&str> = config.url.split(',').map(str::trim).collect();
        let client = tokio::time::timeout(
            config.connect_timeout + Duration::from_secs(1),
            options.connect(servers),
        )
        .await
        .map_err(|_| connect_error("timed out".into()))?
        .map_err(|err| connect_error(err.to_string()))?;
        let context = jetstream::ContextBuilder::new()
            .timeout(config.publish_timeout)
            .max_ack_inflight(config.max_publish_in_flight)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let window_kib = u32::try_from(config.max_publish_in_flight_bytes / 1024)
            .unwrap_or(u32::MAX)
            .max(1);
        let (pending_acks, incoming) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(drive_acks(incoming));
        let bus = Self {
            inner: Arc::new(Inner {
                client,
                context,
                config,
                in_flight_kib: Arc::new(tokio::sync::Semaphore::new(window_kib as usize)),
                window_kib,
                counters: Arc::new(PublishCounters {
                    published: StageCounters::new(PUBLISHED),
                    duplicates: StageCounters::new(PUBLISH_DUPLICATES),
                    errors: StageCounters::new(PUBLISH_ERRORS),
                }),
                pending_acks,
            }),
        };
        if bus.inner.config.manage_streams {
            bus.ensure_streams().await.map_err(|err| match err {
                BusError::Connect { .. } => err,
                other => connect_error(other.to_string()),
            })?;
        }
        Ok(bus)
    }

    /// Creates or updates one stream per stage.
    pub async fn ensure_streams(&self) -> Result<()> {
        for stage in Stage::ALL {
            let config = self.inner.config.stream_config(stage);
            let name = config.name.clone();
            match self.inner.context.get_stream(&name).await {
                Ok(_) => {
                    self.inner
                        .context
                        .update_stream(config)
                        .await
                        .map_err(|err| stream_error(&name, err))?;
                }
                Err(_) => {
                    self.inner
                        .context
                        .create_stream(config)
                        .await
                        .map_err(|err| stream_error(&name, err))?;
                }
            }
        }
        Ok(())
    }

    /// The underlying NATS client (for the benchmark's raw baseline and for tests).
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    async fn consumer(&self, spec: &ConsumerSpec) -> Result<consumer::PullConsumer> {
        spec.validate()?;
        let durable = spec.durable_name();
        let consumer_error = |reason: String| BusError::Consumer {
            name: durable.clone(),
            reason,
        };
        let stream = self
            .inner
            .context
            .get_stream(stream_name(spec.stage))
            .await
            .map_err(|err| consumer_error(err.to_string()))?;
        let config = consumer::pull::Config {
            durable_name: Some(durable.clone()),
            description: Some(format!("Vigil consumer {}", spec.name)),
            filter_subject: spec.filter_subject(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: spec.ack_wait,
            // Unlimited on the server: Vigil dead-letters after max_deliveries itself, with the
            // reason, which the server's own limit cannot do.
            max_deliver: -1,
            max_ack_pending: i64::try_from(spec.max_in_flight).unwrap_or(i64::MAX),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        };
        // Creates the consumer, or brings an existing one's delivery rules up to date; its
        // position is kept. Servers that refuse the update (before 2.10 a changed durable cannot
        // be updated in place) keep the consumer as it is, which an operator should know about.
        match stream.create_consumer(config).await {
            Ok(consumer) => Ok(consumer),
            Err(update_error) => {
                let existing = stream
                    .get_consumer(&durable)
                    .await
                    .map_err(|_| consumer_error(update_error.to_string()))?;
                tracing::warn!(consumer = %durable, error = %update_error, "cannot update the consumer's delivery rules, keeping the existing ones");
                Ok(existing)
            }
        }
    }
}

fn stream_error(name: &str, err: impl std::fmt::Display) -> BusError {
    BusError::Stream {
        name: name.to_owned(),
        reason: err.to_string(),
    }
}

fn to_header_map(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers.iter() {
        map.insert(name, value);
    }
    map
}

fn from_header_map(map: Option<&HeaderMap>) -> Headers {
    let mut headers = Headers::new();
    if let Some(map) = map {
        for (name, values) in map.iter() {
            if let Some(value) = values.first() {
                headers.insert(name.to_string(), value.as_str());
            }
        }
    }
    headers
}

/// Whether a publish failed because the stream is at its limits (interest retention with
/// `discard: new`): the server answers "maximum messages exceeded" or "maximum bytes exceeded".
fn is_stream_full(err: &jetstream::context::PublishError) -> bool {
    let text = format!("{err} {:?}", std::error::Error::source(err));
    text.contains("maximum messages")
        || text.contains("maximum bytes")
        || text.contains("resource limits")
}

#[async_trait]
impl Bus for JetStreamBus {
    async fn publish(&self, message: OutgoingMessage) -> Result<AckFuture> {
        let subject = message.subject.to_string();
        let stage = message.subject.stage;
        let counters = Arc::clone(&self.inner.counters);
        let headers = to_header_map(&message.headers);
        let build = {
            let payload = message.payload.clone();
            let id = message.id.clone();
            move || {
                jetstream::message::PublishMessage::build()
                    .payload(payload.clone())
                    .headers(headers.clone())
                    .message_id(&id)
            }
        };
        let error_counter = counters.errors.get(stage).clone();
        let publish_error = move |subject: &str, reason: String| {
            error_counter.increment(1);
            BusError::Publish {
                subject: subject.to_owned(),
                reason,
            }
        };
        let permit = Arc::clone(&self.inner.in_flight_kib)
            .acquire_many_owned(kib_permits(message.payload.len(), self.inner.window_kib))
            .await
            .map_err(|_| BusError::Closed)?;
        let first = self
            .inner
            .context
            .send_publish(subject.clone(), build())
            .await
            .map_err(|err| publish_error(&subject, err.to_string()))?;
        let context = self.inner.context.clone();
        let timeout = self.inner.config.publish_timeout;
        // The acknowledgement is awaited by the bus's ack driver, so that the byte window is
        // released when the server answers, whether or not the caller polls the returned future.
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let waiting = async move {
            // Held until the server acknowledged (or the publish failed).
            let _permit = permit;
            let result: Result<PublishReceipt> = async {
                let started = tokio::time::Instant::now();
                let mut pending = first;
                let mut backoff = Duration::from_millis(5);
                loop {
                    match pending.await {
                        Ok(ack) => {
                            let counter = if ack.duplicate {
                                &counters.duplicates
                            } else {
                                &counters.published
                            };
                            counter.get(stage).increment(1);
                            return Ok(PublishReceipt {
                                sequence: ack.sequence,
                                duplicate: ack.duplicate,
                            });
                        }
                        Err(err) if is_stream_full(&err) => {
                            if started.elapsed() >= timeout {
                                counters.errors.get(stage).increment(1);
                                return Err(BusError::Backpressure {
                                    subject,
                                    seconds: timeout.as_secs(),
                                });
                            }
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_millis(500));
                            pending = context
                                .send_publish(subject.clone(), build())
                                .await
                                .map_err(|err| publish_error(&subject, err.to_string()))?;
                        }
                        Err(err) => {
                            let reason = match std::error::Error::source(&err) {
                                Some(source) => format!("{err}: {source}"),
                                None => err.to_string(),
                            };
                            return Err(publish_error(&subject, reason));
                        }
                    }
                }
            }
            .await;
            let _ = sender.send(result);
        };
        self.inner
            .pending_acks
            .send(waiting.boxed())
            .map_err(|_| BusError::Closed)?;
        Ok(async move { receiver.await.unwrap_or(Err(BusError::Closed)) }.boxed())
    }

    async fn subscribe(&self, spec: ConsumerSpec) -> Result<Subscription> {
        let consumer = self.consumer(&spec).await?;
        let durable: Arc<str> = Arc::from(spec.durable_name());
        // A consumer of one message at a time (a correlation partition) pulls the next message
        // while its current one is unacknowledged, and with nats-server 2.9.10 such a pull
        // sometimes waited until it expired: five runs in nine of `cargo xtask bench detect
        // --correlation 1` took 30 s longer, none in eight with a 5 s expiry. A short expiry
        // bounds that wait; other consumers keep the longer one (fewer idle pulls per tenant).
        let (heartbeat, expires) = if spec.max_in_flight <= 1 {
            (Duration::from_secs(2), Duration::from_secs(5))
        } else {
            (Duration::from_secs(5), Duration::from_secs(30))
        };
        // Pulls are bounded in bytes too. A pull of 1,024 event batches asked for more than
        // nats-server lets wait for one connection (64 MiB): it cut the connection off as a slow
        // consumer and dropped what it had queued, which came back only after the ack wait (a
        // 30 s stall in the detect benchmark). Never less than the server's largest message, or
        // a message could be too large for every pull.
        let max_bytes = PULL_MAX_BYTES.max(self.inner.client.server_info().max_payload);
        let messages = consumer
            .stream()
            .max_messages_per_batch(spec.max_in_flight.clamp(1, 1024))
            .max_bytes_per_batch(max_bytes)
            .heartbeat(heartbeat)
            .expires(expires)
            .messages()
            .await
            .map_err(|err| BusError::Consumer {
                name: durable.to_string(),
                reason: err.to_string(),
            })?;
        let raw = JetStreamSubscription {
            bus: self.clone(),
            messages,
            consumer: durable,
            consumer_label: Arc::from(spec.name.as_str()),
            stage: spec.stage,
            last_subject: None,
        };
        Ok(Subscription::new(spec, Box::new(raw)))
    }

    async fn ensure_consumer(&self, spec: &ConsumerSpec) -> Result<()> {
        self.consumer(spec).await.map(drop)
    }

    async fn remove_consumer(&self, spec: &ConsumerSpec) -> Result<bool> {
        spec.validate()?;
        let durable = spec.durable_name();
        let consumer_error = |reason: String| BusError::Consumer {
            name: durable.clone(),
            reason,
        };
        let stream = self
            .inner
            .context
            .get_stream(stream_name(spec.stage))
            .await
            .map_err(|err| consumer_error(err.to_string()))?;
        match stream.delete_consumer(&durable).await {
            Ok(_) => Ok(true),
            Err(err) => match err.kind() {
                stream::ConsumerErrorKind::JetStream(inner)
                    if inner.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND =>
                {
                    Ok(false)
                }
                _ => Err(consumer_error(err.to_string())),
            },
        }
    }

    async fn check(&self) -> Result<()> {
        let connect_error = |reason: String| BusError::Connect {
            url: self.inner.config.display_url(),
            reason,
        };
        if self.inner.client.connection_state() != async_nats::connection::State::Connected {
            return Err(connect_error("not connected".into()));
        }
        self.inner
            .context
            .get_stream(stream_name(Stage::Events))
            .await
            .map_err(|err| {
                connect_error(format!("stream {}: {err}", stream_name(Stage::Events)))
            })?;
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        self.inner
            .client
            .flush()
            .await
            .map_err(|err| BusError::Ack(format!("flush failed: {err}")))
    }

    fn kind(&self) -> &'static str {
        "jetstream"
    }
}

/// The most bytes one pull asks for. The client asks again when half has arrived, so at most
/// one and a half times this waits for a consumer: well under nats-server's 64 MiB per
/// connection, with room for several consumers on one connection.
const PULL_MAX_BYTES: usize = 8 * 1024 * 1024;

struct JetStreamSubscription {
    bus: JetStreamBus,
    messages: consumer::pull::Stream,
    consumer: Arc<str>,
    consumer_label: Arc<str>,
    stage: Stage,
    /// The last subject parsed: a tenant-scoped consumer sees one subject, so parsing (and
    /// validating the tenant id) happens once.
    last_subject: Option<(String, Subject)>,
}

#[async_trait]
impl RawSubscription for JetStreamSubscription {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            let message = match self.messages.next().await? {
                Ok(message) => message,
                Err(err) => {
                    // Missed heartbeats and the like: the stream recovers by itself.
                    tracing::debug!(consumer = %self.consumer, error = %err, "pull stream error");
                    return Some(Err(BusError::Consumer {
                        name: self.consumer.to_string(),
                        reason: err.to_string(),
                    }));
                }
            };
            let (sequence, deliveries) = match message.info() {
                Ok(info) => (
                    info.stream_sequence,
                    u32::try_from(info.delivered).unwrap_or(u32::MAX),
                ),
                Err(err) => {
                    // Not a JetStream delivery (nothing would redeliver it): count and drop it.
                    metrics::counter!(DEAD_LETTERS, "stage" => self.stage.as_str(), "consumer" => self.consumer_label.to_string(), "reason" => "no_metadata")
                        .increment(1);
                    tracing::debug!(consumer = %self.consumer, error = %err, "message without JetStream metadata dropped");
                    let _ = message.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            let cached = matches!(
                &self.last_subject,
                Some((text, _)) if text.as_str() == message.subject.as_str()
            );
            if !cached {
                match message.subject.as_str().parse::<Subject>() {
                    Ok(subject) => {
                        self.last_subject = Some((message.subject.to_string(), subject));
                    }
                    Err(err) => {
                        // Published around Vigil on a subject no tenant owns: there is no tenant's
                        // dead-letter subject to put it on, so it is dropped, counted and logged.
                        metrics::counter!(DEAD_LETTERS, "stage" => self.stage.as_str(), "consumer" => self.consumer_label.to_string(), "reason" => "invalid_subject")
                            .increment(1);
                        tracing::debug!(consumer = %self.consumer, error = %err, "message on an invalid subject dropped");
                        let _ = message.ack_with(AckKind::Term).await;
                        continue;
                    }
                }
            }
            let Some((_, subject)) = self.last_subject.as_ref() else {
                continue;
            };
            let subject = subject.clone();
            let headers = from_header_map(message.headers.as_ref());
            let id = headers.get("Nats-Msg-Id").map(str::to_owned);
            let payload = message.payload.clone();
            return Some(Ok(Delivery {
                subject,
                id,
                headers,
                payload,
                deliveries,
                sequence,
                consumer: Arc::clone(&self.consumer),
                consumer_label: Arc::clone(&self.consumer_label),
                acker: Box::new(JetStreamAcker {
                    bus: self.bus.clone(),
                    message,
                }),
            }));
        }
    }
}

struct JetStreamAcker {
    bus: JetStreamBus,
    message: jetstream::Message,
}

impl JetStreamAcker {
    async fn send(&self, kind: AckKind) -> Result<()> {
        self.message
            .ack_with(kind)
            .await
            .map_err(|err| BusError::Ack(err.to_string()))
    }
}

#[async_trait]
impl Acker for JetStreamAcker {
    async fn ack(&self) -> Result<()> {
        self.send(AckKind::Ack).await
    }

    async fn nak(&self, delay: Option<Duration>) -> Result<()> {
        self.send(AckKind::Nak(delay)).await
    }

    async fn in_progress(&self) -> Result<()> {
        self.send(AckKind::Progress).await
    }

    async fn dead_letter(&self, message: OutgoingMessage) -> Result<()> {
        self.bus.publish_durable(message).await?;
        self.send(AckKind::Term).await
    }
}
