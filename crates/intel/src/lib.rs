//! Threat intelligence: feeds parsed into indicators, and the lookups that match an event's
//! addresses, domains, URLs and file hashes against them. The control plane validates feeds
//! with the same parser the detect service loads them with.
//!
//! Formats: STIX 2.1 bundles (indicators whose pattern compares one observable with `=`,
//! joined by `OR`), MISP events (attributes and object attributes) and MISP feed directories
//! (`manifest.json` beside one file per event), CSV with an `indicator`/`value`/`ioc` column,
//! and plain lists (one indicator per line, `#` comments). A feed is loaded as far as it goes:
//! indicators that cannot be used are counted with the first reasons, never fatal.
//!
//! Lookups: IP addresses against exact addresses and CIDR networks (one hash table per prefix
//! length present, longest first: at most 33 probes for IPv4 and 129 for IPv6, usually a few);
//! domains with their parent domains (`a.evil.example` matches an indicator `evil.example`);
//! URLs exactly, after normalizing scheme and host case; MD5, SHA-1 and SHA-256 hex digests.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;
use rustc_hash::FxHashMap;
use serde_json::Value;

/// The feed formats.
pub const FORMATS: &[&str] = &["stix", "misp", "csv", "list"];

/// How many rejection reasons a feed report keeps (the count covers all).
const MAX_REASONS: usize = 10;

/// What an indicator matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndicatorKind {
    /// An IPv4 or IPv6 address or network.
    Ip,
    /// A domain and its subdomains.
    Domain,
    /// A URL.
    Url,
    /// An MD5, SHA-1 or SHA-256 digest.
    Hash,
}

/// What a hit reports about its indicator.
#[derive(Debug, Clone, PartialEq)]
pub struct IndicatorMeta {
    /// The feed's name.
    pub feed: Arc<str>,
    /// The indicator as the feed wrote it.
    pub indicator: Arc<str>,
    /// Confidence, 0 to 100, where the feed says.
    pub confidence: Option<u8>,
    /// Labels and tags.
    pub labels: Arc<[String]>,
    /// Unix seconds after which the indicator no longer applies.
    pub valid_until: Option<i64>,
}

/// One usable indicator from a feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Indicator {
    /// What it matches.
    pub key: IndicatorKey,
    /// What a hit reports.
    pub meta: IndicatorMeta,
}

/// An indicator's normalized value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndicatorKey {
    /// An address (a /32 or /128) or a network.
    Net(IpNet),
    /// A lowercase domain without a trailing dot.
    Domain(String),
    /// A normalized URL.
    Url(String),
    /// A lowercase hex digest.
    Hash(String),
}

/// What loading one feed produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedReport {
    /// Indicators loaded.
    pub loaded: usize,
    /// Indicators skipped (unsupported pattern, bad value, expired, revoked).
    pub skipped: usize,
    /// The first reasons for skipping, with where.
    pub reasons: Vec<String>,
}

impl FeedReport {
    fn skip(&mut self, reason: impl FnOnce() -> String) {
        self.skipped += 1;
        if self.reasons.len() < MAX_REASONS {
            self.reasons.push(reason());
        }
    }
}

/// Parses a feed's content, handing each usable indicator to `sink`. An error means the
/// content is not a feed of that format at all (and nothing was handed on); single unusable
/// indicators are counted in the report.
pub fn parse_feed(
    name: &str,
    format: &str,
    content: &[u8],
    now: i64,
    sink: &mut dyn FnMut(Indicator),
) -> Result<FeedReport, String> {
    let mut out = Parsed {
        feed: Arc::from(name),
        now,
        sink,
        report: FeedReport::default(),
    };
    match format {
        "stix" => out.stix(&json(content)?)?,
        "misp" => out.misp_document(&json(content)?, "")?,
        "csv" => out.csv(content)?,
        "list" => out.list(content)?,
        other => {
            return Err(format!(
                "unknown feed format {other:?}: expected {}",
                FORMATS.join(", ")
            ));
        }
    }
    Ok(out.report)
}

/// Loads a MISP feed directory: `manifest.json` names the events, each in `<uuid>.json`.
pub fn parse_misp_directory(
    name: &str,
    dir: &std::path::Path,
    now: i64,
    sink: &mut dyn FnMut(Indicator),
) -> Result<FeedReport, String> {
    let manifest_path = dir.join("manifest.json");
    let manifest = std::fs::read(&manifest_path)
        .map_err(|err| format!("{}: {err}", manifest_path.display()))?;
    let manifest = json(&manifest).map_err(|err| format!("{}: {err}", manifest_path.display()))?;
    let events = manifest
        .as_object()
        .ok_or_else(|| format!("{}: not a MISP manifest", manifest_path.display()))?;
    let mut out = Parsed {
        feed: Arc::from(name),
        now,
        sink,
        report: FeedReport::default(),
    };
    for uuid in events.keys() {
        let valid = !uuid.is_empty() && uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if !valid {
            out.report
                .skip(|| format!("manifest names an event {uuid:?} that is not a uuid"));
            continue;
        }
        let path = dir.join(format!("{uuid}.json"));
        let document = std::fs::read(&path)
            .map_err(|err| err.to_string())
            .and_then(|bytes| json(&bytes));
        match document {
            Ok(document) => {
                if let Err(reason) = out.misp_document(&document, uuid) {
                    out.report.skip(|| format!("event {uuid}: {reason}"));
                }
            }
            Err(reason) => out.report.skip(|| format!("{}: {reason}", path.display())),
        }
    }
    Ok(out.report)
}

fn json(content: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(content).map_err(|err| format!("not JSON: {err}"))
}

struct Parsed<'s> {
    feed: Arc<str>,
    now: i64,
    sink: &'s mut dyn FnMut(Indicator),
    report: FeedReport,
}

