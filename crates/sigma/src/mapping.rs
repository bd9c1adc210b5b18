//! Shape recognition, logsource derivation and field mapping, loaded from data files.
//!
//! The built-in files live in `crates/sigma/data/` (`shapes.yml`, `windows.yml`) and are
//! compiled into the binary; [`Mappings::from_yaml`] loads replacements. Each file is checked
//! when it is loaded: an unknown key, a bad path or a category without event ids is an error
//! that names the file and the entry.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The built-in shapes file.
pub const BUILTIN_SHAPES: &str = include_str!("../data/shapes.yml");
/// The built-in Windows logsource file.
pub const BUILTIN_WINDOWS: &str = include_str!("../data/windows.yml");
/// The built-in Linux syslog program file.
pub const BUILTIN_LINUX: &str = include_str!("../data/linux.yml");

/// Most containers a shape may name (a record keeps them in a fixed array).
pub const MAX_CONTAINERS: usize = 4;

/// A mapping file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("mapping file {file}: {reason}")]
pub struct MappingError {
    /// Which file (`shapes.yml`, `windows.yml` or the path given).
    pub file: String,
    /// What is wrong, naming the entry.
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShapesFile {
    shapes: Vec<ShapeSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShapeSpec {
    name: String,
    #[serde(default)]
    product: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    windows: bool,
    recognize: Vec<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    program: Option<String>,
    #[serde(default)]
    fields: BTreeMap<String, String>,
    #[serde(default)]
    containers: Vec<String>,
    #[serde(default)]
    keywords_in_containers: bool,
    #[serde(default)]
    record_id: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowsFile {
    product: String,
    #[serde(default)]
    loose_field_names: Vec<String>,
    channels: BTreeMap<String, String>,
    categories: Vec<CategorySpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinuxFile {
    product: String,
    #[serde(default)]
    every_record: Vec<String>,
    programs: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CategorySpec {
    category: String,
    service: String,
    event_ids: Vec<u32>,
    #[serde(default)]
    when: BTreeMap<String, String>,
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

/// A dotted path into a JSON record, with `*` for "any one key".
#[derive(Debug, Clone)]
pub(crate) struct Path {
    segments: Vec<Segment>,
    /// `suffixes[i]` is `segments[i..]` joined with dots: the literally dotted key some
    /// shippers use instead of nesting. Precomputed so a lookup never allocates.
    suffixes: Vec<Box<str>>,
    /// The flat key of the path's `#text` (`Event.System.EventID.#text`): where a flat record
    /// keeps an element that has attributes.
    text_key: Box<str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(Box<str>),
    Any,
}

impl Path {
    fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(Self {
                segments: Vec::new(),
                suffixes: Vec::new(),
                text_key: "#text".into(),
            });
        }
        let mut segments = Vec::new();
        for part in text.split('.') {
            match part {
                "" => return Err(format!("path `{text}` has an empty segment")),
                "*" => segments.push(Segment::Any),
                key => segments.push(Segment::Key(key.into())),
            }
        }
        let parts: Vec<&str> = text.split('.').collect();
        let suffixes = (0..parts.len())
            .map(|i| parts[i..].join(".").into())
            .collect();
        Ok(Self {
            segments,
            suffixes,
            text_key: format!("{text}.#text").into(),
        })
    }

    /// The value at this path, with Windows' `{"#text": v, "#attributes": ...}` unwrapped to `v`.
    pub(crate) fn resolve<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        self.resolve_from(root, 0).map(unwrap_text)
    }

    fn resolve_from<'v>(&self, value: &'v Value, index: usize) -> Option<&'v Value> {
        let Some(segment) = self.segments.get(index) else {
            return Some(value);
        };
        let object = value.as_object()?;
        match segment {
            Segment::Key(key) => {
                if let Some(child) = get(object, key)
                    && let Some(found) = self.resolve_from(child, index + 1)
                {
                    return Some(found);
                }
                // A key that is literally dotted at this level (`"winlog.channel": ...`).
                if index + 1 < self.segments.len() && !self.has_wildcard_after(index) {
                    return get(object, &self.suffixes[index]);
                }
                None
            }
            Segment::Any => object
                .values()
                .find_map(|child| self.resolve_from(child, index + 1)),
        }
    }

    /// The path as written (`Event.System.Channel`); empty for the record itself.
    pub(crate) fn full(&self) -> &str {
        self.suffixes.first().map_or("", AsRef::as_ref)
    }

    /// The flat key of the path's `#text`: [`Path::full`] followed by `.#text`.
    pub(crate) fn flat_text_key(&self) -> &str {
        &self.text_key
    }

    pub(crate) fn has_wildcard(&self) -> bool {
        self.segments.contains(&Segment::Any)
    }

    /// Where the path's segments end in a flat `key` (at its end or at a `.`), or `None`.
    fn match_flat(&self, key: &str) -> Option<usize> {
        let mut offset = 0;
        for segment in &self.segments {
            let rest = &key[offset..];
            let length = match segment {
                Segment::Key(name) => {
                    if !rest.starts_with(name.as_ref()) {
                        return None;
                    }
                    name.len()
                }
                Segment::Any => rest.find('.').unwrap_or(rest.len()),
            };
            if length == 0 {
                return None;
            }
            offset += length;
            match key.as_bytes().get(offset) {
                None => {}
                Some(b'.') => offset += 1,
                Some(_) => return None,
            }
        }
        Some(offset)
    }

    /// Whether flat `key` is exactly this path.
    pub(crate) fn matches_flat(&self, key: &str) -> bool {
        !self.segments.is_empty() && self.match_flat(key) == Some(key.len())
    }

    /// Whether flat `key` is this path's `#text` (an element with attributes).
    pub(crate) fn matches_flat_text(&self, key: &str) -> bool {
        key.strip_suffix(".#text")
            .is_some_and(|base| self.matches_flat(base))
    }

    /// Whether flat `key` is this path or lies under it.
    pub(crate) fn is_prefix_of_flat(&self, key: &str) -> bool {
        !self.segments.is_empty() && self.match_flat(key).is_some()
    }

    /// The rest of flat `key` under this container path (`Event.EventData.Image` under
    /// `Event.EventData` is `Image`; with `*`, one more segment is skipped), or `None`.
    pub(crate) fn strip_flat_prefix<'k>(&self, key: &'k str) -> Option<&'k str> {
        if self.segments.is_empty() {
            return Some(key);
        }
        let offset = self.match_flat(key)?;
        let rest = &key[offset..];
        (!rest.is_empty() && offset > 0 && key.as_bytes()[offset - 1] == b'.').then_some(rest)
    }

    fn has_wildcard_after(&self, index: usize) -> bool {
        self.segments[index..].contains(&Segment::Any)
    }

    /// Whether this path names anything in `root`.
    pub(crate) fn exists_in(&self, root: &Value) -> bool {
        self.resolve_from(root, 0).is_some()
    }

    /// The object at this path, for containers; `*` yields the first object found.
    pub(crate) fn resolve_object<'v>(&self, root: &'v Value) -> Option<&'v Map<String, Value>> {
        self.resolve_from(root, 0)?.as_object()
    }
}

