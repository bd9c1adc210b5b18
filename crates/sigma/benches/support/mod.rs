//! Events for the engine benchmark and its whole-process comparison, shared by
//! `benches/engine.rs` and the examples (included with `#[path]`).
#![allow(clippy::expect_used)]

use std::path::Path;

use serde_json::{Map, Value};
use vigil_sigma::source;

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
