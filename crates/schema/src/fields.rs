//! The source's own fields of an event, stored for fast lookup by detection rules.
//!
//! Nested JSON objects are flattened into dotted keys (`Event.System.EventID`). Entries are kept
//! ordered by a fixed 64-bit hash of the key (FxHash) beside a parallel array of those hashes,
//! so a lookup is one hash of the name, a binary search over integers and one string compare:
//! no JSON is parsed and nothing is allocated per lookup. (Sorting by the key itself was
//! measured slower: flattened keys share long prefixes such as `Event.EventData.`, which every
//! comparison of a binary search walks again.) Arrays keep their elements; objects inside arrays
//! stay objects ([`FieldValue::Object`]).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::field_key::Key;

/// One field value.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// JSON `null`: present but empty, distinct from an absent field.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(Box<str>),
    /// A list of values.
    Array(Vec<FieldValue>),
    /// An object inside an array (top-level objects are flattened into dotted keys).
    Object(Fields),
}

impl FieldValue {
    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an integer, if it is one or is a string holding one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            FieldValue::Int(n) => Some(*n),
            FieldValue::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// Converts a JSON value, flattening nothing (see [`Fields::from_json`] for objects).
    pub fn from_json(value: serde_json::Value) -> Self {
        match value {
            serde_json::Value::Null => FieldValue::Null,
            serde_json::Value::Bool(b) => FieldValue::Bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => FieldValue::Int(i),
                None => FieldValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => FieldValue::Str(s.into_boxed_str()),
            serde_json::Value::Array(items) => {
                FieldValue::Array(items.into_iter().map(FieldValue::from_json).collect())
            }
            serde_json::Value::Object(map) => {
                FieldValue::Object(Fields::from_json(serde_json::Value::Object(map)))
            }
        }
    }

    /// Converts back to a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            FieldValue::Null => serde_json::Value::Null,
            FieldValue::Bool(b) => serde_json::Value::Bool(*b),
            FieldValue::Int(n) => serde_json::Value::from(*n),
            FieldValue::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            FieldValue::Str(s) => serde_json::Value::String(s.to_string()),
            FieldValue::Array(items) => {
                serde_json::Value::Array(items.iter().map(FieldValue::to_json).collect())
            }
            FieldValue::Object(fields) => fields.to_json(),
        }
    }
}

impl From<&str> for FieldValue {
    fn from(value: &str) -> Self {
        FieldValue::Str(value.into())
    }
}

impl From<String> for FieldValue {
    fn from(value: String) -> Self {
        FieldValue::Str(value.into_boxed_str())
    }
}

impl From<i64> for FieldValue {
    fn from(value: i64) -> Self {
        FieldValue::Int(value)
    }
}

impl From<bool> for FieldValue {
    fn from(value: bool) -> Self {
        FieldValue::Bool(value)
    }
}

/// A flat map from dotted field names to values, built for lookups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields {
    /// `key_hash` of each entry's key, ascending; same length as `entries`.
    hashes: Vec<u64>,
    /// Entries in the order of `(hash, key)`.
    entries: Vec<(Key, FieldValue)>,
}

/// The fixed hash that orders entries. Stable across processes and releases (it is not
/// serialized, but a stable order keeps serialized output deterministic).
#[inline]
fn key_hash(key: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = rustc_hash::FxHasher::default();
    hasher.write(key.as_bytes());
    hasher.finish()
}

impl Fields {
    /// An empty field set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a field set from any pairs; nested objects are flattened, the last of duplicate
    /// keys wins.
    pub fn from_pairs<K: Into<Box<str>>>(pairs: impl IntoIterator<Item = (K, FieldValue)>) -> Self {
        let mut entries = Vec::new();
        for (key, value) in pairs {
            push_flattened(&mut entries, Key::from_boxed(key.into()), value);
        }
        Self::from_unsorted(entries)
    }

