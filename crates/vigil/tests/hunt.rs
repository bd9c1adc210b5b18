//! `vigil hunt` as a process: golden output on SigmaHQ's regression EVTX files and their JSON
//! renderings, every output format, and bad inputs that are counted and reported while the hunt
//! goes on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// SigmaHQ's data; tests run from here so paths in the output are the same on every machine.
fn sigma_dir() -> PathBuf {
    let dir = vigil_e2e::shared_dir().join("data/sigma");
    assert!(
        dir.join("regression_data").is_dir(),
        "SigmaHQ's data is required at {} (set VIGIL_SHARED_DIR)",
        dir.display()
    );
    dir
}

const SECURITY_CASE: &str = "regression_data/rules/windows/builtin/security/win_security_explicit_credential_local_logon/e3c6d245-7b8f-4e2a-c17f-a9d0e5b38f62";
const SECURITY_RULE: &str =
    "rules/windows/builtin/security/win_security_explicit_credential_local_logon.yml";
const BITSADMIN_CASE: &str = "regression_data/rules/windows/process_creation/proc_creation_win_bitsadmin_download/d059842b-6b9d-4ed1-b5c3-5b89143c6ede";
const BITSADMIN_RULE: &str =
    "rules/windows/process_creation/proc_creation_win_bitsadmin_download.yml";

fn hunt(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    // Keep the rule cache out of the user's home; content-hashed, so tests can share it.
    let cache = std::env::temp_dir().join("vigil-hunt-tests-cache");
    command
        .current_dir(sigma_dir())
        .env("XDG_CACHE_HOME", cache)
        .arg("hunt")
        .args(args);
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "vigil hunt failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// One hit per line.
fn jsonl(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hunt")
        .join(name)
}

/// Compares with the golden file; `VIGIL_BLESS=1` rewrites it.
fn assert_golden(name: &str, actual: &str) {
    let path = golden(name);
    if std::env::var_os("VIGIL_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{}: {err} (run with VIGIL_BLESS=1)", path.display()));
    assert_eq!(actual, expected, "output differs from {}", path.display());
}

fn evtx(case: &str) -> String {
    format!("{case}.evtx")
}

#[test]
fn jsonl_output_is_golden() {
    let output = hunt(&[
        &evtx(SECURITY_CASE),
        &evtx(BITSADMIN_CASE),
        "--rules",
        SECURITY_RULE,
        "--rules",
        BITSADMIN_RULE,
        "--format",
        "jsonl",
    ]);
    let text = stdout(&output);
    assert_golden("two-cases.jsonl", &text);
    for line in text.lines() {
        let hit: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in [
            "rule_id",
            "rule_title",
            "level",
            "path",
            "record_id",
            "timestamp",
        ] {
            assert!(!hit[key].is_null(), "{key} missing in {line}");
        }
        assert!(hit["attack"][0]["name"].is_string(), "{line}");
    }
    let summary = String::from_utf8(output.stderr).unwrap();
    assert!(
        summary.starts_with("2 rules loaded (0 rejected"),
        "{summary}"
    );
    assert!(summary.contains("2 files"), "{summary}");
    assert!(summary.contains("top rules:"), "{summary}");
}

#[test]
fn every_format_prints_the_same_hits() {
    let args = |format: &'static str| {
        vec![
            evtx(BITSADMIN_CASE),
            "--rules".to_owned(),
            BITSADMIN_RULE.to_owned(),
            "--format".to_owned(),
            format.to_owned(),
        ]
    };
    let run = |format: &'static str| {
        let args = args(format);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        stdout(&hunt(&args))
    };
    let jsonl = run("jsonl");
    let hits = jsonl.lines().count();
    assert!(hits > 0);

    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(json.as_array().unwrap().len(), hits);

    let csv = run("csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("timestamp,level,rule_id,rule_title,path,record_id,computer,attack")
    );
    assert_eq!(lines.count(), hits);

    let table = run("table");
    assert!(table.starts_with("TIMESTAMP"), "{table}");
    assert_eq!(table.lines().count(), hits + 1);
    assert_golden("bitsadmin.table", &table);
}

