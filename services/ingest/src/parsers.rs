//! Custom parsers per tenant: programs in VRL, Vector's remap language (the `vrl` crate), so an
//! MSSP onboards a customer's unusual log format with configuration, not a release.
//!
//! `ingest.parsers.<tenant>` names a program (`source`) or a file (`file`). It runs on every
//! record of that tenant, from every listener, before the built-in normalization: it gets the
//! record as `.` (a syslog message's fields, or the JSON object as posted) and leaves the record
//! to normalize in `.`. A program that fails on a record (a fallible function with `!`, an
//! `abort`, a result that is not an object) does not lose it: the record enters as generic text
//! (`{"message": <the record as received>}`) with the error in the event's `parse_error`.
//!
//! Only VRL's base library is compiled in: parsing (`parse_cef`, `parse_grok`,
//! `parse_key_value`, `parse_syslog`, `parse_regex`, `parse_json`, ...), coercion, string and
//! time functions. No environment, network or system functions.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vigil_schema::TenantId;
use vrl::compiler::state::RuntimeState;
use vrl::compiler::{Context, Program, TargetValue, TimeZone};
use vrl::value::{Secrets, Value};

/// One tenant's parser: the program's text or its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParserConfig {
    /// The VRL program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A file holding the VRL program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

/// A compiled program.
pub struct Parser {
    program: Program,
}

impl std::fmt::Debug for Parser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parser").finish_non_exhaustive()
    }
}

/// Every tenant's parser.
pub type Parsers = HashMap<TenantId, Arc<Parser>>;

impl ParserConfig {
    /// Reads and compiles the program; the error names the key and carries VRL's diagnostics.
    pub fn compile(&self, tenant: &TenantId) -> Result<Parser, String> {
        let key = format!("ingest.parsers.{tenant}");
        let source = match (&self.source, &self.file) {
            (Some(source), None) => source.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|err| format!("{key}.file: cannot read {}: {err}", file.display()))?,
            _ => return Err(format!("{key}: set exactly one of source and file")),
        };
        let functions = vrl::stdlib::all();
        let compiled = vrl::compiler::compile(&source, &functions).map_err(|diagnostics| {
            let text = vrl::diagnostic::Formatter::new(&source, diagnostics).to_string();
            let first = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .take(6)
                .collect::<Vec<_>>()
                .join(" ");
            format!("{key}: the VRL program does not compile: {first}")
        })?;
        Ok(Parser {
            program: compiled.program,
        })
    }
}

/// Compiles every tenant's parser.
pub fn compile_all(configs: &BTreeMap<TenantId, ParserConfig>) -> Result<Parsers, String> {
    configs
        .iter()
        .map(|(tenant, config)| Ok((tenant.clone(), Arc::new(config.compile(tenant)?))))
        .collect()
}

impl Parser {
    /// Runs the program on one record; the record it leaves, or why it failed.
    pub fn apply(&self, record: serde_json::Value) -> Result<serde_json::Value, String> {
        let mut target = TargetValue {
            value: Value::from(record),
            metadata: Value::Object(BTreeMap::new()),
            secrets: Secrets::default(),
        };
        let mut state = RuntimeState::default();
        let timezone = TimeZone::default();
        let mut context = Context::new(&mut target, &mut state, &timezone);
        self.program
            .resolve(&mut context)
            .map_err(|err| err.to_string())?;
        match target.value {
            Value::Object(_) => serde_json::to_value(&target.value)
                .map_err(|err| format!("the program's result is not JSON: {err}")),
            other => Err(format!(
                "the program left {}, not an object",
                other.kind_str()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn acme() -> TenantId {
        TenantId::new("acme").unwrap()
    }

    fn source(text: &str) -> ParserConfig {
        ParserConfig {
            source: Some(text.into()),
            file: None,
        }
    }

    #[test]
    fn bad_programs_are_refused_with_the_key_and_vrl_s_reason() {
        let cases = [
            (source("parse_cef(.message"), "does not compile"),
            (source(".x = nope(1)"), "nope"),
            // An unhandled fallible call: VRL makes the author choose (`!` or `, err =`).
            (source(". = parse_cef(.message)"), "does not compile"),
            (
                ParserConfig {
                    source: None,
                    file: None,
                },
                "exactly one of source and file",
            ),
            (
                ParserConfig {
                    source: Some(".".into()),
                    file: Some("/x.vrl".into()),
                },
                "exactly one of source and file",
            ),
            (
                ParserConfig {
                    source: None,
                    file: Some("/nonexistent/acme.vrl".into()),
                },
                "ingest.parsers.acme.file: cannot read /nonexistent/acme.vrl",
            ),
        ];
        for (config, expected) in cases {
            let error = config.compile(&acme()).unwrap_err();
            assert!(error.starts_with("ingest.parsers.acme"), "{error}");
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }

    #[test]
    fn programs_run_per_record_and_report_failures() {
        let parser = source(
            r#"
            . = merge(., parse_key_value!(.message))
            del(.message)
            if .action == "drop" { abort }
            "#,
        )
        .compile(&acme())
        .unwrap();
        let out = parser
            .apply(serde_json::json!({"message": "user=bob src_ip=10.1.2.3 action=allow"}))
            .unwrap();
        assert_eq!(
            out,
            serde_json::json!({"user": "bob", "src_ip": "10.1.2.3", "action": "allow"})
        );
        assert!(parser.apply(serde_json::json!({"message": 5})).is_err());
        assert!(
            parser
                .apply(serde_json::json!({"message": "action=drop"}))
                .is_err()
        );
        let scalar = source(r#". = "just text""#).compile(&acme()).unwrap();
        let error = scalar.apply(serde_json::json!({})).unwrap_err();
        assert!(error.contains("not an object"), "{error}");
    }
}
