use serde::{Deserialize, Serialize};

use crate::{Event, Payload, Stage, TenantId};

/// The events of one event batch that feed correlations owned by one partition: what detect's
/// first stage sends to its second on `vigil.<tenant>.correlate.<partition>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelationBatch {
    /// The tenant of every event in the batch.
    pub tenant: TenantId,
    /// The partition of the tenant's correlation state the batch is for.
    pub partition: u32,
    /// The message id of the event batch the events came from: with the partition, the
    /// batch's own id, and what the partition's state remembers as applied.
    pub source: String,
    /// The events, in their batch's order.
    pub events: Vec<CorrelationEvent>,
}

/// One event and what it feeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelationEvent {
    /// The event (correlation reads its group-by and aggregated fields, alerts its entities).
    pub event: Event,
    /// The detections that count, each for one correlation chain.
    pub feeds: Vec<CorrelationFeed>,
}

/// A detection rule's hit on an event, as one chain of correlation rules counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrelationFeed {
    /// Whose rules: the MSSP's global rules or the tenant's own.
    pub scope: RuleScope,
    /// The chain: the smallest id of its correlation rules.
    pub chain: String,
    /// The detection rule's id.
    pub rule: String,
}

/// Which of a tenant's rule sets a rule belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleScope {
    /// The MSSP's rules, for every tenant.
    Global,
    /// The tenant's own rules.
    Own,
}

impl CorrelationBatch {
    /// The message id: the source batch's id and the partition, the same on every redelivery
    /// of the source batch.
    pub fn message_id(&self) -> String {
        format!("corr.{}.{}", self.source, self.partition)
    }

    /// Checks that every event belongs to the batch's tenant.
    pub fn validate(&self) -> Result<(), String> {
        match self.events.iter().find(|e| e.event.tenant != self.tenant) {
            Some(item) => Err(format!(
                "event {} belongs to tenant {} inside a correlation batch of tenant {}",
                item.event.id, item.event.tenant, self.tenant
            )),
            None => Ok(()),
        }
    }
}

impl Payload for CorrelationBatch {
    const KIND: &'static str = "correlation-batch";
    const VERSION: u16 = 1;
    const STAGE: Stage = Stage::Correlate;

    fn tenant(&self) -> Option<&TenantId> {
        Some(&self.tenant)
    }

    fn partition(&self) -> Option<u32> {
        Some(self.partition)
    }
}
