//! What the detect benchmarks share: the events they decode and evaluate.

use std::path::Path;

use serde_json::Value;
use vigil_schema::{
    Entities, Event, EventId, Fields, RAW_RECORD_MAX_BYTES, RawRecord, Source, TenantId,
};

/// A record and its text as received.
pub type Record = (Value, String);

/// Windows records and syslog records, each with its text: ingest keeps that text on the event
/// (`raw`), so every batch carries it as in production.
pub fn records(shared: &Path) -> (Vec<Record>, Vec<Record>) {
    let mut records = Vec::new();
    let files =
        vigil_sigma::source::files_under(&shared.join("data/sigma/regression_data"), &|p| {
            p.extension().is_some_and(|e| e == "json")
        })
        .unwrap();
    for file in files {
        records.extend(
            vigil_sigma::source::json_records(&std::fs::read_to_string(file).unwrap())
                .0
                .into_iter()
                .map(|record| {
                    let text = record.to_string();
                    (record, text)
                }),
        );
    }
    let mut syslog = Vec::new();
    for log in ["OpenSSH_2k.log", "Linux_2k.log"] {
        let text = std::fs::read_to_string(shared.join("data/loghub").join(log)).unwrap();
        syslog.extend(
            text.lines()
                .map(|line| (vigil_sigma::source::syslog_record(line), line.to_owned())),
        );
    }
    (records, syslog)
}

/// `windows_percent` of the events are Windows records, the rest syslog lines, interleaved.
pub fn events(
    tenant: &TenantId,
    (windows, syslog): &(Vec<Record>, Vec<Record>),
    total: usize,
    windows_percent: usize,
) -> Vec<Event> {
    let now = time::OffsetDateTime::now_utc();
    (0..total)
        .map(|n| {
            let (record, text) = if n % 100 < windows_percent {
                &windows[n % windows.len()]
            } else {
                &syslog[n % syslog.len()]
            };
            Event {
                id: EventId::derive(&[tenant.as_str().as_bytes(), &n.to_le_bytes()]),
                tenant: tenant.clone(),
                event_time: now,
                received_time: now,
                source: Source {
                    transport: "bench".into(),
                    format: "json".into(),
                    peer: None,
                },
                logsource: Default::default(),
                entities: Entities::default(),
                fields: Fields::from_json(record.clone()),
                raw: Some(RawRecord::bounded(text, RAW_RECORD_MAX_BYTES)),
                parse_error: None,
            }
        })
        .collect()
}