impl Parsed<'_> {
    fn push(
        &mut self,
        kind_hint: Option<IndicatorKind>,
        value: &str,
        confidence: Option<u8>,
        labels: &Arc<[String]>,
        valid_until: Option<i64>,
        at: &dyn Fn() -> String,
    ) {
        if valid_until.is_some_and(|until| until <= self.now) {
            self.report.skip(|| format!("{}: expired", at()));
            return;
        }
        match normalize(kind_hint, value) {
            Ok(key) => {
                self.report.loaded += 1;
                (self.sink)(Indicator {
                    key,
                    meta: IndicatorMeta {
                        feed: Arc::clone(&self.feed),
                        indicator: Arc::from(value.trim()),
                        confidence,
                        labels: Arc::clone(labels),
                        valid_until,
                    },
                });
            }
            Err(reason) => self.report.skip(|| format!("{}: {reason}", at())),
        }
    }

    /// `valid_until` as Unix seconds (`None` when absent); a value that is not RFC 3339 skips
    /// the indicator with the reason (`Err`).
    fn valid_until(
        &mut self,
        text: Option<&str>,
        at: &dyn Fn() -> String,
    ) -> Result<Option<i64>, ()> {
        match text.map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => rfc3339(text).map(Some).ok_or_else(|| {
                self.report
                    .skip(|| format!("{}: valid_until {text:?} is not RFC 3339", at()));
            }),
        }
    }

    fn stix(&mut self, bundle: &Value) -> Result<(), String> {
        if bundle.get("type").and_then(Value::as_str) != Some("bundle") {
            return Err("a STIX 2.1 feed must be a bundle (\"type\": \"bundle\")".into());
        }
        let objects = bundle
            .get("objects")
            .and_then(Value::as_array)
            .ok_or("the STIX bundle has no \"objects\" array")?;
        for (index, object) in objects.iter().enumerate() {
            if object.get("type").and_then(Value::as_str) != Some("indicator") {
                continue;
            }
            let at = || format!("objects[{index}]");
            if object.get("revoked").and_then(Value::as_bool) == Some(true) {
                self.report.skip(|| format!("{}: revoked", at()));
                continue;
            }
            match object.get("pattern_type").and_then(Value::as_str) {
                None | Some("stix") => {}
                Some(other) => {
                    self.report
                        .skip(|| format!("{}: pattern type {other:?} is not stix", at()));
                    continue;
                }
            }
            let Some(pattern) = object.get("pattern").and_then(Value::as_str) else {
                self.report.skip(|| format!("{}: no pattern", at()));
                continue;
            };
            let Ok(valid_until) =
                self.valid_until(object.get("valid_until").and_then(Value::as_str), &at)
            else {
                continue;
            };
            let confidence = object
                .get("confidence")
                .and_then(Value::as_u64)
                .and_then(|c| u8::try_from(c.min(100)).ok());
            let labels: Arc<[String]> = object
                .get("labels")
                .and_then(Value::as_array)
                .map(|labels| {
                    labels
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            match stix_pattern(pattern) {
                Ok(comparisons) => {
                    for (kind, value) in comparisons {
                        self.push(Some(kind), &value, confidence, &labels, valid_until, &at);
                    }
                }
                Err(reason) => self.report.skip(|| format!("{}: {reason}", at())),
            }
        }
        Ok(())
    }

    fn misp_document(&mut self, document: &Value, uuid: &str) -> Result<(), String> {
        let event = document.get("Event").unwrap_or(document);
        let Some(attributes) = event.get("Attribute").and_then(Value::as_array) else {
            if document.as_object().is_some_and(|manifest| {
                !manifest.is_empty()
                    && manifest.values().all(|event| {
                        event.get("info").is_some() || event.get("timestamp").is_some()
                    })
            }) {
                return Err(
                    "a MISP feed manifest lists events but holds no attributes: load \
                            the feed directory (manifest.json with its event files) or push \
                            each event"
                        .into(),
                );
            }
            return Err("not a MISP event (\"Event\" with \"Attribute\")".into());
        };
        let tags = |value: &Value| -> Vec<String> {
            value
                .get("Tag")
                .and_then(Value::as_array)
                .map(|tags| {
                    tags.iter()
                        .filter_map(|tag| tag.get("name").and_then(Value::as_str))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let event_tags = tags(event);
        let mut all: Vec<(&Value, String)> = attributes
            .iter()
            .enumerate()
            .map(|(i, a)| (a, format!("{uuid}Attribute[{i}]")))
            .collect();
        if let Some(objects) = event.get("Object").and_then(Value::as_array) {
            for (o, object) in objects.iter().enumerate() {
                if let Some(attributes) = object.get("Attribute").and_then(Value::as_array) {
                    for (i, attribute) in attributes.iter().enumerate() {
                        all.push((attribute, format!("{uuid}Object[{o}].Attribute[{i}]")));
                    }
                }
            }
        }
        for (attribute, place) in all {
            let at = || place.clone();
            // MISP's own rule: only attributes flagged for detection are indicators.
            if attribute.get("to_ids").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let (Some(kind), Some(value)) = (
                attribute.get("type").and_then(Value::as_str),
                attribute.get("value").and_then(Value::as_str),
            ) else {
                self.report.skip(|| format!("{}: no type or value", at()));
                continue;
            };
            let mut labels = event_tags.clone();
            labels.extend(tags(attribute));
            let labels: Arc<[String]> = labels.into();
            match misp_type(kind, value) {
                Some(parts) => {
                    for (kind, value) in parts {
                        self.push(Some(kind), value, None, &labels, None, &at);
                    }
                }
                None => self
                    .report
                    .skip(|| format!("{}: MISP type {kind:?} is not matched", at())),
            }
        }
        Ok(())
    }

    fn csv(&mut self, content: &[u8]) -> Result<(), String> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(content);
        let headers = reader
            .headers()
            .map_err(|err| format!("CSV header: {err}"))?
            .clone();
        let column = |names: &[&str]| {
            headers
                .iter()
                .position(|name| names.contains(&name.trim().to_ascii_lowercase().as_str()))
        };
        let value_column = column(&["indicator", "value", "ioc"])
            .ok_or("the CSV header has no indicator, value or ioc column")?;
        let type_column = column(&["type", "kind"]);
        let confidence_column = column(&["confidence"]);
        let labels_column = column(&["labels", "tags", "label", "tag"]);
        let until_column = column(&["valid_until", "expires", "expiry"]);
        for (row, record) in reader.records().enumerate() {
            let line = row + 2;
            let at = || format!("line {line}");
            let record = match record {
                Ok(record) => record,
                Err(err) => {
                    self.report.skip(|| format!("{}: {err}", at()));
                    continue;
                }
            };
            let Some(value) = record.get(value_column).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            let hint = match type_column.and_then(|c| record.get(c)).map(str::trim) {
                None | Some("") => None,
                Some(kind) => match kind_named(kind) {
                    Some(kind) => Some(kind),
                    None => {
                        self.report
                            .skip(|| format!("{}: unknown indicator type {kind:?}", at()));
                        continue;
                    }
                },
            };
            let confidence = confidence_column
                .and_then(|c| record.get(c))
                .and_then(|c| c.trim().parse::<u8>().ok())
                .map(|c| c.min(100));
            let labels: Arc<[String]> = labels_column
                .and_then(|c| record.get(c))
                .map(|labels| {
                    labels
                        .split([';', '|'])
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let Ok(valid_until) = self.valid_until(until_column.and_then(|c| record.get(c)), &at)
            else {
                continue;
            };
            self.push(hint, value, confidence, &labels, valid_until, &at);
        }
        Ok(())
    }

    fn list(&mut self, content: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(content).map_err(|err| format!("not UTF-8 text: {err}"))?;
        let labels: Arc<[String]> = Arc::from(Vec::new());
        for (index, line) in text.lines().enumerate() {
            let value = line.split('#').next().unwrap_or("").trim();
            if value.is_empty() {
                continue;
            }
            let at = || format!("line {}", index + 1);
            self.push(None, value, None, &labels, None, &at);
        }
        Ok(())
    }
}

fn rfc3339(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

fn kind_named(name: &str) -> Option<IndicatorKind> {
    match name.to_ascii_lowercase().as_str() {
        "ip" | "ipv4" | "ipv6" | "ip-src" | "ip-dst" | "cidr" | "ipv4-addr" | "ipv6-addr" => {
            Some(IndicatorKind::Ip)
        }
        "domain" | "hostname" | "domain-name" | "fqdn" => Some(IndicatorKind::Domain),
        "url" | "uri" => Some(IndicatorKind::Url),
        "md5" | "sha1" | "sha-1" | "sha256" | "sha-256" | "hash" => Some(IndicatorKind::Hash),
        _ => None,
    }
}

/// The (kind, value) pairs one MISP attribute holds, or `None` for types not matched.
fn misp_type<'v>(kind: &str, value: &'v str) -> Option<Vec<(IndicatorKind, &'v str)>> {
    let first = |v: &'v str| v.split('|').next().unwrap_or(v);
    let second = |v: &'v str| v.split_once('|').map_or(v, |(_, b)| b);
    Some(match kind {
        "ip-src" | "ip-dst" => vec![(IndicatorKind::Ip, value)],
        "ip-src|port" | "ip-dst|port" => vec![(IndicatorKind::Ip, first(value))],
        "domain" | "hostname" => vec![(IndicatorKind::Domain, value)],
        "domain|ip" => vec![
            (IndicatorKind::Domain, first(value)),
            (IndicatorKind::Ip, second(value)),
        ],
        "hostname|port" => vec![(IndicatorKind::Domain, first(value))],
        "url" | "uri" | "link" => vec![(IndicatorKind::Url, value)],
        "md5" | "sha1" | "sha256" => vec![(IndicatorKind::Hash, value)],
        "filename|md5" | "filename|sha1" | "filename|sha256" => {
            vec![(IndicatorKind::Hash, second(value))]
        }
        _ => return None,
    })
}

/// The comparisons of a STIX pattern made of `[object:path = 'value']` terms joined by `OR`
/// (inside or between brackets). `AND`, `FOLLOWEDBY`, qualifiers and other operators are
/// refused: a partial reading of them would match what the producer did not mean.
fn stix_pattern(pattern: &str) -> Result<Vec<(IndicatorKind, String)>, String> {
    let mut out = Vec::new();
    let mut rest = pattern.trim();
    loop {
        let inner_start = rest
            .strip_prefix('[')
            .ok_or_else(|| format!("pattern {pattern:?}: expected '['"))?;
        let (terms, after) = split_bracket(inner_start)
            .ok_or_else(|| format!("pattern {pattern:?}: unbalanced brackets or quotes"))?;
        for term in split_or(terms)? {
            out.push(
                stix_comparison(term.trim()).map_err(|e| format!("pattern {pattern:?}: {e}"))?,
            );
        }
        let after = after.trim();
        if after.is_empty() {
            return Ok(out);
        }
        let next = after
            .strip_prefix("OR")
            .filter(|next| next.starts_with(char::is_whitespace) || next.starts_with('['))
            .ok_or_else(|| {
                format!("pattern {pattern:?}: only OR between observations is supported")
            })?;
        rest = next.trim();
    }
}

/// Splits `terms] rest` at the closing bracket outside quotes.
fn split_bracket(text: &str) -> Option<(&str, &str)> {
    let mut quoted = false;
    let mut escaped = false;
    for (index, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '\'' => quoted = !quoted,
            ']' if !quoted => return Some((&text[..index], &text[index + 1..])),
            _ => {}
        }
    }
    None
}

/// Splits the comparisons of one observation at ` OR ` outside quotes; `AND` is refused.
fn split_or(terms: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    let bytes = terms.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let c = bytes[index];
        if escaped {
            escaped = false;
        } else if c == b'\\' && quoted {
            escaped = true;
        } else if c == b'\'' {
            quoted = !quoted;
        } else if !quoted && c.is_ascii_whitespace() {
            let word: String = terms[index + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            let boundary = terms[index + 1 + word.len()..]
                .chars()
                .next()
                .is_none_or(char::is_whitespace);
            if boundary && word == "OR" {
                parts.push(&terms[start..index]);
                index += 1 + word.len();
                start = index;
                continue;
            }
            if boundary && word == "AND" {
                return Err("AND within an observation is not supported".into());
            }
        }
        index += 1;
    }
    parts.push(&terms[start..]);
    Ok(parts)
}

fn stix_comparison(term: &str) -> Result<(IndicatorKind, String), String> {
    let (path, value) = term
        .split_once('=')
        .filter(|(path, _)| !path.ends_with(['!', '<', '>']))
        .ok_or_else(|| format!("{term:?}: only '=' comparisons are supported"))?;
    let path = path.trim();
    let value = value.trim();
    let value = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .ok_or_else(|| format!("{term:?}: the value must be a quoted string"))?
        .replace("\\'", "'")
        .replace("\\\\", "\\");
    let kind = match path {
        "ipv4-addr:value" | "ipv6-addr:value" => IndicatorKind::Ip,
        "domain-name:value" => IndicatorKind::Domain,
        "url:value" => IndicatorKind::Url,
        _ if path.starts_with("file:hashes.") => {
            let algorithm = path["file:hashes.".len()..]
                .trim_matches('\'')
                .to_ascii_uppercase()
                .replace('-', "");
            if !matches!(algorithm.as_str(), "MD5" | "SHA1" | "SHA256") {
                return Err(format!(
                    "{term:?}: hash algorithm {algorithm} is not matched"
                ));
            }
            IndicatorKind::Hash
        }
        other => return Err(format!("{term:?}: observable {other:?} is not matched")),
    };
    Ok((kind, value))
}

/// Normalizes an indicator value; `hint` is the kind the feed declared, if any.
fn normalize(hint: Option<IndicatorKind>, value: &str) -> Result<IndicatorKey, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("empty value".into());
    }
    let kind = match hint {
        Some(kind) => kind,
        None => infer(value).ok_or_else(|| {
            format!("{value:?} is not an IP address, network, domain, URL or hash")
        })?,
    };
    match kind {
        IndicatorKind::Ip => parse_net(value)
            .map(IndicatorKey::Net)
            .ok_or_else(|| format!("{value:?} is not an IP address or network")),
        IndicatorKind::Domain => normalize_domain(value)
            .map(IndicatorKey::Domain)
            .ok_or_else(|| format!("{value:?} is not a domain name")),
        IndicatorKind::Url => normalize_url(value)
            .map(IndicatorKey::Url)
            .ok_or_else(|| format!("{value:?} is not a URL")),
        IndicatorKind::Hash => normalize_hash(value)
            .map(IndicatorKey::Hash)
            .ok_or_else(|| format!("{value:?} is not an MD5, SHA-1 or SHA-256 digest")),
    }
}

fn infer(value: &str) -> Option<IndicatorKind> {
    if parse_net(value).is_some() {
        Some(IndicatorKind::Ip)
    } else if normalize_hash(value).is_some() {
        Some(IndicatorKind::Hash)
    } else if value.contains("://") {
        Some(IndicatorKind::Url)
    } else if normalize_domain(value).is_some() {
        Some(IndicatorKind::Domain)
    } else {
        None
    }
}

fn parse_net(value: &str) -> Option<IpNet> {
    let net = match value.parse::<IpNet>() {
        Ok(net) => net.trunc(),
        Err(_) => IpNet::from(value.parse::<IpAddr>().ok()?),
    };
    // An IPv4-mapped IPv6 indicator (`::ffff:192.0.2.1/128`) is the IPv4 one: lookups map such
    // addresses to IPv4.
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.network().to_ipv4_mapped()
        && v6.prefix_len() >= 96
    {
        return ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
            .ok()
            .map(IpNet::V4);
    }
    Some(net)
}

fn normalize_hash(value: &str) -> Option<String> {
    let valid = matches!(value.len(), 32 | 40 | 64) && value.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| value.to_ascii_lowercase())
}

/// A lowercase domain without a trailing dot, of at least two labels of letters, digits, `-`
/// and `_`.
pub fn normalize_domain(value: &str) -> Option<String> {
    let value = value.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = value.len() <= 253
        && value.contains('.')
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && value.parse::<IpAddr>().is_err();
    valid.then_some(value)
}

/// Lowercases a URL's scheme and host and drops a fragment and a lone trailing `/`.
pub fn normalize_url(value: &str) -> Option<String> {
    let value = value.trim();
    let (scheme, rest) = value.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+')
    {
        return None;
    }
    let rest = rest.split('#').next().unwrap_or(rest);
    let (host, path) = match rest.find(['/', '?']) {
        Some(index) => rest.split_at(index),
        None => (rest, ""),
    };
    if host.is_empty() {
        return None;
    }
    let path = if path == "/" { "" } else { path };
    Some(format!(
        "{}://{}{}",
        scheme.to_ascii_lowercase(),
        host.to_ascii_lowercase(),
        path
    ))
}

/// What the set keeps per indicator: 24 bytes. The indicator's text is rendered from its key
/// when a lookup hits; the feed's own spelling is kept only where it differs (`10.0.0.1/32`,
/// an uppercase digest, a URL with a fragment). Feed names and label lists are shared.
#[derive(Debug)]
struct Entry {
    /// Unix seconds; `i64::MAX` when the feed gives none.
    valid_until: i64,
    /// Index into `IntelSet::label_sets`.
    labels: u32,
    /// Index into `IntelSet::texts`, or [`CANONICAL`] when the feed wrote the indicator as
    /// its key renders.
    text: u32,
    /// Index into `IntelSet::feeds`.
    feed: u16,
    /// 0 to 100, or [`NO_CONFIDENCE`].
    confidence: u8,
}

// A million indicators cost 24 MB of entries; keep it so.
const _: () = assert!(size_of::<Entry>() == 24);

const NO_CONFIDENCE: u8 = u8::MAX;
const CANONICAL: u32 = u32::MAX;

/// An indicator's key as the set stores it: networks as numbers, digests as bytes.
enum Stored<'k> {
    V4(u8, u32),
    V6(u8, u128),
    Domain(&'k str),
    Url(&'k str),
    Md5([u8; 16]),
    Sha1([u8; 20]),
    Sha256([u8; 32]),
}

impl<'k> Stored<'k> {
    fn of(key: &'k IndicatorKey) -> Option<Self> {
        Some(match key {
            IndicatorKey::Net(IpNet::V4(net)) => {
                Self::V4(net.prefix_len(), u32::from(net.network()))
            }
            IndicatorKey::Net(IpNet::V6(net)) => {
                Self::V6(net.prefix_len(), u128::from(net.network()))
            }
            IndicatorKey::Domain(domain) => Self::Domain(domain),
            IndicatorKey::Url(url) => Self::Url(url),
            IndicatorKey::Hash(hash) => Self::digest(hash)?,
        })
    }

    /// A 32, 40 or 64 digit hex digest in either case.
    fn digest(hex: &str) -> Option<Self> {
        match hex.len() {
            32 => decode_hex(hex).map(Self::Md5),
            40 => decode_hex(hex).map(Self::Sha1),
            64 => decode_hex(hex).map(Self::Sha256),
            _ => None,
        }
    }

    /// The indicator's text as Vigil writes it, handed to `use_text`: an address without `/32`
    /// or `/128`, a network with its length, a lowercase digest, a domain or URL as normalized.
    /// Written on the stack: a hit allocates only the text it reports.
    fn render<R>(&self, use_text: impl FnOnce(&str) -> R) -> R {
        let mut text = Text::default();
        let written = match self {
            Self::Domain(name) | Self::Url(name) => return use_text(name),
            Self::V4(32, bits) => text.ipv4(*bits),
            Self::V4(length, bits) => text.ipv4(*bits).and_then(|()| write!(text, "/{length}")),
            Self::V6(128, bits) => write!(text, "{}", Ipv6Addr::from(*bits)),
            Self::V6(length, bits) => write!(text, "{}/{length}", Ipv6Addr::from(*bits)),
            Self::Md5(bytes) => text.hex(bytes),
            Self::Sha1(bytes) => text.hex(bytes),
            Self::Sha256(bytes) => text.hex(bytes),
        };
        debug_assert!(written.is_ok(), "an indicator's text fits 64 bytes");
        use_text(text.as_str())
    }
}

/// A key's text on the stack: 64 bytes hold the longest (a SHA-256 digest; an IPv6 network is
/// at most 43).
struct Text {
    bytes: [u8; 64],
    len: usize,
}

impl Default for Text {
    fn default() -> Self {
        Self {
            bytes: [0; 64],
            len: 0,
        }
    }
}

impl Text {
    fn as_str(&self) -> &str {
        std::str::from_utf8(self.bytes.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }

    fn hex(&mut self, bytes: &[u8]) -> fmt::Result {
        let digits = self
            .bytes
            .get_mut(self.len..self.len + 2 * bytes.len())
            .ok_or(fmt::Error)?;
        for (pair, byte) in digits.chunks_exact_mut(2).zip(bytes) {
            pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
            pair[1] = HEX_DIGITS[usize::from(byte & 0xf)];
        }
        self.len += 2 * bytes.len();
        Ok(())
    }

    /// An IPv4 address in dotted decimal, without the formatting machinery (a hit on an
    /// address is the common intel hit).
    fn ipv4(&mut self, bits: u32) -> fmt::Result {
        for (index, octet) in bits.to_be_bytes().into_iter().enumerate() {
            if index > 0 {
                self.push(b'.')?;
            }
            if octet >= 100 {
                self.push(b'0' + octet / 100)?;
            }
            if octet >= 10 {
                self.push(b'0' + octet / 10 % 10)?;
            }
            self.push(b'0' + octet % 10)?;
        }
        Ok(())
    }

    fn push(&mut self, byte: u8) -> fmt::Result {
        *self.bytes.get_mut(self.len).ok_or(fmt::Error)? = byte;
        self.len += 1;
        Ok(())
    }
}

impl fmt::Write for Text {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.len + text.len();
        self.bytes
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Each byte's value as a hex digit, or `0xff`.
static HEX_VALUES: [u8; 256] = {
    let mut values = [0xff; 256];
    let mut digit = 0;
    while digit < 16 {
        values[b"0123456789abcdef"[digit] as usize] = digit as u8;
        values[b"0123456789ABCDEF"[digit] as usize] = digit as u8;
        digit += 1;
    }
    values
};

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Without a branch per digit: a digest's digits are random, and a branch on each would be
/// mispredicted half the time (a third of a microsecond for a SHA-256).
fn decode_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let digits = hex.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut bytes = [0; N];
    let mut invalid = 0;
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        let high = HEX_VALUES[usize::from(pair[0])];
        let low = HEX_VALUES[usize::from(pair[1])];
        invalid |= high | low;
        *byte = high << 4 | low;
    }
    (invalid & 0xf0 == 0).then_some(bytes)
}

/// Collects indicators (from [`parse_feed`] and [`parse_misp_directory`] sinks) into an
/// [`IntelSet`].
#[derive(Debug, Default)]
pub struct IntelBuilder {
    set: IntelSet,
    feed_index: FxHashMap<Arc<str>, u16>,
    label_index: FxHashMap<Arc<[String]>, u32>,
}

impl IntelBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an indicator. When the same indicator comes twice, the one with the higher
    /// confidence (then the later one) answers.
    pub fn add(&mut self, indicator: Indicator) {
        let Some(key) = Stored::of(&indicator.key) else {
            // Only a digest built by hand, not by the parser, can fail to decode.
            return;
        };
        let set = &mut self.set;
        let existing = match &key {
            Stored::V4(length, bits) => set.v4.get(&(*length, *bits)),
            Stored::V6(length, bits) => set.v6.get(&(*length, *bits)),
            Stored::Domain(domain) => set.domains.get(*domain),
            Stored::Url(url) => set.urls.get(*url),
            Stored::Md5(bytes) => set.md5.get(bytes),
            Stored::Sha1(bytes) => set.sha1.get(bytes),
            Stored::Sha256(bytes) => set.sha256.get(bytes),
        }
        .copied();
        let entry = self.entry(&key, indicator.meta);
        let set = &mut self.set;
        if let Some(old) = existing {
            let old = &mut set.entries[old as usize];
            let rank = |confidence: u8| (confidence != NO_CONFIDENCE).then_some(confidence);
            if rank(old.confidence) <= rank(entry.confidence) {
                *old = entry;
            }
            return;
        }
        let index = u32::try_from(set.entries.len()).unwrap_or(u32::MAX);
        set.entries.push(entry);
        match key {
            Stored::V4(length, bits) => {
                if !set.v4_lengths.contains(&length) {
                    set.v4_lengths.push(length);
                    set.v4_lengths.sort_unstable_by(|a, b| b.cmp(a));
                }
                set.v4.insert((length, bits), index);
            }
            Stored::V6(length, bits) => {
                if !set.v6_lengths.contains(&length) {
                    set.v6_lengths.push(length);
                    set.v6_lengths.sort_unstable_by(|a, b| b.cmp(a));
                }
                set.v6.insert((length, bits), index);
            }
            Stored::Domain(domain) => {
                set.domains.insert(domain.into(), index);
            }
            Stored::Url(url) => {
                set.urls.insert(url.into(), index);
            }
            Stored::Md5(bytes) => {
                set.md5.insert(bytes, index);
            }
            Stored::Sha1(bytes) => {
                set.sha1.insert(bytes, index);
            }
            Stored::Sha256(bytes) => {
                set.sha256.insert(bytes, index);
            }
        }
    }

    fn entry(&mut self, key: &Stored<'_>, meta: IndicatorMeta) -> Entry {
        let set = &mut self.set;
        let feed = *self.feed_index.entry(meta.feed).or_insert_with_key(|feed| {
            set.feeds.push(Arc::clone(feed));
            u16::try_from(set.feeds.len() - 1).unwrap_or(u16::MAX)
        });
        let labels = *self
            .label_index
            .entry(meta.labels)
            .or_insert_with_key(|labels| {
                set.label_sets.push(Arc::clone(labels));
                u32::try_from(set.label_sets.len() - 1).unwrap_or(u32::MAX)
            });
        let text = if key.render(|text| *meta.indicator == *text) {
            CANONICAL
        } else {
            set.texts.push(Box::from(&*meta.indicator));
            u32::try_from(set.texts.len() - 1).unwrap_or(CANONICAL)
        };
        Entry {
            valid_until: meta.valid_until.unwrap_or(i64::MAX),
            labels,
            text,
            feed,
            confidence: meta.confidence.map_or(NO_CONFIDENCE, |c| c.min(100)),
        }
    }

    /// Records what loading a feed produced.
    pub fn report(&mut self, feed: impl Into<String>, report: FeedReport) {
        self.set.reports.insert(feed.into(), report);
    }

    /// The finished set.
    pub fn build(mut self) -> IntelSet {
        let set = &mut self.set;
        set.entries.shrink_to_fit();
        set.texts.shrink_to_fit();
        set.v4.shrink_to_fit();
        set.v6.shrink_to_fit();
        set.domains.shrink_to_fit();
        set.urls.shrink_to_fit();
        set.md5.shrink_to_fit();
        set.sha1.shrink_to_fit();
        set.sha256.shrink_to_fit();
        self.set
    }
}

/// Indicators of one owner (the MSSP or one tenant), ready for lookups.
#[derive(Debug, Default)]
pub struct IntelSet {
    /// Index into `entries` per address, by prefix length; lengths in `v4_lengths` and
    /// `v6_lengths`, longest first.
    v4: FxHashMap<(u8, u32), u32>,
    v4_lengths: Vec<u8>,
    v6: FxHashMap<(u8, u128), u32>,
    v6_lengths: Vec<u8>,
    domains: FxHashMap<Box<str>, u32>,
    urls: FxHashMap<Box<str>, u32>,
    md5: FxHashMap<[u8; 16], u32>,
    sha1: FxHashMap<[u8; 20], u32>,
    sha256: FxHashMap<[u8; 32], u32>,
    entries: Vec<Entry>,
    /// Indicators as their feeds wrote them, where that differs from their keys' rendering.
    texts: Vec<Box<str>>,
    feeds: Vec<Arc<str>>,
    label_sets: Vec<Arc<[String]>>,
    /// Loaded indicators per feed, and what was skipped.
    pub reports: BTreeMap<String, FeedReport>,
}

impl IntelSet {
    /// Number of indicators.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most specific network holding `address`, if any is still valid at `now`.
    pub fn lookup_ip(&self, address: IpAddr, now: i64) -> Option<IndicatorMeta> {
        match address {
            IpAddr::V4(address) => {
                let bits = u32::from(address);
                // Longest prefix first, skipping expired entries: an expired /32 does not hide
                // a valid /8.
                self.v4_lengths.iter().find_map(|&length| {
                    let mask = if length == 0 {
                        0
                    } else {
                        u32::MAX << (32 - length)
                    };
                    let key = (length, bits & mask);
                    self.valid(self.v4.get(&key), now, || Stored::V4(key.0, key.1))
                })
            }
            IpAddr::V6(address) => {
                if let Some(v4) = address.to_ipv4_mapped() {
                    return self.lookup_ip(IpAddr::V4(v4), now);
                }
                let bits = u128::from(address);
                self.v6_lengths.iter().find_map(|&length| {
                    let mask = if length == 0 {
                        0
                    } else {
                        u128::MAX << (128 - length)
                    };
                    let key = (length, bits & mask);
                    self.valid(self.v6.get(&key), now, || Stored::V6(key.0, key.1))
                })
            }
        }
    }

    /// The indicator for `domain` or its nearest parent domain.
    pub fn lookup_domain(&self, domain: &str, now: i64) -> Option<IndicatorMeta> {
        if self.domains.is_empty() {
            return None;
        }
        let domain = domain.trim().trim_end_matches('.');
        let lower;
        let mut name = if domain.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = domain.to_ascii_lowercase();
            lower.as_str()
        } else {
            domain
        };
        loop {
            if let Some(found) = self.valid(self.domains.get(name), now, || Stored::Domain(name)) {
                return Some(found);
            }
            match name.split_once('.') {
                Some((_, parent)) if parent.contains('.') => name = parent,
                _ => return None,
            }
        }
    }

    /// The indicator for `url`.
    pub fn lookup_url(&self, url: &str, now: i64) -> Option<IndicatorMeta> {
        if self.urls.is_empty() {
            return None;
        }
        let url = normalize_url(url)?;
        self.valid(self.urls.get(url.as_str()), now, || Stored::Url(&url))
    }

    /// The indicator for a hex digest (32, 40 or 64 digits, either case).
    pub fn lookup_hash(&self, digest: &str, now: i64) -> Option<IndicatorMeta> {
        let key = match digest.len() {
            32 if !self.md5.is_empty() => Stored::digest(digest)?,
            40 if !self.sha1.is_empty() => Stored::digest(digest)?,
            64 if !self.sha256.is_empty() => Stored::digest(digest)?,
            _ => return None,
        };
        let index = match &key {
            Stored::Md5(bytes) => self.md5.get(bytes),
            Stored::Sha1(bytes) => self.sha1.get(bytes),
            Stored::Sha256(bytes) => self.sha256.get(bytes),
            _ => None,
        };
        self.valid(index, now, || key)
    }

    /// Whether any lookup of this kind can succeed (so callers skip field scans).
    pub fn has(&self, kind: IndicatorKind) -> bool {
        match kind {
            IndicatorKind::Ip => !self.v4.is_empty() || !self.v6.is_empty(),
            IndicatorKind::Domain => !self.domains.is_empty(),
            IndicatorKind::Url => !self.urls.is_empty(),
            IndicatorKind::Hash => {
                !self.md5.is_empty() || !self.sha1.is_empty() || !self.sha256.is_empty()
            }
        }
    }

    /// The hit for the entry at `index`, if it is still valid at `now`; `key` is the matched
    /// key, for its text.
    fn valid<'k>(
        &self,
        index: Option<&u32>,
        now: i64,
        key: impl FnOnce() -> Stored<'k>,
    ) -> Option<IndicatorMeta> {
        let entry = self.entries.get(*index? as usize)?;
        if entry.valid_until <= now {
            return None;
        }
        let indicator = match self.texts.get(entry.text as usize) {
            Some(text) => Arc::from(&**text),
            None => key().render(|text| Arc::from(text)),
        };
        Some(IndicatorMeta {
            feed: Arc::clone(self.feeds.get(usize::from(entry.feed))?),
            indicator,
            confidence: (entry.confidence != NO_CONFIDENCE).then_some(entry.confidence),
            labels: Arc::clone(self.label_sets.get(entry.labels as usize)?),
            valid_until: (entry.valid_until != i64::MAX).then_some(entry.valid_until),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn set(format: &str, content: &str) -> (IntelSet, FeedReport) {
        let mut builder = IntelBuilder::new();
        let report = parse_feed("feed", format, content.as_bytes(), NOW, &mut |i| {
            builder.add(i)
        })
        .unwrap();
        builder.report("feed", report.clone());
        (builder.build(), report)
    }

    #[test]
    fn lists_infer_kinds_and_match_networks_domains_urls_and_hashes() {
        let (set, report) = set(
            "list",
            "# bad things\n10.0.0.0/8\n192.0.2.7\n2001:db8::/32\nevil.example\n\
             https://Bad.Example/x?y=1\nD41D8CD98F00B204E9800998ECF8427E\nnot a thing\n",
        );
        assert_eq!(report.loaded, 6, "{report:?}");
        assert_eq!(report.skipped, 1);
        assert!(report.reasons[0].contains("line 8"), "{report:?}");
        let ip = |s: &str| {
            set.lookup_ip(s.parse().unwrap(), NOW)
                .map(|m| m.indicator.to_string())
        };
        assert_eq!(ip("10.1.2.3").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(ip("192.0.2.7").as_deref(), Some("192.0.2.7"));
        assert_eq!(ip("192.0.2.8"), None);
        assert_eq!(ip("::ffff:10.9.9.9").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(ip("2001:db8:1::1").as_deref(), Some("2001:db8::/32"));
        assert!(set.lookup_domain("a.b.EVIL.example.", NOW).is_some());
        assert!(set.lookup_domain("notevil.example", NOW).is_none());
        assert!(set.lookup_domain("example", NOW).is_none());
        assert!(
            set.lookup_url("HTTPS://bad.example/x?y=1#frag", NOW)
                .is_some()
        );
        assert!(set.lookup_url("https://bad.example/x", NOW).is_none());
        assert!(
            set.lookup_hash("d41d8cd98f00b204e9800998ecf8427e", NOW)
                .is_some()
        );
    }

    #[test]
    fn hits_report_each_indicator_as_its_feed_wrote_it() {
        let md5 = "D41D8CD98F00B204E9800998ECF8427E";
        let sha1 = "da39a3ee5e6b4b0d3255bfef95601890afd80709";
        let sha256 = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        let (set, report) = set(
            "list",
            &format!(
                "10.0.0.1/32\n10.0.0.2\n10.9.0.0/16\n100.9.10.255\n203.0.113.0/24\n2001:db8::1/128\n2001:DB8::/48\n\
                 ::ffff:192.0.2.9\nEvil.Example.\nbad.example\nHTTPS://Bad.Example/x\n\
                 {md5}\n{sha1}\n{sha256}\n"
            ),
        );
        assert_eq!(report.loaded, 14, "{report:?}");
        let ip = |s: &str| set.lookup_ip(s.parse().unwrap(), NOW).unwrap().indicator;
        assert_eq!(&*ip("10.0.0.1"), "10.0.0.1/32");
        assert_eq!(&*ip("10.0.0.2"), "10.0.0.2");
        assert_eq!(&*ip("10.9.8.7"), "10.9.0.0/16");
        assert_eq!(&*ip("100.9.10.255"), "100.9.10.255");
        assert_eq!(&*ip("203.0.113.99"), "203.0.113.0/24");
        assert_eq!(&*ip("2001:db8::1"), "2001:db8::1/128");
        assert_eq!(&*ip("2001:db8::2"), "2001:DB8::/48");
        assert_eq!(&*ip("192.0.2.9"), "::ffff:192.0.2.9");
        let domain = |s: &str| set.lookup_domain(s, NOW).unwrap().indicator;
        assert_eq!(&*domain("www.evil.example"), "Evil.Example.");
        assert_eq!(&*domain("BAD.example"), "bad.example");
        let url = set.lookup_url("https://bad.example/x", NOW).unwrap();
        assert_eq!(&*url.indicator, "HTTPS://Bad.Example/x");
        // Digests match in either case and report the feed's spelling.
        for digest in [md5, sha1, sha256] {
            for asked in [digest.to_ascii_lowercase(), digest.to_ascii_uppercase()] {
                let hit = set.lookup_hash(&asked, NOW).unwrap();
                assert_eq!(&*hit.indicator, digest);
            }
        }
        assert!(set.lookup_hash(&sha1.replace('d', "g"), NOW).is_none());
        assert!(set.lookup_hash(&sha256[..62], NOW).is_none());
        // Only the spellings that differ from the keys' rendering are stored.
        assert_eq!(set.texts.len(), 8, "{:?}", set.texts);
    }

    #[test]
    fn an_expired_address_does_not_hide_a_valid_network_and_mapped_addresses_are_ipv4() {
        let (set, report) = set(
            "csv",
            "indicator,valid_until\n10.0.0.0/8,\n10.1.2.3,2057-01-01T00:00:00Z\n::ffff:192.0.2.9,\n",
        );
        assert_eq!(report.loaded, 3, "{report:?}");
        let address = "10.1.2.3".parse().unwrap();
        assert_eq!(&*set.lookup_ip(address, NOW).unwrap().indicator, "10.1.2.3");
        let later = 2_900_000_000;
        assert_eq!(
            &*set.lookup_ip(address, later).unwrap().indicator,
            "10.0.0.0/8"
        );
        assert!(set.lookup_ip("192.0.2.9".parse().unwrap(), NOW).is_some());
        assert!(
            set.lookup_ip("::ffff:192.0.2.9".parse().unwrap(), NOW)
                .is_some()
        );
    }

    #[test]
    fn the_most_specific_network_answers() {
        let (set, _) = set(
            "csv",
            "indicator,confidence,labels\n10.0.0.0/8,10,wide\n10.1.0.0/16,90,narrow\n",
        );
        let hit = set.lookup_ip("10.1.2.3".parse().unwrap(), NOW).unwrap();
        assert_eq!(&*hit.indicator, "10.1.0.0/16");
        assert_eq!(hit.confidence, Some(90));
        assert_eq!(&hit.labels[..], ["narrow".to_owned()]);
        let hit = set.lookup_ip("10.2.0.1".parse().unwrap(), NOW).unwrap();
        assert_eq!(&*hit.indicator, "10.0.0.0/8");
    }

    #[test]
    fn stix_bundles_honour_valid_until_and_refuse_what_they_cannot_read() {
        let bundle = serde_json::json!({
            "type": "bundle", "id": "bundle--1",
            "objects": [
                {"type": "indicator", "pattern_type": "stix", "confidence": 80,
                 "labels": ["c2"], "pattern": "[ipv4-addr:value = '198.51.100.1']"},
                {"type": "indicator", "pattern": "[domain-name:value = 'c2.example'] OR [url:value = 'http://c2.example/a']"},
                {"type": "indicator", "pattern": "[file:hashes.'SHA-256' = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' OR file:hashes.MD5 = 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb']"},
                {"type": "indicator", "pattern": "[ipv4-addr:value = '203.0.113.9']",
                 "valid_until": "2020-01-01T00:00:00Z"},
                {"type": "indicator", "pattern": "[ipv4-addr:value = '203.0.113.10']",
                 "valid_until": "2099-01-01T00:00:00Z"},
                {"type": "indicator", "pattern": "[ipv4-addr:value = '1.1.1.1' AND domain-name:value = 'x.example']"},
                {"type": "indicator", "pattern": "[process:name = 'evil.exe']"},
                {"type": "indicator", "pattern": "[ipv4-addr:value != '1.1.1.1']"},
                {"type": "indicator", "pattern_type": "yara", "pattern": "rule x {}"},
                {"type": "indicator", "revoked": true, "pattern": "[ipv4-addr:value = '1.1.1.1']"},
                {"type": "malware", "name": "not an indicator"}
            ]
        });
        let (set, report) = set("stix", &bundle.to_string());
        assert_eq!(report.loaded, 6, "{report:?}");
        assert_eq!(report.skipped, 6, "{report:?}");
        let reasons = report.reasons.join("\n");
        for expected in ["expired", "AND", "process:name", "'='", "yara", "revoked"] {
            assert!(reasons.contains(expected), "{expected}: {reasons}");
        }
        let hit = set.lookup_ip("198.51.100.1".parse().unwrap(), NOW).unwrap();
        assert_eq!(
            (hit.confidence, &hit.labels[..]),
            (Some(80), &["c2".to_owned()][..])
        );
        assert!(set.lookup_domain("www.c2.example", NOW).is_some());
        assert!(set.lookup_url("http://c2.example/a", NOW).is_some());
        assert!(set.lookup_hash(&"A".repeat(64), NOW).is_some());
        assert!(set.lookup_hash(&"b".repeat(32), NOW).is_some());
        assert!(set.lookup_ip("203.0.113.9".parse().unwrap(), NOW).is_none());
        // Valid now, expired later: a long-running set stops matching it.
        assert!(
            set.lookup_ip("203.0.113.10".parse().unwrap(), NOW)
                .is_some()
        );
        assert!(
            set.lookup_ip("203.0.113.10".parse().unwrap(), 4_102_444_800)
                .is_none()
        );
    }

    #[test]
    fn misp_events_yield_attributes_flagged_for_detection() {
        let event = serde_json::json!({"Event": {
            "info": "campaign", "Tag": [{"name": "tlp:amber"}],
            "Attribute": [
                {"type": "ip-dst", "value": "198.51.100.2", "to_ids": true},
                {"type": "domain|ip", "value": "bad.example|198.51.100.3", "to_ids": true},
                {"type": "filename|sha256", "value": "x.exe|cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"},
                {"type": "comment", "value": "hello", "to_ids": true},
                {"type": "ip-src", "value": "10.0.0.1", "to_ids": false}
            ],
            "Object": [{"Attribute": [{"type": "url", "value": "http://bad.example/p"}]}]
        }});
        let (set, report) = set("misp", &event.to_string());
        assert_eq!(report.loaded, 5, "{report:?}");
        assert_eq!(report.skipped, 1, "{report:?}");
        let hit = set.lookup_ip("198.51.100.3".parse().unwrap(), NOW).unwrap();
        assert_eq!(&hit.labels[..], ["tlp:amber".to_owned()]);
        assert!(set.lookup_ip("10.0.0.1".parse().unwrap(), NOW).is_none());
        assert!(set.lookup_url("http://bad.example/p", NOW).is_some());
    }

    #[test]
    fn misp_feed_directories_load_their_events() {
        let dir = tempfile::tempdir().unwrap();
        let uuid = "5f2a0b1c-0000-4000-8000-000000000001";
        std::fs::write(
            dir.path().join("manifest.json"),
            serde_json::json!({uuid: {"info": "e1", "timestamp": "1"},
                               "../../etc/passwd": {"info": "evil"},
                               "5f2a0b1c-0000-4000-8000-000000000002": {"info": "missing"}})
            .to_string(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join(format!("{uuid}.json")),
            serde_json::json!({"Event": {"Attribute": [{"type": "md5", "value": "d".repeat(32)}]}})
                .to_string(),
        )
        .unwrap();
        let mut indicators = Vec::new();
        let report =
            parse_misp_directory("misp", dir.path(), NOW, &mut |i| indicators.push(i)).unwrap();
        assert_eq!(indicators.len(), 1);
        assert_eq!(report.skipped, 2, "{report:?}");
    }

    #[test]
    fn malformed_feeds_are_refused_with_a_reason() {
        for (format, content, expected) in [
            ("stix", "{", "not JSON"),
            ("stix", r#"{"type": "indicator"}"#, "bundle"),
            ("stix", r#"{"type": "bundle"}"#, "objects"),
            ("misp", r#"{"x": 1}"#, "not a MISP event"),
            ("csv", "a,b\n1,2\n", "no indicator, value or ioc column"),
            ("list", "\u{0}\u{ff}", ""),
            ("yaml", "x", "unknown feed format"),
        ] {
            let result = parse_feed("f", format, content.as_bytes(), NOW, &mut drop);
            if format == "list" {
                // Bytes that are UTF-8 are read line by line; unusable lines are skipped.
                let report = result.unwrap();
                assert_eq!(report.loaded, 0);
                continue;
            }
            let err = result.unwrap_err();
            assert!(err.contains(expected), "{format}: {err}");
        }
        let err = parse_feed("f", "list", &[0xff, 0xfe], NOW, &mut drop).unwrap_err();
        assert!(err.contains("UTF-8"), "{err}");
        let manifest =
            parse_feed("f", "misp", br#"{"u1": {"info": "x"}}"#, NOW, &mut drop).unwrap_err();
        assert!(manifest.contains("manifest"), "{manifest}");
    }
}
