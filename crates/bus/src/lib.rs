//! Vigil's message bus.
//!
//! One trait, [`Bus`], with two implementations that keep the same semantics:
//!
//! - [`jetstream::JetStreamBus`] on NATS JetStream, for production: one stream per stage
//!   (`VIGIL_EVENTS` on `vigil.*.events`, ...), durable pull consumers, `Nats-Msg-Id`
//!   deduplication, pipelined publishing with a bounded window of unacknowledged publishes;
//! - [`inprocess::InProcessBus`], for `vigil run` on embedded defaults: bounded in-memory streams
//!   with the same acknowledgement, redelivery, deduplication and dead-letter rules.
//!
//! Delivery is at least once. A consumer acknowledges a message only after its output is durably
//! published or stored; every message carries a stable id (the `Nats-Msg-Id`), so a redelivery is
//! recognized downstream. A message that cannot be decoded, or that was delivered more than
//! `max_deliveries` times without an acknowledgement, goes to the tenant's dead-letter subject
//! (`vigil.<tenant>.deadletter`) with the reason in the `Vigil-Dead-Letter-Reason` header.
//!
//! W3C trace context rides in the `traceparent` and `tracestate` headers.

mod error;
mod headers;
pub mod inprocess;
pub mod jetstream;
mod message;
mod metrics_names;
mod subject;
mod subscription;
pub mod trace;

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use vigil_schema::{Stage, TenantId};

pub use error::{BusError, Result};
pub use headers::{
    HEADER_CONSUMER, HEADER_DEAD_LETTER_REASON, HEADER_DELIVERIES, HEADER_ENCODING,
    HEADER_ORIGINAL_SUBJECT, HEADER_SCHEMA, Headers,
};
pub use message::{Delivery, MAX_DECODED_PAYLOAD, OutgoingMessage, PublishReceipt, decode_payload};
pub use subject::Subject;
pub use subscription::{Acker, RawSubscription, Subscription};

/// Resolves once the bus has durably accepted a published message.
pub type AckFuture = BoxFuture<'static, Result<PublishReceipt>>;

/// The bus every service publishes to and consumes from.
#[async_trait]
pub trait Bus: Send + Sync + Debug {
    /// Sends `message` and returns a future that resolves once the bus has durably accepted it.
    ///
    /// Waits while the window of unacknowledged publishes, or the stream's capacity, is full:
    /// that is the backpressure that keeps memory bounded. Awaiting the returned future later
    /// lets a caller pipeline many publishes.
    async fn publish(&self, message: OutgoingMessage) -> Result<AckFuture>;

    /// Sends `message` and waits until the bus has durably accepted it.
    async fn publish_durable(&self, message: OutgoingMessage) -> Result<PublishReceipt> {
        self.publish(message).await?.await
    }

    /// Opens (creating if needed) the durable consumer described by `spec`. Several
    /// subscriptions with the same consumer name share its messages.
    async fn subscribe(&self, spec: ConsumerSpec) -> Result<Subscription>;

    /// Creates the durable consumer if it does not exist, without consuming from it, so that
    /// messages published before its service starts are kept for it.
    async fn ensure_consumer(&self, spec: &ConsumerSpec) -> Result<()>;

    /// Deletes the durable consumer, so the stream stops keeping messages for it; `false` when
    /// there was none. Used when a tenant's own service goes away (offboarding).
    async fn remove_consumer(&self, spec: &ConsumerSpec) -> Result<bool>;

    /// Checks that the bus is reachable and its streams exist; used by `/readyz`.
    async fn check(&self) -> Result<()>;

    /// Sends out everything buffered (acknowledgements included); called on shutdown.
    async fn flush(&self) -> Result<()>;

    /// `jetstream` or `in-process`, for logs and metrics.
    fn kind(&self) -> &'static str;
}

/// A durable consumer: which stage, which tenants, and its delivery rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// Durable name, shared by every instance of one service (e.g. `detect`).
    pub name: String,
    /// The stage consumed.
    pub stage: Stage,
    /// One tenant's subject, or every tenant's (`vigil.*.<stage>`) when `None`.
    pub tenant: Option<TenantId>,
    /// On a partitioned stage, one partition's subjects, or every partition's when `None`.
    pub partition: Option<u32>,
    /// Redeliver a message not acknowledged within this time.
    pub ack_wait: Duration,
    /// Dead-letter a message after this many deliveries without acknowledgement.
    pub max_deliveries: u32,
    /// At most this many messages delivered and not yet acknowledged (per consumer).
    pub max_in_flight: usize,
}

impl ConsumerSpec {
    /// A consumer with the default delivery rules: 30 s ack wait, 5 deliveries, 1,024 in
    /// flight.
    pub fn new(name: impl Into<String>, stage: Stage, tenant: Option<TenantId>) -> Self {
        Self {
            name: name.into(),
            stage,
            tenant,
            partition: None,
            ack_wait: Duration::from_secs(30),
            max_deliveries: 5,
            max_in_flight: 1024,
        }
    }

    /// Checks the spec; names must be usable as JetStream durable names.
    pub fn validate(&self) -> Result<()> {
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name {
            return Err(BusError::InvalidConsumer(format!(
                "consumer name {:?} must be 1 to 64 characters of letters, digits, '-' and '_'",
                self.name
            )));
        }
        if self.partition.is_some() && !self.stage.is_partitioned() {
            return Err(BusError::InvalidConsumer(format!(
                "consumer {}: stage {} has no partitions",
                self.name, self.stage
            )));
        }
        if self.max_deliveries == 0 || self.max_in_flight == 0 || self.ack_wait.is_zero() {
            return Err(BusError::InvalidConsumer(format!(
                "consumer {}: ack_wait, max_deliveries and max_in_flight must be greater than zero",
                self.name
            )));
        }
        Ok(())
    }

    /// The subject filter: `vigil.<tenant>.<stage>` or `vigil.*.<stage>`; on a partitioned
    /// stage followed by `.<partition>` or `.*`.
    pub fn filter_subject(&self) -> String {
        let tenant = self.tenant.as_ref().map_or("*", TenantId::as_str);
        let mut filter = format!("vigil.{tenant}.{}", self.stage);
        if self.stage.is_partitioned() {
            match self.partition {
                Some(partition) => filter.push_str(&format!(".{partition}")),
                None => filter.push_str(".*"),
            }
        }
        filter
    }

    /// The durable name on the server: the tenant scope (and partition) is part of it, so that
    /// one service's consumer for tenant `a` and its consumer for all tenants never share
    /// positions.
    pub fn durable_name(&self) -> String {
        let tenant = self.tenant.as_ref().map_or("all", TenantId::as_str);
        match self.partition {
            Some(partition) => format!("{}-{tenant}-p{partition}", self.name),
            None => format!("{}-{tenant}", self.name),
        }
    }
}

/// The JetStream stream name of a stage: `VIGIL_EVENTS`, ...
pub fn stream_name(stage: Stage) -> String {
    format!("VIGIL_{}", stage.as_str().to_ascii_uppercase())
}

/// The subjects of a stage's stream: `vigil.*.<stage>`, `vigil.*.<stage>.*` when partitioned.
pub fn stream_subject(stage: Stage) -> String {
    if stage.is_partitioned() {
        format!("vigil.*.{stage}.*")
    } else {
        format!("vigil.*.{stage}")
    }
}
