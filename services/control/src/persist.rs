//! The alert persister: stores every tenant's `alerts` stage, idempotently, and acknowledges a
//! message only after the transaction holding its row has committed.

use std::collections::BTreeMap;
use std::time::Duration;

use vigil_bus::{ConsumerSpec, Delivery, HEADER_SCHEMA};
use vigil_runtime::ServiceContext;
use vigil_schema::{Alert, AlertBatch, Payload, Stage, TenantId};

use crate::ControlError;

/// The durable consumer name shared by every persister process.
pub const CONSUMER: &str = "control-alerts";

/// How long a partly filled batch waits for more alerts before it is stored.
const LINGER: Duration = Duration::from_millis(20);

/// Batches being stored at once: the next batch is read and decoded while the previous one
/// commits.
const IN_FLIGHT: usize = 2;

/// Consumes `vigil.*.alerts` until shutdown, storing up to about `batch` alerts per
/// transaction (a message's alerts are never split between transactions).
pub async fn persist_alerts(context: &ServiceContext, batch: usize) -> Result<(), ControlError> {
    let mut spec = ConsumerSpec::new(CONSUMER, Stage::Alerts, None);
    // Enough messages to fill a transaction even when each holds one alert.
    spec.max_in_flight = spec.max_in_flight.max(batch * 2);
    let mut subscription = context.bus.subscribe(spec).await?;
    let mut pending: Vec<(Vec<Alert>, Delivery)> = Vec::new();
    let mut pending_alerts = 0;
    let mut storing = tokio::task::JoinSet::new();
    loop {
        let next = if pending.is_empty() {
            tokio::select! {
                biased;
                () = context.shutdown.cancelled() => break,
                next = subscription.next() => Some(next),
            }
        } else {
            tokio::select! {
                biased;
                () = context.shutdown.cancelled() => break,
                next = subscription.next() => Some(next),
                () = tokio::time::sleep(LINGER) => None,
            }
        };
        match next {
            Some(Some(Ok(delivery))) => match decode_alerts(&delivery) {
                Ok(alerts) => {
                    pending_alerts += alerts.len();
                    pending.push((alerts, delivery));
                    if pending_alerts < batch {
                        continue;
                    }
                }
                Err(reason) => {
                    tracing::debug!(%reason, "undecodable alert message dead-lettered");
                    if let Err(err) = delivery.dead_letter("decode", &reason).await {
                        tracing::warn!(error = %err, "dead-lettering an alert message failed");
                    }
                    continue;
                }
            },
            Some(Some(Err(err))) => {
                tracing::debug!(error = %err, "alert consumer error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Some(None) => return Err(ControlError::Bus(vigil_bus::BusError::Closed)),
            None => {}
        }
        if storing.len() >= IN_FLIGHT {
            storing.join_next().await;
        }
        pending_alerts = 0;
        storing.spawn(store_batch(context.clone(), std::mem::take(&mut pending)));
    }
    // Batches already being stored finish and are acknowledged.
    while storing.join_next().await.is_some() {}
    // Unacknowledged alerts are redelivered to the next persister.
    tracing::debug!(unstored = pending.len(), "alert persister stopped");
    Ok(())
}

/// The alerts of one message: an `alert-batch/1`, what detect publishes (ADR 0013), or a single
/// `alert/1`, what releases before it published, read for one more release (ADR 0002). A batch
/// holding another tenant's alert is refused whole.
fn decode_alerts(delivery: &Delivery) -> Result<Vec<Alert>, String> {
    if delivery.headers.get(HEADER_SCHEMA) == Some(AlertBatch::schema_header().as_str()) {
        let batch = delivery
            .decode::<AlertBatch>()
            .map_err(|err| err.to_string())?;
        batch.validate()?;
        Ok(batch.alerts)
    } else {
        let alert = delivery.decode::<Alert>().map_err(|err| err.to_string())?;
        Ok(vec![alert])
    }
}

async fn store_batch(context: ServiceContext, batch: Vec<(Vec<Alert>, Delivery)>) {
    let mut by_tenant: BTreeMap<TenantId, (Vec<Alert>, Vec<Delivery>)> = BTreeMap::new();
    for (alerts, delivery) in batch {
        // The bus refuses a payload whose tenant differs from the subject's, and
        // `decode_alerts` a batch holding another tenant's alert; checking again here keeps a
        // stored row from ever crossing tenants.
        if let Some(alert) = alerts.iter().find(|a| a.tenant != delivery.subject.tenant) {
            let reason = format!(
                "alert of tenant {} on the subject of tenant {}",
                alert.tenant, delivery.subject.tenant
            );
            let _ = delivery.dead_letter("persist", &reason).await;
            continue;
        }
        let (tenant_alerts, deliveries) = by_tenant
            .entry(delivery.subject.tenant.clone())
            .or_default();
        tenant_alerts.extend(alerts);
        deliveries.push(delivery);
    }
    // One lock order for every batch (tenant, then id): two batches in flight that hold the
    // same redelivered alert wait for each other instead of deadlocking. An alert twice in one
    // transaction (two messages of a redone batch) is stored once.
    let mut received = 0;
    for (alerts, _) in by_tenant.values_mut() {
        received += alerts.len() as u64;
        alerts.sort_by_key(|alert| alert.id);
        alerts.dedup_by_key(|alert| alert.id);
    }
    let result = async {
        let tx = context.store.begin().await?;
        let mut stored = 0;
        for (tenant, (alerts, _)) in &by_tenant {
            stored += tx.tenant(tenant).insert_alerts(alerts).await?;
        }
        tx.commit().await?;
        Ok::<u64, vigil_store::StoreError>(stored)
    }
    .await;
    let deliveries = by_tenant
        .into_values()
        .flat_map(|(_, deliveries)| deliveries);
    match result {
        Ok(stored) => {
            metrics::counter!(crate::metric_names::ALERTS_STORED).increment(stored);
            metrics::counter!(crate::metric_names::ALERTS_DUPLICATE)
                .increment(received.saturating_sub(stored));
            for delivery in deliveries {
                if let Err(err) = delivery.ack().await {
                    // Redelivered later and skipped as already stored.
                    tracing::debug!(error = %err, "acknowledging stored alerts failed");
                }
            }
        }
        Err(err) => {
            metrics::counter!(crate::metric_names::ALERT_BATCH_FAILURES).increment(1);
            tracing::warn!(error = %err, "storing alerts failed, they will be redelivered");
            for delivery in deliveries {
                let _ = delivery.nak(Some(Duration::from_secs(1))).await;
            }
        }
    }
}
