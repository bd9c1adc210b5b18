//! The detection engine on Vigil's own normalized event: `vigil_schema::Fields` (flat dotted
//! keys) adapted to `vigil_sigma::FlatRecord` without copying, giving the same detections as
//! the source JSON. This is the adapter the detect service uses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use serde_json::json;
use vigil_schema::{FieldValue, Fields};
use vigil_sigma::{FlatRecord, FlatValue, LoadOptions, Mappings, RuleSet};

/// The schema's fields as the engine reads them.
struct EventFields<'a>(&'a Fields);

fn flat(value: &FieldValue) -> FlatValue<'_> {
    match value {
        FieldValue::Null | FieldValue::Object(_) => FlatValue::Null,
        FieldValue::Bool(b) => FlatValue::Bool(*b),
        FieldValue::Int(i) => FlatValue::Int(*i),
        FieldValue::Float(f) => FlatValue::Float(*f),
        FieldValue::Str(s) => FlatValue::Str(s),
        FieldValue::Array(items) => FlatValue::List(items.iter().map(flat).collect()),
    }
}

impl FlatRecord for EventFields<'_> {
    fn for_each<'s>(&'s self, visit: &mut dyn FnMut(&'s str, FlatValue<'s>)) {
        for (key, value) in self.0.iter() {
            visit(key, flat(value));
        }
    }
}

#[test]
fn schema_events_meet_the_rules_of_their_logsource() {
    let rule = r"
title: Encoded PowerShell
id: 0f6d2a4e-0000-4000-8000-000000000001
logsource:
    product: windows
    category: process_creation
detection:
    sel:
        Image|endswith: '\powershell.exe'
        CommandLine|contains: ' -enc '
    condition: sel
level: high
";
    let rules = RuleSet::from_texts(
        vec![("enc.yml".into(), rule.to_owned())],
        Arc::new(Mappings::builtin().unwrap()),
        &LoadOptions::default(),
    )
    .unwrap();
    let record = |channel: &str, id: u32, image_key: &str| {
        json!({"Event": {"System": {"Channel": channel, "EventID": id, "Computer": "pc1"},
                          "EventData": {image_key: "C:\\Windows\\powershell.exe",
                                        "CommandLine": "powershell -enc SQBFAFgA"}}})
    };
    for (source, fires) in [
        (
            record("Microsoft-Windows-Sysmon/Operational", 1, "Image"),
            true,
        ),
        (record("Security", 4688, "NewProcessName"), true),
        // A network event with the same fields is not a process creation.
        (
            record("Microsoft-Windows-Sysmon/Operational", 3, "Image"),
            false,
        ),
    ] {
        let fields = Fields::from_json(source.clone());
        let on_schema = rules.detect_flat(&EventFields(&fields));
        assert_eq!(on_schema.len(), rules.detect(&source).len(), "{source}");
        assert_eq!(!on_schema.is_empty(), fires, "{source}");
    }
}
