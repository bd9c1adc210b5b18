//! The consume loop every service uses: one message at a time, acknowledged only after the
//! handler finished with it, and a shutdown that never acknowledges unfinished work.

use std::time::Duration;

use async_trait::async_trait;
use vigil_bus::{BusError, ConsumerSpec, Delivery};
use vigil_schema::Payload;

use crate::ServiceContext;

/// What a handler decided about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Processed, and its output is durable: acknowledge.
    Done,
    /// Not processed now (a dependency is down): deliver again, after the delay when given.
    Retry(Option<Duration>),
    /// Can never be processed: move to the dead-letter subject with this reason.
    Reject(String),
}

/// Processes one decoded payload.
#[async_trait]
pub trait Handler<T: Payload + Send + 'static>: Send + Sync {
    /// Handles `payload`; `delivery` gives its subject (and so its tenant), id and headers.
    async fn handle(&self, payload: T, delivery: &Delivery) -> Outcome;
}

/// Consumes `spec` until the context's shutdown token is cancelled.
///
/// Each message is decoded as `T` (undecodable ones are dead-lettered by the bus), handled in a
/// span that is the child of the publisher's, then settled by the handler's [`Outcome`]. On
/// shutdown the loop stops taking messages; a message already being handled is finished and
/// settled, everything else stays unacknowledged and is redelivered to the next process.
pub async fn consume<T, H>(
    context: &ServiceContext,
    spec: ConsumerSpec,
    handler: &H,
) -> Result<(), BusError>
where
    T: Payload + Send + 'static,
    H: Handler<T>,
{
    let consumer = spec.name.clone();
    let mut subscription = context.bus.subscribe(spec).await?;
    loop {
        let next = tokio::select! {
            biased;
            () = context.shutdown.cancelled() => break,
            next = subscription.next_payload::<T>() => next,
        };
        let (payload, delivery) = match next {
            Some(Ok(item)) => item,
            Some(Err(err)) => {
                // Transient (missed heartbeats, a reconnect): the subscription recovers.
                tracing::debug!(%consumer, error = %err, "consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            None => return Err(BusError::Closed),
        };
        let span = tracing::debug_span!("consume", %consumer, tenant = %delivery.subject.tenant);
        delivery.follow(&span);
        let outcome =
            tracing::Instrument::instrument(handler.handle(payload, &delivery), span).await;
        let settled = match outcome {
            Outcome::Done => delivery.ack().await,
            Outcome::Retry(delay) => delivery.nak(delay).await,
            Outcome::Reject(reason) => delivery.dead_letter("handler", &reason).await,
        };
        if let Err(err) = settled {
            // The message will be redelivered; the handler's output is idempotent by id.
            tracing::debug!(%consumer, error = %err, "settling a message failed");
        }
    }
    tracing::debug!(%consumer, "consumer stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::Mutex;

    use tokio::sync::Notify;
    use tokio_util::sync::CancellationToken;
    use vigil_bus::inprocess::InProcessBus;
    use vigil_bus::{Bus, OutgoingMessage};
    use vigil_schema::{Actor, AuditId, AuditOutcome, AuditRecord, Stage, TenantId};

    use super::*;
    use crate::Readiness;

    fn record(n: u8) -> AuditRecord {
        AuditRecord {
            id: AuditId::derive(&[&[n]]),
            tenant: Some(TenantId::new("acme").unwrap()),
            time: time::OffsetDateTime::UNIX_EPOCH,
            actor: Actor {
                subject: "test".into(),
                role: "analyst".into(),
            },
            action: format!("test.{n}"),
            target: None,
            outcome: AuditOutcome::Success,
            details: serde_json::Map::new(),
        }
    }

    /// Blocks on the first message until released; records what it finished.
    struct Recorder {
        release_first: Arc<Notify>,
        started: Arc<Notify>,
        finished: Arc<Mutex<Vec<String>>>,
        outcome_for_second: Outcome,
    }

    impl Recorder {
        fn new(outcome_for_second: Outcome) -> Self {
            Self {
                release_first: Arc::new(Notify::new()),
                started: Arc::new(Notify::new()),
                finished: Arc::new(Mutex::new(Vec::new())),
                outcome_for_second,
            }
        }
    }

    #[async_trait]
    impl Handler<AuditRecord> for Recorder {
        async fn handle(&self, payload: AuditRecord, _delivery: &Delivery) -> Outcome {
            if payload.action == "test.1" {
                self.started.notify_one();
                self.release_first.notified().await;
            }
            self.finished.lock().unwrap().push(payload.action.clone());
            if payload.action == "test.2" {
                return self.outcome_for_second.clone();
            }
            Outcome::Done
        }
    }

    async fn context(bus: Arc<InProcessBus>) -> (ServiceContext, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = vigil_store::Store::connect(&format!("sqlite://{}/v.db", dir.path().display()))
            .await
            .unwrap();
        let context = ServiceContext {
            bus,
            store,
            shutdown: CancellationToken::new(),
            readiness: Readiness::default(),
        };
        (context, dir)
    }

    fn spec() -> ConsumerSpec {
        let mut spec = ConsumerSpec::new("audit-test", Stage::Audit, None);
        spec.ack_wait = Duration::from_millis(300);
        spec
    }

    #[tokio::test]
    async fn shutdown_finishes_the_message_in_hand_and_acks_nothing_else() {
        let bus = Arc::new(InProcessBus::default());
        let (context, _dir) = context(Arc::clone(&bus)).await;
        bus.ensure_consumer(&spec()).await.unwrap();
        for n in 1..=3 {
            let message = OutgoingMessage::encode(&record(n), format!("m{n}")).unwrap();
            bus.publish_durable(message).await.unwrap();
        }
        let handler = Recorder::new(Outcome::Done);
        let started = Arc::clone(&handler.started);
        let release = Arc::clone(&handler.release_first);
        let shutdown = context.shutdown.clone();
        let consumer = async { consume::<AuditRecord, _>(&context, spec(), &handler).await };
        let stopper = async {
            started.notified().await;
            // SIGTERM arrives while message 1 is being handled.
            shutdown.cancel();
            release.notify_one();
        };
        let (result, ()) = tokio::join!(consumer, stopper);
        result.unwrap();
        assert_eq!(*handler.finished.lock().unwrap(), ["test.1"]);

        // The next process gets exactly what was not finished: 2 and 3, not 1.
        let mut next = bus.subscribe(spec()).await.unwrap();
        for expected in ["test.2", "test.3"] {
            let (record, delivery) = next.next_payload::<AuditRecord>().await.unwrap().unwrap();
            assert_eq!(record.action, expected);
            assert_eq!(delivery.deliveries, 1, "{expected} was delivered before");
            delivery.ack().await.unwrap();
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(600), next.next())
                .await
                .is_err(),
            "a finished message came back"
        );
    }

    #[tokio::test]
    async fn outcomes_settle_messages() {
        let bus = Arc::new(InProcessBus::default());
        let (context, _dir) = context(Arc::clone(&bus)).await;
        let mut dead = bus
            .subscribe(ConsumerSpec::new("dlq", Stage::Deadletter, None))
            .await
            .unwrap();
        bus.ensure_consumer(&spec()).await.unwrap();
        for n in 2..=3 {
            let message = OutgoingMessage::encode(&record(n), format!("m{n}")).unwrap();
            bus.publish_durable(message).await.unwrap();
        }
        let handler = Recorder::new(Outcome::Reject("rule set missing".into()));
        let shutdown = context.shutdown.clone();
        let consumer = async { consume::<AuditRecord, _>(&context, spec(), &handler).await };
        let stopper = async {
            let letter = dead.next().await.unwrap().unwrap();
            assert_eq!(
                letter.headers.get(vigil_bus::HEADER_DEAD_LETTER_REASON),
                Some("rule set missing")
            );
            letter.ack().await.unwrap();
            while handler.finished.lock().unwrap().len() < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            shutdown.cancel();
        };
        let (result, ()) = tokio::join!(consumer, stopper);
        result.unwrap();
        assert_eq!(*handler.finished.lock().unwrap(), ["test.2", "test.3"]);
    }
}
