//! The in-process bus for `vigil run` on embedded defaults.
//!
//! Each stage is a bounded in-memory stream with the semantics of a JetStream stream with
//! interest retention and `discard: new`: a message stays until every durable consumer of the
//! stage has acknowledged it, and a publish waits (backpressure) while the stream is full.
//! Consumers get redelivery after their ack wait, naks with delay, deduplication by message id
//! within the duplicate window, and dead-lettering after `max_deliveries`.
//!
//! Messages live in memory only: a crash loses what was not yet processed. That is the trade
//! the embedded default makes; deployments that must survive crashes use JetStream.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::watch;
use tokio::time::Instant;
use vigil_schema::{Stage, TenantId};

use crate::metrics_names::{PUBLISH_DUPLICATES, PUBLISHED};
use crate::{
    AckFuture, Acker, Bus, BusError, ConsumerSpec, Delivery, Headers, OutgoingMessage,
    PublishReceipt, RawSubscription, Result, Subject, Subscription,
};

/// Limits of the in-process streams.
#[derive(Debug, Clone)]
pub struct InProcessConfig {
    /// Most messages held per stage before publishers wait.
    pub max_messages: usize,
    /// Most payload bytes held per stage before publishers wait.
    pub max_bytes: usize,
    /// Window in which a repeated message id is dropped.
    pub duplicate_window: Duration,
    /// How long a publish waits for room before failing.
    pub publish_timeout: Duration,
}

impl Default for InProcessConfig {
    fn default() -> Self {
        Self {
            max_messages: 100_000,
            max_bytes: 256 * 1024 * 1024,
            duplicate_window: Duration::from_secs(120),
            publish_timeout: Duration::from_secs(30),
        }
    }
}

/// The in-process bus; cheap to clone, all clones share the streams.
#[derive(Debug, Clone)]
pub struct InProcessBus {
    streams: Arc<HashMap<Stage, Arc<Stream>>>,
    config: InProcessConfig,
}

impl InProcessBus {
    /// A bus with one empty stream per stage.
    pub fn new(config: InProcessConfig) -> Self {
        let streams = Stage::ALL
            .into_iter()
            .map(|stage| (stage, Arc::new(Stream::new())))
            .collect();
        Self {
            streams: Arc::new(streams),
            config,
        }
    }

    fn stream(&self, stage: Stage) -> Arc<Stream> {
        // Every stage has a stream from construction on.
        Arc::clone(&self.streams[&stage])
    }

    fn store(
        &self,
        message: OutgoingMessage,
    ) -> std::result::Result<PublishReceipt, OutgoingMessage> {
        let stream = self.stream(message.subject.stage);
        let mut state = stream.lock();
        let now = Instant::now();
        state.expire_duplicates(now, self.config.duplicate_window);
        if let Some(&sequence) = state.seen_ids.get(&message.id) {
            return Ok(PublishReceipt {
                sequence,
                duplicate: true,
            });
        }
        let is_full = |state: &StreamState| {
            state.messages.len() >= self.config.max_messages
                || (state.bytes + message.payload.len() > self.config.max_bytes
                    && !state.messages.is_empty())
        };
        if message.subject.stage == Stage::Deadletter {
            // Dead letters are kept for inspection, not for processing: when full, the oldest
            // make room, so that dead-lettering can never block a consumer.
            while is_full(&state) {
                match state.messages.pop_first() {
                    Some((_, stored)) => state.bytes -= stored.payload.len(),
                    None => break,
                }
            }
        } else if is_full(&state) {
            return Err(message);
        }
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        state.bytes += message.payload.len();
        state.seen_ids.insert(message.id.clone(), sequence);
        state.seen_order.push_back((now, message.id.clone()));
        state.messages.insert(
            sequence,
            Arc::new(Stored {
                subject: message.subject,
                id: message.id,
                headers: message.headers,
                payload: message.payload,
            }),
        );
        drop(state);
        stream.changed();
        Ok(PublishReceipt {
            sequence,
            duplicate: false,
        })
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new(InProcessConfig::default())
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, message: OutgoingMessage) -> Result<AckFuture> {
        let stage = message.subject.stage;
        let stream = self.stream(stage);
        let deadline = Instant::now() + self.config.publish_timeout;
        let mut changes = stream.watch.subscribe();
        let mut message = message;
        loop {
            match self.store(message) {
                Ok(receipt) => {
                    let counter = if receipt.duplicate {
                        PUBLISH_DUPLICATES
                    } else {
                        PUBLISHED
                    };
                    metrics::counter!(counter, "stage" => stage.as_str()).increment(1);
                    return Ok(futures::future::ready(Ok(receipt)).boxed());
                }
                Err(returned) => message = returned,
            }
            // Full: wait for a consumer to acknowledge something, or give up at the deadline.
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(BusError::Backpressure {
                    subject: message.subject.to_string(),
                    seconds: self.config.publish_timeout.as_secs(),
                });
            }
        }
    }

    async fn subscribe(&self, spec: ConsumerSpec) -> Result<Subscription> {
        self.ensure_consumer(&spec).await?;
        let stream = self.stream(spec.stage);
        let raw = InProcessSubscription {
            bus: self.clone(),
            stream,
            consumer: Arc::from(spec.durable_name()),
            consumer_label: Arc::from(spec.name.as_str()),
            changes: None,
        };
        Ok(Subscription::new(spec, Box::new(raw)))
    }

    async fn ensure_consumer(&self, spec: &ConsumerSpec) -> Result<()> {
        spec.validate()?;
        let stream = self.stream(spec.stage);
        let mut state = stream.lock();
        let first = state.first_sequence();
        let name = spec.durable_name();
        match state.consumers.get_mut(&name) {
            Some(existing) => {
                // Same as a JetStream consumer update: delivery rules change, position stays.
                existing.ack_wait = spec.ack_wait;
                existing.max_in_flight = spec.max_in_flight;
            }
            None => {
                state.consumers.insert(
                    name,
                    ConsumerState {
                        tenant: spec.tenant.clone(),
                        partition: spec.partition,
                        cursor: first,
                        pending: BTreeMap::new(),
                        ack_wait: spec.ack_wait,
                        max_in_flight: spec.max_in_flight,
                    },
                );
            }
        }
        Ok(())
    }

    async fn remove_consumer(&self, spec: &ConsumerSpec) -> Result<bool> {
        spec.validate()?;
        let stream = self.stream(spec.stage);
        let mut state = stream.lock();
        let removed = state.consumers.remove(&spec.durable_name()).is_some();
        state.trim();
        drop(state);
        stream.changed();
        Ok(removed)
    }

    async fn check(&self) -> Result<()> {
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "in-process"
    }
}