    /// Flattens a JSON value: an object becomes dotted keys, anything else is stored under the
    /// key `value`.
    pub fn from_json(value: serde_json::Value) -> Self {
        match value {
            serde_json::Value::Object(map) => {
                // One pass with a key prefix: nested objects are not built as field sets of
                // their own and joined again level by level.
                let mut entries = Vec::with_capacity(map.len());
                flatten_object(&mut entries, &mut String::new(), map);
                Self::from_unsorted(entries)
            }
            other => Self::from_pairs([("value", FieldValue::from_json(other))]),
        }
    }

    /// Parses one JSON object straight into flat fields: nested objects become dotted keys as
    /// they are read, with no `serde_json::Value` in between. The same fields as
    /// [`Fields::from_json`] on the parsed value, except that of duplicate keys each is kept
    /// where one is an object and the other is not (a `Value` keeps only the last). Anything
    /// other than an object is an error naming what it is.
    pub fn deserialize_nested<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Self, D::Error> {
        Self::deserialize_nested_with_depth(deserializer).map(|(fields, _)| fields)
    }

    /// [`Fields::deserialize_nested`], with the object's nesting depth as read: 1 for an object
    /// of scalars, one more for each level of objects or arrays inside.
    pub fn deserialize_nested_with_depth<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<(Self, usize), D::Error> {
        let mut entries = Vec::new();
        let mut depth = Depth { now: 1, most: 1 };
        deserializer.deserialize_map(FlattenVisitor {
            entries: &mut entries,
            prefix: &mut String::new(),
            depth: &mut depth,
        })?;
        Ok((Self::from_unsorted(entries), depth.most))
    }

    fn from_unsorted(entries: Vec<(Key, FieldValue)>) -> Self {
        let mut keyed: Vec<(u64, Key, FieldValue)> = entries
            .into_iter()
            .map(|(key, value)| (key_hash(&key), key, value))
            .collect();
        // Stable sort keeps insertion order among equal keys, so keeping the last one of each
        // run makes "last duplicate wins" hold.
        keyed.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut fields = Fields {
            hashes: Vec::with_capacity(keyed.len()),
            entries: Vec::with_capacity(keyed.len()),
        };
        for (hash, key, value) in keyed {
            match fields.entries.last_mut() {
                Some(last) if last.0 == key => last.1 = value,
                _ => {
                    fields.hashes.push(hash);
                    fields.entries.push((key, value));
                }
            }
        }
        fields
    }

    /// Where `key` is, or where it would go.
    #[inline]
    fn position(&self, hash: u64, key: &str) -> Result<usize, usize> {
        let mut index = self.hashes.partition_point(|&h| h < hash);
        while index < self.hashes.len() && self.hashes[index] == hash {
            match self.entries[index].0.as_ref().cmp(key) {
                std::cmp::Ordering::Equal => return Ok(index),
                std::cmp::Ordering::Greater => return Err(index),
                std::cmp::Ordering::Less => index += 1,
            }
        }
        Err(index)
    }

    /// Looks a field up by its exact dotted name: one hash, a binary search over integers, one
    /// string compare; no allocation.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.position(key_hash(key), key)
            .ok()
            .map(|index| &self.entries[index].1)
    }

    /// Where the field `key` comes in [`Fields::iter`]'s order, if there is one: the same
    /// search as [`Fields::get`].
    #[inline]
    pub fn index_of(&self, key: &str) -> Option<usize> {
        self.position(key_hash(key), key).ok()
    }

    /// Looks a field up and returns it if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(FieldValue::as_str)
    }

    /// Inserts or replaces one field (objects are flattened under `key`).
    pub fn insert(&mut self, key: impl Into<Box<str>>, value: FieldValue) {
        let mut flattened = Vec::new();
        push_flattened(&mut flattened, Key::from_boxed(key.into()), value);
        for (key, value) in flattened {
            let hash = key_hash(&key);
            match self.position(hash, &key) {
                Ok(index) => self.entries[index].1 = value,
                Err(index) => {
                    self.hashes.insert(index, hash);
                    self.entries.insert(index, (key, value));
                }
            }
        }
    }

    /// Removes a field and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        let index = self.position(key_hash(key), key).ok()?;
        self.hashes.remove(index);
        Some(self.entries.remove(index).1)
    }

    /// Iterates over fields in a stable order (that of the keys' hashes, not alphabetical).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &FieldValue)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// Number of (flattened) fields.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Converts to a flat JSON object with dotted keys.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_json()))
                .collect(),
        )
    }
}

