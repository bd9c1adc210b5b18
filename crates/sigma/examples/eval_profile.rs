//! Evaluation loop for profilers (callgrind, perf): every SigmaHQ rule against the regression
//! suite's JSON events, `ROUNDS` times. `cargo run --release -p vigil-sigma --example
//! eval_profile -- SIGMA_DIR [ROUNDS]`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

fn walk(dir: &Path, out: &mut Vec<serde_json::Value>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            walk(&entry, out);
        } else if entry.extension().is_some_and(|ext| ext == "json") {
            out.extend(
                vigil_sigma::source::json_records(&std::fs::read_to_string(&entry).unwrap()).0,
            );
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let sigma = PathBuf::from(args.next().unwrap());
    let rounds: usize = args.next().map_or(10, |n| n.parse().unwrap());
    let dirs: Vec<PathBuf> = ["rules", "rules-emerging-threats", "rules-threat-hunting"]
        .iter()
        .map(|dir| sigma.join(dir))
        .collect();
    let rules =
        vigil_sigma::RuleSet::load(&dirs, Arc::new(vigil_sigma::Mappings::builtin().unwrap()))
            .unwrap();
    let mut events = Vec::new();
    walk(&sigma.join("regression_data"), &mut events);
    let started = Instant::now();
    let mut hits = 0;
    for _ in 0..rounds {
        for event in &events {
            hits += rules.detect(event).len();
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{} events x {rounds}: {hits} hits, {:.0} events/s",
        events.len(),
        (events.len() * rounds) as f64 / seconds
    );
}
