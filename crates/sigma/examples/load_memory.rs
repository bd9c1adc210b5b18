//! Where rule loading's memory goes: resident set after each phase, with the system allocator.
//! `cargo run --release -p vigil-sigma --example load_memory -- DIR... [--rsigma]` (`--rsigma`
//! also loads every rule into one plain rsigma engine, for comparison).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

fn status(label: &str, started: Instant) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let pick = |key: &str| {
        text.lines()
            .find(|line| line.starts_with(key))
            .map(|line| line.split_whitespace().nth(1).unwrap_or("?").to_owned())
            .unwrap_or_default()
    };
    println!(
        "{label:<28} {:>8.3} s  rss {:>8} KB  peak {:>8} KB",
        started.elapsed().as_secs_f64(),
        pick("VmRSS:"),
        pick("VmHWM:")
    );
}

fn main() {
    let compare = std::env::args().any(|arg| arg == "--rsigma");
    let dirs: Vec<PathBuf> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--rsigma")
        .map(PathBuf::from)
        .collect();
    let started = Instant::now();
    status("start", started);
    let mappings = Arc::new(vigil_sigma::Mappings::builtin().unwrap());
    let rules = vigil_sigma::RuleSet::load(&dirs, mappings).unwrap();
    status("loaded", started);
    rules.compile_all();
    status("every prefilter built", started);
    println!(
        "{} rules, {} partitions",
        rules.check().loaded,
        rules.partitions().count()
    );
    drop(rules);
    status("dropped", started);

    if !compare {
        return;
    }
    // rsigma alone, for comparison: parse everything, then one engine with every rule.
    let is_yml = |path: &std::path::Path| path.extension().is_some_and(|ext| ext == "yml");
    let files: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|dir| vigil_sigma::source::files_under(dir, &is_yml).unwrap())
        .collect();
    let started = Instant::now();
    let collections: Vec<_> = files
        .iter()
        .filter_map(|file| {
            rsigma_parser::parse_sigma_yaml(&std::fs::read_to_string(file).unwrap()).ok()
        })
        .collect();
    status("rsigma: parsed", started);
    let mut engine = rsigma_eval::Engine::new();
    let _ = engine.add_rules(
        collections
            .iter()
            .flat_map(|collection| collection.rules.iter()),
    );
    status("rsigma: one engine", started);
    drop(collections);
    status("rsigma: ASTs dropped", started);
    println!("{} rules", engine.rule_count());
}