/// Pushes an object's leaves under `prefix` (empty, or ending in `.`), in document order, so
/// that of duplicate keys the last still wins.
fn flatten_object(
    entries: &mut Vec<(Key, FieldValue)>,
    prefix: &mut String,
    map: serde_json::Map<String, serde_json::Value>,
) {
    for (key, value) in map {
        match value {
            serde_json::Value::Object(inner) => {
                let length = prefix.len();
                prefix.push_str(&key);
                prefix.push('.');
                flatten_object(entries, prefix, inner);
                prefix.truncate(length);
            }
            leaf => {
                let key = if prefix.is_empty() {
                    Key::from_string(key)
                } else {
                    let mut joined = String::with_capacity(prefix.len() + key.len());
                    joined.push_str(prefix);
                    joined.push_str(&key);
                    Key::from_string(joined)
                };
                entries.push((key, FieldValue::from_json(leaf)));
            }
        }
    }
}

fn push_flattened(entries: &mut Vec<(Key, FieldValue)>, key: Key, value: FieldValue) {
    match value {
        FieldValue::Object(inner) => {
            for (inner_key, inner_value) in inner.entries {
                let mut joined = String::with_capacity(key.len() + 1 + inner_key.len());
                joined.push_str(&key);
                joined.push('.');
                joined.push_str(&inner_key);
                entries.push((Key::from_string(joined), inner_value));
            }
        }
        other => entries.push((key, other)),
    }
}

/// How deep the reading is, and the deepest it went.
struct Depth {
    now: usize,
    most: usize,
}

impl Depth {
    fn reach(&mut self, depth: usize) {
        self.most = self.most.max(depth);
    }
}

/// The levels of lists and objects in a value: 0 for a scalar.
fn value_depth(value: &FieldValue) -> usize {
    match value {
        FieldValue::Array(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
        FieldValue::Object(fields) => {
            1 + fields
                .iter()
                .map(|(_, value)| value_depth(value))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// Reads an object's entries into `entries`, each key under `prefix` (empty, or ending in `.`).
struct FlattenVisitor<'a> {
    entries: &'a mut Vec<(Key, FieldValue)>,
    prefix: &'a mut String,
    depth: &'a mut Depth,
}

impl<'de> Visitor<'de> for FlattenVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let length = self.prefix.len();
        while map
            .next_key_seed(KeyInto {
                prefix: self.prefix,
            })?
            .is_some()
        {
            map.next_value_seed(Entry {
                entries: self.entries,
                prefix: self.prefix,
                depth: self.depth,
            })?;
            self.prefix.truncate(length);
        }
        Ok(())
    }
}

/// Appends a key to the prefix it is read into.
struct KeyInto<'a> {
    prefix: &'a mut String,
}

impl<'de> de::DeserializeSeed<'de> for KeyInto<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<(), E> {
        self.prefix.push_str(key);
        Ok(())
    }
}

/// The value of the key the prefix ends with: an object is flattened under it, anything else
/// is stored at it.
struct Entry<'a> {
    entries: &'a mut Vec<(Key, FieldValue)>,
    prefix: &'a mut String,
    depth: &'a mut Depth,
}

impl Entry<'_> {
    fn push<E>(self, value: FieldValue) -> Result<(), E> {
        self.entries.push((Key::owned(self.prefix), value));
        Ok(())
    }
}