#[test]
fn evtx_and_its_json_rendering_give_the_same_hits() {
    let hits = |path: String| -> Vec<(String, String)> {
        let text = stdout(&hunt(&[
            &path,
            "--rules",
            SECURITY_RULE,
            "--rules",
            BITSADMIN_RULE,
            "--format",
            "jsonl",
        ]));
        text.lines()
            .map(|line| {
                let hit: serde_json::Value = serde_json::from_str(line).unwrap();
                (hit["rule_id"].to_string(), hit["record_id"].to_string())
            })
            .collect()
    };
    for case in [SECURITY_CASE, BITSADMIN_CASE] {
        let from_evtx = hits(format!("{case}.evtx"));
        assert!(!from_evtx.is_empty());
        assert_eq!(from_evtx, hits(format!("{case}.json")), "{case}");
    }
}

#[test]
fn min_level_filters_hits() {
    let all = stdout(&hunt(&[
        &evtx(SECURITY_CASE),
        &evtx(BITSADMIN_CASE),
        "--rules",
        SECURITY_RULE,
        "--rules",
        BITSADMIN_RULE,
        "--format",
        "jsonl",
    ]));
    let high = stdout(&hunt(&[
        &evtx(SECURITY_CASE),
        &evtx(BITSADMIN_CASE),
        "--rules",
        SECURITY_RULE,
        "--rules",
        BITSADMIN_RULE,
        "--format",
        "jsonl",
        "--min-level",
        "high",
    ]));
    assert!(high.lines().count() < all.lines().count());
    assert!(high.lines().all(|line| {
        let hit: serde_json::Value = serde_json::from_str(line).unwrap();
        matches!(hit["level"].as_str(), Some("high" | "critical"))
    }));

    let bad = hunt(&[
        &evtx(SECURITY_CASE),
        "--rules",
        SECURITY_RULE,
        "--min-level",
        "severe",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown level `severe`"));
}

#[test]
fn bad_inputs_are_counted_and_the_hunt_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let source = std::fs::read(sigma_dir().join(evtx(BITSADMIN_CASE))).unwrap();
    // A chunk cut short, garbage where a file should be, JSON cut mid-document.
    std::fs::write(
        dir.path().join("truncated.evtx"),
        &source[..source.len() / 2 + 1000],
    )
    .unwrap();
    std::fs::write(
        dir.path().join("garbage.evtx"),
        b"ElfFile\0 this is not an event log",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("cut.json"),
        "{\"Event\": {\"System\": {\"Channel\": \"Security\", \"EventID\": 4624}}}\n{\"Event\": ",
    )
    .unwrap();
    std::fs::write(dir.path().join("empty.evtx"), b"").unwrap();
    let good = dir.path().join("good.evtx");
    std::fs::write(&good, &source).unwrap();

    let output = hunt(&[
        dir.path().to_str().unwrap(),
        "--rules",
        BITSADMIN_RULE,
        "--format",
        "jsonl",
    ]);
    let text = stdout(&output);
    let summary = String::from_utf8(output.stderr).unwrap();
    // The good file's hits are all there.
    let good_hits = text
        .lines()
        .filter(|line| line.contains("good.evtx"))
        .count();
    assert!(good_hits > 0, "{text}\n{summary}");
    assert!(summary.contains("unreadable"), "{summary}");
    assert!(summary.contains("garbage.evtx"), "{summary}");
    assert!(
        summary.contains("cut.json: invalid JSON at byte"),
        "{summary}"
    );

    let missing = hunt(&["/nonexistent/logs", "--rules", BITSADMIN_RULE]);
    assert_eq!(missing.status.code(), Some(2));
    let line = String::from_utf8_lossy(&missing.stderr);
    assert!(
        line.starts_with("error: cannot read /nonexistent/logs"),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1);
}

#[test]
fn syslog_files_route_by_program() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    std::fs::write(
        &log,
        "Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186\n\
         Dec 10 06:55:48 LabSZ sshd[24201]: Corrupted MAC on input. [preauth]\n\
         Dec 10 06:55:49 LabSZ kernel: Corrupted MAC on input.\n",
    )
    .unwrap();
    let output = hunt(&[
        log.to_str().unwrap(),
        "--rules",
        "rules/linux/builtin/sshd",
        "--format",
        "jsonl",
    ]);
    let text = stdout(&output);
    let hits = jsonl(&text);
    // Only the sshd line: the kernel line has the same words but is not an sshd record.
    assert_eq!(hits.len(), 1, "{text}");
    assert_eq!(hits[0]["rule_id"], "e76b413a-83d0-4b94-8e4c-85db4a5b8bdc");
    assert_eq!(hits[0]["record_id"], 2);
    assert_eq!(hits[0]["computer"], "LabSZ");

    // The loghub samples (real sshd and PAM logs) read cleanly: every line is a record.
    let loghub = vigil_e2e::shared_dir().join("data/loghub/OpenSSH_2k.log");
    let output = hunt(&[
        loghub.to_str().unwrap(),
        "--rules",
        "rules/linux/builtin",
        "--format",
        "jsonl",
    ]);
    let summary = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{summary}");
    assert!(summary.contains("2000 records"), "{summary}");
    assert!(!summary.contains("unreadable"), "{summary}");
}

