//! Events for the engine benchmark and its whole-process comparison, shared by
//! `benches/engine.rs` and the examples (included with `#[path]`).
#![allow(clippy::expect_used)]

use std::path::Path;

use rustc_hash::FxHashMap;
use serde_json::{Map, Value};
use vigil_sigma::{FlatRecord, FlatValue, source};

/// Every record of SigmaHQ's regression suite, from its JSON renderings (the evtx crate's
/// shape), in file order.
pub fn regression_events(sigma: &Path) -> Vec<Value> {
    let is_json = |path: &Path| path.extension().is_some_and(|ext| ext == "json");
    source::files_under(&sigma.join("regression_data"), &is_json)
        .expect("SigmaHQ's regression data is required (set VIGIL_SHARED_DIR)")
        .iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(file).expect("readable regression file");
            source::json_records(&text).0
        })
        .collect()
}

/// The hand-written flattening rsigma needs: System and EventData (and UserData's children) at
/// the top level, `#text` unwrapped, `Provider_Name` from the provider's attributes.
pub fn flatten(record: &Value) -> Value {
    let mut flat = Map::new();
    let event = &record["Event"];
    if let Some(system) = event["System"].as_object() {
        for (key, value) in system {
            let value = match value {
                Value::Object(map) => map.get("#text").cloned().unwrap_or_else(|| value.clone()),
                other => other.clone(),
            };
            flat.insert(key.clone(), value);
        }
        if let Some(name) = event["System"]["Provider"]["#attributes"]["Name"].as_str() {
            flat.insert("Provider_Name".to_owned(), Value::from(name));
        }
    }
    for container in [&event["EventData"], &event["UserData"]] {
        if let Some(data) = container.as_object() {
            for (key, value) in data {
                flat.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(flat)
}

/// A record's leaves under dotted keys, kept as a normalized event (`vigil_schema::Fields`)
/// keeps them: in the order of the keys' FxHash (not the document's, not sorted), with an
/// index of its keys. What the detect service hands `RuleSet::detect_flat`.
pub struct Flattened {
    entries: Vec<(String, Value)>,
    index: FxHashMap<String, usize>,
}

impl Flattened {
    pub fn new(value: &Value) -> Self {
        fn walk(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
            match value {
                Value::Object(map) => {
                    for (key, child) in map {
                        let path = if prefix.is_empty() {
                            key.clone()
                        } else {
                            format!("{prefix}.{key}")
                        };
                        walk(&path, child, out);
                    }
                }
                other => out.push((prefix.to_owned(), other.clone())),
            }
        }
        let mut entries = Vec::new();
        walk("", value, &mut entries);
        // Ordered as vigil_schema orders a record's keys: by the Fx hash of the key's bytes alone
        // (`str`'s `Hash` would add a terminator byte and give another order).
        let hash = |key: &str| {
            use std::hash::Hasher;
            let mut hasher = rustc_hash::FxHasher::default();
            hasher.write(key.as_bytes());
            hasher.finish()
        };
        entries.sort_by(|a, b| (hash(&a.0), &a.0).cmp(&(hash(&b.0), &b.0)));
        let index = entries
            .iter()
            .enumerate()
            .map(|(at, (key, _))| (key.clone(), at))
            .collect();
        Self { entries, index }
    }
}

fn flat_value(value: &Value) -> FlatValue<'_> {
    match value {
        Value::Null => FlatValue::Null,
        Value::Bool(b) => FlatValue::Bool(*b),
        Value::Number(n) => n.as_i64().map_or_else(
            || FlatValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            FlatValue::Int,
        ),
        Value::String(s) => FlatValue::Str(s),
        Value::Array(items) => FlatValue::List(items.iter().map(flat_value).collect()),
        Value::Object(_) => FlatValue::Null,
    }
}

impl FlatRecord for Flattened {
    fn for_each<'s>(&'s self, visit: &mut dyn FnMut(&'s str, FlatValue<'s>)) {
        for (key, value) in &self.entries {
            visit(key, flat_value(value));
        }
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.index.get(key).copied()
    }
}