/// `object[key]`. serde_json's maps keep their order (the evtx crate asks for it) and hash keys
/// with SipHash; records' objects are small, and comparing a few keys costs less than hashing
/// one (callgrind, the regression records: a twentieth of the engine's instructions went to
/// these lookups).
fn get<'v>(object: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    if object.len() <= LINEAR_LOOKUP_UP_TO {
        object
            .iter()
            .find_map(|(have, value)| (have == key).then_some(value))
    } else {
        object.get(key)
    }
}

/// Objects of at most this many keys are searched key by key by [`get`].
const LINEAR_LOOKUP_UP_TO: usize = 16;

/// `{"#text": v, ...}` (how the evtx crate renders an element with attributes) becomes `v`.
pub(crate) fn unwrap_text(value: &Value) -> &Value {
    match value {
        Value::Object(map) => map.get("#text").unwrap_or(value),
        other => other,
    }
}

/// Renames for one logsource: Sigma's field name -> the event's field name.
pub(crate) type Renames = FxHashMap<Box<str>, Box<str>>;

/// A shape's fields as a tree of object keys: a record's nested fields resolved in one walk,
/// each key looked up once however many fields share it (`Event.System.*` on Windows).
#[derive(Debug, Default)]
pub(crate) struct FieldTree {
    children: Vec<(Box<str>, FieldTree)>,
    /// Key -> its place in `children`, when there are enough children to walk the record's
    /// keys instead (serde_json's ordered maps hash with SipHash; this hashes with FxHash).
    by_key: FxHashMap<Box<str>, usize>,
    /// Fields whose path ends here.
    names: Vec<Box<str>>,
}

