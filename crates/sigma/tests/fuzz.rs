//! Property-based fuzzing of Vigil's own parsing layers (the toolchain here is stable-only, so
//! these run as proptest properties rather than cargo-fuzz targets): shape recognition and
//! field lookup on arbitrary JSON, mapping files from arbitrary text, EVTX conversion from
//! arbitrary bytes and from corrupted real files, rule files from arbitrary text. None may
//! panic; bad input must come back as an error or as "no match".
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use vigil_sigma::{BUILTIN_SHAPES, BUILTIN_WINDOWS, LoadOptions, Mappings, RuleSet, source};

const RULES: &str = r"
title: Whoami
id: 6b1a9d30-0000-4000-8000-000000000010
name: whoami_run
logsource:
    product: windows
    category: process_creation
detection:
    sel:
        Image|endswith: '\whoami.exe'
    condition: sel
level: low
---
title: Keyword
id: 6b1a9d30-0000-4000-8000-000000000011
logsource:
    product: windows
    service: security
detection:
    keywords:
        - 'mimikatz'
    condition: keywords
level: high
---
title: Burst
id: 6b1a9d30-0000-4000-8000-000000000012
correlation:
    type: value_count
    rules:
        - whoami_run
    group-by:
        - Computer
    timespan: 1m
    condition:
        field: User
        gte: 2
level: high
";

fn rules() -> RuleSet {
    RuleSet::from_texts(
        vec![(PathBuf::from("fuzz.yml"), RULES.to_owned())],
        Arc::new(Mappings::builtin().unwrap()),
        &LoadOptions::default(),
    )
    .unwrap()
}

/// Arbitrary JSON, biased towards the keys shape recognition looks at.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("Event".to_owned()),
        Just("System".to_owned()),
        Just("EventData".to_owned()),
        Just("UserData".to_owned()),
        Just("Channel".to_owned()),
        Just("EventID".to_owned()),
        Just("#text".to_owned()),
        Just("#attributes".to_owned()),
        Just("winlog".to_owned()),
        Just("winlog.channel".to_owned()),
        Just("Image".to_owned()),
        Just("Computer".to_owned()),
        "[a-zA-Z_. #]{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("Security".to_owned()),
            Just("Microsoft-Windows-Sysmon/Operational".to_owned()),
            Just("4688".to_owned()),
            Just("C:\\whoami.exe".to_owned()),
            ".{0,24}",
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_records_never_panic(record in json_value()) {
        let rules = rules();
        let mut correlator = rules.correlator();
        let detections = rules.detect(&record);
        let _ = rules.logsource_of(&record);
        let _ = rules.record_meta(&record);
        let _ = correlator.observe(&record, &detections, 1_800_000_000, None);
    }

    #[test]
    fn windows_shaped_records_never_panic(
        channel in prop_oneof![Just(json!("Security")), Just(json!("Microsoft-Windows-Sysmon/Operational")), Just(json!(7)), Just(json!(null))],
        event_id in prop_oneof![any::<i64>().prop_map(Value::from), ".{0,8}".prop_map(Value::from), Just(json!({"#text": 1}))],
        data in json_value(),
    ) {
        let rules = rules();
        let record = json!({"Event": {"System": {"Channel": channel, "EventID": event_id}, "EventData": data}});
        let _ = rules.detect(&record);
        let flat = json!({"Channel": channel, "EventID": event_id, "Image": data});
        let _ = rules.detect(&flat);
    }

    #[test]
    fn arbitrary_mapping_files_are_errors_not_panics(text in ".{0,200}") {
        let _ = Mappings::from_yaml(("shapes.yml", &text), ("windows.yml", BUILTIN_WINDOWS));
        let _ = Mappings::from_yaml(("shapes.yml", BUILTIN_SHAPES), ("windows.yml", &text));
    }

    #[test]
    fn arbitrary_rule_files_are_rejections_not_panics(text in ".{0,300}") {
        let rules = RuleSet::from_texts(
            vec![(PathBuf::from("x.yml"), text)],
            Arc::new(Mappings::builtin().unwrap()),
            &LoadOptions::default(),
        )
        .unwrap();
        let _ = rules.detect(&json!({"Event": {"System": {"Channel": "Security", "EventID": 1}}}));
    }

    #[test]
    fn arbitrary_json_text_never_panics(text in ".{0,300}") {
        let _ = source::json_records(&text);
    }

    #[test]
    fn arbitrary_log_lines_never_panic(
        text in prop_oneof![
            ".{0,200}",
            "type=[A-Z_]{0,8} msg=audit\\([0-9.:]{0,20}\\):.{0,120}",
            "<[0-9]{1,3}>[0-9] .{0,150}",
            "[0-9a-f.:]{1,20} .{0,3} .{0,5} \\[[0-9]{2}/[A-Z][a-z]{2}/[0-9]{4}:[0-9:]{8} [+-][0-9]{4}\\] \"[^\"]{0,40}\\\\?\"? ?[0-9]{0,4} .{0,60}",
            "<[0-9]{1,3}>[A-Z][a-z]{2} [0-9]{2} [0-9:]{8} h [a-z]{1,8}: (type=|[0-9.]{7,15} - - \\[).{0,120}",
        ]
    ) {
        let rules = rules();
        let record = source::log_record(&text);
        let _ = rules.detect(&record);
        let _ = source::audit_record(&text);
        let _ = rules.detect(&source::syslog_record(&text));
        if let Some(record) = source::access_record(&text) {
            let _ = rules.detect(&record);
        }
    }
}

/// Real EVTX files with bytes flipped and cut short: every record either converts or is
/// reported, and nothing panics.
#[test]
fn corrupted_evtx_files_never_panic() {
    let shared = std::env::var_os("VIGIL_SHARED_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
        PathBuf::from,
    );
    let original = std::fs::read(shared.join(
        "data/sigma/regression_data/rules/windows/process_creation/proc_creation_win_bitsadmin_download/d059842b-6b9d-4ed1-b5c3-5b89143c6ede.evtx",
    ))
    .expect("SigmaHQ's regression data is required (set VIGIL_SHARED_DIR)");
    let dir = tempfile::tempdir().unwrap();
    let rules = Arc::new(rules());
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..64 {
        let mut bytes = original.clone();
        // xorshift: a fixed sequence, so a failure reproduces.
        for _ in 0..(1 + round % 16) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = usize::try_from(state % bytes.len() as u64).unwrap();
            bytes[at] ^= u8::try_from(state >> 56).unwrap() | 1;
        }
        if round % 4 == 3 {
            let keep = usize::try_from(state % bytes.len() as u64).unwrap();
            bytes.truncate(keep);
        }
        let path = dir.path().join(format!("corrupt-{round}.evtx"));
        std::fs::write(&path, &bytes).unwrap();
        let scan_rules = Arc::clone(&rules);
        if let Ok(results) = source::scan_evtx(&path, 1, move |record| match record {
            Ok(record) => {
                let _ = scan_rules.detect(&record.data);
                true
            }
            Err(reason) => {
                assert!(!reason.is_empty());
                false
            }
        }) {
            let _ = results.len();
        }
    }
}
