//! Records whose fields are already flat, keyed by dotted path (`Event.EventData.Image`): how
//! Vigil's normalized event stores a source's fields (`vigil_runtime::EventFields` reads them as
//! a [`FlatRecord`]; this crate depends on nothing internal). [`crate::RuleSet::detect_flat`]
//! classifies and evaluates them through the same shapes, logsources and partitions as JSON
//! records, reading values where they are; [`Mappings::describe_flat`] gives ingest a record's
//! shape, logsource, timestamp and host in one classification.

use std::borrow::Cow;

use rsigma_eval::{Event, EventValue};
use rustc_hash::FxHashMap;
use serde_json::Value;

use crate::engine::RecordMeta;
use crate::mapping::{Mappings, Path, Renames, Shape};
use crate::record::{Classified, Logsource, Probe, classify_with, loosely_equal};

/// A field value borrowed from a flat record.
#[derive(Debug, Clone, PartialEq)]
pub enum FlatValue<'a> {
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(&'a str),
    /// A list.
    List(Vec<FlatValue<'a>>),
}

impl FlatValue<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            FlatValue::Str(text) => Some(text),
            _ => None,
        }
    }

    fn to_event_value(&self) -> EventValue<'_> {
        match self {
            FlatValue::Null => EventValue::Null,
            FlatValue::Bool(value) => EventValue::Bool(*value),
            FlatValue::Int(value) => EventValue::Int(*value),
            FlatValue::Float(value) => EventValue::Float(*value),
            FlatValue::Str(text) => EventValue::Str(Cow::Borrowed(text)),
            FlatValue::List(items) => {
                EventValue::Array(items.iter().map(FlatValue::to_event_value).collect())
            }
        }
    }

    fn to_json(&self) -> Value {
        match self {
            FlatValue::Null => Value::Null,
            FlatValue::Bool(value) => Value::from(*value),
            FlatValue::Int(value) => Value::from(*value),
            FlatValue::Float(value) => Value::from(*value),
            FlatValue::Str(text) => Value::from(*text),
            FlatValue::List(items) => Value::Array(items.iter().map(FlatValue::to_json).collect()),
        }
    }

    fn visit_strings<'s>(&'s self, visit: &mut dyn FnMut(&'s str)) {
        match self {
            FlatValue::Str(text) => visit(text),
            FlatValue::List(items) => {
                for item in items {
                    item.visit_strings(visit);
                }
            }
            _ => {}
        }
    }
}

/// A record with flat, dotted keys.
pub trait FlatRecord {
    /// Calls `visit` with every (dotted key, value).
    fn for_each<'s>(&'s self, visit: &mut dyn FnMut(&'s str, FlatValue<'s>));
}

/// What ingest records about a record, from one classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description<'m> {
    /// The shape's name (`evtx`, `winlogbeat`, `cloudtrail`, …), `json` when none fits.
    pub shape: &'m str,
    /// The Sigma logsource.
    pub logsource: Logsource,
    /// The record's own id, timestamp and host, where its shape says.
    pub meta: RecordMeta,
}

impl Mappings {
    /// A flat record's shape, logsource, id, timestamp and host: what [`Mappings::shape_name`],
    /// [`Mappings::logsource_of`] and [`Mappings::record_meta`] give for the nested record,
    /// classifying it once.
    pub fn describe_flat(&self, record: &impl FlatRecord) -> Description<'_> {
        let entries = FlatEntries::new(record);
        let classified = classify_flat(self, &entries);
        let shape = classified.shape;
        let at = |path: Option<&Path>| path.and_then(|path| entries.value(path));
        let text = |value: &FlatValue<'_>| match value {
            FlatValue::Str(text) => (*text).to_owned(),
            other => other.to_json().to_string(),
        };
        let meta = RecordMeta {
            record_id: at(shape.and_then(|shape| shape.record_id.as_ref())).map(FlatValue::to_json),
            timestamp: at(shape.and_then(|shape| shape.timestamp.as_ref())).map(text),
            computer: entries.field(shape, "Computer").map(text),
        };
        Description {
            shape: shape.map_or("json", |shape| &*shape.name),
            logsource: classified.to_logsource(),
            meta,
        }
    }
}

/// A flat record's entries sorted by key, for path probes.
pub(crate) struct FlatEntries<'a> {
    entries: Vec<(&'a str, FlatValue<'a>)>,
}

impl<'a> FlatEntries<'a> {
    pub(crate) fn new(record: &'a impl FlatRecord) -> Self {
        let mut entries = Vec::new();
        record.for_each(&mut |key, value| entries.push((key, value)));
        entries.sort_by(|a, b| a.0.cmp(b.0));
        Self { entries }
    }

