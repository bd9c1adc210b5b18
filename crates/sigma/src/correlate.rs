//! Sigma correlation rules (event_count, value_count, temporal, temporal_ordered and the numeric
//! aggregations) through rsigma's correlation engine, fed with the detections of the partitioned
//! rule set. Windows and group state can be exported as a snapshot and restored, so a service
//! that persists it loses no open window on restart.
//!
//! Correlations are grouped into chains: a correlation and the correlations it names, or that
//! name it. Each chain has its own rsigma engine, so feeding one chain never touches another's
//! windows. That is what lets a service split correlation state by group key ([`Correlator::route`]):
//! a chain of one correlation is routed by the event's group key for it, a longer chain (its
//! parents must see their children fire) by the chain alone. Every partition's correlator holds
//! the windows of its own keys, and together they give exactly the hits of one correlator.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use rsigma_eval::{
    CorrelationConfig, CorrelationEngine, CorrelationEventMode, CorrelationSnapshot, DetectionBody,
    EvaluationResult, Event, EventValue, GroupByField, GroupKey, ResultBody, RuleHeader,
    TimestampFallback,
};
use rsigma_parser::{CorrelationRule, SigmaRule};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

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

/// One detection as one correlation chain counts it: what a service sends to the partition
/// that owns the event's group key ([`Correlator::route`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fed {
    /// The chain's id: the smallest id (or name, or title) among its correlations.
    pub chain: String,
    /// The detection rule's id.
    pub rule: String,
}

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

/// Correlations that reference each other, with their own engine.
struct Chain {
    /// The smallest stable id (id, else name, else title) of its correlations.
    id: String,
    engine: CorrelationEngine,
    /// For a chain of one correlation, its group-by fields: the chain is routed by group key.
    /// A longer chain is routed whole.
    group_by: Option<Vec<GroupByField>>,
}

/// A detection rule as correlations name it.
struct Feeder {
    /// Its id and name, what a correlation's `rules` and aliases refer to.
    refs: Vec<String>,
    /// The chains whose correlations count it.
    chains: Vec<usize>,
}

/// Correlation state for one stream (in Vigil: one tenant, or one partition of its group keys).
pub struct Correlator {
    chains: Vec<Chain>,
    /// A correlation's stable id -> its chain.
    chain_of: FxHashMap<String, usize>,
    mappings: Arc<Mappings>,
    rules: FxHashMap<String, Arc<RuleInfo>>,
    /// Detection rules (by [`RuleInfo::id`]) whose hits the correlations count.
    fed_by: FxHashMap<String, Feeder>,
    /// Of those, the rules every correlation naming them marks `generate: false`: their hits
    /// only feed correlations and are not alerts of their own.
    silent: FxHashSet<String>,
}

impl std::fmt::Debug for Correlator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Correlator")
            .field("correlations", &self.rules.len())
            .field("chains", &self.chains.len())
            .field("open_groups", &self.open_groups())
            .finish_non_exhaustive()
    }
}

/// The id rsigma's snapshots know a correlation by: id, else name, else title.
fn stable_id(correlation: &CorrelationRule) -> String {
    correlation
        .id
        .clone()
        .or_else(|| correlation.name.clone())
        .unwrap_or_else(|| correlation.title.clone())
}

fn engine_config() -> CorrelationConfig {
    CorrelationConfig {
        // Vigil passes each event's time explicitly; a record without one is not guessed at.
        timestamp_fallback: TimestampFallback::Skip,
        // Alerts name the events they were made of.
        correlation_event_mode: CorrelationEventMode::Refs,
        max_correlation_events: MAX_CORRELATION_EVENTS,
        ..CorrelationConfig::default()
    }
}

