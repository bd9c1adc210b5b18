//! The detection engine on SigmaHQ's rules and the regression suite's Windows events (a Sysmon
//! and Security mix), beside rsigma's engine used directly on the same events flattened by hand
//! (every rule against every event, as rsigma's CLI does without routing).
//!
//! `cargo bench -p vigil-sigma --bench engine`; needs `../shared` (or `VIGIL_SHARED_DIR`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use vigil_sigma::{Mappings, RuleSet, source};

// The `vigil` binary's allocator: measured as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/mod.rs"]
mod support;
use support::{Flattened, flatten, regression_events};

fn sigma_dir() -> PathBuf {
    std::env::var_os("VIGIL_SHARED_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
            PathBuf::from,
        )
        .join("data/sigma")
}

fn rule_dirs() -> Vec<PathBuf> {
    let sigma = sigma_dir();
    ["rules", "rules-emerging-threats", "rules-threat-hunting"]
        .iter()
        .map(|dir| sigma.join(dir))
        .collect()
}

fn bench(c: &mut Criterion) {
    let dirs = rule_dirs();
    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    group.bench_function("all_sigmahq_rules_validated", |b| {
        b.iter(|| {
            let rules = RuleSet::load(&dirs, Arc::new(Mappings::builtin().unwrap())).unwrap();
            black_box(rules.check().loaded)
        });
    });
    let cache = tempfile::tempdir().unwrap();
    let cached = vigil_sigma::LoadOptions {
        cache_dir: Some(cache.path().to_owned()),
        ..vigil_sigma::LoadOptions::default()
    };
    RuleSet::load_with(&dirs, Arc::new(Mappings::builtin().unwrap()), &cached).unwrap();
    group.bench_function("all_sigmahq_rules_validated_warm_cache", |b| {
        b.iter(|| {
            let rules =
                RuleSet::load_with(&dirs, Arc::new(Mappings::builtin().unwrap()), &cached).unwrap();
            black_box(rules.check().loaded)
        });
    });
    group.bench_function("all_sigmahq_rules_every_engine_built", |b| {
        b.iter(|| {
            let rules = RuleSet::load(&dirs, Arc::new(Mappings::builtin().unwrap())).unwrap();
            rules.compile_all();
            black_box(rules.check().loaded)
        });
    });
    group.finish();

    let rules = RuleSet::load(&dirs, Arc::new(Mappings::builtin().unwrap())).unwrap();
    let events = regression_events(&sigma_dir());
    let hits: usize = events.iter().map(|event| rules.detect(event).len()).sum();
    println!(
        "{} rules, {} events, {hits} hits per pass",
        rules.check().loaded,
        events.len()
    );

    let mut group = c.benchmark_group("evaluate");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("vigil_routed", |b| {
        b.iter(|| {
            let mut hits = 0;
            for event in &events {
                hits += rules.detect(black_box(event)).len();
            }
            hits
        });
    });

    // The same records as flat dotted keys, as the detect service holds events.
    let flattened: Vec<Flattened> = events.iter().map(Flattened::new).collect();
    group.bench_function("vigil_routed_flat", |b| {
        b.iter(|| {
            let mut hits = 0;
            for record in &flattened {
                hits += rules.detect_flat(black_box(record)).len();
            }
            hits
        });
    });

    // rsigma alone: every rule in one engine, events flattened by hand.
    let mut collections = Vec::new();
    for dir in &dirs {
        let is_yml = |path: &Path| path.extension().is_some_and(|ext| ext == "yml");
        for file in source::files_under(dir, &is_yml).unwrap() {
            if let Ok(collection) =
                rsigma_parser::parse_sigma_yaml(&std::fs::read_to_string(file).unwrap())
            {
                collections.push(collection);
            }
        }
    }
    let mut engine = rsigma_eval::Engine::new();
    // One batch: `add_collection` per file rebuilds the index every time.
    let _ = engine.add_rules(
        collections
            .iter()
            .flat_map(|collection| collection.rules.iter()),
    );
    let flat: Vec<Value> = events.iter().map(flatten).collect();
    let raw_hits: usize = flat
        .iter()
        .map(|event| {
            engine
                .evaluate(&rsigma_eval::JsonEvent::borrow(event))
                .len()
        })
        .sum();
    println!(
        "rsigma alone: {} rules, {raw_hits} hits per pass",
        engine.rule_count()
    );
    group.bench_function("rsigma_flattened_unrouted", |b| {
        b.iter(|| {
            let mut hits = 0;
            for event in &flat {
                hits += engine
                    .evaluate(&rsigma_eval::JsonEvent::borrow(black_box(event)))
                    .len();
            }
            hits
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
