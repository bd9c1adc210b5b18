//! Evaluation loop for profilers (callgrind, perf): every SigmaHQ rule against the regression
//! suite's JSON events, `ROUNDS` times; with `flat`, the same records as flat dotted keys
//! (`RuleSet::detect_flat`, the detect service's path). `cargo run --release -p vigil-sigma
//! --example eval_profile -- SIGMA_DIR [ROUNDS] [flat]`
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
    let flat = args.next().is_some_and(|mode| mode == "flat");
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
