//! Sigma correlation rules (event_count, value_count, temporal, temporal_ordered and the numeric
//! aggregations) through rsigma's correlation engine, fed with the detections of the partitioned
//! rule set. Windows and group state can be exported as a snapshot and restored, so a service
//! that persists it loses no open window on restart.

use std::sync::Arc;

use std::borrow::Cow;

use rsigma_eval::{
    CorrelationConfig, CorrelationEngine, CorrelationEventMode, Event, EventValue, ResultBody,
    TimestampFallback,
};
use rsigma_parser::{CorrelationRule, SigmaRule};
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde_json::Value;

use crate::engine::{Detection, Level, RuleInfo, RuleLogsource};
use crate::flat::{FlatEntries, FlatIndex, FlatRecord, FlatView, classify_flat};
use crate::mapping::Mappings;
use crate::record::{Record, classify};

/// The rules a correlator is built from: the correlations and the detection rules they name.
#[derive(Clone, Default)]
pub(crate) struct CorrelationRules {
    pub(crate) correlations: Vec<(std::path::PathBuf, CorrelationRule)>,
    pub(crate) referenced: Vec<SigmaRule>,
}

/// A correlation rule that fired.
#[derive(Debug, Clone, Serialize)]
pub struct CorrelationHit {
    /// The correlation rule.
    pub rule: Arc<RuleInfo>,
    /// `event_count`, `value_count`, `temporal`, ...
    pub correlation_type: String,
    /// The group-by fields and their values.
    pub group_key: Vec<(String, String)>,
    /// The count or aggregate that met the condition.
    pub aggregated_value: f64,
    /// The window, in seconds.
    pub timespan_secs: u64,
    /// The ids of the events the window counted, oldest first: the last
    /// [`MAX_CORRELATION_EVENTS`] of them, and only those fed with an id.
    pub events: Vec<String>,
}

/// How many contributing event ids a correlation window keeps (rsigma's reference buffer, about
/// 40 bytes and the id per event, per open group; saved with the state).
pub const MAX_CORRELATION_EVENTS: usize = 32;

/// A record as the correlation engine sees it: the record for group-by fields, and as its JSON
/// only `{"id": ...}`. rsigma keeps `to_json()` of each counted event in its reference buffer
/// and reads the id from it; this gives it the caller's id and spares copying the record.
struct Identified<'a, E> {
    record: &'a E,
    id: Option<&'a str>,
}

impl<E: Event> Event for Identified<'_, E> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        self.record.get_field(path)
    }

    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        self.record.any_string_value(pred)
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        self.record.all_string_values()
    }

    fn visit_string_values(&self, visit: &mut dyn FnMut(&str)) {
        self.record.visit_string_values(visit);
    }

    fn to_json(&self) -> Value {
        match self.id {
            Some(id) => serde_json::json!({ "id": id }),
            None => Value::Object(serde_json::Map::new()),
        }
    }

    fn field_keys(&self) -> Vec<Cow<'_, str>> {
        self.record.field_keys()
    }

    fn top_level_keys(&self) -> Option<Vec<Cow<'_, str>>> {
        self.record.top_level_keys()
    }

    fn visit_top_level_keys(&self, visit: &mut dyn FnMut(&str)) -> bool {
        self.record.visit_top_level_keys(visit)
    }
}

/// Correlation state for one stream (in Vigil: one tenant).
pub struct Correlator {
    engine: CorrelationEngine,
    mappings: Arc<Mappings>,
    rules: FxHashMap<String, Arc<RuleInfo>>,
    /// Detection rules (by [`RuleInfo::id`]) whose hits the correlations count.
    fed_by: rustc_hash::FxHashSet<String>,
    /// Of those, the rules every correlation naming them marks `generate: false`: their hits
    /// only feed correlations and are not alerts of their own.
    silent: rustc_hash::FxHashSet<String>,
}

impl std::fmt::Debug for Correlator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Correlator")
            .field("correlations", &self.rules.len())
            .field("open_groups", &self.engine.state_count())
            .finish_non_exhaustive()
    }
}