#[derive(Debug)]
struct Stored {
    subject: Subject,
    id: String,
    headers: Headers,
    payload: Bytes,
}

#[derive(Debug)]
struct Pending {
    deliveries: u32,
    /// When the message is due for (re)delivery.
    due: Instant,
}

#[derive(Debug)]
struct ConsumerState {
    tenant: Option<TenantId>,
    partition: Option<u32>,
    /// Next sequence never delivered to this consumer.
    cursor: u64,
    /// Delivered and not yet acknowledged, by sequence.
    pending: BTreeMap<u64, Pending>,
    ack_wait: Duration,
    max_in_flight: usize,
}

impl ConsumerState {
    fn wants(&self, subject: &Subject) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == subject.tenant)
            && self.partition.is_none_or(|p| subject.partition == Some(p))
    }

    /// Lowest sequence this consumer still needs.
    fn floor(&self) -> u64 {
        self.pending
            .keys()
            .next()
            .copied()
            .unwrap_or(self.cursor)
            .min(self.cursor)
    }
}

#[derive(Debug, Default)]
struct StreamState {
    messages: BTreeMap<u64, Arc<Stored>>,
    bytes: usize,
    next_sequence: u64,
    seen_ids: HashMap<String, u64>,
    seen_order: VecDeque<(Instant, String)>,
    consumers: HashMap<String, ConsumerState>,
}

impl StreamState {
    fn first_sequence(&self) -> u64 {
        self.messages
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_sequence)
    }

    fn expire_duplicates(&mut self, now: Instant, window: Duration) {
        while let Some((seen, _)) = self.seen_order.front() {
            if now.duration_since(*seen) < window {
                break;
            }
            if let Some((_, id)) = self.seen_order.pop_front() {
                self.seen_ids.remove(&id);
            }
        }
    }

    /// Drops messages every consumer has acknowledged.
    fn trim(&mut self) {
        let Some(floor) = self.consumers.values().map(ConsumerState::floor).min() else {
            return;
        };
        while let Some(entry) = self.messages.first_entry() {
            if *entry.key() >= floor {
                break;
            }
            let stored = entry.remove();
            self.bytes -= stored.payload.len();
        }
    }
}

#[derive(Debug)]
struct Stream {
    state: Mutex<StreamState>,
    /// Bumped on every change a waiter may care about: a new message, an ack, a nak.
    watch: watch::Sender<u64>,
}

