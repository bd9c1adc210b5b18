//! A JSON record seen through its shape: which logsource it belongs to, and Sigma field names
//! resolved against the record in place, without copying or re-serializing it.

use std::borrow::Cow;

use rsigma_eval::{Event, EventValue};
use rustc_hash::FxHashMap;
use serde_json::{Map, Value};

use crate::mapping::{
    MAX_CONTAINERS, Mappings, Path, Renames, Shape, WindowsCategory, unwrap_text,
};

/// Most categories one event can belong to at once (Sysmon 12 is registry_event and
/// registry_add or registry_delete).
pub(crate) const MAX_CATEGORIES: usize = 4;

/// Most services one record can belong to (an sshd syslog line is sshd, auth and syslog).
pub(crate) const MAX_SERVICES: usize = 4;

/// Deepest nesting the string walk follows (keyword searches), as rsigma's own events do.
const MAX_DEPTH: usize = 64;

/// A Sigma logsource, as a record belongs to it or as a rule asks for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Logsource {
    /// `product`, e.g. `windows`.
    pub product: Option<String>,
    /// `service`s, e.g. `sysmon`; a record may belong to several (an sshd syslog line is
    /// `sshd`, `auth` and `syslog`).
    pub services: Vec<String>,
    /// `category`, e.g. `process_creation`. A record may belong to several.
    pub categories: Vec<String>,
}

/// What shape recognition found out about a record, borrowing from the mappings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Classified<'m> {
    pub(crate) shape: Option<&'m Shape>,
    pub(crate) product: Option<&'m str>,
    pub(crate) services: [Option<&'m str>; MAX_SERVICES],
    pub(crate) categories: [Option<&'m WindowsCategory>; MAX_CATEGORIES],
    /// Field names are matched ignoring spaces and underscores (see windows.yml).
    pub(crate) loose: bool,
}

impl<'m> Classified<'m> {
    pub(crate) fn categories(&self) -> impl Iterator<Item = &'m WindowsCategory> + '_ {
        self.categories.iter().flatten().copied()
    }

    pub(crate) fn services(&self) -> impl Iterator<Item = &'m str> + '_ {
        self.services.iter().flatten().copied()
    }

    pub(crate) fn to_logsource(self) -> Logsource {
        Logsource {
            product: self.product.map(str::to_owned),
            services: self.services().map(str::to_owned).collect(),
            categories: self
                .categories()
                .map(|category| category.category.to_string())
                .collect(),
        }
    }
}

/// What classification needs to know about a record, whatever its layout.
pub(crate) trait Probe {
    /// Whether `path` names a value or an object.
    fn exists(&self, path: &Path) -> bool;
    /// The string at `path`.
    fn text(&self, path: &Path) -> Option<&str>;
    /// The number (or numeric string) at `path`.
    fn event_id(&self, path: &Path) -> Option<u32>;
    /// The string value of Sigma field `name` under `shape`.
    fn field_text(&self, shape: &Shape, name: &str) -> Option<&str>;
}

struct JsonProbe<'v>(&'v Value);

impl Probe for JsonProbe<'_> {
    fn exists(&self, path: &Path) -> bool {
        path.exists_in(self.0)
    }

    fn text(&self, path: &Path) -> Option<&str> {
        path.resolve(self.0)?.as_str()
    }

    fn event_id(&self, path: &Path) -> Option<u32> {
        as_event_id(path.resolve(self.0)?)
    }

    fn field_text(&self, shape: &Shape, name: &str) -> Option<&str> {
        if let Some(path) = shape.fields.get(name) {
            return path.resolve(self.0)?.as_str();
        }
        shape
            .containers
            .iter()
            .filter_map(|container| container.resolve_object(self.0))
            .find_map(|container| container.get(name))
            .map(unwrap_text)?
            .as_str()
    }
}

/// Recognizes `record`'s shape and derives its logsource.
pub(crate) fn classify<'m>(mappings: &'m Mappings, record: &Value) -> Classified<'m> {
    classify_with(mappings, &JsonProbe(record))
}

