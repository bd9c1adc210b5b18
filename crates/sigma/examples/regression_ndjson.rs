//! Writes the inputs of the whole-process comparison in docs/BENCHMARKS.md: SigmaHQ's
//! regression records as the evtx crate renders them (`nested.ndjson`, what `vigil hunt`
//! reads) and flattened by hand for rsigma (`flat.ndjson`), plus both repeated `TIMES` times
//! (`nested20.ndjson`, `flat20.ndjson` for the default 20).
//!
//! `cargo run --release -p vigil-sigma --example regression_ndjson -- SIGMA_DIR OUT_DIR [TIMES]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::Write;
use std::path::PathBuf;

// Only the event loader is used here.
#[allow(dead_code)]
#[path = "../benches/support/mod.rs"]
mod support;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(sigma), Some(out)) = (args.next(), args.next()) else {
        eprintln!("usage: regression_ndjson SIGMA_DIR OUT_DIR [TIMES]");
        std::process::exit(2);
    };
    let times: usize = args
        .next()
        .map_or(20, |n| n.parse().expect("TIMES is a number"));
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).unwrap();
    let events = support::regression_events(&PathBuf::from(sigma));
    let write = |name: String, repeat: usize, flat: bool| {
        let mut file = std::io::BufWriter::new(std::fs::File::create(out.join(name)).unwrap());
        for _ in 0..repeat {
            for event in &events {
                let event = if flat {
                    support::flatten(event)
                } else {
                    event.clone()
                };
                serde_json::to_writer(&mut file, &event).unwrap();
                file.write_all(b"\n").unwrap();
            }
        }
        file.flush().unwrap();
    };
    write("nested.ndjson".to_owned(), 1, false);
    write("flat.ndjson".to_owned(), 1, true);
    write(format!("nested{times}.ndjson"), times, false);
    write(format!("flat{times}.ndjson"), times, true);
    println!("{} records written to {}", events.len(), out.display());
}