/// From this many children on, a node walks the record's keys rather than looking each child
/// up.
const WALK_KEYS_FROM: usize = 3;

impl FieldTree {
    /// Paths with a wildcard stay out of the tree; [`FieldTree::resolve`]'s caller resolves
    /// those, and any field the walk misses, with [`Path::resolve`].
    fn of(fields: &FxHashMap<Box<str>, Path>) -> Self {
        let mut root = FieldTree::default();
        let mut sorted: Vec<_> = fields.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        for (name, path) in sorted {
            let keys: Option<Vec<&Box<str>>> = path
                .segments
                .iter()
                .map(|segment| match segment {
                    Segment::Key(key) => Some(key),
                    Segment::Any => None,
                })
                .collect();
            let Some(keys) = keys else {
                continue;
            };
            let mut node = &mut root;
            for key in keys {
                let at = match node.children.iter().position(|(have, _)| have == key) {
                    Some(at) => at,
                    None => {
                        node.children.push((key.clone(), FieldTree::default()));
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[at].1;
            }
            node.names.push(name.clone());
        }
        root.index_children();
        root
    }

    fn index_children(&mut self) {
        if self.children.len() >= WALK_KEYS_FROM {
            self.by_key = self
                .children
                .iter()
                .enumerate()
                .map(|(at, (key, _))| (key.clone(), at))
                .collect();
        }
        for (_, child) in &mut self.children {
            child.index_children();
        }
    }

    /// Calls `found` with each field present in `value` by nested keys, its `#text` unwrapped:
    /// the value [`Path::resolve`] finds for it.
    pub(crate) fn resolve<'s, 'v>(
        &'s self,
        value: &'v Value,
        found: &mut impl FnMut(&'s str, &'v Value),
    ) {
        for name in &self.names {
            found(name, unwrap_text(value));
        }
        if self.children.is_empty() {
            return;
        }
        let Some(object) = value.as_object() else {
            return;
        };
        if self.by_key.is_empty() || object.len() > 4 * self.children.len() {
            for (key, child) in &self.children {
                if let Some(value) = get(object, key) {
                    child.resolve(value, found);
                }
            }
        } else {
            for (key, value) in object {
                if let Some((_, child)) = self
                    .by_key
                    .get(key.as_str())
                    .and_then(|&at| self.children.get(at))
                {
                    child.resolve(value, found);
                }
            }
        }
    }
}

/// One recognizable record shape.
#[derive(Debug)]
pub(crate) struct Shape {
    /// The shape's name in shapes.yml, e.g. `evtx`.
    pub(crate) name: Box<str>,
    pub(crate) product: Option<Box<str>>,
    pub(crate) service: Option<Box<str>>,
    /// The Sigma category of every record of this shape (`webserver`), for shapes that are
    /// not Windows events.
    pub(crate) category: Option<WindowsCategory>,
    pub(crate) windows: bool,
    pub(crate) recognize: Vec<Path>,
    pub(crate) channel: Option<Path>,
    pub(crate) event_id: Option<Path>,
    /// Where a syslog record names its program; services then come from linux.yml.
    pub(crate) program: Option<Path>,
    pub(crate) fields: FxHashMap<Box<str>, Path>,
    /// The same fields as a tree of keys, so a record's fields are resolved in one walk.
    pub(crate) field_tree: FieldTree,
    pub(crate) containers: Vec<Path>,
    pub(crate) keywords_in_containers: bool,
    pub(crate) record_id: Option<Path>,
    pub(crate) timestamp: Option<Path>,
    /// Unique to this shape in this process (shapes of reloaded mappings get new ones): what
    /// the flat path's cached key layouts are kept under.
    pub(crate) id: u64,
}

/// A category a Windows event can belong to, with its conditions and field renames.
#[derive(Debug)]
/// (Also the fixed category of a shape that is not Windows: no conditions, no renames.)
pub(crate) struct WindowsCategory {
    pub(crate) category: Box<str>,
    pub(crate) when: Vec<(Box<str>, Box<str>)>,
    pub(crate) renames: Option<Arc<Renames>>,
}

/// Windows channels, services and categories.
#[derive(Debug)]
pub(crate) struct WindowsMap {
    pub(crate) product: Box<str>,
    /// Every service a channel maps to; channels and categories refer to them by index.
    services: Vec<Box<str>>,
    /// Per service: match field names ignoring spaces and underscores.
    loose: Vec<bool>,
    channels: FxHashMap<Box<str>, u16>,
    channels_folded: FxHashMap<String, u16>,
    /// (service index, EventID) -> categories.
    categories: FxHashMap<(u16, u32), Vec<WindowsCategory>>,
}

impl WindowsMap {
    /// The Sigma service of a channel (exact, then ignoring ASCII case), with its index.
    pub(crate) fn service(&self, channel: &str) -> Option<(u16, &str)> {
        let index = match self.channels.get(channel) {
            Some(index) => *index,
            None => *self.channels_folded.get(&channel.to_ascii_lowercase())?,
        };
        Some((index, &self.services[usize::from(index)]))
    }

    /// Whether this service's field names are matched ignoring spaces and underscores.
    pub(crate) fn loose(&self, service: u16) -> bool {
        self.loose
            .get(usize::from(service))
            .copied()
            .unwrap_or(false)
    }

    /// The categories an event of this service and EventID may belong to.
    pub(crate) fn categories(&self, service: u16, event_id: u32) -> &[WindowsCategory] {
        self.categories
            .get(&(service, event_id))
            .map_or(&[], Vec::as_slice)
    }
}

/// Linux syslog programs and their services.
#[derive(Debug)]
pub(crate) struct LinuxMap {
    pub(crate) product: Box<str>,
    pub(crate) every_record: Vec<Box<str>>,
    programs: FxHashMap<Box<str>, Vec<Box<str>>>,
    programs_folded: FxHashMap<String, Vec<Box<str>>>,
}

impl LinuxMap {
    /// The services of records written by `program` (`sshd`, `sshd(pam_unix)`, `CRON`).
    pub(crate) fn services(&self, program: &str) -> &[Box<str>] {
        let program = program.split('(').next().unwrap_or(program);
        if let Some(services) = self.programs.get(program) {
            return services;
        }
        self.programs_folded
            .get(&program.to_ascii_lowercase())
            .map_or(&[], Vec::as_slice)
    }
}

/// Every mapping Vigil applies between records and Sigma rules.
#[derive(Debug)]
pub struct Mappings {
    pub(crate) shapes: Vec<Shape>,
    pub(crate) windows: WindowsMap,
    pub(crate) linux: LinuxMap,
}

impl Mappings {
    /// The mappings compiled into Vigil.
    pub fn builtin() -> Result<Self, MappingError> {
        Self::from_yaml(
            ("shapes.yml", BUILTIN_SHAPES),
            ("windows.yml", BUILTIN_WINDOWS),
        )
    }

    /// Loads mappings from a shapes file and a Windows logsource file, each given as
    /// `(name for errors, text)`, with the built-in Linux program file.
    pub fn from_yaml(shapes: (&str, &str), windows: (&str, &str)) -> Result<Self, MappingError> {
        Self::from_files(shapes, windows, ("linux.yml", BUILTIN_LINUX))
    }

    /// Loads mappings from the shapes, Windows and Linux files, each `(name for errors, text)`.
    pub fn from_files(
        shapes: (&str, &str),
        windows: (&str, &str),
        linux: (&str, &str),
    ) -> Result<Self, MappingError> {
        let linux_file: LinuxFile = yaml_serde::from_str(linux.1).map_err(|err| MappingError {
            file: linux.0.to_owned(),
            reason: err.to_string(),
        })?;
        let shapes_error = |reason: String| MappingError {
            file: shapes.0.to_owned(),
            reason,
        };
        let windows_error = |reason: String| MappingError {
            file: windows.0.to_owned(),
            reason,
        };
        let shapes_file: ShapesFile =
            yaml_serde::from_str(shapes.1).map_err(|err| shapes_error(err.to_string()))?;
        let windows_file: WindowsFile =
            yaml_serde::from_str(windows.1).map_err(|err| windows_error(err.to_string()))?;

        let mut compiled_shapes = Vec::new();
        for spec in shapes_file.shapes {
            let name = spec.name.clone();
            let shape = compile_shape(spec)
                .map_err(|reason| shapes_error(format!("shape `{name}`: {reason}")))?;
            compiled_shapes.push(shape);
        }
        let windows = compile_windows(windows_file).map_err(windows_error)?;
        let boxed = |names: &[String]| names.iter().map(|name| name.as_str().into()).collect();
        let linux = LinuxMap {
            product: linux_file.product.into(),
            every_record: boxed(&linux_file.every_record),
            programs_folded: linux_file
                .programs
                .iter()
                .map(|(program, services)| (program.to_ascii_lowercase(), boxed(services)))
                .collect(),
            programs: linux_file
                .programs
                .iter()
                .map(|(program, services)| (program.as_str().into(), boxed(services)))
                .collect(),
        };
        Ok(Self {
            shapes: compiled_shapes,
            windows,
            linux,
        })
    }
}

fn compile_shape(spec: ShapeSpec) -> Result<Shape, String> {
    let path = |text: &str| Path::parse(text);
    let optional = |text: &Option<String>| text.as_deref().map(Path::parse).transpose();
    if spec.recognize.is_empty() {
        return Err("`recognize` names no path".to_owned());
    }
    if spec.containers.len() > MAX_CONTAINERS {
        return Err(format!(
            "{} containers, at most {MAX_CONTAINERS} are supported",
            spec.containers.len()
        ));
    }
    if spec.windows && (spec.channel.is_none() || spec.event_id.is_none()) {
        return Err("a Windows shape needs `channel` and `event_id`".to_owned());
    }
    if spec.category.is_some() && (spec.windows || spec.program.is_some()) {
        return Err(
            "`category` is for shapes whose records all have it; Windows and syslog shapes take theirs from windows.yml and linux.yml"
                .to_owned(),
        );
    }
    let mut fields = FxHashMap::default();
    for (sigma, at) in &spec.fields {
        fields.insert(sigma.as_str().into(), path(at)?);
    }
    let field_tree = FieldTree::of(&fields);
    static SHAPE_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    Ok(Shape {
        id: SHAPE_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        name: spec.name.as_str().into(),
        product: spec.product.map(Into::into),
        service: spec.service.map(Into::into),
        category: spec.category.map(|category| WindowsCategory {
            category: category.into(),
            when: Vec::new(),
            renames: None,
        }),
        windows: spec.windows,
        recognize: spec
            .recognize
            .iter()
            .map(|text| path(text))
            .collect::<Result<_, _>>()?,
        channel: optional(&spec.channel)?,
        event_id: optional(&spec.event_id)?,
        program: optional(&spec.program)?,
        fields,
        field_tree,
        containers: spec
            .containers
            .iter()
            .map(|text| path(text))
            .collect::<Result<_, _>>()?,
        keywords_in_containers: spec.keywords_in_containers,
        record_id: optional(&spec.record_id)?,
        timestamp: optional(&spec.timestamp)?,
    })
}

fn compile_windows(file: WindowsFile) -> Result<WindowsMap, String> {
    let mut services: Vec<Box<str>> = Vec::new();
    let mut service_index = |service: &str| -> Result<u16, String> {
        if let Some(index) = services.iter().position(|known| known.as_ref() == service) {
            return Ok(u16::try_from(index).unwrap_or(u16::MAX));
        }
        let index = u16::try_from(services.len()).map_err(|_| "too many services".to_owned())?;
        services.push(service.into());
        Ok(index)
    };
    let mut channels = FxHashMap::default();
    let mut channels_folded = FxHashMap::default();
    for (channel, service) in file.channels {
        if service.is_empty() {
            return Err(format!("channel `{channel}` maps to an empty service"));
        }
        let index = service_index(&service)?;
        channels_folded.insert(channel.to_ascii_lowercase(), index);
        channels.insert(channel.into(), index);
    }
    let mut categories: FxHashMap<(u16, u32), Vec<WindowsCategory>> = FxHashMap::default();
    for spec in file.categories {
        if spec.event_ids.is_empty() {
            return Err(format!(
                "category `{}` on service `{}` lists no event_ids",
                spec.category, spec.service
            ));
        }
        let renames: Option<Arc<Renames>> = (!spec.fields.is_empty()).then(|| {
            Arc::new(
                spec.fields
                    .iter()
                    .map(|(sigma, own)| (sigma.as_str().into(), own.as_str().into()))
                    .collect(),
            )
        });
        let when: Vec<(Box<str>, Box<str>)> = spec
            .when
            .iter()
            .map(|(field, value)| (field.as_str().into(), value.as_str().into()))
            .collect();
        let service = service_index(&spec.service)?;
        for event_id in spec.event_ids {
            categories
                .entry((service, event_id))
                .or_default()
                .push(WindowsCategory {
                    category: spec.category.as_str().into(),
                    when: when.clone(),
                    renames: renames.clone(),
                });
        }
    }
    let mut loose = vec![false; services.len()];
    for service in &file.loose_field_names {
        match services
            .iter()
            .position(|known| known.as_ref() == service.as_str())
        {
            Some(index) => loose[index] = true,
            None => {
                return Err(format!(
                    "loose_field_names names service `{service}`, which no channel maps to"
                ));
            }
        }
    }
    Ok(WindowsMap {
        product: file.product.into(),
        services,
        loose,
        channels,
        channels_folded,
        categories,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn builtin_mappings_load() {
        let mappings = Mappings::builtin().unwrap();
        let (security, name) = mappings.windows.service("Security").unwrap();
        assert_eq!(name, "security");
        assert_eq!(mappings.windows.service("security").unwrap().1, "security");
        assert_eq!(
            mappings
                .windows
                .service("Microsoft-Windows-Sysmon/Operational")
                .unwrap()
                .1,
            "sysmon"
        );
        let process_creation = mappings.windows.categories(security, 4688);
        assert_eq!(process_creation[0].category.as_ref(), "process_creation");
        let renames = process_creation[0].renames.as_ref().unwrap();
        assert_eq!(
            renames.get("Image").map(AsRef::as_ref),
            Some("NewProcessName")
        );
    }

    #[test]
    fn paths_resolve_nested_dotted_wildcard_and_text() {
        let record = json!({
            "Event": {"System": {"EventID": {"#attributes": {"Qualifiers": 16384}, "#text": 7045}},
                      "UserData": {"Op": {"User": "bob"}}},
            "winlog.channel": "Security",
            "a": {"b.c": 1},
        });
        let get = |text: &str| Path::parse(text).unwrap().resolve(&record).cloned();
        assert_eq!(get("Event.System.EventID"), Some(json!(7045)));
        assert_eq!(get("Event.UserData.*.User"), Some(json!("bob")));
        assert_eq!(get("winlog.channel"), Some(json!("Security")));
        assert_eq!(get("a.b.c"), Some(json!(1)));
        assert_eq!(get("a.x"), None);
        assert!(Path::parse("a..b").is_err());
    }

    #[test]
    fn bad_mapping_files_name_the_problem() {
        let unknown_key = Mappings::from_yaml(
            (
                "shapes.yml",
                "shapes:\n  - name: x\n    recognize: [a]\n    colour: red\n",
            ),
            ("windows.yml", BUILTIN_WINDOWS),
        )
        .unwrap_err();
        assert!(unknown_key.to_string().contains("colour"), "{unknown_key}");

        let no_ids = Mappings::from_yaml(
            ("shapes.yml", BUILTIN_SHAPES),
            (
                "windows.yml",
                "product: windows\nchannels: {}\ncategories:\n  - {category: c, service: s, event_ids: []}\n",
            ),
        )
        .unwrap_err();
        assert!(
            no_ids.to_string().contains("lists no event_ids"),
            "{no_ids}"
        );

        let windows_without_channel = Mappings::from_yaml(
            (
                "shapes.yml",
                "shapes:\n  - {name: w, recognize: [a], windows: true}\n",
            ),
            ("windows.yml", BUILTIN_WINDOWS),
        )
        .unwrap_err();
        assert!(windows_without_channel.to_string().contains("shape `w`"));

        let not_yaml = Mappings::from_yaml(
            ("shapes.yml", "shapes: ["),
            ("windows.yml", BUILTIN_WINDOWS),
        )
        .unwrap_err();
        assert!(not_yaml.to_string().starts_with("mapping file shapes.yml:"));
    }
}