/// Recognizes a record's shape through `probe` and derives its logsource.
pub(crate) fn classify_with<'m>(mappings: &'m Mappings, record: &impl Probe) -> Classified<'m> {
    let mut classified = Classified {
        shape: None,
        product: None,
        services: [None; MAX_SERVICES],
        categories: [None; MAX_CATEGORIES],
        loose: false,
    };
    let Some(shape) = mappings
        .shapes
        .iter()
        .find(|shape| shape.recognize.iter().all(|path| record.exists(path)))
    else {
        return classified;
    };
    classified.shape = Some(shape);
    classified.product = shape.product.as_deref();
    classified.services[0] = shape.service.as_deref();
    classified.categories[0] = shape.category.as_ref();
    if let Some(path) = &shape.program {
        let linux = &mappings.linux;
        classified.product = Some(&linux.product);
        let program = record.text(path);
        let services = program
            .map(|program| linux.services(program))
            .unwrap_or_default()
            .iter()
            .chain(&linux.every_record);
        for (slot, service) in classified.services.iter_mut().zip(services) {
            *slot = Some(service);
        }
        return classified;
    }
    if !shape.windows {
        return classified;
    }
    let windows = &mappings.windows;
    classified.product = Some(&windows.product);
    let channel = shape.channel.as_ref().and_then(|path| record.text(path));
    let Some((service_index, service)) = channel.and_then(|channel| windows.service(channel))
    else {
        return classified;
    };
    classified.services[0] = Some(service);
    classified.loose = windows.loose(service_index);
    let Some(event_id) = shape
        .event_id
        .as_ref()
        .and_then(|path| record.event_id(path))
    else {
        return classified;
    };
    let candidates = windows.categories(service_index, event_id);
    let mut slots = classified.categories.iter_mut();
    for category in candidates {
        let applies = category.when.iter().all(|(field, expected)| {
            record
                .field_text(shape, field)
                .is_some_and(|value| value.eq_ignore_ascii_case(expected))
        });
        if applies && let Some(slot) = slots.next() {
            *slot = Some(category);
        }
    }
    classified
}

/// An EventID as a number, whether the record holds it as a number or a string.
fn as_event_id(value: &Value) -> Option<u32> {
    match value {
        Value::Number(number) => number.as_u64().and_then(|id| u32::try_from(id).ok()),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// A record seen with Sigma's field names. Implements rsigma's `Event` by looking fields up in
/// the record where they are; nothing is copied.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    root: &'a Value,
    shape: Option<&'a Shape>,
    containers: [Option<&'a Map<String, Value>>; MAX_CONTAINERS],
    renames: Option<&'a Renames>,
    loose: bool,
    /// Sigma name -> value for the shape's fields and the containers' keys, built once per
    /// record when it meets many rules ([`Record::build_index`]).
    index: Option<&'a FieldIndex<'a>>,
}

/// Sigma name -> value in the record, borrowed (FxHash: serde_json's own maps hash with SipHash
/// when `preserve_order` is on, which the `evtx` crate turns on).
pub(crate) type FieldIndex<'a> = FxHashMap<&'a str, &'a Value>;

impl<'a> Record<'a> {
    pub(crate) fn new(
        root: &'a Value,
        shape: Option<&'a Shape>,
        renames: Option<&'a Renames>,
        loose: bool,
    ) -> Self {
        let mut containers = [None; MAX_CONTAINERS];
        if let Some(shape) = shape {
            for (slot, path) in containers.iter_mut().zip(&shape.containers) {
                *slot = path.resolve_object(root);
            }
        }
        Self {
            root,
            shape,
            containers,
            renames,
            loose,
            index: None,
        }
    }

    /// Every name the shape's fields and the containers resolve, in lookup order (fixed fields
    /// first, then containers in order; the first wins).
    pub(crate) fn build_index(&self) -> FieldIndex<'a> {
        // Sized once: growing it rehashed every entry two or three times per record.
        let capacity = self.shape.map_or(0, |shape| shape.fields.len())
            + self
                .containers
                .iter()
                .flatten()
                .map(|container| container.len())
                .sum::<usize>();
        let mut index = FieldIndex::with_capacity_and_hasher(capacity, Default::default());
        if let Some(shape) = self.shape {
            shape.field_tree.resolve(self.root, &mut |name, value| {
                index.insert(name, value);
            });
            // Wildcard paths, and keys some shippers write dotted (`"winlog.channel": ...`).
            if index.len() < shape.fields.len() {
                for (name, path) in &shape.fields {
                    if !index.contains_key(name.as_ref())
                        && let Some(value) = path.resolve(self.root)
                    {
                        index.insert(name.as_ref(), value);
                    }
                }
            }
        }
        for container in self.containers.iter().flatten() {
            for (key, value) in *container {
                index
                    .entry(key.as_str())
                    .or_insert_with(|| unwrap_text(value));
            }
        }
        index
    }

    /// The same record, looking names up in `index` (built by [`Record::build_index`]).
    pub(crate) fn with_index(self, index: &'a FieldIndex<'a>) -> Self {
        Self {
            index: Some(index),
            ..self
        }
    }

    /// The same record with another logsource's renames.
    pub(crate) fn with_renames(self, renames: Option<&'a Renames>) -> Self {
        Self { renames, ..self }
    }

    /// The value of Sigma field `name`: renamed for this logsource, then the shape's fixed
    /// fields, then the containers, then a dotted path from the root.
    pub(crate) fn lookup(&self, name: &str) -> Option<&'a Value> {
        let name = match self.renames.and_then(|renames| renames.get(name)) {
            Some(renamed) => renamed.as_ref(),
            None => name,
        };
        if let Some(index) = self.index {
            if let Some(value) = index.get(name) {
                return Some(value);
            }
            return self.lookup_rest(name);
        }
        if let Some(shape) = self.shape
            && let Some(path) = shape.fields.get(name)
            && let Some(value) = path.resolve(self.root)
        {
            return Some(value);
        }
        for container in self.containers.iter().flatten() {
            if let Some(value) = container.get(name) {
                return Some(unwrap_text(value));
            }
        }
        self.lookup_rest(name)
    }

    /// The lookups the index does not cover: loose names, then a dotted path from the root.
    fn lookup_rest(&self, name: &str) -> Option<&'a Value> {
        if self.loose {
            for container in self.containers.iter().flatten() {
                if let Some((_, value)) = container
                    .iter()
                    .find(|(key, _)| key.contains(' ') && loosely_equal(key, name))
                {
                    return Some(unwrap_text(value));
                }
            }
        }
        let object = self.root.as_object()?;
        if let Some(value) = object.get(name) {
            return Some(unwrap_text(value));
        }
        if name.contains('.') {
            let mut current = self.root;
            for part in name.split('.') {
                current = current.as_object()?.get(part)?;
            }
            return Some(unwrap_text(current));
        }
        None
    }

    fn keywords_in_containers(&self) -> bool {
        self.shape.is_some_and(|shape| shape.keywords_in_containers)
    }

    /// The strings keyword rules search: the containers' values for shapes that say so
    /// (Windows event data, not the System block), else every string in the record.
    fn visit_keyword_strings(&self, visit: &mut dyn FnMut(&'a str)) {
        if self.keywords_in_containers() {
            for container in self.containers.iter().flatten() {
                for value in container.values() {
                    visit_strings(value, visit, MAX_DEPTH);
                }
            }
        } else {
            visit_strings(self.root, visit, MAX_DEPTH);
        }
    }

    /// The record's id within its file or source, when the shape says where it is.
    pub(crate) fn record_id(&self) -> Option<&'a Value> {
        self.shape?.record_id.as_ref()?.resolve(self.root)
    }

    /// The record's own timestamp, when the shape says where it is.
    pub(crate) fn timestamp(&self) -> Option<&'a Value> {
        self.shape?.timestamp.as_ref()?.resolve(self.root)
    }
}

