//! Metric names of the bus. Labels: `stage` (bounded by [`vigil_schema::Stage`]), `consumer`
//! (bounded by the services configured) and `reason` (bounded by [`crate::message`]'s reasons).

pub(crate) const PUBLISHED: &str = "vigil_bus_published_messages_total";
pub(crate) const PUBLISH_DUPLICATES: &str = "vigil_bus_publish_duplicates_total";
pub(crate) const PUBLISH_ERRORS: &str = "vigil_bus_publish_errors_total";
pub(crate) const DELIVERED: &str = "vigil_bus_delivered_messages_total";
pub(crate) const REDELIVERED: &str = "vigil_bus_redelivered_messages_total";
pub(crate) const DEAD_LETTERS: &str = "vigil_bus_dead_letters_total";
pub(crate) const DEAD_LETTER_FAILURES: &str = "vigil_bus_dead_letter_failures_total";
