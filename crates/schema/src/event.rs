use serde::{Deserialize, Serialize};

use crate::{Entities, EventId, Fields, Payload, Stage, TenantId, Timestamp};

/// The most bytes of a raw record kept on an event; longer records are cut at a character
/// boundary and flagged as truncated.
pub const RAW_RECORD_MAX_BYTES: usize = 64 * 1024;

/// One normalized event: the unit that flows from ingest to detection and baseline.
///
/// Built for detection speed: the source's own fields are a pre-flattened [`Fields`] map, so a
/// rule's field lookup is one hash and a binary search, with no parsing and no allocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Stable id; also the bus message id and the idempotency key downstream.
    pub id: EventId,
    /// The tenant the event belongs to, taken from verified credentials at ingest.
    pub tenant: TenantId,
    /// When the event happened, per the source; the receive time when the source gives none.
    #[serde(with = "time::serde::rfc3339")]
    pub event_time: Timestamp,
    /// When Vigil received the event.
    #[serde(with = "time::serde::rfc3339")]
    pub received_time: Timestamp,
    /// Where the event came from.
    pub source: Source,
    /// The Sigma logsource the event belongs to, as far as it was recognized.
    #[serde(default, skip_serializing_if = "Logsource::is_empty")]
    pub logsource: Logsource,
    /// Entities extracted at ingest.
    #[serde(default, skip_serializing_if = "Entities::is_empty")]
    pub entities: Entities,
    /// The source's own fields, flattened to dotted keys.
    #[serde(default)]
    pub fields: Fields,
    /// The raw record as received, bounded by [`RAW_RECORD_MAX_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawRecord>,
    /// Why no parser understood the record, when it entered as generic text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
}

impl Payload for Event {
    const KIND: &'static str = "event";
    const VERSION: u16 = 1;
    const STAGE: Stage = Stage::Events;

    fn tenant(&self) -> Option<&TenantId> {
        Some(&self.tenant)
    }
}

/// Several events of one tenant in one bus message, where batching pays for throughput.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// The tenant of every event in the batch.
    pub tenant: TenantId,
    /// The events, in arrival order.
    pub events: Vec<Event>,
}

impl EventBatch {
    /// A stable message id for the batch, derived from the ids of its events.
    pub fn message_id(&self) -> String {
        let ids: Vec<[u8; 16]> = self
            .events
            .iter()
            .map(|e| e.id.as_uuid().into_bytes())
            .collect();
        let parts: Vec<&[u8]> = ids.iter().map(|id| id.as_slice()).collect();
        EventId::derive(&parts).to_string()
    }

    /// Checks that every event belongs to the batch's tenant.
    pub fn validate(&self) -> Result<(), String> {
        match self.events.iter().find(|e| e.tenant != self.tenant) {
            Some(event) => Err(format!(
                "event {} belongs to tenant {} inside a batch of tenant {}",
                event.id, event.tenant, self.tenant
            )),
            None => Ok(()),
        }
    }
}

impl Payload for EventBatch {
    const KIND: &'static str = "event-batch";
    const VERSION: u16 = 1;
    const STAGE: Stage = Stage::Events;

    fn tenant(&self) -> Option<&TenantId> {
        Some(&self.tenant)
    }
}

/// An [`EventBatch`] as a consumer that never reads raw records (detection) decodes it: each
/// event's `raw` is skipped while it is parsed, neither allocated nor unescaped, and comes out
/// `None`. The same payload and schema header as [`EventBatch`]; everything else decodes and
/// is checked as there. It is for decoding: serialized, its events have no raw records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatchWithoutRaw {
    tenant: TenantId,
    events: Vec<EventWithoutRaw>,
}

