//! Detection content: the rules and threat-intel feeds each tenant's events meet, loaded from
//! directories and from the store (where the control plane keeps them), and rebuilt when they
//! change.
//!
//! The MSSP's global rules and feeds are built once and shared by every tenant. A tenant adds
//! its own rules (compiled with the global rules its correlations name) and feeds, and its
//! overrides change global rules for it alone: disabled, another level, or exceptions that
//! suppress hits whose event holds one of the listed values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Deserialize;
use vigil_schema::{Level, TenantId};
use vigil_sigma::{LoadOptions, Mappings, RuleSet};
use vigil_store::{FeedRecord, OverrideRecord, RuleRecord, Store};

use crate::DetectError;
use vigil_intel::{FeedReport, IntelBuilder, IntelSet, parse_feed, parse_misp_directory};

/// Where global content comes from besides the store.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Directories (or files) of Sigma rules, global.
    pub rule_dirs: Vec<PathBuf>,
    /// Feed files or MISP feed directories, global.
    pub intel_paths: Vec<PathBuf>,
    /// Values for `expand` placeholders.
    pub placeholders: BTreeMap<String, Vec<String>>,
}

/// The global rules and feeds.
pub struct Global {
    /// Every enabled global rule.
    pub rules: Arc<RuleSet>,
    /// The global feeds' indicators.
    pub intel: Arc<IntelSet>,
    /// The file of each rule id and name, so tenant rule sets can include the global rules
    /// their correlations name.
    names: FxHashMap<String, PathBuf>,
    /// The text of every file whose rules loaded: what tenant rule sets include, and what a
    /// later edit that breaks the file falls back to.
    good: FxHashMap<PathBuf, String>,
}

impl std::fmt::Debug for Global {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Global")
            .field("rules", &self.rules.check().loaded)
            .field("indicators", &self.intel.len())
            .finish_non_exhaustive()
    }
}

/// One tenant's additions and overrides.
#[derive(Default)]
pub struct TenantContent {
    /// The tenant's own rules, with the global rules its correlations name.
    pub rules: Option<Arc<RuleSet>>,
    /// Ids of the tenant's own detection rules: only their hits in `rules` are its own (the
    /// global ones in it only feed its correlations).
    pub own: FxHashSet<String>,
    /// Overrides of global and own rules, by rule id.
    pub overrides: FxHashMap<String, Override>,
    /// The tenant's own feeds.
    pub intel: Arc<IntelSet>,
}

impl std::fmt::Debug for TenantContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantContent")
            .field("own_rules", &self.own.len())
            .field("overrides", &self.overrides.len())
            .field("indicators", &self.intel.len())
            .finish()
    }
}

/// A tenant's override of one rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Override {
    /// `Some(false)`: the rule does not fire for this tenant.
    pub enabled: Option<bool>,
    /// The level the tenant's alerts carry.
    pub level: Option<Level>,
    /// A hit is suppressed when the event's field equals (ignoring ASCII case) one of the
    /// values. Fields are entity names (`user`, `host`, `src_ip`, `dst_ip`, `process`), event
    /// field keys (`Event.EventData.User`) or their last segment (`User`).
    pub exceptions: Vec<Exception>,
}

/// One exception of an override.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Exception {
    /// The field.
    pub field: String,
    /// The values that suppress a hit.
    pub values: Vec<String>,
}

/// Everything detection needs at one moment; replaced whole when content changes.
#[derive(Debug)]
pub struct Content {
    /// Global rules and feeds.
    pub global: Arc<Global>,
    /// Tenants with content of their own.
    pub tenants: FxHashMap<TenantId, Arc<TenantContent>>,
    /// Increases with every rebuild.
    pub generation: u64,
}

impl Content {
    /// A tenant's content; tenants without rules, overrides or feeds of their own get none.
    pub fn tenant(&self, tenant: &TenantId) -> Option<&Arc<TenantContent>> {
        self.tenants.get(tenant)
    }
}

