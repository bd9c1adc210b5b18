use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use vigil_schema::Payload;

use crate::metrics_names::{DEAD_LETTER_FAILURES, DELIVERED, REDELIVERED};
use crate::{ConsumerSpec, Delivery, OutgoingMessage, Result};

/// Settles one delivered message; each bus implementation provides its own.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Processed: never deliver again.
    async fn ack(&self) -> Result<()>;
    /// Not processed: deliver again after `delay`, or at once.
    async fn nak(&self, delay: Option<Duration>) -> Result<()>;
    /// Still working: restart the ack wait.
    async fn in_progress(&self) -> Result<()>;
    /// Durably publish `message` to the dead-letter subject, then never deliver the original
    /// again.
    async fn dead_letter(&self, message: OutgoingMessage) -> Result<()>;
}

fn dead_letter_failed(spec: &ConsumerSpec, err: &crate::BusError) {
    metrics::counter!(DEAD_LETTER_FAILURES, "stage" => spec.stage.as_str(), "consumer" => spec.name.clone())
        .increment(1);
    tracing::debug!(consumer = %spec.name, error = %err, "dead-lettering failed, the message will be redelivered");
}

/// The implementation side of a subscription: yields deliveries in order.
#[async_trait]
pub trait RawSubscription: Send {
    /// The next delivery; `None` once the bus is closed.
    async fn next(&mut self) -> Option<Result<Delivery>>;
}

/// A durable consumer's stream of deliveries.
///
/// Applies the rules both implementations share: a message delivered more than the consumer's
/// `max_deliveries` times goes to the dead-letter subject instead of the caller, and
/// [`Subscription::next_payload`] dead-letters what does not decode.
pub struct Subscription {
    raw: Box<dyn RawSubscription>,
    spec: ConsumerSpec,
    delivered: metrics::Counter,
    redelivered: metrics::Counter,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("spec", &self.spec)
            .finish()
    }
}

impl Subscription {
    /// Wraps an implementation's raw subscription.
    pub fn new(spec: ConsumerSpec, raw: Box<dyn RawSubscription>) -> Self {
        let stage = spec.stage.as_str();
        let delivered =
            metrics::counter!(DELIVERED, "stage" => stage, "consumer" => spec.name.clone());
        let redelivered =
            metrics::counter!(REDELIVERED, "stage" => stage, "consumer" => spec.name.clone());
        Self {
            raw,
            spec,
            delivered,
            redelivered,
        }
    }

    /// The consumer this subscription reads.
    pub fn spec(&self) -> &ConsumerSpec {
        &self.spec
    }

    /// The next delivery; `None` once the bus is closed.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            let delivery = match self.raw.next().await? {
                Ok(delivery) => delivery,
                Err(err) => return Some(Err(err)),
            };
            if delivery.deliveries > self.spec.max_deliveries {
                let reason = format!(
                    "not acknowledged after {} deliveries to consumer {}",
                    self.spec.max_deliveries, self.spec.name
                );
                if let Err(err) = delivery.dead_letter("max_deliveries", &reason).await {
                    dead_letter_failed(&self.spec, &err);
                }
                continue;
            }
            self.delivered.increment(1);
            if delivery.deliveries > 1 {
                self.redelivered.increment(1);
            }
            return Some(Ok(delivery));
        }
    }

    /// The next delivery decoded as `T`. A payload that does not decode, or whose tenant is not
    /// its subject's, goes to the dead-letter subject with the reason, and the next one is read.
    pub async fn next_payload<T: Payload>(&mut self) -> Option<Result<(T, Delivery)>> {
        loop {
            let delivery = match self.next().await? {
                Ok(delivery) => delivery,
                Err(err) => return Some(Err(err)),
            };
            match delivery.decode::<T>() {
                Ok(value) => return Some(Ok((value, delivery))),
                Err(err) => {
                    let reason = err.to_string();
                    tracing::debug!(consumer = %self.spec.name, reason = %reason, "undecodable message dead-lettered");
                    if let Err(err) = delivery.dead_letter("decode", &reason).await {
                        dead_letter_failed(&self.spec, &err);
                    }
                }
            }
        }
    }
}
