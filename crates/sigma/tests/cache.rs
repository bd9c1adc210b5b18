//! The content-hashed rule cache: a warm load gives the same rules, rejections and detections
//! as a cold one; a changed rule file, changed placeholders or a corrupt cache file mean a cold
//! load, never an error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use vigil_sigma::{LoadOptions, Mappings, RuleSet, source};

fn sigma_dir() -> PathBuf {
    let shared = std::env::var_os("VIGIL_SHARED_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
        PathBuf::from,
    );
    shared.join("data/sigma")
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.map(|entry| entry.unwrap().path()).collect())
        .unwrap_or_default()
}

fn ids(rules: &RuleSet, record: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = rules
        .detect(record)
        .into_iter()
        .map(|d| d.rule.id.clone())
        .collect();
    ids.sort();
    ids
}

#[test]
fn warm_loads_match_cold_loads() {
    let sigma = sigma_dir();
    let dirs: Vec<PathBuf> = ["rules", "rules-emerging-threats", "rules-threat-hunting"]
        .iter()
        .map(|dir| sigma.join(dir))
        .collect();
    let cache = tempfile::tempdir().unwrap();
    let options = LoadOptions {
        cache_dir: Some(cache.path().join("rules")),
        ..LoadOptions::default()
    };
    let mappings = Arc::new(Mappings::builtin().unwrap());
    let plain = RuleSet::load(&dirs, Arc::clone(&mappings)).unwrap();
    let cold = RuleSet::load_with(&dirs, Arc::clone(&mappings), &options).unwrap();
    assert_eq!(cache_files(&cache.path().join("rules")).len(), 1);
    let warm = RuleSet::load_with(&dirs, Arc::clone(&mappings), &options).unwrap();
    assert_eq!(cache_files(&cache.path().join("rules")).len(), 1);
    assert_eq!(plain.check(), cold.check());
    assert_eq!(cold.check(), warm.check());
    assert_eq!(warm.partitions().count(), cold.partitions().count());

    let is_json = |path: &Path| path.extension().is_some_and(|ext| ext == "json");
    let mut records = 0;
    for file in source::files_under(&sigma.join("regression_data"), &is_json).unwrap() {
        for record in source::json_records(&std::fs::read_to_string(file).unwrap()).0 {
            assert_eq!(ids(&cold, &record), ids(&warm, &record), "{record}");
            records += 1;
        }
    }
    assert!(records > 200);
}

#[test]
fn changes_and_corruption_mean_a_cold_load() {
    let rules = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let rule = |suffix: &str| {
        format!(
            "title: Whoami\nid: 5c1a0000-0000-4000-8000-000000000001\nname: whoami_run\nlogsource:\n  product: windows\n  category: process_creation\ndetection:\n  sel:\n    Image|endswith: '{suffix}'\n  condition: sel\nlevel: low\n---\ntitle: Burst\nid: 5c1a0000-0000-4000-8000-000000000002\ncorrelation:\n  type: event_count\n  rules: [whoami_run]\n  group-by: [Computer]\n  timespan: 1m\n  condition: {{gte: 2}}\nlevel: high\n"
        )
    };
    std::fs::write(rules.path().join("r.yml"), rule("\\whoami.exe")).unwrap();
    let options = LoadOptions {
        cache_dir: Some(cache.path().to_owned()),
        ..LoadOptions::default()
    };
    let mappings = Arc::new(Mappings::builtin().unwrap());
    let load =
        || RuleSet::load_with(&[rules.path().to_owned()], Arc::clone(&mappings), &options).unwrap();
    let event = |image: &str| {
        json!({"Event": {"System": {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, "Computer": "pc1"},
                          "EventData": {"Image": image}}})
    };

    let cold = load();
    assert_eq!(cold.check().correlation_rules, 1);
    let warm = load();
    assert_eq!(warm.check(), cold.check());
    // Correlations work from a warm start (their files are parsed again).
    let mut correlator = warm.correlator();
    let record = event("C:\\whoami.exe");
    let detections = warm.detect(&record);
    assert_eq!(detections.len(), 1);
    correlator.observe(&record, &detections, 1_800_000_000, None);
    assert_eq!(
        correlator
            .observe(&record, &detections, 1_800_000_001, None)
            .len(),
        1
    );

    // A changed rule is a new key: the new content is what runs.
    std::fs::write(rules.path().join("r.yml"), rule("\\hostname.exe")).unwrap();
    let changed = load();
    assert!(changed.detect(&event("C:\\whoami.exe")).is_empty());
    assert_eq!(changed.detect(&event("C:\\hostname.exe")).len(), 1);
    assert_eq!(cache_files(cache.path()).len(), 2);

    // Corrupt every cache file: the load still works, from source.
    for file in cache_files(cache.path()) {
        std::fs::write(file, b"\xa1garbage").unwrap();
    }
    let recovered = load();
    assert_eq!(recovered.detect(&event("C:\\hostname.exe")).len(), 1);

    // Placeholders are part of the key.
    let with_vars = LoadOptions {
        placeholders: [("x".to_owned(), vec!["y".to_owned()])]
            .into_iter()
            .collect(),
        ..options.clone()
    };
    RuleSet::load_with(
        &[rules.path().to_owned()],
        Arc::clone(&mappings),
        &with_vars,
    )
    .unwrap();
    assert_eq!(cache_files(cache.path()).len(), 3);
}