/// The rule files under `paths`, sorted (`.yml` and `.yaml`; hidden entries skipped).
pub fn rule_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, DetectError> {
    fn walk(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        if path.is_file() {
            out.push(path.to_owned());
            return Ok(());
        }
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let child = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            if entry.file_type()?.is_dir() {
                walk(&child, out)?;
            } else if child
                .extension()
                .is_some_and(|ext| ext == "yml" || ext == "yaml")
            {
                out.push(child);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for path in paths {
        walk(path, &mut files)
            .map_err(|err| DetectError::Content(format!("{}: {err}", path.display())))?;
    }
    files.sort();
    Ok(files)
}

/// A fingerprint of the files under the rule and intel paths (path, size, modification time),
/// so a change on disk triggers a reload.
pub fn files_fingerprint(sources: &Sources) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = rustc_hash::FxHasher::default();
    let mut paths = rule_files(&sources.rule_dirs).unwrap_or_default();
    for path in &sources.intel_paths {
        if path.is_dir() {
            if let Ok(entries) = std::fs::read_dir(path) {
                let mut children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
                children.sort();
                paths.extend(children);
            }
        } else {
            paths.push(path.clone());
        }
    }
    for path in paths {
        path.hash(&mut hasher);
        if let Ok(meta) = std::fs::metadata(&path) {
            meta.len().hash(&mut hasher);
            if let Ok(modified) = meta.modified() {
                modified.hash(&mut hasher);
            }
        }
    }
    hasher.finish()
}

/// Builds the global content: rules from the store (first, so a rule managed through the
/// control plane wins over a file with the same id) and from the rule directories, feeds from
/// the store and the intel paths.
///
/// A file that loaded before (`previous`) and no longer does keeps its previous text: the
/// rules it held stay active, and the rejection is reported as kept.
pub fn build_global(
    sources: &Sources,
    stored_rules: Vec<RuleRecord>,
    stored_feeds: Vec<FeedRecord>,
    mappings: &Arc<Mappings>,
    previous: Option<&Global>,
    now: i64,
) -> Result<Global, DetectError> {
    let mut texts: Vec<(PathBuf, String)> = Vec::new();
    for rule in stored_rules.into_iter().filter(|rule| rule.enabled) {
        let path = PathBuf::from(format!("store/global/{}.yml", rule.rule_id));
        texts.push((path, rule.yaml));
    }
    for file in rule_files(&sources.rule_dirs)? {
        match std::fs::read_to_string(&file) {
            Ok(text) => texts.push((file, text)),
            // Reported by the rule set as a rejected file.
            Err(err) => texts.push((file, format!("# unreadable: {err}\n:"))),
        }
    }
    let options = LoadOptions {
        placeholders: sources.placeholders.clone(),
        cache_dir: None,
    };
    let mut rules = RuleSet::from_texts(texts.clone(), Arc::clone(mappings), &options)?;
    if let Some(previous) = previous {
        let broken: FxHashSet<&Path> = rules
            .check()
            .rejected
            .iter()
            .map(|rejected| rejected.path.as_path())
            .collect();
        let mut kept = 0;
        for (path, text) in &mut texts {
            if let Some(good) = previous.good.get(path)
                && broken.contains(path.as_path())
                && good != text
            {
                tracing::warn!(
                    path = %path.display(),
                    "rule file no longer loads; its previous version stays active"
                );
                *text = good.clone();
                kept += 1;
            }
        }
        if kept > 0 {
            rules = RuleSet::from_texts(texts.clone(), Arc::clone(mappings), &options)?;
        }
    }
    let broken: FxHashSet<PathBuf> = rules
        .check()
        .rejected
        .iter()
        .map(|rejected| rejected.path.clone())
        .collect();
    // Ids and names, store rules first so they win over a file naming the same.
    let mut names = FxHashMap::default();
    for (path, text) in &texts {
        for name in rule_names_of(text) {
            names.entry(name).or_insert_with(|| path.clone());
        }
    }
    let good = texts
        .into_iter()
        .filter(|(path, _)| !broken.contains(path))
        .collect();
    let mut intel = IntelBuilder::new();
    load_feeds(stored_feeds, now, &mut intel);
    for path in &sources.intel_paths {
        load_feed_path(path, now, &mut intel);
    }
    Ok(Global {
        rules: Arc::new(rules),
        intel: Arc::new(intel.build()),
        names,
        good,
    })
}

/// Builds one tenant's content.
pub fn build_tenant(
    global: &Global,
    own_rules: Vec<RuleRecord>,
    overrides: Vec<OverrideRecord>,
    feeds: Vec<FeedRecord>,
    mappings: &Arc<Mappings>,
    sources: &Sources,
    now: i64,
) -> Result<TenantContent, DetectError> {
    let enabled: Vec<RuleRecord> = own_rules.into_iter().filter(|r| r.enabled).collect();
    let own: FxHashSet<String> = enabled
        .iter()
        .filter(|rule| rule.kind != "correlation")
        .map(|rule| rule.rule_id.clone())
        .collect();
    let rules = if enabled.is_empty() {
        None
    } else {
        let mut texts: Vec<(PathBuf, String)> = Vec::new();
        let mut included: FxHashSet<String> = FxHashSet::default();
        for rule in &enabled {
            included.insert(rule.rule_id.clone());
        }
        let mut included_files: FxHashSet<PathBuf> = FxHashSet::default();
        for rule in &enabled {
            texts.push((
                PathBuf::from(format!("store/tenant/{}.yml", rule.rule_id)),
                rule.yaml.clone(),
            ));
            if rule.kind == "correlation" {
                // The global rules it names (by id or name), so the tenant's correlation sees
                // their hits; each file once.
                for name in correlation_names(&rule.yaml) {
                    if let Some(path) = global.names.get(&name)
                        && let Some(text) = global.good.get(path)
                        && included.insert(name)
                        && included_files.insert(path.clone())
                    {
                        texts.push((path.clone(), text.clone()));
                    }
                }
            }
        }
        let options = LoadOptions {
            placeholders: sources.placeholders.clone(),
            cache_dir: None,
        };
        let set = RuleSet::from_texts(texts, Arc::clone(mappings), &options)?;
        set.compile_all();
        Some(Arc::new(set))
    };
    let overrides = overrides
        .into_iter()
        .map(|record| {
            let exceptions: Vec<Exception> =
                serde_json::from_str(&record.exceptions).unwrap_or_default();
            let level = record.level.as_deref().and_then(|level| level.parse().ok());
            (
                record.rule_id,
                Override {
                    enabled: record.enabled,
                    level,
                    exceptions,
                },
            )
        })
        .collect();
    let mut intel = IntelBuilder::new();
    load_feeds(feeds, now, &mut intel);
    Ok(TenantContent {
        rules,
        own,
        overrides,
        intel: Arc::new(intel.build()),
    })
}

fn load_feeds(feeds: Vec<FeedRecord>, now: i64, intel: &mut IntelBuilder) {
    for feed in feeds {
        let report = parse_feed(&feed.name, &feed.format, &feed.content, now, &mut |i| {
            intel.add(i);
        })
        .unwrap_or_else(refused);
        intel.report(feed.name, report);
    }
}

/// The report of a feed that could not be read at all.
fn refused(reason: String) -> FeedReport {
    FeedReport {
        loaded: 0,
        skipped: 0,
        reasons: vec![reason],
    }
}

fn load_feed_path(path: &Path, now: i64, intel: &mut IntelBuilder) {
    let name = path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let report = if path.is_dir() {
        if path.join("manifest.json").is_file() {
            parse_misp_directory(&name, path, now, &mut |i| intel.add(i))
        } else {
            // A directory of feed files: each file is a feed.
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut children: Vec<PathBuf> =
                        entries.flatten().map(|entry| entry.path()).collect();
                    children.sort();
                    for child in children.iter().filter(|child| child.is_file()) {
                        load_feed_path(child, now, intel);
                    }
                    return;
                }
                Err(err) => Err(format!("{}: {err}", path.display())),
            }
        }
    } else {
        std::fs::read(path)
            .map_err(|err| format!("{}: {err}", path.display()))
            .and_then(|content| {
                let format = feed_format(path, &content);
                parse_feed(&name, format, &content, now, &mut |i| intel.add(i))
            })
    };
    intel.report(name, report.unwrap_or_else(refused));
}

