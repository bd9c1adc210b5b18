//! A corpus of bad rule files (`tests/bad_rules/`, plus generated ones too large or deep to keep
//! in the repository): each is rejected with a reason that names the file and the problem, no
//! load panics or overflows, and the good rule beside them still fires.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use vigil_sigma::{Mappings, Rejected, RuleSet};

fn corpus() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_rules");
    for entry in std::fs::read_dir(source).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let header = |title: &str, id: &str| {
        format!(
            "title: {title}\nid: {id}\nlogsource:\n    product: windows\n    category: process_creation\n"
        )
    };
    let depth = 5_000;
    std::fs::write(
        dir.path().join("deep_condition.yml"),
        format!(
            "{}detection:\n    sel:\n        Image: x\n    condition: {}sel{}\nlevel: low\n",
            header("Deep condition", "7a1e0000-0000-4000-8000-000000000007"),
            "(".repeat(depth),
            ")".repeat(depth)
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("huge_value.yml"),
        format!(
            "{}detection:\n    sel:\n        CommandLine|contains: '{}'\n    condition: sel\nlevel: low\n",
            header("Huge value", "7a1e0000-0000-4000-8000-000000000008"),
            "A".repeat(4_000_000)
        ),
    )
    .unwrap();
    // A deeply nested YAML document (not a condition): the parser's own recursion.
    std::fs::write(
        dir.path().join("deep_yaml.yml"),
        format!("title: {}x{}\n", "[".repeat(depth), "]".repeat(depth)),
    )
    .unwrap();
    dir
}

fn rejection<'a>(rejected: &'a [Rejected], file: &str) -> Option<&'a Rejected> {
    rejected
        .iter()
        .find(|rejected| rejected.path.file_name().is_some_and(|name| name == file))
}

#[test]
fn bad_rules_are_rejected_with_reasons_and_the_rest_still_runs() {
    let dir = corpus();
    let rules = RuleSet::load(
        &[PathBuf::from(dir.path())],
        Arc::new(Mappings::builtin().unwrap()),
    )
    .unwrap();
    let check = rules.check();
    assert!(
        check
            .rejected
            .iter()
            .all(|rejected| rejected.reason.len() < 420),
        "reasons stay short: {:#?}",
        check.rejected
    );

    // Each defect and a word its reason must contain.
    let expected = [
        ("malformed_yaml.yml", ""),
        ("duplicate_keys.yml", "duplicate"),
        ("unknown_modifier.yml", "sounds_like"),
        ("invalid_regex.yml", "regex"),
        ("undefined_identifier.yml", "filter_missing"),
        ("binary.yml", ""),
        ("deep_yaml.yml", "recursion"),
        ("deep_condition.yml", "depth"),
        ("huge_value.yml", "4096"),
    ];
    for (file, word) in expected {
        let rejected = rejection(&check.rejected, file)
            .unwrap_or_else(|| panic!("{file} was not rejected: {:#?}", check.rejected));
        assert!(!rejected.reason.is_empty(), "{file}");
        assert!(!rejected.reason.contains('\n'), "{file}: one line");
        assert!(
            rejected.reason.to_lowercase().contains(word),
            "{file}: `{}` does not name `{word}`",
            rejected.reason
        );
    }
    // Rejections that come from a parsed rule carry its id.
    assert_eq!(
        rejection(&check.rejected, "invalid_regex.yml")
            .unwrap()
            .rule_id
            .as_deref(),
        Some("7a1e0000-0000-4000-8000-000000000005")
    );

    // The good rule loads and fires; the huge value compiles and does not match by accident.
    let whoami = json!({"Event": {"System": {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1},
                                   "EventData": {"Image": "C:\\Windows\\System32\\whoami.exe",
                                                 "CommandLine": "whoami"}}});
    let fired: Vec<String> = rules
        .detect(&whoami)
        .into_iter()
        .map(|d| d.rule.id.clone())
        .collect();
    assert_eq!(fired, ["7a1e0000-0000-4000-8000-000000000001"]);
}
