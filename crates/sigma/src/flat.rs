//! Records whose fields are already flat, keyed by dotted path (`Event.EventData.Image`): how
//! Vigil's normalized event stores a source's fields (`vigil_runtime::EventFields` reads them as
//! a [`FlatRecord`]; this crate depends on nothing internal). [`crate::RuleSet::detect_flat`]
//! classifies and evaluates them through the same shapes, logsources and partitions as JSON
//! records, reading values where they are; [`Mappings::describe_flat`] gives ingest a record's
//! shape, logsource, timestamp and host in one classification.

use std::borrow::Cow;

use rsigma_eval::{Event, EventValue};
use std::cell::RefCell;
use std::hash::Hasher;
use std::rc::Rc;

use rustc_hash::{FxHashMap, FxHasher};
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
    /// Calls `visit` with every (dotted key, value), in the same order on every call.
    fn for_each<'s>(&'s self, visit: &mut dyn FnMut(&'s str, FlatValue<'s>));

    /// Where `key` comes in [`FlatRecord::for_each`]'s order, if the record has it. The default
    /// walks the record; a record that keeps an index of its keys should answer from it, since
    /// every field lookup of classification and detection comes here.
    fn position(&self, key: &str) -> Option<usize> {
        let mut found = None;
        let mut index = 0;
        self.for_each(&mut |have, _| {
            if found.is_none() && have == key {
                found = Some(index);
            }
            index += 1;
        });
        found
    }
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

/// A flat record's entries in the record's own order, found by key through
/// [`FlatRecord::position`]. Nothing is sorted per record: a normalized event already keeps an
/// index of its keys.
pub(crate) struct FlatEntries<'a> {
    record: &'a dyn FlatRecord,
    entries: Vec<(&'a str, FlatValue<'a>)>,
    /// A hash of the keys in order, under which their [`Layout`] is kept.
    fingerprint: u64,
}

impl<'a> FlatEntries<'a> {
    pub(crate) fn new(record: &'a dyn FlatRecord) -> Self {
        // Room for a Windows event's fields without growing.
        let mut entries = Vec::with_capacity(64);
        // The fingerprint only chooses which cached layout to compare the keys with, so it
        // reads each key's length and last eight bytes, not all of it: key lists that share it
        // cost a layout worked out again, never a wrong one.
        let mut hasher = FxHasher::default();
        record.for_each(&mut |key, value| {
            let bytes = key.as_bytes();
            let mut tail = [0u8; 8];
            let take = bytes.len().min(8);
            tail[..take].copy_from_slice(&bytes[bytes.len() - take..]);
            hasher.write_usize(bytes.len());
            hasher.write_u64(u64::from_le_bytes(tail));
            entries.push((key, value));
        });
        Self {
            record,
            entries,
            fingerprint: hasher.finish(),
        }
    }

    /// Where `key` is in `entries`.
    fn index(&self, key: &str) -> Option<usize> {
        let index = self.record.position(key)?;
        // A position that does not name `key` is not trusted (a record's `position` and
        // `for_each` disagreeing must not hand out another field's value).
        (self.entries.get(index)?.0 == key).then_some(index)
    }

    fn get(&self, key: &str) -> Option<&FlatValue<'a>> {
        self.index(key).map(|index| &self.entries[index].1)
    }

    /// Where the value at `path` is, or at `path.#text` (an element with attributes,
    /// flattened). With a wildcard, the smallest key that matches, so the choice does not
    /// depend on the order the record keeps.
    fn path_index(&self, path: &Path) -> Option<usize> {
        if path.has_wildcard() {
            return self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, (key, _))| path.matches_flat(key) || path.matches_flat_text(key))
                .min_by(|(_, a), (_, b)| a.0.cmp(b.0))
                .map(|(index, _)| index);
        }
        self.index(path.full())
            .or_else(|| self.index(path.flat_text_key()))
    }

    /// The value at `path`, or at `path.#text`.
    fn value(&self, path: &Path) -> Option<&FlatValue<'a>> {
        self.path_index(path).map(|index| &self.entries[index].1)
    }

    /// Sigma field `name` directly under `container` (with `text`, also as `name.#text`): of
    /// several, the smallest key.
    fn in_container(&self, container: &Path, name: &str, text: bool) -> Option<&FlatValue<'a>> {
        self.entries
            .iter()
            .filter(|(key, _)| {
                container.strip_flat_prefix(key).is_some_and(|rest| {
                    rest == name || (text && rest.strip_suffix(".#text") == Some(name))
                })
            })
            .min_by(|a, b| a.0.cmp(b.0))
            .map(|(_, value)| value)
    }

    /// Sigma field `name` as the record's shape places it (its path, then its containers),
    /// else a key of that name: where the nested record's lookup finds it.
    fn field(&self, shape: Option<&Shape>, name: &str) -> Option<&FlatValue<'a>> {
        if let Some(shape) = shape {
            if let Some(value) = shape.fields.get(name).and_then(|path| self.value(path)) {
                return Some(value);
            }
            let in_container = shape
                .containers
                .iter()
                .find_map(|container| self.in_container(container, name, true));
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
        self.index(full).is_some()
            || self.entries.iter().any(|(key, _)| {
                key.as_bytes().get(full.len()) == Some(&b'.') && key.starts_with(full)
            })
    }
}