impl Stream {
    fn new() -> Self {
        Self {
            state: Mutex::new(StreamState {
                next_sequence: 1,
                ..StreamState::default()
            }),
            watch: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, StreamState> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than stopping the bus would, so poisoning is ignored.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn changed(&self) {
        self.watch
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    fn settle(&self, consumer: &str, sequence: u64, outcome: Settle) {
        let mut state = self.lock();
        let Some(consumer_state) = state.consumers.get_mut(consumer) else {
            return;
        };
        match outcome {
            Settle::Done => {
                consumer_state.pending.remove(&sequence);
            }
            Settle::Retry(delay) => {
                if let Some(pending) = consumer_state.pending.get_mut(&sequence) {
                    pending.due = Instant::now() + delay;
                }
            }
            Settle::Extend => {
                let ack_wait = consumer_state.ack_wait;
                if let Some(pending) = consumer_state.pending.get_mut(&sequence) {
                    pending.due = Instant::now() + ack_wait;
                }
            }
        }
        state.trim();
        drop(state);
        self.changed();
    }
}

enum Settle {
    Done,
    Retry(Duration),
    Extend,
}

struct InProcessSubscription {
    bus: InProcessBus,
    stream: Arc<Stream>,
    consumer: Arc<str>,
    consumer_label: Arc<str>,
    changes: Option<watch::Receiver<u64>>,
}

enum Next {
    Deliver(Delivery),
    WaitUntil(Option<Instant>),
}

impl InProcessSubscription {
    fn poll_state(&self) -> Next {
        let now = Instant::now();
        let mut state = self.stream.lock();
        let StreamState {
            messages,
            consumers,
            ..
        } = &mut *state;
        let Some(consumer) = consumers.get_mut(self.consumer.as_ref()) else {
            return Next::WaitUntil(None);
        };
        let ack_wait = consumer.ack_wait;
        // Redeliveries first, oldest sequence first: what timed out or was nak'ed.
        let due = consumer
            .pending
            .iter_mut()
            .find(|(_, pending)| pending.due <= now);
        if let Some((&sequence, pending)) = due {
            pending.deliveries += 1;
            pending.due = now + ack_wait;
            let deliveries = pending.deliveries;
            if let Some(stored) = messages.get(&sequence) {
                return Next::Deliver(self.delivery(stored, sequence, deliveries));
            }
        }
        // As JetStream's max_ack_pending: a message waiting for its redelivery still counts, so
        // a consumer of one message at a time gets them strictly in order.
        if consumer.pending.len() < consumer.max_in_flight {
            let from = consumer.cursor;
            let next = messages
                .range(from..)
                .find(|(_, stored)| consumer.wants(&stored.subject));
            match next {
                Some((&sequence, stored)) => {
                    consumer.cursor = sequence + 1;
                    consumer.pending.insert(
                        sequence,
                        Pending {
                            deliveries: 1,
                            due: now + ack_wait,
                        },
                    );
                    return Next::Deliver(self.delivery(stored, sequence, 1));
                }
                None => {
                    // Nothing for us up to the end of the stream: skip what we do not want so
                    // that retention is not held back by other tenants' messages.
                    consumer.cursor = messages
                        .last_key_value()
                        .map_or(from, |(&last, _)| last + 1)
                        .max(from);
                }
            }
        }
        let wake = consumer.pending.values().map(|p| p.due).min();
        state.trim();
        Next::WaitUntil(wake)
    }

    fn delivery(&self, stored: &Stored, sequence: u64, deliveries: u32) -> Delivery {
        Delivery {
            subject: stored.subject.clone(),
            id: Some(stored.id.clone()),
            headers: stored.headers.clone(),
            payload: stored.payload.clone(),
            deliveries,
            sequence,
            consumer: Arc::clone(&self.consumer),
            consumer_label: Arc::clone(&self.consumer_label),
            acker: Box::new(InProcessAcker {
                bus: self.bus.clone(),
                stream: Arc::clone(&self.stream),
                consumer: Arc::clone(&self.consumer),
                sequence,
            }),
        }
    }
}

#[async_trait]
impl RawSubscription for InProcessSubscription {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        if self.changes.is_none() {
            self.changes = Some(self.stream.watch.subscribe());
        }
        loop {
            // Mark the current version seen before looking, so no change is missed.
            if let Some(changes) = self.changes.as_mut() {
                changes.borrow_and_update();
            }
            match self.poll_state() {
                Next::Deliver(delivery) => return Some(Ok(delivery)),
                Next::WaitUntil(wake) => {
                    let changes = self.changes.as_mut()?;
                    let changed = async {
                        if changes.changed().await.is_err() {
                            // The stream is gone; sleep forever rather than spin.
                            futures::future::pending::<()>().await;
                        }
                    };
                    match wake {
                        Some(at) => {
                            let _ = tokio::time::timeout_at(at, changed).await;
                        }
                        None => changed.await,
                    }
                }
            }
        }
    }
}

struct InProcessAcker {
    bus: InProcessBus,
    stream: Arc<Stream>,
    consumer: Arc<str>,
    sequence: u64,
}

#[async_trait]
impl Acker for InProcessAcker {
    async fn ack(&self) -> Result<()> {
        self.stream
            .settle(&self.consumer, self.sequence, Settle::Done);
        Ok(())
    }

    async fn nak(&self, delay: Option<Duration>) -> Result<()> {
        self.stream.settle(
            &self.consumer,
            self.sequence,
            Settle::Retry(delay.unwrap_or_default()),
        );
        Ok(())
    }

    async fn in_progress(&self) -> Result<()> {
        self.stream
            .settle(&self.consumer, self.sequence, Settle::Extend);
        Ok(())
    }

    async fn dead_letter(&self, message: OutgoingMessage) -> Result<()> {
        self.bus.publish_durable(message).await?;
        self.stream
            .settle(&self.consumer, self.sequence, Settle::Done);
        Ok(())
    }
}
