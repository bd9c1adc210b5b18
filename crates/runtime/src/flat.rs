//! The schema's fields as the detection engine reads them. `vigil-sigma` depends on nothing
//! internal (the design brief's code map), so the adapter between the two lives here, where
//! ingest (classification) and detect (detection and correlation) both get it.

use vigil_schema::{FieldValue, Fields};
use vigil_sigma::{FlatRecord, FlatValue};

/// A normalized event's fields as a flat record, read in place without copying.
#[derive(Debug, Clone, Copy)]
pub struct EventFields<'a>(pub &'a Fields);

fn flat(value: &FieldValue) -> FlatValue<'_> {
    match value {
        FieldValue::Null | FieldValue::Object(_) => FlatValue::Null,
        FieldValue::Bool(b) => FlatValue::Bool(*b),
        FieldValue::Int(i) => FlatValue::Int(*i),
        FieldValue::Float(f) => FlatValue::Float(*f),
        FieldValue::Str(s) => FlatValue::Str(s),
        FieldValue::Array(items) => FlatValue::List(items.iter().map(flat).collect()),
    }
}

impl FlatRecord for EventFields<'_> {
    fn for_each<'s>(&'s self, visit: &mut dyn FnMut(&'s str, FlatValue<'s>)) {
        for (key, value) in self.0.iter() {
            visit(key, flat(value));
        }
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.0.index_of(key)
    }
}
