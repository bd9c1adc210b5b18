//! Vigil's detection engine, built on the rsigma library for Sigma's semantics.
//!
//! This first part loads and checks rule directories: every file is parsed by `rsigma-parser`
//! and every detection rule compiled by `rsigma-eval`, and what fails is reported with its file,
//! rule id and reason instead of stopping the load. The rest of Vigil never sees rsigma types.
//! Logsource routing, field mapping and the rule cache come next (issue 3).

use std::path::{Path, PathBuf};

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
}

/// A rule file or rule that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// The file.
    pub path: PathBuf,
    /// The rule's `id`, when the file got far enough to have one.
    pub rule_id: Option<String>,
    /// Why it was rejected.
    pub reason: String,
}

/// The outcome of loading rule directories.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
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
    let mut files = Vec::new();
    for path in paths {
        collect_rule_files(path, &mut files)?;
    }
    let mut check = RuleCheck::default();
    for file in files {
        check.files += 1;
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(err) => {
                check.rejected.push(Rejected {
                    path: file,
                    rule_id: None,
                    reason: format!("cannot read: {err}"),
                });
                continue;
            }
        };
        let collection = match rsigma_parser::parse_sigma_yaml(&text) {
            Ok(collection) => collection,
            Err(err) => {
                check.rejected.push(Rejected {
                    path: file,
                    rule_id: None,
                    reason: one_line(&err.to_string()),
                });
                continue;
            }
        };
        for error in &collection.errors {
            check.rejected.push(Rejected {
                path: file.clone(),
                rule_id: None,
                reason: one_line(error),
            });
        }
        for rule in &collection.rules {
            match rsigma_eval::compile_rule(rule) {
                Ok(_) => {
                    check.loaded += 1;
                    check.detection_rules += 1;
                }
                Err(err) => check.rejected.push(Rejected {
                    path: file.clone(),
                    rule_id: rule.id.clone(),
                    reason: one_line(&err.to_string()),
                }),
            }
        }
        check.loaded += collection.correlations.len() + collection.filters.len();
        check.correlation_rules += collection.correlations.len();
        check.filter_rules += collection.filters.len();
    }
    Ok(check)
}

fn collect_rule_files(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), SigmaError> {
    let read_error = |err: std::io::Error| SigmaError::Read {
        path: path.to_owned(),
        reason: err.to_string(),
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if metadata.is_file() {
        files.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_error)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_rule_files(&entry, files)?;
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        ) {
            files.push(entry);
        }
    }
    Ok(())
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
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