/// Sigma name -> value for a flat record of a known shape, through the [`Layout`] of its keys.
pub(crate) struct FlatIndex {
    layout: Option<Rc<Layout>>,
}

/// Where a shape's Sigma names are among a list of keys. It depends on the keys and their
/// order only, and records of one kind share both (every Sysmon process creation has the same
/// keys, which a normalized event keeps in the order of their hashes), so a thread works a
/// layout out once per key list and keeps it: the keys are compared on every use, never
/// trusted to a fingerprint.
struct Layout {
    /// The keys this layout was made for, in order.
    keys: Box<[Box<str>]>,
    /// Sigma name -> index of its entry.
    names: FxHashMap<Box<str>, u32>,
    /// The entries inside the shape's containers, for keyword searches.
    in_containers: Box<[u32]>,
    /// The keys' distinct first segments (`Event`): what dotted names resolve under.
    first_segments: Box<[Box<str>]>,
}

/// Layouts a thread keeps, at most; past it, the thread starts over (a stream of ever-new key
/// lists costs a layout per record, as with no cache, and no more memory).
const LAYOUTS_PER_THREAD: usize = 512;

thread_local! {
    /// (shape id, fingerprint of the key list) -> layout.
    static LAYOUTS: RefCell<FxHashMap<(u64, u64), Rc<Layout>>> = RefCell::default();
}

impl Layout {
    /// Works out the layout of `entries` under `shape`: the shape's fields first, then its
    /// containers in order; of two entries of one container that give the same name, the
    /// smaller key.
    fn new(entries: &FlatEntries<'_>, shape: &Shape) -> Self {
        let mut names: FxHashMap<Box<str>, (u32, u32)> = FxHashMap::default();
        names.reserve(entries.entries.len() + shape.fields.len());
        let mut in_containers = Vec::new();
        let at = |entry: usize| u32::try_from(entry).unwrap_or(u32::MAX);
        for (name, path) in &shape.fields {
            if let Some(entry) = entries.path_index(path) {
                names.insert(name.clone(), (at(entry), 0));
            }
        }
        for (rank, container) in (1..).zip(&shape.containers) {
            for (entry, (key, _)) in entries.entries.iter().enumerate() {
                let Some(name) = container.strip_flat_prefix(key) else {
                    continue;
                };
                in_containers.push(at(entry));
                let name = name.strip_suffix(".#text").unwrap_or(name);
                match names.get_mut(name) {
                    None => {
                        names.insert(name.into(), (at(entry), rank));
                    }
                    Some(have) => {
                        let smaller = entries
                            .entries
                            .get(have.0 as usize)
                            .is_none_or(|(have, _)| key < have);
                        if have.1 == rank && smaller {
                            *have = (at(entry), rank);
                        }
                    }
                }
            }
        }
        let mut first_segments: Vec<Box<str>> = Vec::new();
        for (key, _) in &entries.entries {
            let first = key.split_once('.').map_or(*key, |(first, _)| first);
            if !first_segments.iter().any(|have| **have == *first) {
                first_segments.push(first.into());
            }
        }
        Self {
            keys: entries
                .entries
                .iter()
                .map(|(key, _)| (*key).into())
                .collect(),
            names: names
                .into_iter()
                .map(|(name, (entry, _))| (name, entry))
                .collect(),
            in_containers: in_containers.into(),
            first_segments: first_segments.into(),
        }
    }

    fn fits(&self, entries: &FlatEntries<'_>) -> bool {
        self.keys.len() == entries.entries.len()
            && self
                .keys
                .iter()
                .zip(&entries.entries)
                .all(|(have, (key, _))| **have == **key)
    }
}