impl Correlator {
    /// Builds a correlator; correlations that do not compile come back with their reasons.
    pub(crate) fn build(
        rules: &CorrelationRules,
        mappings: Arc<Mappings>,
    ) -> (Self, Vec<(std::path::PathBuf, Option<String>, String)>) {
        let config = CorrelationConfig {
            // Vigil passes each event's time explicitly; a record without one is not guessed at.
            timestamp_fallback: TimestampFallback::Skip,
            // Alerts name the events they were made of.
            correlation_event_mode: CorrelationEventMode::Refs,
            max_correlation_events: MAX_CORRELATION_EVENTS,
            ..CorrelationConfig::default()
        };
        let mut engine = CorrelationEngine::new(config);
        let mut rejected = Vec::new();
        for rule in &rules.referenced {
            // Already reported by the detection load when it fails.
            let _ = engine.add_rule(rule);
        }
        let mut infos = FxHashMap::default();
        // What a correlation may name: detection rules it references and other correlations.
        let known: std::collections::HashSet<&str> = rules
            .referenced
            .iter()
            .flat_map(|rule| [rule.id.as_deref(), rule.name.as_deref()])
            .chain(
                rules
                    .correlations
                    .iter()
                    .flat_map(|(_, c)| [c.id.as_deref(), c.name.as_deref()]),
            )
            .flatten()
            .collect();
        for (path, correlation) in &rules.correlations {
            let missing: Vec<&str> = correlation
                .rules
                .iter()
                .map(String::as_str)
                .filter(|name| !known.contains(name))
                .collect();
            if !missing.is_empty() {
                rejected.push((
                    path.clone(),
                    correlation.id.clone(),
                    format!(
                        "correlation names rules that are not loaded: {}",
                        missing.join(", ")
                    ),
                ));
                continue;
            }
            match engine.add_correlation(correlation) {
                Ok(()) => {
                    let id = correlation
                        .id
                        .clone()
                        .or_else(|| correlation.name.clone())
                        .unwrap_or_else(|| correlation.title.clone());
                    infos.insert(
                        id.clone(),
                        Arc::new(RuleInfo {
                            id,
                            title: correlation.title.clone(),
                            level: Level::of(correlation.level),
                            attack: correlation
                                .tags
                                .iter()
                                .filter_map(|tag| crate::engine::attack_technique(tag))
                                .collect(),
                            path: path.clone(),
                            logsource: RuleLogsource::default(),
                        }),
                    );
                }
                Err(err) => rejected.push((
                    path.clone(),
                    correlation.id.clone(),
                    crate::one_line(&err.to_string()),
                )),
            }
        }
        let mut fed_by = rustc_hash::FxHashSet::default();
        let mut generating = rustc_hash::FxHashSet::default();
        for rule in &rules.referenced {
            let id = rule.id.clone().unwrap_or_else(|| rule.title.clone());
            let names: Vec<&str> = [rule.id.as_deref(), rule.name.as_deref()]
                .into_iter()
                .flatten()
                .collect();
            let named_by_generating = rules.correlations.iter().any(|(_, correlation)| {
                correlation.generate
                    && correlation
                        .rules
                        .iter()
                        .any(|name| names.contains(&name.as_str()))
            });
            if named_by_generating {
                generating.insert(id.clone());
            }
            fed_by.insert(id);
        }
        let silent = fed_by.difference(&generating).cloned().collect();
        (
            Self {
                engine,
                mappings,
                rules: infos,
                fed_by,
                silent,
            },
            rejected,
        )
    }

    /// Whether a detection of this rule counts toward a correlation.
    pub fn is_fed_by(&self, rule_id: &str) -> bool {
        self.fed_by.contains(rule_id)
    }

    /// Whether this rule's hits only feed correlations (`generate: false` in every
    /// correlation naming it): a service reports the correlation, not each hit.
    pub fn is_silent(&self, rule_id: &str) -> bool {
        self.silent.contains(rule_id)
    }

