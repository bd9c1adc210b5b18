//! The content-hashed rule cache: rules compiled once are kept as rsigma's IR (its versioned
//! CBOR encoding), keyed by a SHA-256 of every rule file's path and content, rsigma's version,
//! this format and the placeholders. A warm start reads the files (to hash them) and decodes the
//! IR, skipping YAML parsing (about half of a cold load); each partition's rules are compiled when
//! its first record arrives. Files holding filters, correlations or rules that correlations name
//! are parsed again, so those stay exact.
//!
//! A missing, unreadable, stale or corrupt cache file is never an error: the rules are loaded
//! from source and the cache rewritten (atomically, through a temporary file and a rename).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::{
    Extras, LoadOptions, ParsedFile, Partition, Pending, RuleInfo, RuleLogsource, RuleSet,
    parse_text,
};
use crate::mapping::Mappings;
use crate::{RuleCheck, SigmaError};

/// Bumped whenever [`CacheFile`] or what it means changes.
pub(crate) const FORMAT: u32 = 2;

/// What a cache file holds.
#[derive(Serialize, Deserialize)]
pub(crate) struct CacheFile {
    pub(crate) format: u32,
    pub(crate) partitions: Vec<CachedPartition>,
    /// The check after detection rules (filters and correlations are checked again).
    pub(crate) check: RuleCheck,
    /// Files parsed again on a warm start.
    pub(crate) extra_files: Vec<PathBuf>,
}

/// One logsource's rules.
#[derive(Serialize, Deserialize)]
pub(crate) struct CachedPartition {
    logsource: RuleLogsource,
    rules: Vec<RuleInfo>,
    /// `rsigma_ir::encode_rules` of the partition's rules.
    #[serde(with = "serde_bytes_vec")]
    ir: Vec<u8>,
}

impl CachedPartition {
    pub(crate) fn new(
        logsource: &RuleLogsource,
        rules: &FxHashMap<String, Arc<RuleInfo>>,
        ir: &[rsigma_ir::IrRule],
    ) -> Result<Self, SigmaError> {
        let mut infos: Vec<RuleInfo> = rules.values().map(|info| (**info).clone()).collect();
        infos.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Self {
            logsource: logsource.clone(),
            rules: infos,
            ir: rsigma_ir::encode_rules(ir).map_err(|err| SigmaError::Cache(err.to_string()))?,
        })
    }
}

/// CBOR byte strings for `Vec<u8>` (serde's default is an array of numbers).
mod serde_bytes_vec {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
                Ok(bytes.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(bytes)
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}

/// Loads `files` through the cache in `dir`.
pub(crate) fn load(
    dir: &Path,
    files: Vec<PathBuf>,
    mappings: Arc<Mappings>,
    options: &LoadOptions,
) -> Result<RuleSet, SigmaError> {
    let texts: Vec<(PathBuf, Result<String, String>)> = files
        .into_par_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).map_err(|err| format!("cannot read: {err}"));
            (path, text)
        })
        .collect();
    let key = cache_key(&texts, options);
    let cache_path = dir.join(format!("{key}.cbor"));
    if let Some(rules) = warm(&cache_path, &texts, Arc::clone(&mappings)) {
        return Ok(rules);
    }
    let parsed: Vec<ParsedFile> = texts
        .into_par_iter()
        .map(|(path, text)| match text {
            Ok(text) => parse_text(path, &text),
            Err(reason) => ParsedFile::unreadable(path, reason),
        })
        .collect();
    let (rules, cache) = RuleSet::build_detections(parsed, mappings, options, true)?;
    if let Some(cache) = cache {
        // Best effort: a cache that cannot be written only costs the next start its speed.
        let _ = store(dir, &cache_path, &cache);
    }
    Ok(rules)
}

fn cache_key(texts: &[(PathBuf, Result<String, String>)], options: &LoadOptions) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"vigil-sigma rule cache\0");
    hasher.update(FORMAT.to_le_bytes());
    hasher.update(env!("CARGO_PKG_VERSION").as_bytes());
    hasher.update(b"\0rsigma 0.23.0\0");
    hasher.update(rsigma_ir::HIR_SCHEMA_VERSION.to_le_bytes());
    for (name, values) in &options.placeholders {
        hasher.update(name.as_bytes());
        hasher.update(b"\0");
        for value in values {
            hasher.update(value.as_bytes());
            hasher.update(b"\0");
        }
    }
    for (path, text) in texts {
        hasher.update(path.to_string_lossy().as_bytes());
        hasher.update(b"\0");
        match text {
            Ok(text) => {
                hasher.update((text.len() as u64).to_le_bytes());
                hasher.update(text.as_bytes());
            }
            Err(reason) => {
                hasher.update(b"unreadable\0");
                hasher.update(reason.as_bytes());
            }
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn warm(
    cache_path: &Path,
    texts: &[(PathBuf, Result<String, String>)],
    mappings: Arc<Mappings>,
) -> Option<RuleSet> {
    let bytes = std::fs::read(cache_path).ok()?;
    let cache: CacheFile = ciborium::from_reader(bytes.as_slice()).ok()?;
    if cache.format != FORMAT {
        return None;
    }
    let partitions: Vec<Partition> = cache
        .partitions
        .into_par_iter()
        .map(|cached| {
            // Decoded now, so a damaged cache falls back to the rule files; compiled when the
            // partition's first record arrives.
            let irs = rsigma_ir::decode_rules(&cached.ir).ok()?;
            let rules = cached
                .rules
                .into_iter()
                .map(|info| (info.id.clone(), Arc::new(info)))
                .collect();
            Some(Partition::new(cached.logsource, rules, Pending::Ir(irs)))
        })
        .collect::<Option<Vec<_>>>()?;
    let mut extras = Extras::default();
    let mut parsed = Vec::new();
    for path in &cache.extra_files {
        let (_, text) = texts.iter().find(|(have, _)| have == path)?;
        parsed.push(parse_text(path.clone(), text.as_ref().ok()?));
    }
    let mut rules = Vec::new();
    for file in parsed {
        let collection = file.collection?;
        rules.extend(extras.absorb(&file.path, collection));
    }
    extras.referenced = rules
        .into_iter()
        .filter(|rule| extras.names(rule))
        .collect();
    Some(RuleSet::finish(partitions, cache.check, extras, mappings))
}

fn store(dir: &Path, cache_path: &Path, cache: &CacheFile) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut bytes = Vec::new();
    ciborium::into_writer(cache, &mut bytes).map_err(std::io::Error::other)?;
    let temporary = cache_path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, cache_path)?;
    evict(dir);
    Ok(())
}

/// Cache files kept per directory (several rule sets, e.g. one per tenant, share one).
const KEEP: usize = 16;

/// Removes all but the [`KEEP`] most recently written cache files.
fn evict(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cbor"))
        .filter_map(|path| Some((std::fs::metadata(&path).ok()?.modified().ok()?, path)))
        .collect();
    files.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, path) in files.into_iter().skip(KEEP) {
        let _ = std::fs::remove_file(path);
    }
}
