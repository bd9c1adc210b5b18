//! The alert persister: stores every tenant's `alerts` stage, idempotently, and acknowledges a
//! message only after the transaction holding its row has committed.

use std::collections::BTreeMap;
use std::time::Duration;

use vigil_bus::{ConsumerSpec, Delivery};
use vigil_runtime::ServiceContext;
use vigil_schema::{Alert, Stage, TenantId};

use crate::ControlError;

/// The durable consumer name shared by every persister process.
pub const CONSUMER: &str = "control-alerts";

/// How long a partly filled batch waits for more alerts before it is stored.
const LINGER: Duration = Duration::from_millis(20);

/// Batches being stored at once: the next batch is read and decoded while the previous one
/// commits.
const IN_FLIGHT: usize = 2;

/// Consumes `vigil.*.alerts` until shutdown, storing up to `batch` alerts per transaction.
pub async fn persist_alerts(context: &ServiceContext, batch: usize) -> Result<(), ControlError> {
    let mut spec = ConsumerSpec::new(CONSUMER, Stage::Alerts, None);
    spec.max_in_flight = spec.max_in_flight.max(batch * 2);
    let mut subscription = context.bus.subscribe(spec).await?;
    let mut pending: Vec<(Alert, Delivery)> = Vec::with_capacity(batch);
    let mut storing = tokio::task::JoinSet::new();
    loop {
        let next = if pending.is_empty() {
            tokio::select! {
                biased;
                () = context.shutdown.cancelled() => break,
                next = subscription.next_payload::<Alert>() => Some(next),
            }
        } else {
            tokio::select! {
                biased;
                () = context.shutdown.cancelled() => break,
                next = subscription.next_payload::<Alert>() => Some(next),
                () = tokio::time::sleep(LINGER) => None,
            }
        };
        match next {
            Some(Some(Ok(item))) => {
                pending.push(item);
                if pending.len() < batch {
                    continue;
                }
            }
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
        storing.spawn(store_batch(context.clone(), std::mem::take(&mut pending)));
    }
    // Batches already being stored finish and are acknowledged.
    while storing.join_next().await.is_some() {}
    // Unacknowledged alerts are redelivered to the next persister.
    tracing::debug!(unstored = pending.len(), "alert persister stopped");
    Ok(())
}

async fn store_batch(context: ServiceContext, batch: Vec<(Alert, Delivery)>) {
    let mut by_tenant: BTreeMap<TenantId, Vec<(Alert, Delivery)>> = BTreeMap::new();
    for (alert, delivery) in batch {
        // The bus already refuses payloads whose tenant differs from the subject's; checking
        // again here keeps a stored row from ever crossing tenants.
        if alert.tenant != delivery.subject.tenant {
            let reason = format!(
                "alert of tenant {} on the subject of tenant {}",
                alert.tenant, delivery.subject.tenant
            );
            let _ = delivery.dead_letter("persist", &reason).await;
            continue;
        }
        by_tenant
            .entry(alert.tenant.clone())
            .or_default()
            .push((alert, delivery));
    }
    // One lock order for every batch (tenant, then id): two batches in flight that hold the
    // same redelivered alert wait for each other instead of deadlocking.
    for items in by_tenant.values_mut() {
        items.sort_by_key(|(alert, _)| alert.id);
    }
    let result = async {
        let tx = context.store.begin().await?;
        let mut stored = 0;
        for (tenant, items) in &by_tenant {
            let alerts: Vec<Alert> = items.iter().map(|(alert, _)| alert.clone()).collect();
            stored += tx.tenant(tenant).insert_alerts(&alerts).await?;
        }
        tx.commit().await?;
        Ok::<u64, vigil_store::StoreError>(stored)
    }
    .await;
    match result {
        Ok(stored) => {
            let received: u64 = by_tenant.values().map(|items| items.len() as u64).sum();
            metrics::counter!(crate::metric_names::ALERTS_STORED).increment(stored);
            metrics::counter!(crate::metric_names::ALERTS_DUPLICATE)
                .increment(received.saturating_sub(stored));
            for (_, items) in by_tenant {
                for (_, delivery) in items {
                    if let Err(err) = delivery.ack().await {
                        // Redelivered later and skipped as already stored.
                        tracing::debug!(error = %err, "acknowledging a stored alert failed");
                    }
                }
            }
        }
        Err(err) => {
            metrics::counter!(crate::metric_names::ALERT_BATCH_FAILURES).increment(1);
            tracing::warn!(error = %err, "storing alerts failed, they will be redelivered");
            for (_, items) in by_tenant {
                for (_, delivery) in items {
                    let _ = delivery.nak(Some(Duration::from_secs(1))).await;
                }
            }
        }
    }
}