    /// Number of correlation rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no correlation rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Feeds one record's detections at `event_time` (Unix seconds), with the record's id for
    /// [`CorrelationHit::events`]; returns the correlations that fired. Records must come in
    /// event-time order per group for windows to be exact.
    pub fn observe(
        &mut self,
        record: &Value,
        detections: &[Detection],
        event_time: i64,
        event_id: Option<&str>,
    ) -> Vec<CorrelationHit> {
        let results = self.raw_results(detections);
        if results.is_empty() {
            return Vec::new();
        }
        let classified = classify(&self.mappings, record);
        let view = Record::new(record, classified.shape, None, classified.loose);
        let view = Identified {
            record: &view,
            id: event_id,
        };
        let out = self
            .engine
            .process_with_detections(&view, results, event_time);
        self.hits(out)
    }

    /// [`Correlator::observe`] for a record stored as flat dotted keys.
    pub fn observe_flat(
        &mut self,
        record: &impl FlatRecord,
        detections: &[Detection],
        event_time: i64,
        event_id: Option<&str>,
    ) -> Vec<CorrelationHit> {
        let results = self.raw_results(detections);
        if results.is_empty() {
            return Vec::new();
        }
        let entries = FlatEntries::new(record);
        let classified = classify_flat(&self.mappings, &entries);
        let index = FlatIndex::new(&entries, classified.shape);
        let view = FlatView::new(&entries, &index, &classified);
        let view = Identified {
            record: &view,
            id: event_id,
        };
        let out = self
            .engine
            .process_with_detections(&view, results, event_time);
        self.hits(out)
    }

    fn hits(&self, out: Vec<rsigma_eval::EvaluationResult>) -> Vec<CorrelationHit> {
        out.into_iter()
            .filter_map(|result| {
                let ResultBody::Correlation(body) = result.body else {
                    return None;
                };
                let key = result
                    .header
                    .rule_id
                    .as_deref()
                    .unwrap_or(result.header.rule_title.as_str());
                let rule = self.rules.get(key).or_else(|| {
                    self.rules
                        .values()
                        .find(|rule| rule.title == result.header.rule_title)
                })?;
                Some(CorrelationHit {
                    rule: Arc::clone(rule),
                    correlation_type: serde_json::to_value(body.correlation_type)
                        .ok()
                        .and_then(|value| value.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    group_key: body.group_key,
                    aggregated_value: body.aggregated_value,
                    timespan_secs: body.timespan_secs,
                    events: body
                        .event_refs
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|reference| reference.id)
                        .collect(),
                })
            })
            .collect()
    }

    /// Drops windows that ended before `now` (Unix seconds).
    pub fn evict_expired(&mut self, now: i64) {
        self.engine.evict_expired(now);
    }

    /// Open (correlation, group) windows.
    pub fn open_groups(&self) -> usize {
        self.engine.state_count()
    }

    /// The state as bytes (JSON), for the detect service to persist.
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&self.engine.export_state()).unwrap_or_default()
    }

    /// Restores state from [`Correlator::snapshot`]'s bytes. State of correlations that no
    /// longer exist is dropped; an unreadable or incompatible snapshot is an error and leaves
    /// the current state alone.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let snapshot: rsigma_eval::CorrelationSnapshot = serde_json::from_slice(bytes)
            .map_err(|err| format!("unreadable correlation snapshot: {err}"))?;
        if self.engine.import_state(snapshot) {
            Ok(())
        } else {
            Err("correlation snapshot has an incompatible version".to_owned())
        }
    }
}

