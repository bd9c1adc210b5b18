//! What a tenant's VRL parser costs per record (`ingest.parsers.<tenant>`): CEF firewall lines
//! normalized through acme's parser, against the same lines entering as generic text and the
//! parser's output posted as JSON (no parser), on one core.
//! `cargo bench -p vigil-ingest --bench parsers -- --warm-up-time 1 --measurement-time 5`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use time::OffsetDateTime;
use vigil_ingest::normalize::{Normalizer, Origin};
use vigil_ingest::parsers::{ParserConfig, compile_all};
use vigil_schema::TenantId;

/// The program of the custom-parser test: CEF into fields normalization understands.
const PROGRAM: &str = include_str!("../tests/data/cef_firewall.vrl");

const RECORDS: usize = 1_000;

fn cef(n: usize) -> String {
    format!(
        "CEF:0|Acme|Firewall|1.0|100|Connection blocked|5|src=203.0.113.{} dst=10.0.{}.5 spt={} dpt=443 proto=TCP suser=user{} act=blocked",
        n % 250,
        n % 200,
        40_000 + n % 20_000,
        n % 97
    )
}

fn bench(c: &mut Criterion) {
    let acme = TenantId::new("acme").unwrap();
    let globex = TenantId::new("globex").unwrap();
    let parsers = compile_all(&BTreeMap::from([(
        acme.clone(),
        ParserConfig {
            source: Some(PROGRAM.to_owned()),
            file: None,
        },
    )]))
    .unwrap();
    let parser = parsers.get(&acme).unwrap().clone();
    // A program that only sets one field: the cost of handing a record to VRL and back.
    let trivial = compile_all(&BTreeMap::from([(
        acme.clone(),
        ParserConfig {
            source: Some(r#".parsed_by = "acme-firewall""#.to_owned()),
            file: None,
        },
    )]))
    .unwrap()
    .remove(&acme)
    .unwrap();
    let normalizer = Normalizer::builtin().unwrap().with_parsers(parsers);
    let received = OffsetDateTime::now_utc();
    let origin = |tenant| Origin {
        tenant,
        transport: "http",
        peer: None,
        request_key: "bench",
        received,
    };

    let lines: Vec<(serde_json::Value, String)> = (0..RECORDS)
        .map(|n| {
            let text = serde_json::json!({ "message": cef(n) }).to_string();
            (serde_json::from_str(&text).unwrap(), text)
        })
        .collect();
    // What the parser produces, posted as JSON instead: the same fields, no program.
    let parsed: Vec<(serde_json::Value, String)> = lines
        .iter()
        .map(|(value, _)| {
            let out = parser.apply(value.clone()).unwrap();
            let text = out.to_string();
            (out, text)
        })
        .collect();
    let sample = normalizer.event(&origin(&acme), 0, lines[0].0.clone(), &lines[0].1);
    assert_eq!(sample.parse_error, None);
    assert_eq!(sample.entities.user.as_deref(), Some("user0"));

    let mut group = c.benchmark_group("normalize");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function("cef_through_the_tenants_vrl_parser", |b| {
        b.iter(|| {
            for (index, (value, text)) in lines.iter().enumerate() {
                black_box(normalizer.event(&origin(&acme), index, value.clone(), text));
            }
        });
    });
    group.bench_function("vrl_parser_alone", |b| {
        b.iter(|| {
            for (value, _) in &lines {
                black_box(parser.apply(value.clone()).unwrap());
            }
        });
    });
    group.bench_function("one_assignment_vrl_program_alone", |b| {
        b.iter(|| {
            for (value, _) in &lines {
                black_box(trivial.apply(value.clone()).unwrap());
            }
        });
    });
    group.bench_function("same_fields_as_json_no_parser", |b| {
        b.iter(|| {
            for (index, (value, text)) in parsed.iter().enumerate() {
                black_box(normalizer.event(&origin(&globex), index, value.clone(), text));
            }
        });
    });
    group.bench_function("cef_as_generic_text_no_parser", |b| {
        b.iter(|| {
            for (index, (value, text)) in lines.iter().enumerate() {
                black_box(normalizer.event(&origin(&globex), index, value.clone(), text));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
