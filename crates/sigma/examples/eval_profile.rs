//! Evaluation loop for profilers (callgrind, perf): every SigmaHQ rule against the regression
//! suite's JSON events, `ROUNDS` times; with `flat`, the same records as flat dotted keys
//! (`RuleSet::detect_flat`, the detect service's path); with `fresh`, flat records too, but each
//! evaluation on a new copy made just before its batch of `BATCH` (500) records, as a stream
//! delivers them, not on the same 238 records kept warm in the caches. `cargo run --release -p
//! vigil-sigma --example eval_profile -- SIGMA_DIR [ROUNDS] [flat | fresh [BATCH]]`
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

// Only the event loader and the flat records are used here.
#[allow(dead_code)]
#[path = "../benches/support/mod.rs"]
mod support;

// The `vigil` binary's allocator: measured as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let sigma = PathBuf::from(args.next().unwrap());
    let rounds: usize = args.next().map_or(10, |n| n.parse().unwrap());
    let mode = args.next().unwrap_or_default();
    let flat = mode == "flat";
    let fresh = mode == "fresh";
    let size: usize = args.next().map_or(500, |n| n.parse().unwrap());
    let dirs: Vec<PathBuf> = ["rules", "rules-emerging-threats", "rules-threat-hunting"]
        .iter()
        .map(|dir| sigma.join(dir))
        .collect();
    let rules =
        vigil_sigma::RuleSet::load(&dirs, Arc::new(vigil_sigma::Mappings::builtin().unwrap()))
            .unwrap();
    // Prefilters are built on a logsource's first record; build them all outside the loop.
    rules.compile_all();
    let events = support::regression_events(&sigma);
    let flattened: Vec<support::Flattened> = events.iter().map(support::Flattened::new).collect();
    if fresh {
        // As a stream delivers them: every record a new copy, made just before its batch is
        // evaluated; only the evaluation is timed.
        let mut hits = 0;
        let mut spent = std::time::Duration::ZERO;
        let all: Vec<&serde_json::Value> = (0..rounds).flat_map(|_| events.iter()).collect();
        for chunk in all.chunks(size) {
            let batch: Vec<support::Flattened> =
                chunk.iter().map(|e| support::Flattened::new(e)).collect();
            let started = Instant::now();
            for record in &batch {
                hits += rules.detect_flat(record).len();
            }
            spent += started.elapsed();
        }
        println!(
            "{} events x {rounds}, fresh copies in batches of {size}: {hits} hits, {:.0} events/s",
            events.len(),
            all.len() as f64 / spent.as_secs_f64()
        );
        return;
    }
    let started = Instant::now();
    let mut hits = 0;
    for _ in 0..rounds {
        if flat {
            for record in &flattened {
                hits += rules.detect_flat(record).len();
            }
        } else {
            for event in &events {
                hits += rules.detect(event).len();
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{} events x {rounds}: {hits} hits, {:.0} events/s",
        events.len(),
        (events.len() * rounds) as f64 / seconds
    );
}