/// A feed file's format from its extension (and, for JSON, whether it is a STIX bundle).
fn feed_format(path: &Path, content: &[u8]) -> &'static str {
    match path.extension().and_then(|ext| ext.to_str()) {
        Some("json") => {
            let head = &content[..content.len().min(4096)];
            let text = String::from_utf8_lossy(head);
            if text.contains("\"bundle\"") {
                "stix"
            } else {
                "misp"
            }
        }
        Some("csv") => "csv",
        _ => "list",
    }
}

/// Every top-level `id` and `name` of a rule file's documents, read without parsing the
/// rules: what a correlation may name them by.
fn rule_names_of(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            line.strip_prefix("id:")
                .or_else(|| line.strip_prefix("name:"))
        })
        .map(|value| value.trim().trim_matches(['\'', '"']).to_owned())
        .filter(|value| !value.is_empty())
        .collect()
}

/// The rule names a correlation rule's text lists under `correlation.rules`.
fn correlation_names(text: &str) -> Vec<String> {
    let Ok(value) = yaml_serde::from_str::<yaml_serde::Value>(text) else {
        return Vec::new();
    };
    value
        .get("correlation")
        .and_then(|correlation| correlation.get("rules"))
        .and_then(yaml_serde::Value::as_sequence)
        .map(|rules| {
            rules
                .iter()
                .filter_map(yaml_serde::Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Reads every owner's rules, overrides and feeds from the store and builds the content.
pub async fn load(
    store: &Store,
    sources: &Sources,
    mappings: &Arc<Mappings>,
    previous: Option<(&Content, &vigil_store::ContentVersions, bool)>,
    versions: &vigil_store::ContentVersions,
    generation: u64,
) -> Result<Content, DetectError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // Global content is rebuilt when the global rows or the files changed.
    let global = match previous {
        Some((content, old, files_changed)) if !files_changed && old.global == versions.global => {
            Arc::clone(&content.global)
        }
        _ => {
            let platform = store.platform();
            let rules = platform.global_rules().list().await?;
            let feeds = platform.global_feeds().list_with_content().await?;
            let (sources, mappings) = (sources.clone(), Arc::clone(mappings));
            let previous_global = previous.map(|(content, _, _)| Arc::clone(&content.global));
            let global = tokio::task::spawn_blocking(move || {
                let global = build_global(
                    &sources,
                    rules,
                    feeds,
                    &mappings,
                    previous_global.as_deref(),
                    now,
                )?;
                global.rules.compile_all();
                Ok::<_, DetectError>(global)
            })
            .await
            .map_err(|err| DetectError::Content(format!("building global content: {err}")))??;
            Arc::new(global)
        }
    };
    let global_rebuilt =
        previous.is_none_or(|(content, _, _)| !Arc::ptr_eq(&content.global, &global));
    let mut tenants = FxHashMap::default();
    for (tenant, version) in &versions.tenants {
        let reuse = previous.and_then(|(content, old, _)| {
            let unchanged = old.tenants.get(tenant) == Some(version);
            // Tenant rule sets embed global rules their correlations name.
            (unchanged && !global_rebuilt)
                .then(|| content.tenants.get(tenant).cloned())
                .flatten()
        });
        let content = match reuse {
            Some(content) => content,
            None => {
                let scope = store.tenant(tenant);
                let rules = scope.rules().list().await?;
                let overrides = scope.overrides().await?;
                let feeds = scope.feeds().list_with_content().await?;
                let (global, sources, mappings) =
                    (Arc::clone(&global), sources.clone(), Arc::clone(mappings));
                let built = tokio::task::spawn_blocking(move || {
                    build_tenant(&global, rules, overrides, feeds, &mappings, &sources, now)
                })
                .await
                .map_err(|err| DetectError::Content(format!("building tenant content: {err}")))?;
                match built {
                    Ok(content) => Arc::new(content),
                    Err(err) => {
                        // One tenant's broken content does not stop the others; it keeps
                        // what it had.
                        tracing::warn!(%tenant, error = %err, "tenant content not rebuilt");
                        match previous.and_then(|(content, _, _)| content.tenants.get(tenant)) {
                            Some(old) => Arc::clone(old),
                            None => continue,
                        }
                    }
                }
            }
        };
        tenants.insert(tenant.clone(), content);
    }
    Ok(Content {
        global,
        tenants,
        generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_and_correlation_names_are_read_from_texts() {
        assert_eq!(
            rule_names_of("title: x\nid: 'abc-1'\nname: whoami_run\n---\nid: def-2\n"),
            ["abc-1", "whoami_run", "def-2"]
        );
        assert!(rule_names_of("title: x\n").is_empty());
        let names = correlation_names(
            "title: c\ncorrelation:\n  type: event_count\n  rules:\n    - a\n    - b\n",
        );
        assert_eq!(names, ["a", "b"]);
        assert!(correlation_names(": not yaml [").is_empty());
    }

    #[test]
    fn feed_files_are_recognized_by_extension_and_content() {
        assert_eq!(
            feed_format(Path::new("x.json"), br#"{"type": "bundle"}"#),
            "stix"
        );
        assert_eq!(
            feed_format(Path::new("x.json"), br#"{"Event": {}}"#),
            "misp"
        );
        assert_eq!(feed_format(Path::new("x.csv"), b""), "csv");
        assert_eq!(feed_format(Path::new("x.txt"), b""), "list");
    }
}