impl Event for Record<'_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        self.lookup(path).map(EventValue::from)
    }

    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        if self.keywords_in_containers() {
            return self.containers.iter().flatten().any(|container| {
                container
                    .values()
                    .any(|value| any_string(value, pred, MAX_DEPTH))
            });
        }
        any_string(self.root, pred, MAX_DEPTH)
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        let mut values = Vec::new();
        self.visit_keyword_strings(&mut |value| values.push(value));
        values.into_iter().map(Cow::Borrowed).collect()
    }

    fn visit_string_values(&self, visit: &mut dyn FnMut(&str)) {
        self.visit_keyword_strings(&mut |value| visit(value));
    }

    fn to_json(&self) -> Value {
        self.root.clone()
    }

    /// Every name `lookup` can resolve starts with one of these: the containers' keys, the
    /// shape's fixed fields, this logsource's renamed fields and the root's keys.
    ///
    /// The prefilter (`gate.rs`) probes only the rule fields these keys name, so this must cover
    /// every name `lookup` resolves; the regression suite (gated against unfiltered) and the
    /// shape tests hold it to that.
    fn visit_top_level_keys(&self, visit: &mut dyn FnMut(&str)) -> bool {
        if self.loose {
            // Loosely matched names are not the keys themselves: let the index probe every
            // field it knows (only the few services marked loose pay this).
            return false;
        }
        match self.index {
            Some(index) => {
                for key in index.keys() {
                    visit(key);
                }
            }
            None => {
                for container in self.containers.iter().flatten() {
                    for key in container.keys() {
                        visit(key);
                    }
                }
                if let Some(shape) = self.shape {
                    for key in shape.fields.keys() {
                        visit(key);
                    }
                }
            }
        }
        if let Some(renames) = self.renames {
            for key in renames.keys() {
                visit(key);
            }
        }
        if let Some(object) = self.root.as_object() {
            for key in object.keys() {
                visit(key);
            }
        }
        true
    }
}

/// `Threat Name` == `ThreatName` == `Threat_Name`: equal once spaces and underscores are dropped.
pub(crate) fn loosely_equal(key: &str, name: &str) -> bool {
    let significant = |c: &char| *c != ' ' && *c != '_';
    key.chars()
        .filter(significant)
        .eq(name.chars().filter(significant))
}