/// [`Event`]'s fields but `raw`, with the same names and defaults; an unknown field (`raw`
/// here) is skipped by serde as it reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EventWithoutRaw {
    id: EventId,
    tenant: TenantId,
    #[serde(with = "time::serde::rfc3339")]
    event_time: Timestamp,
    #[serde(with = "time::serde::rfc3339")]
    received_time: Timestamp,
    source: Source,
    #[serde(default, skip_serializing_if = "Logsource::is_empty")]
    logsource: Logsource,
    #[serde(default, skip_serializing_if = "Entities::is_empty")]
    entities: Entities,
    #[serde(default)]
    fields: Fields,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parse_error: Option<String>,
}

impl EventBatchWithoutRaw {
    /// The batch, every event's `raw` `None`.
    pub fn into_batch(self) -> EventBatch {
        EventBatch {
            tenant: self.tenant,
            events: self
                .events
                .into_iter()
                .map(|event| Event {
                    id: event.id,
                    tenant: event.tenant,
                    event_time: event.event_time,
                    received_time: event.received_time,
                    source: event.source,
                    logsource: event.logsource,
                    entities: event.entities,
                    fields: event.fields,
                    raw: None,
                    parse_error: event.parse_error,
                })
                .collect(),
        }
    }
}

impl Payload for EventBatchWithoutRaw {
    const KIND: &'static str = EventBatch::KIND;
    const VERSION: u16 = EventBatch::VERSION;
    const STAGE: Stage = EventBatch::STAGE;

    fn tenant(&self) -> Option<&TenantId> {
        Some(&self.tenant)
    }
}

/// Where an event came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The protocol or path it arrived by: `syslog`, `http`, `hec`, `otlp`, `evtx`.
    pub transport: String,
    /// The shape the normalizer recognized, e.g. `windows-evtx-json`, `syslog-rfc5424`.
    pub format: String,
    /// The sending peer (address or shipper name) when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// A Sigma logsource: product, category and service, each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Logsource {
    /// e.g. `windows`, `linux`, `aws`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// e.g. `process_creation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// e.g. `security`, `sysmon`, `sshd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl Logsource {
    /// Whether nothing is known about the logsource.
    pub fn is_empty(&self) -> bool {
        self.product.is_none() && self.category.is_none() && self.service.is_none()
    }
}

/// The raw record, kept for investigation, bounded in size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRecord {
    /// The record's text, possibly cut.
    pub text: String,
    /// Whether `text` was cut to the bound.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The length of the original record in bytes.
    pub original_len: u64,
}

impl RawRecord {
    /// Keeps at most `max_bytes` of `text`, cut at a character boundary.
    pub fn bounded(text: &str, max_bytes: usize) -> Self {
        let original_len = text.len() as u64;
        if text.len() <= max_bytes {
            return Self {
                text: text.to_owned(),
                truncated: false,
                original_len,
            };
        }
        let mut cut = max_bytes;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        Self {
            text: text[..cut].to_owned(),
            truncated: true,
            original_len,
        }
    }

