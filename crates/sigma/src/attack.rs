//! MITRE ATT&CK Enterprise: technique and tactic names for the technique ids rules are tagged
//! with. The table (`data/attack.tsv`) is compiled in.

use std::sync::OnceLock;

use rustc_hash::FxHashMap;
use serde::Serialize;

const TABLE: &str = include_str!("../data/attack.tsv");

/// An ATT&CK technique as hits and alerts show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Technique {
    /// `T1059.001`.
    pub id: String,
    /// `Command and Scripting Interpreter: PowerShell` (sub-techniques carry their parent's name,
    /// as ATT&CK shows them).
    pub name: String,
    /// Tactic names in matrix order, e.g. `Execution`.
    pub tactics: Vec<String>,
}

struct Catalog {
    /// Short name (`execution`) -> (matrix position, display name).
    tactics: FxHashMap<&'static str, (usize, &'static str)>,
    /// Technique id -> (name, tactic short names).
    techniques: FxHashMap<&'static str, (&'static str, Vec<&'static str>)>,
}

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut tactics = FxHashMap::default();
        let mut techniques = FxHashMap::default();
        for line in TABLE.lines().filter(|line| !line.starts_with('#')) {
            let columns: Vec<&str> = line.split('\t').collect();
            match columns.as_slice() {
                ["tactic", _id, short, name] => {
                    let position = tactics.len();
                    tactics.insert(*short, (position, *name));
                }
                ["technique", id, name, tactic_list] => {
                    let list = tactic_list.split(',').filter(|t| !t.is_empty()).collect();
                    techniques.insert(*id, (*name, list));
                }
                _ => {}
            }
        }
        Catalog {
            tactics,
            techniques,
        }
    })
}

/// The technique with this id (`T1059` or `T1059.001`), or `None` when ATT&CK v18.1 has no
/// such id.
pub fn technique(id: &str) -> Option<Technique> {
    let catalog = catalog();
    let (name, tactic_names) = catalog.techniques.get(id)?;
    let name = match id.split_once('.') {
        Some((parent, _)) => match catalog.techniques.get(parent) {
            Some((parent_name, _)) => format!("{parent_name}: {name}"),
            None => (*name).to_owned(),
        },
        None => (*name).to_owned(),
    };
    let mut tactics: Vec<(usize, &str)> = tactic_names
        .iter()
        .filter_map(|short| catalog.tactics.get(short).copied())
        .collect();
    tactics.sort_unstable();
    Some(Technique {
        id: id.to_owned(),
        name,
        tactics: tactics
            .into_iter()
            .map(|(_, name)| name.to_owned())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn techniques_have_names_and_tactics() {
        let powershell = technique("T1059.001").unwrap();
        assert_eq!(
            powershell.name,
            "Command and Scripting Interpreter: PowerShell"
        );
        assert_eq!(powershell.tactics, ["Execution"]);
        let valid_accounts = technique("T1078").unwrap();
        assert_eq!(
            valid_accounts.tactics,
            [
                "Initial Access",
                "Persistence",
                "Privilege Escalation",
                "Defense Evasion"
            ]
        );
        assert_eq!(technique("T9999"), None);
    }

    /// The compiled-in table is derived from the reference file in `../shared`; regenerate it
    /// (see the header of `data/attack.tsv`) when this fails.
    #[test]
    fn embedded_table_matches_the_reference() {
        let shared = std::env::var("VIGIL_SHARED_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared").to_owned());
        let path = format!("{shared}/data/attack/enterprise-attack-v18.1.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("the ATT&CK reference {path} is required: {err}"));
        let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
        let techniques = reference["techniques"].as_array().unwrap();
        assert_eq!(catalog().techniques.len(), techniques.len());
        for entry in techniques {
            let id = entry["external_id"].as_str().unwrap();
            let (name, tactics) = &catalog().techniques[id];
            assert_eq!(entry["name"].as_str(), Some(*name), "{id}");
            let expected: Vec<&str> = entry["tactics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            assert_eq!(tactics, &expected, "{id}");
        }
    }
}