fn any_string(value: &Value, pred: &dyn Fn(&str) -> bool, depth: usize) -> bool {
    if depth == 0 {
        return false;
    }
    match value {
        Value::String(text) => pred(text),
        Value::Object(map) => map.values().any(|child| any_string(child, pred, depth - 1)),
        Value::Array(items) => items.iter().any(|child| any_string(child, pred, depth - 1)),
        _ => false,
    }
}

fn visit_strings<'v>(value: &'v Value, visit: &mut dyn FnMut(&'v str), depth: usize) {
    if depth == 0 {
        return;
    }
    match value {
        Value::String(text) => visit(text),
        Value::Object(map) => {
            for child in map.values() {
                visit_strings(child, visit, depth - 1);
            }
        }
        Value::Array(items) => {
            for child in items {
                visit_strings(child, visit, depth - 1);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sysmon_registry(event_type: &str) -> Value {
        json!({"Event": {"System": {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 12,
                                     "Computer": "host1"},
                          "EventData": {"EventType": event_type, "TargetObject": "HKLM\\x"}}})
    }

    #[test]
    fn windows_events_get_service_and_categories() {
        let mappings = Mappings::builtin().unwrap();
        let record = sysmon_registry("CreateKey");
        let logsource = classify(&mappings, &record).to_logsource();
        assert_eq!(logsource.product.as_deref(), Some("windows"));
        assert_eq!(logsource.services, ["sysmon"]);
        assert_eq!(logsource.categories, ["registry_event", "registry_add"]);

        let record = sysmon_registry("DeleteValue");
        let logsource = classify(&mappings, &record).to_logsource();
        assert_eq!(logsource.categories, ["registry_event", "registry_delete"]);
    }

    #[test]
    fn security_4688_is_process_creation_with_renamed_fields() {
        let mappings = Mappings::builtin().unwrap();
        let record = json!({"Event": {"System": {"Channel": "Security", "EventID": 4688},
                                       "EventData": {"NewProcessName": "C:\\x.exe"}}});
        let classified = classify(&mappings, &record);
        let category = classified.categories().next().unwrap();
        assert_eq!(category.category.as_ref(), "process_creation");
        let view = Record::new(
            &record,
            classified.shape,
            category.renames.as_deref(),
            false,
        );
        assert_eq!(view.lookup("Image"), Some(&json!("C:\\x.exe")));
        assert_eq!(view.lookup("EventID"), Some(&json!(4688)));
        assert_eq!(view.lookup("Channel"), Some(&json!("Security")));
        // Without the logsource's renames the Sigma name does not exist on this event.
        assert_eq!(view.with_renames(None).lookup("Image"), None);
    }

    #[test]
    fn the_field_index_finds_what_each_path_finds() {
        let mappings = Mappings::builtin().unwrap();
        let records = [
            json!({"Event": {"System": {"Channel": "Security", "EventID": 4688, "Computer": "pc1",
                                        "Provider": {"#attributes": {"Name": "p", "Guid": "{g}"}},
                                        "Security": {"#attributes": {"UserID": "S-1-5-18"}}},
                             "EventData": {"NewProcessName": "C:\\x.exe"}}}),
            // Fields missing, a key written dotted at one level, an attribute block without
            // the attribute.
            json!({"Event": {"System": {"Channel": "Security", "EventID": {"#text": 4624},
                                        "Provider.#attributes.Name": "dotted",
                                        "Execution": {"#attributes": {}}},
                             "System.Computer": "not a field path"}}),
            json!({"winlog": {"channel": "Security", "event_id": 4625,
                              "event_data": {"TargetUserName": "bob"}},
                   "winlog.computer_name": "dotted-pc"}),
        ];
        for record in &records {
            let classified = classify(&mappings, record);
            let shape = classified.shape.expect("a known shape");
            let view = Record::new(record, Some(shape), None, false);
            let index = view.build_index();
            let indexed = view.with_index(&index);
            for name in shape.fields.keys() {
                assert_eq!(
                    indexed.lookup(name),
                    view.lookup(name),
                    "{name} in {record}"
                );
            }
        }
    }

    #[test]
    fn unknown_channels_and_records_have_no_logsource() {
        let mappings = Mappings::builtin().unwrap();
        let record = json!({"Event": {"System": {"Channel": "Made-Up/Channel", "EventID": 1}}});
        let logsource = classify(&mappings, &record).to_logsource();
        assert_eq!(logsource.product.as_deref(), Some("windows"));
        assert!(logsource.services.is_empty());
        assert!(logsource.categories.is_empty());

        let generic = json!({"message": "hello"});
        assert_eq!(
            classify(&mappings, &generic).to_logsource(),
            Logsource::default()
        );
    }
}