    /// Keeps at most [`RAW_RECORD_MAX_BYTES`] of `text`.
    pub fn new(text: &str) -> Self {
        Self::bounded(text, RAW_RECORD_MAX_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FieldValue;
    use time::macros::datetime;

    pub(crate) fn sample_event() -> Event {
        let tenant = TenantId::new("acme").unwrap();
        Event {
            id: EventId::derive(&[b"acme", b"record-1"]),
            tenant,
            event_time: datetime!(2026-11-27 06:00:00.123 UTC),
            received_time: datetime!(2026-11-27 06:00:01 UTC),
            source: Source {
                transport: "http".into(),
                format: "windows-evtx-json".into(),
                peer: Some("10.1.2.3".into()),
            },
            logsource: Logsource {
                product: Some("windows".into()),
                category: Some("process_creation".into()),
                service: Some("sysmon".into()),
            },
            entities: Entities {
                user: Some("ACME\\alice".into()),
                host: Some("ws-01".into()),
                src_ip: Some("10.1.2.3".parse().unwrap()),
                dst_ip: None,
                process: Some("C:\\Windows\\System32\\cmd.exe".into()),
            },
            fields: Fields::from_pairs([
                ("Image", FieldValue::from("C:\\Windows\\System32\\cmd.exe")),
                ("EventID", FieldValue::from(1)),
            ]),
            raw: Some(RawRecord::new("{\"EventID\":1}")),
            parse_error: None,
        }
    }

    #[test]
    fn event_round_trips() {
        let event = sample_event();
        let text = serde_json::to_string(&event).unwrap();
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back, event);
        assert_eq!(Event::schema_header(), "event/1");
    }

    #[test]
    fn batch_round_trips_and_validates_tenant() {
        let mut batch = EventBatch {
            tenant: TenantId::new("acme").unwrap(),
            events: vec![sample_event(), sample_event()],
        };
        let back: EventBatch =
            serde_json::from_slice(&serde_json::to_vec(&batch).unwrap()).unwrap();
        assert_eq!(back, batch);
        assert!(batch.validate().is_ok());
        assert_eq!(batch.message_id(), back.message_id());
        batch.events[1].tenant = TenantId::new("other").unwrap();
        assert!(batch.validate().unwrap_err().contains("tenant other"));
    }

    #[test]
    fn a_batch_decoded_without_raw_records_is_the_batch_less_them() {
        let mut second = sample_event();
        second.parse_error = Some("no parser".into());
        second.raw = Some(RawRecord::bounded(&"\"quoted\" ".repeat(100), 64));
        let batch = EventBatch {
            tenant: TenantId::new("acme").unwrap(),
            events: vec![sample_event(), second],
        };
        let bytes = serde_json::to_vec(&batch).unwrap();
        let lean: EventBatchWithoutRaw = serde_json::from_slice(&bytes).unwrap();
        let mut expected = batch.clone();
        for event in &mut expected.events {
            event.raw = None;
        }
        assert_eq!(lean.into_batch(), expected);
        assert_eq!(
            EventBatchWithoutRaw::schema_header(),
            EventBatch::schema_header()
        );
        // What the full decoder refuses, this one refuses too.
        let mut value = serde_json::to_value(&batch).unwrap();
        value["events"][1]["tenant"] = serde_json::json!("Not A Tenant");
        let err = serde_json::from_value::<EventBatchWithoutRaw>(value).unwrap_err();
        assert!(err.to_string().contains("tenant id"), "{err}");
        let mut value = serde_json::to_value(&batch).unwrap();
        value["events"][0]["raw"] = serde_json::json!({"text": 1});
        assert!(serde_json::from_value::<EventBatch>(value.clone()).is_err());
        // A raw record is skipped unread, whatever it holds.
        assert!(serde_json::from_value::<EventBatchWithoutRaw>(value).is_ok());
    }

    #[test]
    fn older_readers_ignore_new_fields_and_new_readers_default_missing_ones() {
        let mut value = serde_json::to_value(sample_event()).unwrap();
        value["field_from_the_future"] = serde_json::json!(1);
        let object = value.as_object_mut().unwrap();
        object.remove("entities");
        object.remove("raw");
        let event: Event = serde_json::from_value(value).unwrap();
        assert!(event.entities.is_empty());
        assert!(event.raw.is_none());
    }

    #[test]
    fn raw_record_is_bounded_on_a_char_boundary() {
        let raw = RawRecord::bounded("ab€cd", 3);
        assert_eq!(raw.text, "ab");
        assert!(raw.truncated);
        assert_eq!(raw.original_len, 7);
        assert!(!RawRecord::bounded("abc", 3).truncated);
    }

    #[test]
    fn bad_tenant_in_payload_is_rejected() {
        let mut value = serde_json::to_value(sample_event()).unwrap();
        value["tenant"] = serde_json::json!("Not A Tenant");
        let err = serde_json::from_value::<Event>(value).unwrap_err();
        assert!(err.to_string().contains("tenant id"), "{err}");
    }
}
