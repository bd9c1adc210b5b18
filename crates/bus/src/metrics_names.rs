//! Metric names of the bus. Labels: `stage` (bounded by [`vigil_schema::Stage`]), `consumer`
//! (bounded by the services configured) and `reason` (bounded by [`crate::message`]'s reasons).

pub(crate) const PUBLISHED: &str = "vigil_bus_published_messages_total";
pub(crate) const PUBLISH_DUPLICATES: &str = "vigil_bus_publish_duplicates_total";
pub(crate) const PUBLISH_ERRORS: &str = "vigil_bus_publish_errors_total";
pub(crate) const DELIVERED: &str = "vigil_bus_delivered_messages_total";
pub(crate) const REDELIVERED: &str = "vigil_bus_redelivered_messages_total";
pub(crate) const DEAD_LETTERS: &str = "vigil_bus_dead_letters_total";
pub(crate) const DEAD_LETTER_FAILURES: &str = "vigil_bus_dead_letter_failures_total";

/// One counter per stage, registered once so that the hot path only increments.
#[derive(Clone)]
pub(crate) struct StageCounters {
    counters: [metrics::Counter; vigil_schema::Stage::ALL.len()],
}

impl StageCounters {
    pub(crate) fn new(name: &'static str) -> Self {
        Self {
            counters: vigil_schema::Stage::ALL
                .map(|stage| metrics::counter!(name, "stage" => stage.as_str())),
        }
    }

    pub(crate) fn get(&self, stage: vigil_schema::Stage) -> &metrics::Counter {
        let index = vigil_schema::Stage::ALL
            .iter()
            .position(|s| *s == stage)
            .unwrap_or_default();
        &self.counters[index]
    }
}

impl std::fmt::Debug for StageCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StageCounters")
    }
}
