//! The detection engine on Vigil's own normalized event: `vigil_schema::Fields` (flat dotted
//! keys), read in place as a `vigil_sigma::FlatRecord` through `vigil_runtime::EventFields`, gives the same detections as the source
//! JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use serde_json::json;
use vigil_schema::Fields;
use vigil_sigma::{LoadOptions, Mappings, RuleSet};

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
        let on_schema = rules.detect_flat(&vigil_runtime::EventFields(&fields));
        assert_eq!(on_schema.len(), rules.detect(&source).len(), "{source}");
        assert_eq!(!on_schema.is_empty(), fires, "{source}");
    }
}
