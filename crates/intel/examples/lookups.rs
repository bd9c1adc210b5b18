//! Memory and lookup cost of one feed, hits and misses apart: `cargo run --release -p
//! vigil-intel --example lookups -- FEED` (a list feed; BENCHMARKS.md gives the command that
//! writes the 1,000,000-indicator one).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Instant;

use vigil_intel::{IntelBuilder, parse_feed};

fn rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Nanoseconds per call of `lookup` over `probes`, repeated to about 2,000,000 calls.
fn per_lookup<T>(probes: &[T], lookup: impl Fn(&T) -> bool) -> (f64, usize) {
    let rounds = (2_000_000 / probes.len().max(1)).max(1);
    let began = Instant::now();
    let mut hits = 0;
    for _ in 0..rounds {
        for probe in probes {
            hits += usize::from(black_box(lookup(probe)));
        }
    }
    let calls = rounds * probes.len();
    (began.elapsed().as_nanos() as f64 / calls as f64, hits)
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: lookups FEED");
    let text = std::fs::read(&path).unwrap();
    let now = 1_800_000_000;
    let before = rss_mb();
    let began = Instant::now();
    let mut builder = IntelBuilder::new();
    let report = parse_feed("bench", "list", &text, now, &mut |i| builder.add(i)).unwrap();
    let set = builder.build();
    let took = began.elapsed().as_secs_f64();
    drop(text);
    println!(
        "{} indicators ({} skipped) in {took:.2} s; RSS {before} MB before, {} MB after",
        set.len(),
        report.skipped,
        rss_mb()
    );

    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let pick = |keep: &dyn Fn(&str) -> bool| -> Vec<String> {
        lines
            .iter()
            .filter(|line| keep(line))
            .step_by(7)
            .take(100_000)
            .cloned()
            .collect()
    };
    let addresses: Vec<IpAddr> = pick(&|line| line.parse::<IpAddr>().is_ok())
        .iter()
        .map(|line| line.parse().unwrap())
        .collect();
    let absent: Vec<IpAddr> = (0..100_000u32)
        .map(|n| IpAddr::from(std::net::Ipv4Addr::from((224 + n % 16) << 24 | n)))
        .collect();
    let digests = pick(&|line| line.len() == 64);
    let other_digests: Vec<String> = digests.iter().map(|d| d.replace('0', "1")).collect();
    let domains: Vec<String> = pick(&|line| line.starts_with("host"))
        .iter()
        .map(|name| format!("www.{name}"))
        .collect();
    let other_domains: Vec<String> = (0..100_000)
        .map(|n| format!("host{n}.clean.example.org"))
        .collect();

    let report = |kind: &str, (hit_ns, hits): (f64, usize), (miss_ns, misses): (f64, usize)| {
        println!("{kind}: hit {hit_ns:.0} ns ({hits} hits), miss {miss_ns:.0} ns ({misses} hits)");
    };
    report(
        "IPv4 address",
        per_lookup(&addresses, |a| set.lookup_ip(*a, now).is_some()),
        per_lookup(&absent, |a| set.lookup_ip(*a, now).is_some()),
    );
    report(
        "domain with parents",
        per_lookup(&domains, |d| set.lookup_domain(d, now).is_some()),
        per_lookup(&other_domains, |d| set.lookup_domain(d, now).is_some()),
    );
    report(
        "SHA-256",
        per_lookup(&digests, |d| set.lookup_hash(d, now).is_some()),
        per_lookup(&other_digests, |d| set.lookup_hash(d, now).is_some()),
    );
}