impl FlatIndex {
    pub(crate) fn new(entries: &FlatEntries<'_>, shape: Option<&Shape>) -> Self {
        let layout = shape.map(|shape| {
            let key = (shape.id, entries.fingerprint);
            // The borrow ends before anything else runs: evaluation can take up another
            // record on this thread (rayon), which comes back here.
            let cached = LAYOUTS.with(|layouts| layouts.borrow().get(&key).cloned());
            if let Some(layout) = cached.filter(|layout| layout.fits(entries)) {
                return layout;
            }
            let layout = Rc::new(Layout::new(entries, shape));
            LAYOUTS.with(|layouts| {
                let mut layouts = layouts.borrow_mut();
                if layouts.len() >= LAYOUTS_PER_THREAD {
                    layouts.clear();
                }
                layouts.insert(key, Rc::clone(&layout));
            });
            layout
        });
        Self { layout }
    }

    /// The entry Sigma name `name` is at.
    fn entry(&self, name: &str) -> Option<usize> {
        self.layout
            .as_ref()?
            .names
            .get(name)
            .map(|&entry| entry as usize)
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
        shape
            .containers
            .iter()
            .find_map(|container| self.in_container(container, name, false)?.as_str())
    }
}

/// A flat record seen with Sigma's field names: rsigma's `Event` over the index.
#[derive(Clone, Copy)]
pub(crate) struct FlatView<'a> {
    entries: &'a FlatEntries<'a>,
    index: &'a FlatIndex,
    shape: Option<&'a Shape>,
    renames: Option<&'a Renames>,
    loose: bool,
}