    fn get(&self, key: &str) -> Option<&FlatValue<'a>> {
        self.entries
            .binary_search_by(|(have, _)| (*have).cmp(key))
            .ok()
            .map(|index| &self.entries[index].1)
    }

    /// The value at `path`, or at `path.#text` (an element with attributes, flattened).
    fn value(&self, path: &Path) -> Option<&FlatValue<'a>> {
        if path.has_wildcard() {
            return self
                .entries
                .iter()
                .find(|(key, _)| path.matches_flat(key) || path.matches_flat_text(key))
                .map(|(_, value)| value);
        }
        // Sorted keys put `path` first and `path.#text` after any `path.#attributes...`; look
        // through the keys under `path` without building the `.#text` key.
        let full = path.full();
        let start = self.entries.partition_point(|(key, _)| *key < full);
        let mut text = None;
        for (key, value) in &self.entries[start..] {
            let Some(rest) = key.strip_prefix(full) else {
                break;
            };
            match rest {
                "" => return Some(value),
                ".#text" => text = Some(value),
                _ => {}
            }
        }
        text
    }

    /// Sigma field `name` as the record's shape places it (its path, then its containers),
    /// else a key of that name: where the nested record's lookup finds it.
    fn field(&self, shape: Option<&Shape>, name: &str) -> Option<&FlatValue<'a>> {
        if let Some(shape) = shape {
            if let Some(value) = shape.fields.get(name).and_then(|path| self.value(path)) {
                return Some(value);
            }
            let in_container = shape.containers.iter().find_map(|container| {
                self.entries.iter().find_map(|(key, value)| {
                    let rest = container.strip_flat_prefix(key)?;
                    (rest.strip_suffix(".#text").unwrap_or(rest) == name).then_some(value)
                })
            });
            if in_container.is_some() {
                return in_container;
            }
        }
        self.get(name)
            .or_else(|| self.get(&format!("{name}.#text")))
    }

    /// Whether `path` names a value or an object (some key starts with `path.`).
    fn exists(&self, path: &Path) -> bool {
        if path.has_wildcard() {
            return self
                .entries
                .iter()
                .any(|(key, _)| path.is_prefix_of_flat(key));
        }
        let full = path.full();
        let start = self.entries.partition_point(|(key, _)| *key < full);
        self.entries[start..].first().is_some_and(|(key, _)| {
            *key == full || (key.starts_with(full) && key.as_bytes().get(full.len()) == Some(&b'.'))
        })
    }
}

/// Sigma name -> value for a flat record of a known shape.
pub(crate) struct FlatIndex<'a> {
    names: FxHashMap<&'a str, &'a FlatValue<'a>>,
    /// Entries inside the shape's containers, for keyword searches.
    in_containers: Vec<&'a FlatValue<'a>>,
}

impl<'a> FlatIndex<'a> {
    pub(crate) fn new(entries: &'a FlatEntries<'a>, shape: Option<&'a Shape>) -> Self {
        let mut names: FxHashMap<&'a str, &'a FlatValue<'a>> = FxHashMap::default();
        let mut in_containers = Vec::new();
        let Some(shape) = shape else {
            return Self {
                names,
                in_containers,
            };
        };
        for (name, path) in &shape.fields {
            if let Some(value) = entries.value(path) {
                names.insert(name.as_ref(), value);
            }
        }
        for container in &shape.containers {
            for (key, value) in &entries.entries {
                let Some(name) = container.strip_flat_prefix(key) else {
                    continue;
                };
                in_containers.push(value);
                let name = name.strip_suffix(".#text").unwrap_or(name);
                names.entry(name).or_insert(value);
            }
        }
        Self {
            names,
            in_containers,
        }
    }
}

impl Probe for FlatEntries<'_> {
    fn exists(&self, path: &Path) -> bool {
        FlatEntries::exists(self, path)
    }

    fn text(&self, path: &Path) -> Option<&str> {
        self.value(path)?.as_str()
    }

    fn event_id(&self, path: &Path) -> Option<u32> {
        match self.value(path)? {
            FlatValue::Int(id) => u32::try_from(*id).ok(),
            FlatValue::Str(text) => text.trim().parse().ok(),
            _ => None,
        }
    }

    fn field_text(&self, shape: &Shape, name: &str) -> Option<&str> {
        if let Some(path) = shape.fields.get(name) {
            return self.text(path);
        }
        shape.containers.iter().find_map(|container| {
            self.entries.iter().find_map(|(key, value)| {
                (container.strip_flat_prefix(key)? == name).then(|| value.as_str())?
            })
        })
    }
}

/// A flat record seen with Sigma's field names: rsigma's `Event` over the index.
#[derive(Clone, Copy)]
pub(crate) struct FlatView<'a> {
    entries: &'a FlatEntries<'a>,
    index: &'a FlatIndex<'a>,
    shape: Option<&'a Shape>,
    renames: Option<&'a Renames>,
    loose: bool,
}