/// Groups correlations (given by index) into chains: two correlations are in one chain when
/// one names the other. Chains come in the order of their first correlation.
fn chains_of(correlations: &[&CorrelationRule]) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = (0..correlations.len()).collect();
    fn root(parent: &mut [usize], mut at: usize) -> usize {
        while parent[at] != at {
            parent[at] = parent[parent[at]];
            at = parent[at];
        }
        at
    }
    let mut named: FxHashMap<&str, usize> = FxHashMap::default();
    for (index, correlation) in correlations.iter().enumerate() {
        for name in [correlation.id.as_deref(), correlation.name.as_deref()]
            .into_iter()
            .flatten()
        {
            named.entry(name).or_insert(index);
        }
    }
    for (index, correlation) in correlations.iter().enumerate() {
        for wanted in &correlation.rules {
            if let Some(&other) = named.get(wanted.as_str()) {
                let (a, b) = (root(&mut parent, index), root(&mut parent, other));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut chains: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for index in 0..correlations.len() {
        let at = root(&mut parent, index);
        chains.entry(at).or_default().push(index);
    }
    chains.into_values().collect()
}

/// The partition (of `partitions`) that owns a chain's group: a stable hash, the same in every
/// process and release, of the chain's id and the group key's values in group-by order (none
/// for a chain routed whole; a `None` value is a group-by field the event lacks).
pub fn partition_of(chain: &str, key: Option<&[Option<String>]>, partitions: u32) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(chain.as_bytes());
    hasher.update([0xff]);
    for part in key.unwrap_or_default() {
        match part {
            Some(value) => {
                hasher.update([1]);
                hasher.update((value.len() as u64).to_le_bytes());
                hasher.update(value.as_bytes());
            }
            None => hasher.update([0]),
        }
    }
    let digest = hasher.finalize();
    let head = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
    head % partitions.max(1)
}

impl Correlator {
    /// Builds a correlator; correlations that do not compile come back with their reasons.
    pub(crate) fn build(
        rules: &CorrelationRules,
        mappings: Arc<Mappings>,
    ) -> (Self, Vec<(std::path::PathBuf, Option<String>, String)>) {
        let mut rejected = Vec::new();
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
        let mut candidates = Vec::new();
        for (path, correlation) in &rules.correlations {
            let missing: Vec<&str> = correlation
                .rules
                .iter()
                .map(String::as_str)
                .filter(|name| !known.contains(name))
                .collect();
            if missing.is_empty() {
                candidates.push((path, correlation));
            } else {
                rejected.push((
                    path.clone(),
                    correlation.id.clone(),
                    format!(
                        "correlation names rules that are not loaded: {}",
                        missing.join(", ")
                    ),
                ));
            }
        }
        let plain: Vec<&CorrelationRule> = candidates.iter().map(|(_, c)| *c).collect();
        let mut chains = Vec::new();
        let mut chain_of = FxHashMap::default();
        let mut infos = FxHashMap::default();
        // The correlations that compiled, with their chains.
        let mut loaded: Vec<(&CorrelationRule, usize)> = Vec::new();
        for members in chains_of(&plain) {
            let mut engine = CorrelationEngine::new(engine_config());
            // The detection rules the chain counts, added so rsigma knows their names.
            let wanted: FxHashSet<&str> = members
                .iter()
                .flat_map(|&index| plain[index].rules.iter().map(String::as_str))
                .collect();
            for rule in &rules.referenced {
                let named = [rule.id.as_deref(), rule.name.as_deref()]
                    .into_iter()
                    .flatten()
                    .any(|name| wanted.contains(name));
                if named {
                    // Already reported by the detection load when it fails.
                    let _ = engine.add_rule(rule);
                }
            }
            let mut added = Vec::new();
            for &index in &members {
                let (path, correlation) = candidates[index];
                if let Err(err) = engine.add_correlation(correlation) {
                    rejected.push((
                        path.clone(),
                        correlation.id.clone(),
                        crate::one_line(&err.to_string()),
                    ));
                    continue;
                }
                added.push(correlation);
                let id = stable_id(correlation);
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
            if added.is_empty() {
                continue;
            }
            let group_by = match added.as_slice() {
                [single] => rsigma_eval::correlation::compile_correlation(single)
                    .ok()
                    .map(|compiled| compiled.group_by),
                _ => None,
            };
            let index = chains.len();
            for correlation in &added {
                chain_of.insert(stable_id(correlation), index);
                loaded.push((*correlation, index));
            }
            chains.push(Chain {
                id: added.iter().map(|c| stable_id(c)).min().unwrap_or_default(),
                engine,
                group_by,
            });
        }

        let mut fed_by = FxHashMap::default();
        let mut generating = FxHashSet::default();
        for rule in &rules.referenced {
            let Some(rule_id) = rule.id.clone() else {
                // rsigma finds the rule behind a detection by its id: one without is never
                // counted (and is not silenced either).
                continue;
            };
            let refs: Vec<String> = [rule.id.clone(), rule.name.clone()]
                .into_iter()
                .flatten()
                .collect();
            let mut fed_chains = Vec::new();
            for &(correlation, chain) in &loaded {
                if correlation.rules.iter().any(|wanted| refs.contains(wanted)) {
                    fed_chains.push(chain);
                    if correlation.generate {
                        generating.insert(rule_id.clone());
                    }
                }
            }
            fed_chains.sort_unstable();
            fed_chains.dedup();
            if !fed_chains.is_empty() {
                fed_by.insert(
                    rule_id,
                    Feeder {
                        refs,
                        chains: fed_chains,
                    },
                );
            }
        }
        let silent = fed_by
            .keys()
            .filter(|id| !generating.contains(*id))
            .cloned()
            .collect();
        (
            Self {
                chains,
                chain_of,
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
        self.fed_by.contains_key(rule_id)
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

    /// What the detections feed: one [`Fed`] per (chain, rule), in chain order.
    pub fn fed(&self, detections: &[Detection]) -> Vec<Fed> {
        let mut fed = Vec::new();
        for detection in detections {
            if let Some(feeder) = self.fed_by.get(&detection.rule.id) {
                for &chain in &feeder.chains {
                    fed.push(Fed {
                        chain: self.chains[chain].id.clone(),
                        rule: detection.rule.id.clone(),
                    });
                }
            }
        }
        fed.sort_unstable();
        fed.dedup();
        fed
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
        let fed = self.fed(detections);
        if fed.is_empty() {
            return Vec::new();
        }
        let mappings = Arc::clone(&self.mappings);
        let classified = classify(&mappings, record);
        let view = Record::new(record, classified.shape, None, classified.loose);
        self.feed(&view, &fed, event_time, event_id)
    }

    /// [`Correlator::observe`] for a record stored as flat dotted keys.
    pub fn observe_flat(
        &mut self,
        record: &impl FlatRecord,
        detections: &[Detection],
        event_time: i64,
        event_id: Option<&str>,
    ) -> Vec<CorrelationHit> {
        let fed = self.fed(detections);
        self.observe_fed(record, &fed, event_time, event_id)
    }

    /// Feeds a flat record's detections as [`Correlator::fed`] or [`Correlator::route`] listed
    /// them (what a partition receives). Entries of chains this correlator does not have (the
    /// content changed in between) are skipped.
    pub fn observe_fed(
        &mut self,
        record: &impl FlatRecord,
        fed: &[Fed],
        event_time: i64,
        event_id: Option<&str>,
    ) -> Vec<CorrelationHit> {
        if fed.is_empty() {
            return Vec::new();
        }
        let mappings = Arc::clone(&self.mappings);
        let entries = FlatEntries::new(record);
        let classified = classify_flat(&mappings, &entries);
        let index = FlatIndex::new(&entries, classified.shape);
        let view = FlatView::new(&entries, &index, &classified);
        self.feed(&view, fed, event_time, event_id)
    }

    /// Which partitions (of `partitions`) a flat record's detections go to, and what each
    /// feeds: a chain of one correlation by the record's group key for it, a longer chain by
    /// the chain. Partitions come in order; [`partition_of`] is the hash.
    pub fn route(
        &self,
        record: &impl FlatRecord,
        detections: &[Detection],
        partitions: u32,
    ) -> Vec<(u32, Vec<Fed>)> {
        let fed = self.fed(detections);
        if fed.is_empty() {
            return Vec::new();
        }
        let entries = FlatEntries::new(record);
        let classified = classify_flat(&self.mappings, &entries);
        let index = FlatIndex::new(&entries, classified.shape);
        let view = FlatView::new(&entries, &index, &classified);
        let mut routed: BTreeMap<u32, Vec<Fed>> = BTreeMap::new();
        for entry in fed {
            let Some(index) = self.chain_index(&entry.chain) else {
                continue;
            };
            let chain = &self.chains[index];
            let key = chain.group_by.as_ref().map(|group_by| {
                let refs: Vec<&str> = self
                    .fed_by
                    .get(&entry.rule)
                    .map(|feeder| feeder.refs.iter().map(String::as_str).collect())
                    .unwrap_or_default();
                GroupKey::extract(&view, group_by, &refs)
            });
            let partition = partition_of(&chain.id, key.as_ref().map(|key| &key.0[..]), partitions);
            routed.entry(partition).or_default().push(entry);
        }
        routed.into_iter().collect()
    }

    /// Feeds each listed chain its rules' detections.
    fn feed(
        &mut self,
        view: &impl Event,
        fed: &[Fed],
        event_time: i64,
        event_id: Option<&str>,
    ) -> Vec<CorrelationHit> {
        let view = Identified {
            record: view,
            id: event_id,
        };
        let mut out = Vec::new();
        let mut at = 0;
        while at < fed.len() {
            let chain_id = &fed[at].chain;
            let end = fed[at..]
                .iter()
                .position(|entry| &entry.chain != chain_id)
                .map_or(fed.len(), |offset| at + offset);
            if let Some(index) = self.chain_index(chain_id) {
                // rsigma's correlation layer reads only the rule's id from a detection.
                let results = fed[at..end]
                    .iter()
                    .map(|entry| EvaluationResult {
                        header: RuleHeader {
                            rule_title: entry.rule.clone(),
                            rule_id: Some(entry.rule.clone()),
                            level: None,
                            tags: Vec::new(),
                            custom_attributes: Arc::default(),
                            enrichments: None,
                        },
                        body: ResultBody::Detection(DetectionBody {
                            matched_selections: Vec::new(),
                            matched_fields: Vec::new(),
                            event: None,
                        }),
                    })
                    .collect();
                out.extend(
                    self.chains[index]
                        .engine
                        .process_with_detections(&view, results, event_time),
                );
            }
            at = end;
        }
        self.hits(out)
    }

    fn chain_index(&self, chain_id: &str) -> Option<usize> {
        // A chain's id is one of its correlations' stable ids.
        self.chain_of
            .get(chain_id)
            .copied()
            .filter(|&index| self.chains[index].id == chain_id)
    }

    fn hits(&self, out: Vec<EvaluationResult>) -> Vec<CorrelationHit> {
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
        for chain in &mut self.chains {
            chain.engine.evict_expired(now);
        }
    }

    /// Open (correlation, group) windows.
    pub fn open_groups(&self) -> usize {
        self.chains
            .iter()
            .map(|chain| chain.engine.state_count())
            .sum()
    }

    /// The state as bytes (JSON), for the detect service to persist: one rsigma snapshot, keyed
    /// by correlation, whichever chain holds it.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut merged = empty_snapshot();
        for chain in &self.chains {
            let part = chain.engine.export_state();
            merged.windows.extend(part.windows);
            merged.last_alert.extend(part.last_alert);
            merged.event_buffers.extend(part.event_buffers);
            merged.event_ref_buffers.extend(part.event_ref_buffers);
        }
        serde_json::to_vec(&merged).unwrap_or_default()
    }

    /// Restores state from [`Correlator::snapshot`]'s bytes. State of correlations that no
    /// longer exist is dropped; an unreadable or incompatible snapshot is an error and leaves
    /// the current state alone.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let snapshot = read_snapshot(bytes)?;
        let mut parts = self.split_by(snapshot, |chain, _| Some(chain))?;
        for (index, chain) in self.chains.iter_mut().enumerate() {
            if let Some(part) = parts.remove(&index) {
                chain.engine.import_state(part);
            }
        }
        Ok(())
    }

    /// Splits [`Correlator::snapshot`]'s bytes into the state each of `partitions` partitions
    /// owns, by [`partition_of`] as [`Correlator::route`] routes: what a service does once when
    /// it moves from one state to partitioned state. Partitions without state are left out;
    /// state of correlations that no longer exist is dropped.
    pub fn partition_snapshot(
        &self,
        bytes: &[u8],
        partitions: u32,
    ) -> Result<BTreeMap<u32, Vec<u8>>, String> {
        let snapshot = read_snapshot(bytes)?;
        let parts = self.split_by(snapshot, |chain, key| {
            let chain = &self.chains[chain];
            let key = chain.group_by.as_ref().map(|_| &key.0[..]);
            usize::try_from(partition_of(&chain.id, key, partitions)).ok()
        })?;
        Ok(parts
            .into_iter()
            .map(|(partition, part)| {
                let partition = u32::try_from(partition).unwrap_or_default();
                (partition, serde_json::to_vec(&part).unwrap_or_default())
            })
            .collect())
    }

    /// Distributes a snapshot's entries into parts by `place(chain, group key)`; entries of
    /// correlations this correlator does not have are dropped.
    fn split_by(
        &self,
        snapshot: CorrelationSnapshot,
        place: impl Fn(usize, &GroupKey) -> Option<usize>,
    ) -> Result<BTreeMap<usize, CorrelationSnapshot>, String> {
        let version = empty_snapshot().version;
        if snapshot.version != version {
            return Err(format!(
                "correlation snapshot has version {}, this engine reads {version}",
                snapshot.version
            ));
        }
        let place = |correlation: &str, key: &GroupKey| {
            let chain = *self.chain_of.get(correlation)?;
            place(chain, key)
        };
        let mut parts = BTreeMap::new();
        split_map(snapshot.windows, &place, &mut parts, |part| {
            &mut part.windows
        });
        split_map(snapshot.last_alert, &place, &mut parts, |part| {
            &mut part.last_alert
        });
        split_map(snapshot.event_buffers, &place, &mut parts, |part| {
            &mut part.event_buffers
        });
        split_map(snapshot.event_ref_buffers, &place, &mut parts, |part| {
            &mut part.event_ref_buffers
        });
        Ok(parts)
    }
}

/// A snapshot of no state, in the version this rsigma writes.
fn empty_snapshot() -> CorrelationSnapshot {
    CorrelationEngine::new(engine_config()).export_state()
}

type PerGroup<T> = std::collections::HashMap<String, Vec<(GroupKey, T)>>;

/// Moves one of a snapshot's maps into the parts `place` gives each entry.
fn split_map<T>(
    map: PerGroup<T>,
    place: &dyn Fn(&str, &GroupKey) -> Option<usize>,
    parts: &mut BTreeMap<usize, CorrelationSnapshot>,
    field: fn(&mut CorrelationSnapshot) -> &mut PerGroup<T>,
) {
    for (correlation, groups) in map {
        for (key, value) in groups {
            if let Some(at) = place(&correlation, &key) {
                let part = parts.entry(at).or_insert_with(empty_snapshot);
                field(part)
                    .entry(correlation.clone())
                    .or_default()
                    .push((key, value));
            }
        }
    }
}

fn read_snapshot(bytes: &[u8]) -> Result<CorrelationSnapshot, String> {
    serde_json::from_slice(bytes).map_err(|err| format!("unreadable correlation snapshot: {err}"))
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

    const MORE_RULES: &str = r"
title: Net
id: 6b1a9d30-0000-4000-8000-000000000004
name: net_run
logsource:
    product: windows
    category: process_creation
detection:
    sel:
        Image|endswith: '\net.exe'
    condition: sel
level: low
---
title: Net from many hosts
id: 6b1a9d30-0000-4000-8000-000000000005
correlation:
    type: value_count
    rules:
        - net_run
    group-by:
        - User
    timespan: 10m
    condition:
        field: Computer
        gte: 3
level: high
---
title: Whoami burst
id: 6b1a9d30-0000-4000-8000-000000000002
name: whoami_burst
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
---
title: Repeated whoami bursts
id: 6b1a9d30-0000-4000-8000-000000000006
correlation:
    type: event_count
    rules:
        - whoami_burst
    group-by:
        - Computer
    timespan: 1h
    condition:
        gte: 2
level: critical
";

    /// The whoami rule of [`RULES`] with [`MORE_RULES`]: two chains of one correlation and
    /// one chain of two.
    fn more_rules() -> RuleSet {
        let whoami = RULES.split("---").next().unwrap().to_owned();
        RuleSet::from_texts(
            vec![(
                PathBuf::from("more.yml"),
                format!("{whoami}---{MORE_RULES}"),
            )],
            Arc::new(Mappings::builtin().unwrap()),
            &LoadOptions::default(),
        )
        .unwrap()
    }

    struct Owned(Vec<(String, Value)>);

    impl FlatRecord for Owned {
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

    /// A Sysmon process creation of `image` on `computer` by `user`.
    fn process(image: &str, computer: &str, user: &str) -> Owned {
        Owned(vec![
            (
                "Event.System.Channel".into(),
                json!("Microsoft-Windows-Sysmon/Operational"),
            ),
            ("Event.System.EventID".into(), json!(1)),
            ("Event.System.Computer".into(), json!(computer)),
            (
                "Event.EventData.Image".into(),
                json!(format!("C:\\Windows\\System32\\{image}")),
            ),
            ("Event.EventData.User".into(), json!(user)),
        ])
    }

    /// A stream that fires all four correlations: (record, time, id).
    fn stream() -> Vec<(Owned, i64, String)> {
        let t0 = 1_800_000_000;
        (0..600_i64)
            .map(|n| {
                let image = if n % 3 == 0 { "net.exe" } else { "whoami.exe" };
                let computer = format!("pc{}", (n * 7) % 9);
                let user = format!("u{}", n % 4);
                (
                    process(image, &computer, &user),
                    t0 + n * 5,
                    format!("e{n}"),
                )
            })
            .collect()
    }

    /// A hit as the comparisons below print it.
    fn shown(hit: &CorrelationHit) -> String {
        format!(
            "{} {:?} {} {:?}",
            hit.rule.id, hit.group_key, hit.aggregated_value, hit.events
        )
    }

    #[test]
    fn chains_group_correlations_that_name_each_other() {
        let rules = more_rules();
        assert_eq!(rules.check().correlation_rules, 3, "{:?}", rules.check());
        let correlator = rules.correlator();
        let chains: Vec<(&str, bool)> = correlator
            .chains
            .iter()
            .map(|chain| (chain.id.as_str(), chain.group_by.is_some()))
            .collect();
        assert_eq!(
            chains,
            [
                ("6b1a9d30-0000-4000-8000-000000000005", true),
                ("6b1a9d30-0000-4000-8000-000000000002", false),
            ]
        );
    }

    #[test]
    fn partitions_together_give_exactly_the_hits_of_one_correlator() {
        let rules = more_rules();
        let mut whole = rules.correlator();
        let partitions = 4;
        let mut parts: Vec<Correlator> = (0..partitions).map(|_| rules.correlator()).collect();
        let (mut expected, mut got) = (Vec::new(), Vec::new());
        let mut used = std::collections::BTreeSet::new();
        for (record, at, id) in stream() {
            let detections = rules.detect_flat(&record);
            expected.extend(
                whole
                    .observe_flat(&record, &detections, at, Some(&id))
                    .iter()
                    .map(shown),
            );
            for (partition, fed) in whole.route(&record, &detections, partitions) {
                used.insert(partition);
                let part = &mut parts[partition as usize];
                got.extend(
                    part.observe_fed(&record, &fed, at, Some(&id))
                        .iter()
                        .map(shown),
                );
            }
        }
        for rule in ["000000000002", "000000000005", "000000000006"] {
            assert!(
                expected.iter().any(|hit| hit.contains(rule)),
                "{rule} never fired: {expected:?}"
            );
        }
        assert!(
            used.len() > 1,
            "every key landed in one partition: {used:?}"
        );
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
        // Each window lives in one partition only.
        let open: usize = parts.iter().map(Correlator::open_groups).sum();
        assert_eq!(open, whole.open_groups());
    }

    #[test]
    fn a_partitioned_snapshot_restores_to_the_same_hits() {
        let rules = more_rules();
        let partitions = 3;
        let events = stream();
        let (first, rest) = events.split_at(250);
        let mut whole = rules.correlator();
        for (record, at, id) in first {
            let detections = rules.detect_flat(record);
            whole.observe_flat(record, &detections, *at, Some(id));
        }
        let split = whole
            .partition_snapshot(&whole.snapshot(), partitions)
            .unwrap();
        assert!(split.len() > 1, "{:?}", split.keys());
        let mut parts: Vec<Correlator> = (0..partitions).map(|_| rules.correlator()).collect();
        for (partition, bytes) in &split {
            parts[*partition as usize].restore(bytes).unwrap();
        }
        let (mut expected, mut got) = (Vec::new(), Vec::new());
        for (record, at, id) in rest {
            let detections = rules.detect_flat(record);
            for (partition, fed) in whole.route(record, &detections, partitions) {
                let part = &mut parts[partition as usize];
                got.extend(
                    part.observe_fed(record, &fed, *at, Some(id))
                        .iter()
                        .map(shown),
                );
            }
            expected.extend(
                whole
                    .observe_flat(record, &detections, *at, Some(id))
                    .iter()
                    .map(shown),
            );
        }
        assert!(!expected.is_empty());
        expected.sort();
        got.sort();
        assert_eq!(got, expected);

        assert!(
            whole
                .partition_snapshot(b"[1, 2]", partitions)
                .unwrap_err()
                .contains("unreadable")
        );
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        let key = |value: &str| vec![Some(value.to_owned())];
        // The hash is part of the stored state's layout: it must not change between releases
        // (the values are SHA-256's, computed apart from this code).
        assert_eq!(partition_of("chain", Some(&key("pc1")), 16), 15);
        assert_eq!(partition_of("chain", Some(&key("pc1")), 1000), 327);
        let spread: std::collections::BTreeSet<u32> = (0..64)
            .map(|n| partition_of("chain", Some(&key(&format!("pc{n}"))), 8))
            .collect();
        assert_eq!(spread.len(), 8);
        assert!(partition_of("chain", None, 0) == 0);
        // A missing value and an empty one are different keys.
        let none = vec![None, Some("a".to_owned())];
        let empty = vec![Some(String::new()), Some("a".to_owned())];
        let differ = (1..64)
            .any(|n| partition_of("c", Some(&none), n) != partition_of("c", Some(&empty), n));
        assert!(differ);
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
