//! Decoding event batches as the detect service does, per event.
//!
//! `cargo bench -p vigil-detect --bench decode [-- --rounds N] [--passes N] [--only STEP]`
//!
//! `--only` times one step (`without-raw`, `with-raw`, `zstd`, `from-slice`), for profiling
//! one of them, e.g. counting its instructions under callgrind against `--rounds 0`.
//!
//! A batch of 500 events (SigmaHQ's regression records, cycled, each with its record's text as
//! `raw`, as ingest sends them) is encoded as ingest encodes it (`OutgoingMessage::
//! encode_compressed`: JSON, zstd level 1) and decoded with the bus's `decode_payload`: without
//! the raw records (the detect service) and with them. Beside them, in the same run, what the
//! decoding is made of: zstd alone, and parsing the JSON with `serde_json::from_slice`, which
//! checks each string's UTF-8 on its own (the bus's decoder before 2026-12-07).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use vigil_bus::{OutgoingMessage, decode_payload};
use vigil_schema::{EventBatch, EventBatchWithoutRaw, TenantId};

mod support;

/// The `vigil` binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 500;

/// The steps `--only` can name.
const STEPS: [&str; 4] = ["without-raw", "with-raw", "zstd", "from-slice"];

/// A batch of the regression records, cycled, each with its text as `raw`.
fn batch(shared: &Path) -> EventBatch {
    let tenant: TenantId = "acme".parse().unwrap();
    let events = support::events(&tenant, &support::records(shared), BATCH, 100);
    EventBatch { tenant, events }
}

/// Microseconds per event of `job`, run `rounds` times on the whole batch.
fn per_event(rounds: usize, mut job: impl FnMut()) -> f64 {
    if rounds == 0 {
        return f64::NAN;
    }
    let started = Instant::now();
    for _ in 0..rounds {
        job();
    }
    started.elapsed().as_secs_f64() * 1e6 / (rounds * BATCH) as f64
}

fn main() {
    let (mut rounds, mut passes, mut only) = (200, 3, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--rounds N")
            }
            "--passes" => {
                passes = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--passes N")
            }
            "--only" => {
                let step = args.next().expect("--only STEP");
                assert!(
                    STEPS.contains(&step.as_str()),
                    "--only takes one of {STEPS:?}"
                );
                only = Some(step);
            }
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    let batch = batch(&vigil_e2e::shared_dir());
    let message = OutgoingMessage::encode_compressed(&batch, "bench").unwrap();
    let json = serde_json::to_vec(&batch).unwrap();
    println!(
        "batch: {BATCH} events, {} bytes of JSON, {} compressed; {rounds} rounds each",
        json.len(),
        message.payload.len()
    );
    let rounds_of = |name: &str| {
        if only.as_deref().is_none_or(|only| only == name) {
            rounds
        } else {
            0
        }
    };
    // Vigil's publishers state each frame's size, so the decoder decompresses in one call.
    let size = zstd::zstd_safe::get_frame_content_size(&message.payload)
        .ok()
        .flatten()
        .and_then(|size| usize::try_from(size).ok())
        .expect("encode_compressed states the frame's size");
    for pass in 1..=passes {
        let zstd = per_event(rounds_of("zstd"), || {
            black_box(zstd::bulk::decompress(&message.payload, size).unwrap());
        });
        let from_slice = per_event(rounds_of("from-slice"), || {
            black_box(serde_json::from_slice::<EventBatchWithoutRaw>(&json).unwrap());
        });
        let without_raw = per_event(rounds_of("without-raw"), || {
            black_box(
                decode_payload::<EventBatchWithoutRaw>(&message.headers, &message.payload).unwrap(),
            );
        });
        let with_raw = per_event(rounds_of("with-raw"), || {
            black_box(decode_payload::<EventBatch>(&message.headers, &message.payload).unwrap());
        });
        println!(
            "pass {pass}, µs per event: decode_payload without raw {without_raw:.2}, with raw {with_raw:.2}; zstd alone {zstd:.2}, serde_json::from_slice without raw (no zstd) {from_slice:.2}"
        );
    }
}