impl<'a> FlatView<'a> {
    pub(crate) fn new(
        entries: &'a FlatEntries<'a>,
        index: &'a FlatIndex<'a>,
        classified: &Classified<'a>,
    ) -> Self {
        Self {
            entries,
            index,
            shape: classified.shape,
            renames: None,
            loose: classified.loose,
        }
    }

    pub(crate) fn with_renames(self, renames: Option<&'a Renames>) -> Self {
        Self { renames, ..self }
    }

    fn lookup(&self, name: &str) -> Option<&'a FlatValue<'a>> {
        let name = match self.renames.and_then(|renames| renames.get(name)) {
            Some(renamed) => renamed.as_ref(),
            None => name,
        };
        if let Some(value) = self.index.names.get(name) {
            return Some(value);
        }
        if self.loose
            && let Some((_, value)) = self
                .index
                .names
                .iter()
                .find(|(key, _)| key.contains(' ') && loosely_equal(key, name))
        {
            return Some(value);
        }
        self.entries.get(name)
    }

    fn keywords_in_containers(&self) -> bool {
        self.shape.is_some_and(|shape| shape.keywords_in_containers)
    }

    fn visit_keyword_strings(&self, visit: &mut dyn FnMut(&'a str)) {
        if self.keywords_in_containers() {
            for value in &self.index.in_containers {
                value.visit_strings(visit);
            }
        } else {
            for (_, value) in &self.entries.entries {
                value.visit_strings(visit);
            }
        }
    }
}

impl Event for FlatView<'_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        self.lookup(path).map(FlatValue::to_event_value)
    }

    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        let mut found = false;
        self.visit_keyword_strings(&mut |text| found = found || pred(text));
        found
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        let mut values = Vec::new();
        self.visit_keyword_strings(&mut |text| values.push(Cow::Borrowed(text)));
        values
    }

    fn visit_string_values(&self, visit: &mut dyn FnMut(&str)) {
        self.visit_keyword_strings(&mut |text| visit(text));
    }

    fn to_json(&self) -> Value {
        Value::Object(
            self.entries
                .entries
                .iter()
                .map(|(key, value)| ((*key).to_owned(), value.to_json()))
                .collect(),
        )
    }

    fn visit_top_level_keys(&self, visit: &mut dyn FnMut(&str)) -> bool {
        if self.loose {
            return false;
        }
        for key in self.index.names.keys() {
            visit(key);
        }
        if let Some(renames) = self.renames {
            for key in renames.keys() {
                visit(key);
            }
        }
        // Dotted names resolve against the full keys, under their first segments.
        let mut last = "";
        for (key, _) in &self.entries.entries {
            let first = key.split('.').next().unwrap_or(key);
            if first != last {
                visit(first);
                last = first;
            }
        }
        true
    }
}

/// Classifies a flat record.
pub(crate) fn classify_flat<'m>(
    mappings: &'m Mappings,
    entries: &FlatEntries<'_>,
) -> Classified<'m> {
    classify_with(mappings, entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pairs(Vec<(&'static str, FlatValue<'static>)>);

    impl FlatRecord for Pairs {
        fn for_each<'s>(&'s self, visit: &mut dyn FnMut(&'s str, FlatValue<'s>)) {
            for (key, value) in &self.0 {
                visit(key, value.clone());
            }
        }
    }

    #[test]
    fn elements_with_attributes_resolve_to_their_text() {
        let mappings = Mappings::builtin().unwrap();
        let record = Pairs(vec![
            ("Event.System.Channel", FlatValue::Str("Security")),
            (
                "Event.System.EventID.#attributes.Qualifiers",
                FlatValue::Int(16384),
            ),
            ("Event.System.EventID.#text", FlatValue::Int(4688)),
            ("Event.System.EventIDs", FlatValue::Int(1)),
            (
                "Event.EventData.NewProcessName",
                FlatValue::Str("C:\\x.exe"),
            ),
        ]);
        let entries = FlatEntries::new(&record);
        let classified = classify_flat(&mappings, &entries);
        let logsource = classified.to_logsource();
        assert_eq!(logsource.services, ["security"]);
        assert_eq!(logsource.categories, ["process_creation"]);
        let index = FlatIndex::new(&entries, classified.shape);
        let category = classified.categories().next().unwrap();
        let view =
            FlatView::new(&entries, &index, &classified).with_renames(category.renames.as_deref());
        assert_eq!(view.lookup("EventID"), Some(&FlatValue::Int(4688)));
        assert_eq!(view.lookup("Image"), Some(&FlatValue::Str("C:\\x.exe")));
    }
}