#[test]
fn the_rule_cache_changes_nothing_but_speed() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("rules");
    let run = |extra: &[&str]| {
        let mut args = vec![
            evtx(SECURITY_CASE),
            evtx(BITSADMIN_CASE),
            "--rules".to_owned(),
            "rules/windows".to_owned(),
            "--format".to_owned(),
            "jsonl".to_owned(),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        stdout(&hunt(&args))
    };
    let uncached = run(&["--no-cache"]);
    let cold = run(&["--cache-dir", cache_dir.to_str().unwrap()]);
    assert_eq!(std::fs::read_dir(&cache_dir).unwrap().count(), 1);
    let warm = run(&["--cache-dir", cache_dir.to_str().unwrap()]);
    assert!(!uncached.is_empty());
    assert_eq!(uncached, cold);
    assert_eq!(cold, warm);
}

#[test]
fn placeholders_come_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("admins.yml"),
        "title: Admin logon\nid: 3e1a0000-0000-4000-8000-000000000001\nlogsource:\n  product: windows\n  service: security\ndetection:\n  sel:\n    EventID: 4648\n    SubjectUserName|expand: '%admins%'\n  condition: sel\nlevel: high\n",
    )
    .unwrap();
    let rules = dir.path().to_str().unwrap();
    let case = evtx(SECURITY_CASE);
    let user = {
        let record =
            std::fs::read_to_string(sigma_dir().join(format!("{SECURITY_CASE}.json"))).unwrap();
        let record: serde_json::Value = serde_json::from_str(&record).unwrap();
        record["Event"]["EventData"]["SubjectUserName"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let hits = |extra: &[&str]| {
        let mut args = vec![
            case.as_str(),
            "--rules",
            rules,
            "--format",
            "jsonl",
            "--no-cache",
        ];
        args.extend_from_slice(extra);
        stdout(&hunt(&args)).lines().count()
    };
    assert_eq!(hits(&[]), 0);
    let placeholder = format!("admins=root,{user}");
    assert_eq!(hits(&["--placeholder", &placeholder]), 1);
    assert_eq!(hits(&["--placeholder", "admins=root"]), 0);

    let bad = hunt(&[&case, "--rules", rules, "--placeholder", "admins"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not NAME=VALUE"));
}

#[test]
fn auditd_logs_meet_auditd_rules() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    std::fs::write(
        &log,
        "type=SYSCALL msg=audit(1700000000.100:41): arch=c000003e syscall=59 success=yes exe=\"/usr/bin/arecord\"\n\
         type=EXECVE msg=audit(1700000000.100:41): argc=4 a0=\"arecord\" a1=2D7676 a2=\"-fdat\" a3=\"out.dat\"\n\
         type=EXECVE msg=audit(1700000001.200:42): argc=2 a0=\"ls\" a1=\"-la\"\n",
    )
    .unwrap();
    let output = hunt(&[
        log.to_str().unwrap(),
        "--rules",
        "rules/linux/auditd",
        "--format",
        "jsonl",
        "--no-cache",
    ]);
    let text = stdout(&output);
    let hits = jsonl(&text);
    assert_eq!(hits.len(), 1, "{text}");
    assert_eq!(hits[0]["rule_id"], "a7af2487-9c2f-42e4-9bb9-ff961f0561d5");
    assert_eq!(hits[0]["record_id"], 2);
    assert_eq!(hits[0]["timestamp"], "2023-11-14T22:13:20.1Z");
}

#[test]
fn correlations_fire_in_hunts() {
    let dir = tempfile::tempdir().unwrap();
    let rule = std::fs::read_to_string(sigma_dir().join(BITSADMIN_RULE)).unwrap();
    std::fs::write(
        dir.path().join("bitsadmin_burst.yml"),
        format!(
            "{rule}\n---\ntitle: Bitsadmin download on a host\nid: 2c0a0000-0000-4000-8000-000000000001\ncorrelation:\n  type: event_count\n  rules:\n    - d059842b-6b9d-4ed1-b5c3-5b89143c6ede\n  group-by:\n    - Computer\n  timespan: 1h\n  condition:\n    gte: 1\nlevel: critical\ntags:\n  - attack.t1197\n"
        ),
    )
    .unwrap();
    let output = hunt(&[
        &evtx(BITSADMIN_CASE),
        "--rules",
        dir.path().to_str().unwrap(),
        "--format",
        "jsonl",
        "--no-cache",
    ]);
    let text = stdout(&output);
    let hits = jsonl(&text);
    let correlation = hits
        .iter()
        .find(|hit| hit["rule_id"] == "2c0a0000-0000-4000-8000-000000000001")
        .unwrap_or_else(|| panic!("no correlation hit in {text}"));
    assert_eq!(correlation["level"], "critical");
    assert_eq!(correlation["matched"][0]["field"], "Computer");
    assert_eq!(correlation["attack"][0]["name"], "BITS Jobs");
    // It names the record it counted, by file and record id, as the detection hit does.
    let detection = hits
        .iter()
        .find(|hit| hit["rule_id"] == "d059842b-6b9d-4ed1-b5c3-5b89143c6ede")
        .unwrap();
    assert_eq!(
        correlation["events"],
        serde_json::json!([format!(
            "{}#{}",
            detection["path"].as_str().unwrap(),
            detection["record_id"]
        )]),
        "{text}"
    );
    assert!(detection.get("events").is_none(), "{text}");
    let summary = String::from_utf8(output.stderr).unwrap();
    assert!(summary.starts_with("2 rules loaded"), "{summary}");
}

/// `vigil hunt` runs itself again with mimalloc's lean options unless the caller chose either;
/// mimalloc prints the options it started with when `MIMALLOC_VERBOSE` is set.
#[test]
fn hunts_restart_with_a_lean_allocator_unless_the_caller_chose() {
    let case = evtx(BITSADMIN_CASE);
    let run = |purge_delay: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
        command
            .current_dir(sigma_dir())
            .env(
                "XDG_CACHE_HOME",
                std::env::temp_dir().join("vigil-hunt-tests-cache"),
            )
            .env("MIMALLOC_VERBOSE", "1")
            .env_remove("MIMALLOC_ARENA_EAGER_COMMIT")
            .env_remove("MIMALLOC_PURGE_DELAY");
        if let Some(delay) = purge_delay {
            command.env("MIMALLOC_PURGE_DELAY", delay);
        }
        let output = command
            .args([
                "hunt",
                &case,
                "--rules",
                BITSADMIN_RULE,
                "--format",
                "jsonl",
                "--no-progress",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let hits = jsonl(&stdout(&output));
        (stderr, hits)
    };

    let (stderr, hits) = run(None);
    assert_eq!(hits.len(), 1, "{hits:?}");
    // The first start with mimalloc's defaults, then the hunt's own with both options off.
    assert!(stderr.contains("option 'purge_delay': 1000"), "{stderr}");
    assert!(stderr.contains("option 'purge_delay': 0"), "{stderr}");
    assert!(
        stderr.contains("option 'arena_eager_commit': 0"),
        "{stderr}"
    );

    let (stderr, hits) = run(Some("10"));
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(stderr.contains("option 'purge_delay': 10"), "{stderr}");
    assert!(!stderr.contains("option 'purge_delay': 0"), "{stderr}");
    assert!(
        !stderr.contains("option 'arena_eager_commit': 0"),
        "{stderr}"
    );
}
