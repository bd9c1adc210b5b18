//! Vigil's detection engine, built on the rsigma library for Sigma's semantics.
//!
//! - [`Mappings`]: record shapes (evtx JSON, Winlogbeat/ECS, flat NXLog-style JSON, ...), the
//!   Windows channel/EventID -> logsource table and per-logsource field renames, all loaded from
//!   data files (`crates/sigma/data/`).
//! - [`RuleSet`]: rules parsed in parallel by `rsigma-parser`, compiled by `rsigma-eval` into one
//!   engine per rule logsource. A record meets only the engines of its own logsource, through a
//!   view that resolves Sigma's field names in the record in place.
//! - [`check_rules`]: what loads and why each rejected rule is rejected.
//!
//! The rest of Vigil never sees rsigma types.

mod attack;
mod cache;
mod correlate;
mod engine;
mod flat;
mod gate;
mod mapping;
mod record;
pub mod source;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use attack::{Technique, technique};
pub use correlate::{CorrelationHit, Correlator, Fed, partition_of};
pub use engine::{
    Detection, Level, LoadOptions, MAX_VALUE_BYTES, MatchedField, RecordMeta, RuleInfo,
    RuleLogsource, RuleSet,
};
pub use flat::{Description, FlatRecord, FlatValue};
pub use mapping::{BUILTIN_SHAPES, BUILTIN_WINDOWS, MappingError, Mappings};
pub use record::Logsource;

use serde::Serialize;

/// What went wrong before any rule could be looked at.
#[derive(Debug, thiserror::Error)]
pub enum SigmaError {
    /// A rule directory (or file) could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The rule cache cannot encode the rules.
    #[error("rule cache: {0}")]
    Cache(String),
    /// The placeholder values cannot be used.
    #[error("placeholder values: {0}")]
    Placeholders(String),
    /// A mapping file is invalid.
    #[error(transparent)]
    Mapping(#[from] MappingError),
}

/// A rule file or rule that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Rejected {
    /// The file.
    pub path: PathBuf,
    /// The rule's `id`, when the file got far enough to have one.
    pub rule_id: Option<String>,
    /// Why it was rejected.
    pub reason: String,
}

/// The outcome of loading rule directories.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RuleCheck {
    /// Rules that parsed and compiled (detection rules and correlation rules).
    pub loaded: usize,
    /// Detection rules among them.
    pub detection_rules: usize,
    /// Correlation rules among them (parsed; compiled against their referenced rules later).
    pub correlation_rules: usize,
    /// Filter rules among them.
    pub filter_rules: usize,
    /// Rule files read.
    pub files: usize,
    /// What was not loaded.
    pub rejected: Vec<Rejected>,
}

/// Parses and compiles every `.yml`/`.yaml` file under `paths` (files or directories, walked
/// recursively in name order). Unreadable or invalid rules are reported in
/// [`RuleCheck::rejected`]; only a path that cannot be read at all is an error.
pub fn check_rules(paths: &[PathBuf]) -> Result<RuleCheck, SigmaError> {
    let mappings = Arc::new(Mappings::builtin()?);
    Ok(RuleSet::load(paths, mappings)?.check().clone())
}

pub(crate) fn collect_rule_files(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), SigmaError> {
    files.extend(source::files_under(path, &|file| {
        matches!(
            file.extension().and_then(|extension| extension.to_str()),
            Some("yml" | "yaml")
        )
    })?);
    Ok(())
}

pub(crate) fn one_line(text: &str) -> String {
    // rsigma nests its parse errors, repeating each level's prefix ("Condition parse error at
    // 1:66: at 1:66: Condition parse error at ..."): keep each distinct part once, in order.
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut parts: Vec<&str> = Vec::new();
    for part in flat.split(": ") {
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    let mut reason = parts.join(": ");
    const MAX_REASON: usize = 400;
    if reason.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push_str("...");
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn loads_good_rules_and_rejects_bad_ones_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "good.yml",
            "title: Whoami\nid: 11111111-1111-4111-8111-111111111111\nlogsource:\n  product: windows\n  category: process_creation\ndetection:\n  selection:\n    CommandLine|contains: whoami\n  condition: selection\nlevel: medium\n",
        );
        write(
            dir.path(),
            "bad-condition.yml",
            "title: Broken\nid: 22222222-2222-4222-8222-222222222222\nlogsource:\n  product: windows\ndetection:\n  selection:\n    Image: x\n  condition: selection and missing_one\n",
        );
        write(dir.path(), "not-yaml.yml", "title: [unclosed\n");
        write(dir.path(), "ignored.txt", "not a rule");
        let check = check_rules(&[dir.path().to_owned()]).unwrap();
        assert_eq!(check.files, 3);
        assert_eq!(check.loaded, 1, "{check:?}");
        assert_eq!(check.rejected.len(), 2, "{check:?}");
        let broken = check
            .rejected
            .iter()
            .find(|r| r.path.ends_with("bad-condition.yml"))
            .unwrap();
        assert!(!broken.reason.is_empty());
        assert!(!broken.reason.contains('\n'));
        let json = serde_json::to_value(&check).unwrap();
        assert_eq!(json["loaded"], 1);
        assert!(json["rejected"][0]["path"].is_string());
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let err = check_rules(&[PathBuf::from("/nonexistent/rules")]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/rules"),
            "{err}"
        );
    }
}