impl Correlator {
    /// rsigma's own results behind the detections that feed a correlation.
    fn raw_results(&self, detections: &[Detection]) -> Vec<rsigma_eval::EvaluationResult> {
        detections
            .iter()
            .filter(|detection| self.fed_by.contains(&detection.rule.id))
            .filter_map(|detection| detection.raw.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::{LoadOptions, RuleSet};

    const RULES: &str = r"
title: Whoami
id: 6b1a9d30-0000-4000-8000-000000000001
name: whoami_run
logsource:
    product: windows
    category: process_creation
detection:
    sel:
        Image|endswith: '\whoami.exe'
    condition: sel
level: low
---
title: Whoami burst
id: 6b1a9d30-0000-4000-8000-000000000002
correlation:
    type: event_count
    rules:
        - whoami_run
    group-by:
        - Computer
    timespan: 5m
    condition:
        gte: 3
level: high
tags:
    - attack.t1033
";

    fn rules() -> RuleSet {
        RuleSet::from_texts(
            vec![(PathBuf::from("burst.yml"), RULES.to_owned())],
            Arc::new(Mappings::builtin().unwrap()),
            &LoadOptions::default(),
        )
        .unwrap()
    }

    fn whoami(computer: &str) -> Value {
        json!({"Event": {"System": {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1,
                                     "Computer": computer},
                          "EventData": {"Image": "C:\\Windows\\System32\\whoami.exe"}}})
    }

    fn feed(correlator: &mut Correlator, rules: &RuleSet, record: &Value, at: i64) -> Vec<String> {
        let detections = rules.detect(record);
        let id = format!("e{at}");
        correlator
            .observe(record, &detections, at, Some(&id))
            .into_iter()
            .map(|hit| {
                format!(
                    "{} {:?} {} {:?}",
                    hit.rule.title, hit.group_key, hit.aggregated_value, hit.events
                )
            })
            .collect()
    }

    /// How [`feed`] prints the ids of the events fed at `times`.
    fn window_ids(times: &[i64]) -> String {
        let ids: Vec<String> = times.iter().map(|at| format!("e{at}")).collect();
        format!("{ids:?}")
    }

    #[test]
    fn event_count_fires_per_group_within_the_window() {
        let rules = rules();
        assert_eq!(rules.check().correlation_rules, 1, "{:?}", rules.check());
        let mut correlator = rules.correlator();
        let t0 = 1_800_000_000;
        assert!(feed(&mut correlator, &rules, &whoami("pc1"), t0).is_empty());
        assert!(feed(&mut correlator, &rules, &whoami("pc2"), t0 + 1).is_empty());
        assert!(feed(&mut correlator, &rules, &whoami("pc1"), t0 + 10).is_empty());
        let fired = feed(&mut correlator, &rules, &whoami("pc1"), t0 + 20);
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert!(fired[0].starts_with("Whoami burst"), "{fired:?}");
        assert!(fired[0].contains("pc1"), "{fired:?}");
        // The alert names the events of its window (pc2's is another group).
        assert!(
            fired[0].ends_with(&window_ids(&[t0, t0 + 10, t0 + 20])),
            "{fired:?}"
        );
        // Outside the window nothing adds up for pc2.
        assert!(feed(&mut correlator, &rules, &whoami("pc2"), t0 + 600).is_empty());
        assert!(feed(&mut correlator, &rules, &whoami("pc2"), t0 + 1200).is_empty());
    }

    #[test]
    fn the_correlator_knows_which_rules_feed_it_and_which_only_feed_it() {
        let rules = rules();
        let correlator = rules.correlator();
        let whoami = "6b1a9d30-0000-4000-8000-000000000001";
        assert!(correlator.is_fed_by(whoami));
        // `generate` is false by default: the whoami hits count, the burst is the alert.
        assert!(correlator.is_silent(whoami));
        assert!(!correlator.is_fed_by("some-other-rule"));
        let generating = RuleSet::from_texts(
            vec![(
                PathBuf::from("burst.yml"),
                RULES.replace("correlation:\n", "correlation:\n    generate: true\n"),
            )],
            Arc::new(Mappings::builtin().unwrap()),
            &LoadOptions::default(),
        )
        .unwrap()
        .correlator();
        assert!(generating.is_fed_by(whoami));
        assert!(!generating.is_silent(whoami));
    }

    struct Flat(Vec<(&'static str, Value)>);

    impl FlatRecord for Flat {
        fn for_each<'s>(&'s self, visit: &mut dyn FnMut(&'s str, crate::FlatValue<'s>)) {
            for (key, value) in &self.0 {
                let value = match value {
                    Value::String(text) => crate::FlatValue::Str(text),
                    Value::Number(number) => crate::FlatValue::Int(number.as_i64().unwrap()),
                    _ => crate::FlatValue::Null,
                };
                visit(key, value);
            }
        }
    }

    #[test]
    fn flat_records_correlate_too() {
        let rules = rules();
        let mut correlator = rules.correlator();
        let record = Flat(vec![
            (
                "Event.System.Channel",
                json!("Microsoft-Windows-Sysmon/Operational"),
            ),
            ("Event.System.EventID", json!(1)),
            ("Event.System.Computer", json!("pc9")),
            (
                "Event.EventData.Image",
                json!("C:\\Windows\\System32\\whoami.exe"),
            ),
        ]);
        let t0 = 1_800_000_000;
        let mut fired = Vec::new();
        for offset in 0..3 {
            let detections = rules.detect_flat(&record);
            assert_eq!(detections.len(), 1);
            fired = correlator.observe_flat(&record, &detections, t0 + offset, None);
        }
        assert_eq!(fired.len(), 1);
        assert_eq!(
            fired[0].group_key,
            [("Computer".to_owned(), "pc9".to_owned())]
        );
    }

    #[test]
    fn a_correlation_naming_missing_rules_is_rejected() {
        let text = RULES.replace("- whoami_run", "- whoami_run\n        - not_a_rule");
        let rules = RuleSet::from_texts(
            vec![(PathBuf::from("burst.yml"), text)],
            Arc::new(Mappings::builtin().unwrap()),
            &LoadOptions::default(),
        )
        .unwrap();
        assert_eq!(rules.check().correlation_rules, 0);
        let rejected = &rules.check().rejected[0];
        assert!(rejected.reason.contains("not_a_rule"), "{rejected:?}");
        assert_eq!(
            rejected.rule_id.as_deref(),
            Some("6b1a9d30-0000-4000-8000-000000000002")
        );
    }

    #[test]
    fn state_survives_a_snapshot_and_restore() {
        let rules = rules();
        let mut first = rules.correlator();
        let t0 = 1_800_000_000;
        feed(&mut first, &rules, &whoami("pc1"), t0);
        feed(&mut first, &rules, &whoami("pc1"), t0 + 5);
        let snapshot = first.snapshot();
        assert!(first.open_groups() > 0);

        let mut second = rules.correlator();
        second.restore(&snapshot).unwrap();
        // The window's events survive too.
        let fired = feed(&mut second, &rules, &whoami("pc1"), t0 + 9);
        assert_eq!(fired.len(), 1);
        assert!(
            fired[0].ends_with(&window_ids(&[t0, t0 + 5, t0 + 9])),
            "{fired:?}"
        );

        let mut third = rules.correlator();
        assert!(
            third
                .restore(b"{not json")
                .unwrap_err()
                .contains("unreadable")
        );
        assert!(feed(&mut third, &rules, &whoami("pc1"), t0 + 9).is_empty());
    }

    #[test]
    fn expand_placeholders_come_from_configuration() {
        let rule = r"
title: Admin logon
id: 6b1a9d30-0000-4000-8000-000000000003
logsource:
    product: windows
    service: security
detection:
    sel:
        EventID: 4624
        TargetUserName|expand: '%admin_users%'
    condition: sel
level: medium
";
        let logon = |user: &str| {
            json!({"Event": {"System": {"Channel": "Security", "EventID": 4624},
                              "EventData": {"TargetUserName": user}}})
        };
        let mappings = Arc::new(Mappings::builtin().unwrap());
        let texts = vec![(PathBuf::from("admin.yml"), rule.to_owned())];
        let options = LoadOptions {
            placeholders: [(
                "admin_users".to_owned(),
                vec!["alice".to_owned(), "bob".to_owned()],
            )]
            .into_iter()
            .collect(),
            ..LoadOptions::default()
        };
        let configured =
            RuleSet::from_texts(texts.clone(), Arc::clone(&mappings), &options).unwrap();
        assert_eq!(configured.detect(&logon("bob")).len(), 1);
        assert!(configured.detect(&logon("mallory")).is_empty());

        // Without values the placeholder stays literal and matches nothing.
        let bare = RuleSet::from_texts(texts, mappings, &LoadOptions::default()).unwrap();
        assert!(bare.detect(&logon("bob")).is_empty());
    }
}