impl<'a> FlatView<'a> {
    pub(crate) fn new(
        entries: &'a FlatEntries<'a>,
        index: &'a FlatIndex,
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
        let value = |entry: usize| self.entries.entries.get(entry).map(|(_, value)| value);
        if let Some(value) = self.index.entry(name).and_then(value) {
            return Some(value);
        }
        if self.loose
            && let Some(layout) = &self.index.layout
            && let Some(value) = layout
                .names
                .iter()
                .find(|(key, _)| key.contains(' ') && loosely_equal(key, name))
                .and_then(|(_, &entry)| value(entry as usize))
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
            let in_containers = self
                .index
                .layout
                .as_ref()
                .map_or(&[][..], |layout| &layout.in_containers);
            for &entry in in_containers {
                if let Some((_, value)) = self.entries.entries.get(entry as usize) {
                    value.visit_strings(visit);
                }
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
        if let Some(renames) = self.renames {
            for key in renames.keys() {
                visit(key);
            }
        }
        // Dotted names resolve against the full keys, under their first segments.
        if let Some(layout) = &self.index.layout {
            for name in layout.names.keys() {
                visit(name);
            }
            for first in &layout.first_segments {
                visit(first);
            }
            return true;
        }
        // No shape: each first segment visited once while there are few of them; visiting one
        // twice only repeats the caller's work.
        let mut seen = [""; 8];
        let mut count = 0;
        for (key, _) in &self.entries.entries {
            let first = key.split_once('.').map_or(*key, |(first, _)| first);
            if seen[..count].contains(&first) {
                continue;
            }
            if let Some(slot) = seen.get_mut(count) {
                *slot = first;
                count += 1;
            }
            visit(first);
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

    /// What each Sigma name resolves to in `record`, classified and indexed as detection does.
    fn lookups(mappings: &Mappings, record: &dyn FlatRecord, names: &[&str]) -> Vec<Option<Value>> {
        let entries = FlatEntries::new(record);
        let classified = classify_flat(mappings, &entries);
        assert_eq!(classified.shape.map(|shape| &*shape.name), Some("evtx"));
        let index = FlatIndex::new(&entries, classified.shape);
        let view = FlatView::new(&entries, &index, &classified);
        names
            .iter()
            .map(|name| view.lookup(name).map(FlatValue::to_json))
            .collect()
    }

    #[test]
    fn lookups_do_not_depend_on_the_records_order() {
        // Two UserData children give `TargetObject`; an element gives `Details` both as itself
        // and as its `#text`. The smallest key wins in every order.
        let pairs = vec![
            (
                "Event.System.Channel",
                FlatValue::Str("Microsoft-Windows-Sysmon/Operational"),
            ),
            ("Event.System.EventID.#text", FlatValue::Int(13)),
            ("Event.System.Computer", FlatValue::Str("pc1")),
            ("Event.UserData.B.TargetObject", FlatValue::Str("from B")),
            ("Event.UserData.A.TargetObject", FlatValue::Str("from A")),
            ("Event.EventData.Details.#text", FlatValue::Str("text")),
            ("Event.EventData.Details", FlatValue::Str("itself")),
        ];
        let expected = vec![
            Some(Value::from(13)),
            Some(Value::from("Microsoft-Windows-Sysmon/Operational")),
            Some(Value::from("from A")),
            Some(Value::from("itself")),
            Some(Value::from("pc1")),
        ];
        let mut reversed = pairs.clone();
        reversed.reverse();
        let names = ["EventID", "Channel", "TargetObject", "Details", "Computer"];
        let mappings = Mappings::builtin().unwrap();
        assert_eq!(lookups(&mappings, &Pairs(pairs), &names), expected);
        assert_eq!(lookups(&mappings, &Pairs(reversed), &names), expected);
    }

    #[test]
    fn a_cached_layout_serves_only_its_own_key_list() {
        let mappings = Mappings::builtin().unwrap();
        let record = |image: &'static str, user: &'static str, swapped: bool| {
            let mut pairs = vec![
                ("Event.System.Channel", FlatValue::Str("Security")),
                ("Event.EventData.Image", FlatValue::Str(image)),
                ("Event.EventData.User", FlatValue::Str(user)),
            ];
            if swapped {
                pairs.swap(1, 2);
            }
            Pairs(pairs)
        };
        let lookups = |record: &Pairs| lookups(&mappings, record, &["Image", "User"]);
        let a = record("a.exe", "alice", false);
        let b = record("b.exe", "bob", true);
        let (entries_a, entries_b) = (FlatEntries::new(&a), FlatEntries::new(&b));
        let shape = classify_flat(&mappings, &entries_a).shape.unwrap();
        // A's layout filed under B's fingerprint, as if the two key lists collided.
        let forged = Rc::new(Layout::new(&entries_a, shape));
        LAYOUTS.with(|layouts| {
            layouts
                .borrow_mut()
                .insert((shape.id, entries_b.fingerprint), forged)
        });
        assert_eq!(lookups(&b), vec![Some("b.exe".into()), Some("bob".into())]);
        // Records with the same keys share a layout and read their own values.
        assert_eq!(
            lookups(&a),
            vec![Some("a.exe".into()), Some("alice".into())]
        );
        let c = record("c.exe", "carol", false);
        assert_eq!(
            lookups(&c),
            vec![Some("c.exe".into()), Some("carol".into())]
        );
        let cached = LAYOUTS.with(|layouts| layouts.borrow().len());
        assert_eq!(cached, 2);
    }

    #[test]
    fn key_lists_that_share_a_fingerprint_keep_their_own_names() {
        let mappings = Mappings::builtin().unwrap();
        let record = |key: &'static str| {
            Pairs(vec![
                ("Event.System.Channel", FlatValue::Str("Security")),
                (key, FlatValue::Str(key)),
            ])
        };
        // The same lengths and the same last eight bytes.
        let (a, b) = (
            record("Event.EventData.AB_Details"),
            record("Event.EventData.CD_Details"),
        );
        assert_eq!(
            FlatEntries::new(&a).fingerprint,
            FlatEntries::new(&b).fingerprint
        );
        let lookups = |record: &Pairs| lookups(&mappings, record, &["AB_Details", "CD_Details"]);
        for _ in 0..2 {
            assert_eq!(
                lookups(&a),
                [Some("Event.EventData.AB_Details".into()), None]
            );
            assert_eq!(
                lookups(&b),
                [None, Some("Event.EventData.CD_Details".into())]
            );
        }
    }

    /// A record whose `position` answers with another key's place.
    struct Lying(Pairs);

    impl FlatRecord for Lying {
        fn for_each<'s>(&'s self, visit: &mut dyn FnMut(&'s str, FlatValue<'s>)) {
            self.0.for_each(visit);
        }

        fn position(&self, _key: &str) -> Option<usize> {
            Some(0)
        }
    }

    #[test]
    fn a_position_that_names_another_key_is_not_used() {
        let record = Lying(Pairs(vec![
            ("Image", FlatValue::Str("C:\\x.exe")),
            ("User", FlatValue::Str("alice")),
        ]));
        let entries = FlatEntries::new(&record);
        assert_eq!(entries.get("Image"), Some(&FlatValue::Str("C:\\x.exe")));
        assert_eq!(entries.get("User"), None);
    }
}
