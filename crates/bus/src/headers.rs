/// The payload kind and version, `event/1`.
pub const HEADER_SCHEMA: &str = "Vigil-Schema";
/// How the payload is compressed: absent for none, `zstd` for zstd.
pub const HEADER_ENCODING: &str = "Vigil-Encoding";
/// Why a message was dead-lettered.
pub const HEADER_DEAD_LETTER_REASON: &str = "Vigil-Dead-Letter-Reason";
/// The subject a dead-lettered message was consumed from.
pub const HEADER_ORIGINAL_SUBJECT: &str = "Vigil-Original-Subject";
/// The consumer that dead-lettered a message.
pub const HEADER_CONSUMER: &str = "Vigil-Consumer";
/// How often a dead-lettered message had been delivered.
pub const HEADER_DELIVERIES: &str = "Vigil-Deliveries";

/// Message headers: a small ordered multimap, compared case-insensitively by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Sets `name` to `value`, replacing earlier values.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        self.entries
            .retain(|(key, _)| !key.eq_ignore_ascii_case(&name));
        self.entries.push((name, value.into()));
    }

    /// Every header in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Header names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