impl<'de> de::DeserializeSeed<'de> for Entry<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Entry<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.push(FieldValue::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.push(FieldValue::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(FieldValue::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(FieldValue::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        let value = FieldValueVisitor.visit_u64::<E>(v)?;
        self.push(value)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(FieldValue::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(FieldValue::Str(v.into()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.push(FieldValue::Str(v.into_boxed_str()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let value = FieldValueVisitor.visit_seq(seq)?;
        self.depth.reach(self.depth.now + value_depth(&value));
        self.push(value)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.prefix.push('.');
        self.depth.now += 1;
        self.depth.reach(self.depth.now);
        FlattenVisitor {
            entries: self.entries,
            prefix: self.prefix,
            depth: &mut *self.depth,
        }
        .visit_map(map)?;
        self.depth.now -= 1;
        Ok(())
    }
}

impl<'a> IntoIterator for &'a Fields {
    type Item = (&'a str, &'a FieldValue);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a FieldValue)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl Serialize for FieldValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Null => serializer.serialize_unit(),
            FieldValue::Bool(b) => serializer.serialize_bool(*b),
            FieldValue::Int(n) => serializer.serialize_i64(*n),
            FieldValue::Float(f) if f.is_finite() => serializer.serialize_f64(*f),
            FieldValue::Float(_) => serializer.serialize_unit(),
            FieldValue::Str(s) => serializer.serialize_str(s),
            FieldValue::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            FieldValue::Object(fields) => fields.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldValueVisitor)
    }
}

struct FieldValueVisitor;

impl<'de> Visitor<'de> for FieldValueVisitor {
    type Value = FieldValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<FieldValue, D::Error> {
        FieldValue::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<FieldValue, E> {
        Ok(FieldValue::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<FieldValue, E> {
        Ok(FieldValue::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<FieldValue, E> {
        Ok(i64::try_from(v).map_or(FieldValue::Float(v as f64), FieldValue::Int))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<FieldValue, E> {
        Ok(FieldValue::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldValue, E> {
        Ok(FieldValue::Str(v.into()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<FieldValue, E> {
        Ok(FieldValue::Str(v.into_boxed_str()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FieldValue, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(FieldValue::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldValue, A::Error> {
        FieldsVisitor.visit_map(map).map(FieldValue::Object)
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (key, value) in &self.entries {
            map.serialize_entry(key.as_ref(), value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

thread_local! {
    /// How many fields the last field set read on this thread had: the next one's first guess.
    static LAST_LEN: Cell<usize> = const { Cell::new(0) };
    /// The names of the last field set read on this thread, by position: events of a batch
    /// mostly share their names in the same order, so a name is first compared with the one
    /// at its place last time, before it is looked up among the kept names.
    static LAST_KEYS: Cell<Vec<&'static str>> = const { Cell::new(Vec::new()) };
    /// Whether a field set is being read on this thread: one read inside it (an object in an
    /// array) neither shares its names nor counts as the last one read.
    static READING: Cell<bool> = const { Cell::new(false) };
}

/// Marks a top-level field set as being read on this thread until it is dropped, also when
/// reading fails.
struct Reading;

impl Reading {
    /// `Some` when no field set is being read on this thread already.
    fn start() -> Option<Self> {
        (!READING.replace(true)).then_some(Reading)
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        READING.set(false);
    }
}

/// Reads a field's name without allocating it (serde's `String` and `Cow<str>` always do): in
/// a top-level field set, a name met before is the shared copy kept of it.
struct KeySeed<'a> {
    /// The names of the last top-level field set, by position; `None` inside another set.
    last_keys: Option<&'a mut Vec<&'static str>>,
    at: usize,
}

impl<'de> de::DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Key, E> {
        let Some(last_keys) = self.last_keys else {
            return Ok(Key::owned(name));
        };
        if let Some(&seen) = last_keys.get(self.at)
            && seen == name
        {
            return Ok(Key::kept(seen));
        }
        let key = Key::shared(name);
        if let Some(kept) = key.as_kept() {
            match last_keys.get_mut(self.at) {
                Some(slot) => *slot = kept,
                None => last_keys.push(kept),
            }
        }
        Ok(key)
    }
}

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of fields")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let reading = Reading::start();
        let top = reading.is_some();
        // JSON gives no size hint. Events of a batch are mostly alike, so the vector starts at
        // the size of the last field set this thread read instead of growing from nothing
        // (five reallocations and copies for a 40-field Windows event).
        let capacity = map
            .size_hint()
            .unwrap_or_else(|| if top { LAST_LEN.get() } else { 0 })
            .min(1024);
        let mut entries = Vec::with_capacity(capacity);
        // Taken, not borrowed; an error leaves none.
        let mut last_keys = if top { LAST_KEYS.take() } else { Vec::new() };
        while let Some(key) = map.next_key_seed(KeySeed {
            at: entries.len(),
            last_keys: top.then_some(&mut last_keys),
        })? {
            let value = map.next_value::<FieldValue>()?;
            push_flattened(&mut entries, key, value);
        }
        if top {
            LAST_KEYS.set(last_keys);
            LAST_LEN.set(entries.len());
        }
        drop(reading);
        // Serialized fields come in lookup order already; only foreign input pays for a sort.
        let hashes: Vec<u64> = entries.iter().map(|(key, _)| key_hash(key)).collect();
        let ordered = (1..entries.len())
            .all(|i| (hashes[i - 1], &entries[i - 1].0) < (hashes[i], &entries[i].0));
        if ordered {
            Ok(Fields { hashes, entries })
        } else {
            Ok(Fields::from_unsorted(entries))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn windows_event() -> serde_json::Value {
        json!({
            "Event": {
                "System": {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational"},
                "EventData": {"Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "cmd /c whoami"}
            },
            "tags": ["a", {"k": "v"}],
            "empty": null
        })
    }

    #[test]
    fn flattens_nested_objects_and_looks_up_by_dotted_key() {
        let fields = Fields::from_json(windows_event());
        assert_eq!(
            fields.get("Event.System.EventID"),
            Some(&FieldValue::Int(1))
        );
        assert_eq!(
            fields.get_str("Event.EventData.Image"),
            Some("C:\\Windows\\System32\\cmd.exe")
        );
        assert_eq!(fields.get("empty"), Some(&FieldValue::Null));
        assert_eq!(fields.get("missing"), None);
        assert_eq!(
            fields.get("Event"),
            None,
            "intermediate objects are not fields"
        );
        let tags = fields.get("tags").unwrap();
        assert!(matches!(tags, FieldValue::Array(items) if items.len() == 2));
    }

    #[test]
    fn index_of_names_a_keys_place_in_iteration_order() {
        let fields = Fields::from_json(windows_event());
        for (at, (key, _)) in fields.iter().enumerate() {
            assert_eq!(fields.index_of(key), Some(at), "{key}");
        }
        assert_eq!(fields.index_of("missing"), None);
        assert_eq!(fields.index_of("Event"), None);
    }

    #[test]
    fn names_read_again_in_another_order_or_escaped_keep_their_values() {
        // Names are first compared with those at the same place in the last field set read
        // on the thread: a set with the same names in another order, one with an escaped
        // name, and one longer than any kept name must still read exactly.
        let long = "n".repeat(300);
        let texts = [
            r#"{"a.b": 1, "c": "x", "we\"ird": true}"#.to_owned(),
            r#"{"a.b": 2, "c": "y", "we\"ird": false}"#.to_owned(),
            r#"{"c": "z", "we\"ird": null, "a.b": 3}"#.to_owned(),
            format!(r#"{{"c": "w", "{long}": 4}}"#),
        ];
        let read: Vec<Fields> = texts
            .iter()
            .map(|text| serde_json::from_str(text).unwrap())
            .collect();
        assert_eq!(read[0].get("a.b"), Some(&FieldValue::Int(1)));
        assert_eq!(read[1].get("a.b"), Some(&FieldValue::Int(2)));
        assert_eq!(read[1].get("we\"ird"), Some(&FieldValue::Bool(false)));
        assert_eq!(read[2].get("a.b"), Some(&FieldValue::Int(3)));
        assert_eq!(read[2].get_str("c"), Some("z"));
        assert_eq!(read[2].get("we\"ird"), Some(&FieldValue::Null));
        assert_eq!(read[3].get(&long), Some(&FieldValue::Int(4)));
        assert_eq!(read[3].len(), 2);
        for (fields, text) in read.iter().zip(&texts) {
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(*fields, Fields::from_json(value), "{text}");
        }
    }

    #[test]
    fn only_the_names_of_a_top_level_field_set_are_shared() {
        let shared = |fields: &Fields| {
            fields
                .entries
                .iter()
                .all(|(key, _)| key.as_kept().is_some())
        };
        let fields: Fields =
            serde_json::from_str(r#"{"top.name": 1, "list": [{"inner": 2}]}"#).unwrap();
        assert!(shared(&fields));
        let Some(FieldValue::Array(items)) = fields.get("list") else {
            panic!("{fields:?}");
        };
        let FieldValue::Object(inner) = &items[0] else {
            panic!("{items:?}");
        };
        assert!(!shared(inner), "{inner:?}");
        // Neither ingest's parsing nor building by hand adds to the table.
        let parsed = Fields::deserialize_nested(&mut serde_json::Deserializer::from_str(
            r#"{"a": {"b": 1}}"#,
        ))
        .unwrap();
        assert!(!shared(&parsed));
        assert!(!shared(&Fields::from_pairs([("x", FieldValue::Int(1))])));
        // A field set that fails to read leaves the next one read as a top-level set.
        assert!(serde_json::from_str::<Fields>(r#"{"top.name": 1, "bad": }"#).is_err());
        let again: Fields = serde_json::from_str(r#"{"top.name": 3}"#).unwrap();
        assert!(shared(&again));
    }

    #[test]
    fn serde_round_trip_is_flat_and_stable() {
        let fields = Fields::from_json(windows_event());
        let text = serde_json::to_string(&fields).unwrap();
        assert!(text.contains("\"Event.EventData.CommandLine\""), "{text}");
        let back: Fields = serde_json::from_str(&text).unwrap();
        assert_eq!(back, fields);
        // Nested input deserializes to the same flat fields.
        let nested: Fields = serde_json::from_value(windows_event()).unwrap();
        assert_eq!(nested, fields);
    }

    #[test]
    fn last_duplicate_wins_and_insert_keeps_order() {
        let mut fields = Fields::from_pairs([
            ("b", FieldValue::from("first")),
            ("a", FieldValue::from(1)),
            ("b", FieldValue::from("second")),
        ]);
        assert_eq!(fields.get_str("b"), Some("second"));
        fields.insert("aa", FieldValue::from(true));
        fields.insert("a", FieldValue::from(2));
        let mut keys: Vec<&str> = fields.iter().map(|(k, _)| k).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["a", "aa", "b"]);
        assert_eq!(fields.get("aa"), Some(&FieldValue::Bool(true)));
        assert_eq!(fields.get("a"), Some(&FieldValue::Int(2)));
        assert_eq!(fields.remove("aa"), Some(FieldValue::Bool(true)));
        assert_eq!(fields.len(), 2);
    }

    #[test]
    fn non_finite_floats_serialize_as_null() {
        let fields = Fields::from_pairs([("x", FieldValue::Float(f64::NAN))]);
        assert_eq!(serde_json::to_string(&fields).unwrap(), r#"{"x":null}"#);
    }

    #[test]
    fn big_unsigned_numbers_become_floats() {
        let fields: Fields = serde_json::from_str(r#"{"n": 18446744073709551615}"#).unwrap();
        assert!(matches!(fields.get("n"), Some(FieldValue::Float(_))));
    }

    fn nested(text: &str) -> Result<Fields, serde_json::Error> {
        Fields::deserialize_nested(&mut serde_json::Deserializer::from_str(text))
    }

    #[test]
    fn the_depth_is_counted_as_it_reads() {
        let depth = |text: &str| {
            let mut deserializer = serde_json::Deserializer::from_str(text);
            Fields::deserialize_nested_with_depth(&mut deserializer)
                .unwrap()
                .1
        };
        assert_eq!(depth(r#"{"a":1}"#), 1);
        assert_eq!(depth(r#"{"a":{"b":1},"c":2}"#), 2);
        assert_eq!(depth(r#"{"a":[1]}"#), 2);
        assert_eq!(depth(r#"{"a":[{"b":[1]}],"z":{"y":{}}}"#), 4);
        assert_eq!(depth(r#"{"a":{"b":{"c":{}}},"d":1}"#), 4);
    }

    #[test]
    fn parsing_straight_into_fields_flattens_as_it_reads() {
        let text = windows_event().to_string();
        assert_eq!(nested(&text).unwrap(), Fields::from_json(windows_event()));
        let escaped =
            nested(r#"{"a\"b": {"c\u0041": 1, "n": 18446744073709551615, "f": 1.5}, "e": {}}"#)
                .unwrap();
        assert_eq!(escaped.get("a\"b.cA"), Some(&FieldValue::Int(1)));
        assert!(matches!(escaped.get("a\"b.n"), Some(FieldValue::Float(_))));
        assert_eq!(escaped.get("a\"b.f"), Some(&FieldValue::Float(1.5)));
        assert_eq!(escaped.len(), 3, "an empty object has no fields");
        // Of an object and a value under one key, both are kept; of two values, the last.
        let duplicates = nested(r#"{"a": {"b": 1}, "a": 2, "c": 1, "c": 2}"#).unwrap();
        assert_eq!(duplicates.get("a.b"), Some(&FieldValue::Int(1)));
        assert_eq!(duplicates.get("a"), Some(&FieldValue::Int(2)));
        assert_eq!(duplicates.get("c"), Some(&FieldValue::Int(2)));
        for (bad, kind) in [("[1]", "sequence"), ("\"x\"", "string"), ("1", "integer")] {
            let err = nested(bad).unwrap_err().to_string();
            assert!(err.contains(kind) && err.contains("a JSON object"), "{err}");
        }
        let deep = format!("{}1{}", "{\"a\":".repeat(500), "}".repeat(500));
        assert!(
            nested(&deep)
                .unwrap_err()
                .to_string()
                .contains("recursion limit")
        );
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "\\PC{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-zA-Z]{1,6}", inner, 0..5)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Objects whose keys collide once flattened (`a.b` beside `a: {b}`), and repeat.
    fn colliding_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = any::<i64>().prop_map(serde_json::Value::from);
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop::collection::vec(("[ab](\\.[ab])?", inner), 0..5).prop_map(|pairs| {
                // Built as text; a repeated key keeps its first place and its last value.
                let members: Vec<String> = pairs
                    .iter()
                    .map(|(key, value)| format!("{key:?}: {value}"))
                    .collect();
                serde_json::from_str(&format!("{{{}}}", members.join(","))).unwrap()
            })
        })
    }

    /// Flattening as it was first written: each nested object a field set of its own, joined
    /// into its parent.
    fn level_by_level(map: serde_json::Map<String, serde_json::Value>) -> Fields {
        Fields::from_pairs(map.into_iter().map(|(key, value)| {
            let value = match value {
                serde_json::Value::Object(inner) => FieldValue::Object(level_by_level(inner)),
                other => FieldValue::from_json(other),
            };
            (key, value)
        }))
    }

    proptest! {
        #[test]
        fn flattening_in_one_pass_equals_flattening_level_by_level(value in colliding_json()) {
            if let serde_json::Value::Object(map) = value.clone() {
                prop_assert_eq!(Fields::from_json(value), level_by_level(map));
            }
        }

        #[test]
        fn parsing_straight_into_fields_equals_flattening_the_value(value in arb_json()) {
            if value.is_object() {
                prop_assert_eq!(nested(&value.to_string()).unwrap(), Fields::from_json(value));
            }
        }

        #[test]
        fn any_json_round_trips_through_fields(value in arb_json()) {
            let fields = Fields::from_json(value);
            let text = serde_json::to_string(&fields).unwrap();
            let back: Fields = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(&back, &fields);
            for (key, field) in fields.iter() {
                prop_assert_eq!(back.get(key), Some(field));
            }
        }
    }
}
