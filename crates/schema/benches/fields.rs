//! Field lookup cost on a normalized event: what a detection rule pays per field it reads.
//!
//! `cargo bench -p vigil-schema --bench fields`
//!
//! Compares `Fields::get` (binary search over pre-flattened keys) with the baseline a naive
//! engine would use: walking a `serde_json::Value` by dotted path on every lookup.

// A benchmark binary: it reports on stdout and stops at the first error.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use serde_json::json;
use vigil_schema::Fields;

fn windows_event() -> serde_json::Value {
    json!({
        "Event": {
            "System": {
                "Provider": {"Name": "Microsoft-Windows-Sysmon", "Guid": "{5770385F-C22A-43E0-BF4C-06F5698FFBD9}"},
                "EventID": 1, "Version": 5, "Level": 4, "Task": 1, "Opcode": 0,
                "Keywords": "0x8000000000000000", "EventRecordID": 4242,
                "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": "ws-0042.acme.local",
                "TimeCreated": {"SystemTime": "2026-11-27T06:00:00.000Z"}
            },
            "EventData": {
                "RuleName": "-", "UtcTime": "2026-11-27 06:00:00.000",
                "ProcessGuid": "{aaaa-bbbb}", "ProcessId": 4242,
                "Image": "C:\\Windows\\System32\\cmd.exe", "FileVersion": "10.0.19041.1",
                "Description": "Windows Command Processor", "Product": "Microsoft Windows",
                "Company": "Microsoft Corporation", "OriginalFileName": "Cmd.Exe",
                "CommandLine": "cmd.exe /c whoami /all", "CurrentDirectory": "C:\\Users\\alice\\",
                "User": "ACME\\alice", "LogonGuid": "{cccc}", "LogonId": "0x3e7",
                "TerminalSessionId": 1, "IntegrityLevel": "High",
                "Hashes": "SHA256=0000000000000000000000000000000000000000000000000000000000000000",
                "ParentProcessGuid": "{dddd}", "ParentProcessId": 1000,
                "ParentImage": "C:\\Windows\\explorer.exe", "ParentCommandLine": "C:\\Windows\\Explorer.EXE",
                "ParentUser": "ACME\\alice"
            }
        }
    })
}

const PATHS: [&str; 8] = [
    "Event.EventData.Image",
    "Event.EventData.CommandLine",
    "Event.EventData.ParentImage",
    "Event.System.EventID",
    "Event.System.Channel",
    "Event.EventData.OriginalFileName",
    "Event.EventData.IntegrityLevel",
    "Event.EventData.Missing",
];

fn json_path<'a>(value: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(value, |node, key| node.get(key))
}

fn main() {
    let value = windows_event();
    let fields = Fields::from_json(value.clone());
    let rounds = 2_000_000;

    let started = Instant::now();
    let mut found = 0usize;
    for _ in 0..rounds {
        for path in PATHS {
            found += usize::from(black_box(&fields).get(black_box(path)).is_some());
        }
    }
    let fields_ns = started.elapsed().as_nanos() as f64 / (rounds * PATHS.len()) as f64;

    let started = Instant::now();
    let mut found_json = 0usize;
    for _ in 0..rounds {
        for path in PATHS {
            found_json += usize::from(json_path(black_box(&value), black_box(path)).is_some());
        }
    }
    let json_ns = started.elapsed().as_nanos() as f64 / (rounds * PATHS.len()) as f64;
    assert_eq!(found, found_json);

    println!(
        "field lookup on a {}-field Sysmon event, {} lookups each:",
        fields.len(),
        rounds * PATHS.len()
    );
    println!("Fields::get (hash-ordered, flat):     {fields_ns:>6.1} ns/lookup");
    println!("serde_json::Value walk by dotted path: {json_ns:>6.1} ns/lookup");
}
