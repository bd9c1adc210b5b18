//! Rules partitioned by logsource, and the evaluation of records against them.
//!
//! Every distinct rule logsource (product, category, service) gets its own partition. A record
//! is classified once (shape, product, service, categories), and meets only the partitions
//! whose logsource it belongs to, through a view that applies that logsource's field renames.
//! A rule therefore never fires on a record of another logsource. Inside a partition, Vigil's
//! prefilter ([`crate::gate`]) selects the rules whose necessary literals the record has, and
//! rsigma's condition evaluator decides each of them.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rayon::prelude::*;
use rsigma_parser::{CorrelationRule, FilterRule, SigmaCollection, SigmaRule};
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde_json::Value;

use crate::correlate::{CorrelationRules, Correlator};
use crate::flat::{FlatEntries, FlatIndex, FlatRecord, FlatView, classify_flat};
use crate::mapping::{Mappings, Renames};
use crate::record::{Classified, Logsource, MAX_CATEGORIES, MAX_SERVICES, Record, classify};
use crate::{Rejected, RuleCheck, SigmaError, collect_rule_files, one_line};

/// A rule's logsource, lowercased, as it partitions the rule set.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
pub struct RuleLogsource {
    /// `product`.
    pub product: Option<String>,
    /// `category`.
    pub category: Option<String>,
    /// `service`.
    pub service: Option<String>,
}

impl RuleLogsource {
    fn of(rule: &SigmaRule) -> Self {
        let lower = |value: &Option<String>| value.as_deref().map(str::to_ascii_lowercase);
        Self {
            product: lower(&rule.logsource.product),
            category: lower(&rule.logsource.category),
            service: lower(&rule.logsource.service),
        }
    }
}

/// What Vigil keeps about a loaded rule for reporting its hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RuleInfo {
    /// The rule's `id` (its title when it has none).
    pub id: String,
    /// `title`.
    pub title: String,
    /// `level`, lowercase; `informational` when the rule sets none.
    pub level: Level,
    /// ATT&CK technique ids from the rule's `attack.tNNNN[.NNN]` tags, uppercase.
    pub attack: Vec<String>,
    /// The file the rule came from.
    pub path: PathBuf,
    /// The logsource it applies to.
    pub logsource: RuleLogsource,
}

/// Sigma's rule levels, ordered.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `informational`.
    Informational,
    /// `low`.
    Low,
    /// `medium`.
    Medium,
    /// `high`.
    High,
    /// `critical`.
    Critical,
}

impl Level {
    /// The level as Sigma writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Informational => "informational",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    pub(crate) fn of(level: Option<rsigma_parser::Level>) -> Self {
        match level {
            None | Some(rsigma_parser::Level::Informational) => Self::Informational,
            Some(rsigma_parser::Level::Low) => Self::Low,
            Some(rsigma_parser::Level::Medium) => Self::Medium,
            Some(rsigma_parser::Level::High) => Self::High,
            Some(rsigma_parser::Level::Critical) => Self::Critical,
        }
    }
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "informational" | "info" => Ok(Self::Informational),
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            "critical" => Ok(Self::Critical),
            other => Err(format!(
                "unknown level `{other}` (informational, low, medium, high, critical)"
            )),
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule that fired on one record.
#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    /// The rule.
    pub rule: Arc<RuleInfo>,
    /// The fields and values that matched (empty for keyword rules).
    pub matched: Vec<MatchedField>,
}

/// What hunting shows about a record besides its detections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordMeta {
    /// The record's id in its source (EVTX `EventRecordID`, auditd serial, ...).
    pub record_id: Option<Value>,
    /// When the record was written, as the record says.
    pub timestamp: Option<String>,
    /// The host (Sigma's `Computer`).
    pub computer: Option<String>,
}

impl Mappings {
    /// The logsource a record belongs to (what ingest records on a normalized event).
    pub fn logsource_of(&self, record: &Value) -> Logsource {
        classify(self, record).to_logsource()
    }

    /// The record's own id, timestamp and host, where its shape says.
    pub fn record_meta(&self, record: &Value) -> RecordMeta {
        let classified = classify(self, record);
        let view = Record::new(record, classified.shape, None, false);
        let text = |value: &Value| match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        RecordMeta {
            record_id: view.record_id().cloned(),
            timestamp: view.timestamp().map(text),
            computer: view.lookup("Computer").map(text),
        }
    }

    /// The name of the record's shape (`evtx`, `winlogbeat`, `cloudtrail`, …), `json` when no
    /// known shape fits.
    pub fn shape_name(&self, record: &Value) -> &str {
        classify(self, record)
            .shape
            .map_or("json", |shape| &*shape.name)
    }
}

/// A field and the value in the record that matched it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchedField {
    /// Sigma's field name.
    pub field: String,
    /// The record's value.
    pub value: Value,
}

/// The rules of one logsource. Rules are compiled (and so validated) at load; the prefilter,
/// which costs about half of loading, is built when a record of this logsource first arrives (or
/// by [`RuleSet::compile_all`]), so logsources a deployment never sees cost nothing.
pub(crate) struct Partition {
    pub(crate) logsource: RuleLogsource,
    /// Rule id (or title) -> what to report.
    pub(crate) rules: FxHashMap<String, Arc<RuleInfo>>,
    /// Rules waiting for the evaluator.
    pending: std::sync::Mutex<Option<Pending>>,
    /// Filter rules, applied when the evaluator is built.
    filters: Arc<[FilterRule]>,
    evaluator: std::sync::OnceLock<Evaluator>,
}

/// Partitions with at least this many rules from the cache are compiled on several threads.
const PARALLEL_COMPILE_RULES: usize = 64;

/// A partition's rules before its evaluator is built.
pub(crate) enum Pending {
    /// Compiled at load (which validated them).
    Compiled(Vec<rsigma_eval::CompiledRule>),
    /// Read from the rule cache: validated when the cache was written, by the same rsigma (its
    /// version is part of the cache key), so compiling them waits for the partition's first
    /// record like the prefilter does. Compiling is about a third of a warm load.
    Ir(Vec<rsigma_ir::IrRule>),
}

impl Pending {
    fn compile(self) -> Vec<rsigma_eval::CompiledRule> {
        match self {
            Self::Compiled(rules) => rules,
            Self::Ir(irs) => {
                // The same IR compiled when the cache was written; a rule that no longer
                // compiles cannot occur, and would only be left out.
                let compile = |irs: &[rsigma_ir::IrRule]| -> Vec<rsigma_eval::CompiledRule> {
                    irs.iter()
                        .filter_map(|ir| rsigma_eval::compile_to_compiled(ir).ok())
                        .collect()
                };
                // Whoever needs the partition waits for this, often with the other cores
                // waiting on it too: compile on plain threads, one per core. Not on rayon: a
                // rayon thread waiting for its share could take up a job that needs this same
                // partition, and wait on itself.
                let threads = std::thread::available_parallelism().map_or(1, usize::from);
                if threads < 2 || irs.len() < PARALLEL_COMPILE_RULES {
                    return compile(&irs);
                }
                let chunk = irs.len().div_ceil(threads);
                std::thread::scope(|scope| {
                    let mut chunks = irs.chunks(chunk);
                    let first = chunks.next().unwrap_or_default();
                    let others: Vec<_> = chunks
                        .map(|irs| scope.spawn(move || compile(irs)))
                        .collect();
                    let mut rules = compile(first);
                    for other in others {
                        // A panic inside rsigma's compiler is passed on as it would be inline.
                        match other.join() {
                            Ok(more) => rules.extend(more),
                            Err(panic) => std::panic::resume_unwind(panic),
                        }
                    }
                    rules
                })
            }
        }
    }
}

/// A partition's compiled rules (filters applied) behind Vigil's prefilter ([`crate::gate`]).
/// rsigma's `Engine` and its candidate index are not used for evaluation: the gate selects the
/// rules, and rsigma's condition evaluator decides each ([`decide`]).
struct Evaluator {
    rules: Vec<rsigma_eval::CompiledRule>,
    gate: crate::gate::Gate,
}

/// A rule rsigma matched, with the fields it matched (unsorted, as rsigma gives them).
type Hit<'a> = (&'a rsigma_eval::CompiledRule, Vec<MatchedField>);

impl Evaluator {
    fn evaluate<'a, E: rsigma_eval::Event>(
        &'a self,
        event: &E,
        record: &crate::gate::RecordScan,
    ) -> Vec<Hit<'a>> {
        let mut selections = Vec::new();
        self.gate
            .select(event, record)
            .into_iter()
            .filter_map(|index| self.rules.get(index as usize))
            .filter_map(|rule| Some((rule, decide(rule, event, &mut selections)?)))
            .collect()
    }

    /// Every rule, without the gate, each through rsigma's own `evaluate_rule`: what the gate
    /// and [`decide`] must never change.
    fn evaluate_unfiltered<'a, E: rsigma_eval::Event>(&'a self, event: &E) -> Vec<Hit<'a>> {
        self.rules
            .iter()
            .filter_map(|rule| {
                let result = rsigma_eval::evaluate_rule(rule, event)?;
                Some((rule, rsigma_matched(result)))
            })
            .collect()
    }
}

/// rsigma's verdict on one rule and the fields it matched: what `rsigma_eval::evaluate_rule`
/// gives, for less on a match.
///
/// On a match, `evaluate_rule` runs the rule's condition twice (a yes/no pass, then a pass that
/// records the selections that held), evaluates the items of those selections again to report
/// the fields that matched, and copies the rule's title, id and tags into its result. Here the
/// condition runs once, through rsigma's public `eval_condition` (the pass that records
/// selections), and the matched fields are read off what that pass decided:
/// - a selection that held and is a map of items (`AllOf`) held on every item, so rsigma
///   reports each of its items whose field the record has;
/// - a selection that held and is a list of one-item maps (`AnyOf` of `AllOf`s of one item, the
///   `- Image|endswith: ...` / `- OriginalFileName: ...` idiom) has rsigma report each item
///   whose field the record has and whose matcher (rsigma's) accepts the value;
/// - for any other kind (maps of several items in a list, keywords, array quantifiers),
///   `evaluate_rule` itself reports them.
///
/// `detect_unfiltered` evaluates with `evaluate_rule` alone, and the regression tests hold both
/// to the same detections and matched fields.
fn decide<E: rsigma_eval::Event>(
    rule: &rsigma_eval::CompiledRule,
    event: &E,
    selections: &mut Vec<String>,
) -> Option<Vec<MatchedField>> {
    use rsigma_eval::CompiledDetection;
    for condition in &rule.conditions {
        selections.clear();
        if !rsigma_eval::compiler::eval_condition(condition, &rule.detections, event, selections) {
            continue;
        }
        let mut matched = Vec::new();
        let mut report = |item: &rsigma_eval::CompiledDetectionItem, check: bool| {
            // A keyword item: rsigma reports none.
            let Some(field) = &item.field else {
                return;
            };
            if let Some(value) = event.get_field(field)
                && (!check || item.matcher.matches(&value, event))
            {
                matched.push(MatchedField {
                    field: field.clone(),
                    value: value.to_json(),
                });
            }
        };
        for name in selections.iter() {
            match rule.detections.get(name) {
                Some(CompiledDetection::AllOf(items)) => {
                    items.iter().for_each(|item| report(item, false));
                }
                Some(CompiledDetection::AnyOf(choices))
                    if choices.iter().all(|choice| {
                        matches!(choice, CompiledDetection::AllOf(items) if items.len() == 1)
                    }) =>
                {
                    for choice in choices {
                        if let CompiledDetection::AllOf(items) = choice {
                            items.iter().for_each(|item| report(item, true));
                        }
                    }
                }
                _ => return rsigma_eval::evaluate_rule(rule, event).map(rsigma_matched),
            }
        }
        return Some(matched);
    }
    None
}

/// The fields an rsigma result reports as matched.
fn rsigma_matched(result: rsigma_eval::EvaluationResult) -> Vec<MatchedField> {
    match result.body {
        rsigma_eval::ResultBody::Detection(body) => body
            .matched_fields
            .into_iter()
            .map(|field| MatchedField {
                field: field.field,
                value: field.value,
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl Partition {
    pub(crate) fn new(
        logsource: RuleLogsource,
        rules: FxHashMap<String, Arc<RuleInfo>>,
        pending: Pending,
    ) -> Self {
        Self {
            logsource,
            rules,
            pending: std::sync::Mutex::new(Some(pending)),
            filters: Arc::from(Vec::new()),
            evaluator: std::sync::OnceLock::new(),
        }
    }

    fn evaluator(&self) -> &Evaluator {
        self.evaluator.get_or_init(|| {
            let compiled = self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .map(Pending::compile)
                .unwrap_or_default();
            let rules = if self.filters.is_empty() {
                compiled
            } else {
                // rsigma applies filter rules to an engine's rules.
                let mut engine = rsigma_eval::Engine::new();
                engine.set_bloom_max_bytes(0);
                engine.extend_compiled_rules(compiled);
                for filter in self.filters.iter() {
                    // Validated at load; a filter naming rules of another logsource changes
                    // nothing.
                    let _ = engine.apply_filter(filter);
                }
                engine.rules().to_vec()
            };
            let gate = crate::gate::Gate::build(&rules);
            Evaluator { rules, gate }
        })
    }
}

/// Whether rules pass Vigil's prefilter before rsigma evaluates them.
#[derive(Clone, Copy)]
enum Mode {
    Gated,
    Unfiltered,
}

/// Where a classified record is evaluated: a partition, seen with which renames.
#[derive(Clone)]
struct Target {
    partition: usize,
    renames: Option<Arc<Renames>>,
}

/// Routes are cached per classification. The key holds the addresses of the mapping strings a
/// classification borrows (they live as long as the rule set's `Arc<Mappings>`), so a lookup
/// hashes a few integers and allocates nothing.
type RouteKey = (usize, [usize; MAX_SERVICES], [usize; MAX_CATEGORIES]);

/// All loaded rules, partitioned by logsource and ready to evaluate records.
pub struct RuleSet {
    mappings: Arc<Mappings>,
    partitions: Vec<Partition>,
    routes: RwLock<FxHashMap<RouteKey, Arc<[Target]>>>,
    correlations: CorrelationRules,
    check: RuleCheck,
}

/// How rules are loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Values for `%name%` placeholders of rules using the `expand` modifier (for example
    /// `admin_users: [alice, bob]`). A placeholder without values stays literal and matches
    /// nothing.
    pub placeholders: std::collections::BTreeMap<String, Vec<String>>,
    /// Where to keep compiled rules between runs, keyed by a hash of every rule file's path and
    /// content, rsigma's version and the placeholders; `None` parses every time.
    pub cache_dir: Option<PathBuf>,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("partitions", &self.partitions.len())
            .field("check", &self.check)
            .finish_non_exhaustive()
    }
}

impl RuleSet {
    /// Loads every `.yml`/`.yaml` file under `paths`, in parallel, and compiles the rules into
    /// per-logsource engines. Rules that fail are reported in [`RuleSet::check`]; only a path
    /// that cannot be read at all is an error.
    pub fn load(paths: &[PathBuf], mappings: Arc<Mappings>) -> Result<Self, SigmaError> {
        Self::load_with(paths, mappings, &LoadOptions::default())
    }

    /// [`RuleSet::load`] with options.
    pub fn load_with(
        paths: &[PathBuf],
        mappings: Arc<Mappings>,
        options: &LoadOptions,
    ) -> Result<Self, SigmaError> {
        let mut files = Vec::new();
        for path in paths {
            collect_rule_files(path, &mut files)?;
        }
        if let Some(dir) = &options.cache_dir {
            return crate::cache::load(dir, files, mappings, options);
        }
        let parsed: Vec<ParsedFile> = files.into_par_iter().map(parse_file).collect();
        Self::build(parsed, mappings, options)
    }

    /// Builds a rule set from rule texts given as `(path, text)`, as a control plane holds
    /// them.
    pub fn from_texts(
        texts: Vec<(PathBuf, String)>,
        mappings: Arc<Mappings>,
        options: &LoadOptions,
    ) -> Result<Self, SigmaError> {
        let parsed = texts
            .into_par_iter()
            .map(|(path, text)| parse_text(path, &text))
            .collect();
        Self::build(parsed, mappings, options)
    }

    fn build(
        parsed: Vec<ParsedFile>,
        mappings: Arc<Mappings>,
        options: &LoadOptions,
    ) -> Result<Self, SigmaError> {
        Ok(Self::build_detections(parsed, mappings, options, false)?.0)
    }

    /// Compiles the detection rules into partitions, then finishes with filters and
    /// correlations. With `keep_ir`, also returns what the rule cache stores.
    pub(crate) fn build_detections(
        parsed: Vec<ParsedFile>,
        mappings: Arc<Mappings>,
        options: &LoadOptions,
        keep_ir: bool,
    ) -> Result<(Self, Option<crate::cache::CacheFile>), SigmaError> {
        let pipeline = placeholder_pipeline(&options.placeholders)?;
        let mut check = RuleCheck::default();
        let mut groups: FxHashMap<RuleLogsource, Vec<(PathBuf, SigmaRule)>> = FxHashMap::default();
        let mut extras = Extras::default();
        let mut seen: FxHashMap<String, PathBuf> = FxHashMap::default();
        for file in parsed {
            check.files += 1;
            check.rejected.extend(file.rejected);
            let Some(collection) = file.collection else {
                continue;
            };
            if !collection.correlations.is_empty() || !collection.filters.is_empty() {
                extras.files.push(file.path.clone());
            }
            for rule in extras.absorb(&file.path, collection) {
                // Hits are reported by rule id: a second rule with an id already loaded would
                // fire under the first one's name.
                let id = rule.id.clone().unwrap_or_else(|| rule.title.clone());
                if let Some(first) = seen.get(&id) {
                    check.rejected.push(Rejected {
                        path: file.path.clone(),
                        rule_id: rule.id.clone(),
                        reason: format!(
                            "duplicate rule id `{id}`, first loaded from {}",
                            first.display()
                        ),
                    });
                    continue;
                }
                seen.insert(id, file.path.clone());
                groups
                    .entry(RuleLogsource::of(&rule))
                    .or_default()
                    .push((file.path.clone(), rule));
            }
        }

        let mut groups: Vec<(RuleLogsource, Vec<(PathBuf, SigmaRule)>)> =
            groups.into_iter().collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        // The detection rules correlations name, for the correlation engine.
        for (_, rules) in &groups {
            for (path, rule) in rules {
                if extras.names(rule) {
                    extras.referenced.push(rule.clone());
                    extras.files.push(path.clone());
                }
            }
        }
        let built: Vec<(Partition, Vec<Rejected>, Vec<rsigma_ir::IrRule>)> = groups
            .into_par_iter()
            .map(|(logsource, rules)| build_partition(logsource, rules, pipeline.as_ref(), keep_ir))
            .collect();
        let mut partitions = Vec::with_capacity(built.len());
        let mut cached = Vec::new();
        for (partition, rejected, ir) in built {
            check.detection_rules += partition.rules.len();
            check.loaded += partition.rules.len();
            check.rejected.extend(rejected);
            if partition.rules.is_empty() {
                continue;
            }
            if keep_ir {
                cached.push(crate::cache::CachedPartition::new(
                    &partition.logsource,
                    &partition.rules,
                    &ir,
                )?);
            }
            partitions.push(partition);
        }
        extras.files.sort();
        extras.files.dedup();
        let cache = keep_ir.then(|| crate::cache::CacheFile {
            format: crate::cache::FORMAT,
            partitions: cached,
            check: check.clone(),
            extra_files: extras.files.clone(),
        });
        Ok((Self::finish(partitions, check, extras, mappings), cache))
    }

    /// Applies filters and builds the correlation template over compiled partitions.
    pub(crate) fn finish(
        mut partitions: Vec<Partition>,
        mut check: RuleCheck,
        extras: Extras,
        mappings: Arc<Mappings>,
    ) -> Self {
        let mut valid_filters = Vec::new();
        for (path, filter) in extras.filters {
            let failure =
                filter.detection.named.values().find_map(|detection| {
                    rsigma_eval::compiler::compile_detection(detection).err()
                });
            match failure {
                None => {
                    check.filter_rules += 1;
                    check.loaded += 1;
                    valid_filters.push(filter);
                }
                Some(err) => check.rejected.push(Rejected {
                    path,
                    rule_id: filter.id.clone(),
                    reason: one_line(&err.to_string()),
                }),
            }
        }
        let valid_filters: Arc<[FilterRule]> = valid_filters.into();
        for partition in &mut partitions {
            partition.filters = Arc::clone(&valid_filters);
        }
        let correlations = CorrelationRules {
            correlations: extras.correlations,
            referenced: extras.referenced,
        };
        let (correlator, failed) = Correlator::build(&correlations, Arc::clone(&mappings));
        check.correlation_rules += correlator.len();
        check.loaded += correlator.len();
        check
            .rejected
            .extend(failed.into_iter().map(|(path, rule_id, reason)| Rejected {
                path,
                rule_id,
                reason,
            }));
        check.rejected.sort_by(|a, b| a.path.cmp(&b.path));
        Self {
            mappings,
            partitions,
            routes: RwLock::new(FxHashMap::default()),
            correlations,
            check,
        }
    }

    /// Builds every logsource's engine now (in parallel) instead of when its first record
    /// arrives: for services that want their first events fast, and for benchmarks.
    pub fn compile_all(&self) {
        self.partitions.par_iter().for_each(|partition| {
            partition.evaluator();
        });
    }

    /// A fresh correlator for one stream (one per tenant in the detect service).
    pub fn correlator(&self) -> Correlator {
        Correlator::build(&self.correlations, Arc::clone(&self.mappings)).0
    }

    /// What loaded and what was rejected, and why.
    pub fn check(&self) -> &RuleCheck {
        &self.check
    }

    /// Every loaded detection rule.
    pub fn rules(&self) -> impl Iterator<Item = &Arc<RuleInfo>> {
        self.partitions
            .iter()
            .flat_map(|partition| partition.rules.values())
    }

    /// The distinct rule logsources, each with its number of rules.
    pub fn partitions(&self) -> impl Iterator<Item = (&RuleLogsource, usize)> {
        self.partitions
            .iter()
            .map(|partition| (&partition.logsource, partition.rules.len()))
    }

    /// The mappings records are classified with.
    pub fn mappings(&self) -> &Mappings {
        &self.mappings
    }

    /// The logsource a record belongs to.
    pub fn logsource_of(&self, record: &Value) -> Logsource {
        self.mappings.logsource_of(record)
    }

    /// The record's own id, timestamp and host, where its shape says.
    pub fn record_meta(&self, record: &Value) -> RecordMeta {
        self.mappings.record_meta(record)
    }

    /// Evaluates one record against the rules of its own logsource.
    pub fn detect(&self, record: &Value) -> Vec<Detection> {
        let classified = classify(&self.mappings, record);
        let targets = self.route(&classified);
        if targets.is_empty() {
            return Vec::new();
        }
        let base = Record::new(record, classified.shape, None, classified.loose);
        let index = base.build_index();
        let base = base.with_index(&index);
        self.evaluate_targets(&targets, Mode::Gated, |renames| base.with_renames(renames))
    }

    /// [`RuleSet::detect`] with every rule of the record's logsource evaluated, without the
    /// prefilter. Slow; for tests that hold the prefilter to giving the same detections.
    #[doc(hidden)]
    pub fn detect_unfiltered(&self, record: &Value) -> Vec<Detection> {
        let classified = classify(&self.mappings, record);
        let targets = self.route(&classified);
        let base = Record::new(record, classified.shape, None, classified.loose);
        let index = base.build_index();
        let base = base.with_index(&index);
        self.evaluate_targets(&targets, Mode::Unfiltered, |renames| {
            base.with_renames(renames)
        })
    }

    /// Evaluates a record whose fields are flat dotted keys (Vigil's normalized event) against
    /// the rules of its own logsource: the same shapes, logsources and rules as [`RuleSet::detect`].
    pub fn detect_flat(&self, record: &impl FlatRecord) -> Vec<Detection> {
        let entries = FlatEntries::new(record);
        let classified = classify_flat(&self.mappings, &entries);
        let targets = self.route(&classified);
        if targets.is_empty() {
            return Vec::new();
        }
        let index = FlatIndex::new(&entries, classified.shape);
        let base = FlatView::new(&entries, &index, &classified);
        self.evaluate_targets(&targets, Mode::Gated, |renames| base.with_renames(renames))
    }

    /// The logsource a flat record belongs to.
    pub fn logsource_of_flat(&self, record: &impl FlatRecord) -> Logsource {
        classify_flat(&self.mappings, &FlatEntries::new(record)).to_logsource()
    }

    fn evaluate_targets<'a, E: rsigma_eval::Event>(
        &'a self,
        targets: &'a [Target],
        mode: Mode,
        view: impl Fn(Option<&'a Renames>) -> E,
    ) -> Vec<Detection> {
        let mut detections = Vec::new();
        let record = crate::gate::RecordScan::new();
        for target in targets {
            let partition = &self.partitions[target.partition];
            let view = view(target.renames.as_deref());
            let evaluator = partition.evaluator();
            let results = match mode {
                Mode::Gated => evaluator.evaluate(&view, &record),
                Mode::Unfiltered => evaluator.evaluate_unfiltered(&view),
            };
            for (compiled, mut matched) in results {
                let key = compiled.id.as_deref().unwrap_or(compiled.title.as_str());
                let Some(rule) = partition.rules.get(key) else {
                    continue;
                };
                // rsigma reports selections in hash order; sorted, the same record gives the
                // same output on every run.
                matched.sort_by(|a, b| {
                    a.field
                        .cmp(&b.field)
                        .then_with(|| value_order(&a.value, &b.value))
                });
                matched.dedup();
                detections.push(Detection {
                    rule: Arc::clone(rule),
                    matched,
                });
            }
        }
        // In rule id order, so the same record gives the same output on every run.
        detections.sort_by(|a, b| a.rule.id.cmp(&b.rule.id));
        detections
    }

    fn route(&self, classified: &Classified<'_>) -> Arc<[Target]> {
        let address = |text: Option<&str>| text.map_or(0, |text| text.as_ptr() as usize);
        let mut categories = [0usize; MAX_CATEGORIES];
        for (slot, category) in categories.iter_mut().zip(classified.categories.iter()) {
            *slot = category.map_or(0, |category| std::ptr::from_ref(category) as usize);
        }
        let mut services = [0usize; MAX_SERVICES];
        for (slot, service) in services.iter_mut().zip(classified.services.iter()) {
            *slot = address(*service);
        }
        let key: RouteKey = (address(classified.product), services, categories);
        if let Some(targets) = self
            .routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Arc::clone(targets);
        }
        let targets: Arc<[Target]> = self.compute_route(classified).into();
        self.routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, Arc::clone(&targets));
        targets
    }

    fn compute_route(&self, classified: &Classified<'_>) -> Vec<Target> {
        let mut targets = Vec::new();
        for (index, partition) in self.partitions.iter().enumerate() {
            let wanted = &partition.logsource;
            let same = |want: &Option<String>, have: Option<&str>| {
                want.as_deref()
                    .is_none_or(|want| have.is_some_and(|have| have.eq_ignore_ascii_case(want)))
            };
            let service_matches = wanted.service.as_deref().is_none_or(|want| {
                classified
                    .services()
                    .any(|have| have.eq_ignore_ascii_case(want))
            });
            if !same(&wanted.product, classified.product) || !service_matches {
                continue;
            }
            match &wanted.category {
                None => targets.push(Target {
                    partition: index,
                    renames: None,
                }),
                Some(category) => {
                    if let Some(found) = classified
                        .categories()
                        .find(|have| have.category.eq_ignore_ascii_case(category))
                    {
                        targets.push(Target {
                            partition: index,
                            renames: found.renames.clone(),
                        });
                    }
                }
            }
        }
        targets
    }
}

/// A total order on matched values that allocates nothing for strings, the usual case: strings
/// by their text, anything else by its JSON.
fn value_order(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::String(_), _) => std::cmp::Ordering::Less,
        (_, Value::String(_)) => std::cmp::Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Filters and correlations, with the rules correlations name and the files they all come
/// from (parsed again on a warm start from the rule cache).
#[derive(Default)]
pub(crate) struct Extras {
    pub(crate) filters: Vec<(PathBuf, FilterRule)>,
    pub(crate) correlations: Vec<(PathBuf, CorrelationRule)>,
    pub(crate) referenced: Vec<SigmaRule>,
    pub(crate) files: Vec<PathBuf>,
}

impl Extras {
    /// Takes a file's correlations and filters; returns its detection rules.
    pub(crate) fn absorb(
        &mut self,
        path: &std::path::Path,
        collection: SigmaCollection,
    ) -> Vec<SigmaRule> {
        self.correlations.extend(
            collection
                .correlations
                .into_iter()
                .map(|correlation| (path.to_owned(), correlation)),
        );
        self.filters.extend(
            collection
                .filters
                .into_iter()
                .map(|filter| (path.to_owned(), filter)),
        );
        collection.rules
    }

    /// Whether a correlation names `rule` (by id or name).
    pub(crate) fn names(&self, rule: &SigmaRule) -> bool {
        self.correlations.iter().any(|(_, correlation)| {
            correlation.rules.iter().any(|wanted| {
                rule.id.as_deref() == Some(wanted.as_str())
                    || rule.name.as_deref() == Some(wanted.as_str())
            })
        })
    }
}

pub(crate) struct ParsedFile {
    pub(crate) path: PathBuf,
    pub(crate) collection: Option<SigmaCollection>,
    pub(crate) rejected: Vec<Rejected>,
}

pub(crate) fn parse_file(path: PathBuf) -> ParsedFile {
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_text(path, &text),
        Err(err) => ParsedFile::unreadable(path, format!("cannot read: {err}")),
    }
}

impl ParsedFile {
    /// A file that could not be read or parsed at all.
    pub(crate) fn unreadable(path: PathBuf, reason: String) -> Self {
        Self {
            rejected: vec![Rejected {
                path: path.clone(),
                rule_id: None,
                reason,
            }],
            path,
            collection: None,
        }
    }
}

pub(crate) fn parse_text(path: PathBuf, text: &str) -> ParsedFile {
    match rsigma_parser::parse_sigma_yaml(text) {
        Ok(collection) => {
            let rejected = collection
                .errors
                .iter()
                .map(|error| Rejected {
                    path: path.clone(),
                    rule_id: None,
                    reason: one_line(error),
                })
                .collect();
            ParsedFile {
                path,
                collection: Some(collection),
                rejected,
            }
        }
        Err(err) => ParsedFile::unreadable(path, one_line(&err.to_string())),
    }
}

/// A rule in rsigma's IR (what its compiler and its cache take).
fn lower(rule: &SigmaRule) -> Result<rsigma_ir::IrRule, rsigma_eval::EvalError> {
    Ok(rsigma_ir::lower_rule(
        rule,
        &rsigma_ir::LowerOptions::default(),
    )?)
}

/// A pipeline filling `%name%` placeholders, or `None` when none are configured.
fn placeholder_pipeline(
    placeholders: &std::collections::BTreeMap<String, Vec<String>>,
) -> Result<Option<rsigma_eval::Pipeline>, SigmaError> {
    if placeholders.is_empty() {
        return Ok(None);
    }
    let document = serde_json::json!({
        "name": "vigil-placeholders",
        "vars": placeholders,
        "transformations": [{"type": "value_placeholders"}],
    });
    // JSON is YAML: rsigma reads its pipeline format from the same text.
    rsigma_eval::parse_pipeline(&document.to_string())
        .map(Some)
        .map_err(|err| SigmaError::Placeholders(one_line(&err.to_string())))
}

/// Longest string value a rule may hold. rsigma 0.23 compiles a long self-similar value
/// (`AAAA...`) in quadratic time (20 KB: 1.4 s, 100 KB: 34 s), so one uploaded rule could stall
/// every rule load; SigmaHQ's longest value is under 800 bytes.
pub const MAX_VALUE_BYTES: usize = 4096;

/// The longest string value in a rule's detection, with its field.
fn longest_value(rule: &SigmaRule) -> Option<(usize, String)> {
    fn values(
        values: &[rsigma_parser::SigmaValue],
        field: &str,
        longest: &mut Option<(usize, String)>,
    ) {
        for value in values {
            if let rsigma_parser::SigmaValue::String(text) = value {
                let length = text.original.len();
                if longest.as_ref().is_none_or(|(have, _)| length > *have) {
                    *longest = Some((length, field.to_owned()));
                }
            }
        }
    }
    fn walk(detection: &rsigma_parser::Detection, longest: &mut Option<(usize, String)>) {
        use rsigma_parser::Detection;
        match detection {
            Detection::AllOf(items) => {
                for item in items {
                    let field = item.field.name.as_deref().unwrap_or("keywords");
                    values(&item.values, field, longest);
                }
            }
            Detection::Keywords(items) => values(items, "keywords", longest),
            Detection::AnyOf(subs) | Detection::And(subs) => {
                for sub in subs {
                    walk(sub, longest);
                }
            }
            Detection::ArrayMatch { body, .. } => walk(body, longest),
            Detection::Conditional { named, .. } => {
                for sub in named.values() {
                    walk(sub, longest);
                }
            }
        }
    }
    let mut longest = None;
    for detection in rule.detection.named.values() {
        walk(detection, &mut longest);
    }
    longest
}

fn build_partition(
    logsource: RuleLogsource,
    rules: Vec<(PathBuf, SigmaRule)>,
    pipeline: Option<&rsigma_eval::Pipeline>,
    keep_ir: bool,
) -> (Partition, Vec<Rejected>, Vec<rsigma_ir::IrRule>) {
    let mut rejected = Vec::new();
    let rules: Vec<(PathBuf, SigmaRule)> = rules
        .into_iter()
        .filter(|(path, rule)| match longest_value(rule) {
            Some((length, field)) if length > MAX_VALUE_BYTES => {
                rejected.push(Rejected {
                    path: path.clone(),
                    rule_id: rule.id.clone(),
                    reason: format!(
                        "value of field `{field}` is {length} bytes; Vigil accepts at most {MAX_VALUE_BYTES}"
                    ),
                });
                false
            }
            _ => true,
        })
        .collect();
    let mut failed = vec![false; rules.len()];
    let mut compiled = Vec::with_capacity(rules.len());
    let mut irs = Vec::new();
    for ((path, rule), failed) in rules.iter().zip(failed.iter_mut()) {
        let lowered = match pipeline {
            Some(pipeline) => {
                let mut transformed = rule.clone();
                rsigma_eval::apply_pipelines(std::slice::from_ref(pipeline), &mut transformed)
                    .and_then(|()| lower(&transformed))
            }
            None => lower(rule),
        };
        let result = lowered.and_then(|ir| {
            let compiled = rsigma_eval::compile_to_compiled(&ir)?;
            if keep_ir {
                irs.push(ir);
            }
            Ok(compiled)
        });
        match result {
            Ok(rule) => compiled.push(rule),
            Err(err) => {
                *failed = true;
                rejected.push(Rejected {
                    path: path.clone(),
                    rule_id: rule.id.clone(),
                    reason: one_line(&err.to_string()),
                });
            }
        }
    }
    let mut infos = FxHashMap::default();
    for ((path, rule), failed) in rules.iter().zip(failed) {
        if failed {
            continue;
        }
        let id = rule.id.clone().unwrap_or_else(|| rule.title.clone());
        let attack = rule
            .tags
            .iter()
            .filter_map(|tag| attack_technique(tag))
            .collect();
        infos.entry(id.clone()).or_insert_with(|| {
            Arc::new(RuleInfo {
                id,
                title: rule.title.clone(),
                level: Level::of(rule.level),
                attack,
                path: path.clone(),
                logsource: logsource.clone(),
            })
        });
    }
    (
        Partition::new(logsource, infos, Pending::Compiled(compiled)),
        rejected,
        irs,
    )
}

/// `attack.t1059.001` -> `T1059.001`; other tags -> `None`.
pub(crate) fn attack_technique(tag: &str) -> Option<String> {
    let id = tag.strip_prefix("attack.")?;
    let digits = id.strip_prefix('t').or_else(|| id.strip_prefix('T'))?;
    let (main, sub) = match digits.split_once('.') {
        Some((main, sub)) => (main, Some(sub)),
        None => (digits, None),
    };
    let numeric = |part: &str| part.len() == 3 || part.len() == 4;
    if main.len() != 4 || !main.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match sub {
        Some(sub) if numeric(sub) && sub.bytes().all(|b| b.is_ascii_digit()) => {
            Some(format!("T{main}.{sub}"))
        }
        Some(_) => None,
        None => Some(format!("T{main}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule(title: &str, logsource: &str, detection: &str) -> (PathBuf, String) {
        (
            PathBuf::from(format!("{title}.yml")),
            format!(
                "title: {title}\nid: {title}\nlogsource:\n{logsource}\ndetection:\n{detection}\nlevel: high\ntags:\n  - attack.execution\n  - attack.t1059.001\n"
            ),
        )
    }

    /// [`decide`] gives rsigma's verdict and matched fields on every kind of selection: maps,
    /// lists of one-item maps where several items hold, lists of larger maps and keywords (which
    /// fall back to `evaluate_rule`), `exists`, `null`, negations over partly held selections,
    /// and selectors.
    #[test]
    fn decide_matches_evaluate_rule() {
        let detections = [
            "  sel:\n    Image|endswith: '.exe'\n    User|exists: true\n    Gone|exists: false\n    Missing: null\n  condition: sel",
            "  sel:\n    - Image|endswith: '.exe'\n    - OriginalFileName: 'evil.exe'\n    - Gone: x\n  condition: sel",
            "  sel:\n    - Image|endswith: '.exe'\n      User: bob\n    - OriginalFileName: 'evil.exe'\n  condition: sel",
            "  sel:\n    - evil\n  other:\n    User: bob\n  condition: sel and other",
            "  a:\n    User: bob\n  b:\n    Image: nope\n  c:\n    OriginalFileName: evil.exe\n  condition: c and not (a and b)",
            "  sel_a:\n    User: bob\n  sel_b:\n    OriginalFileName|contains: evil\n  sel_c:\n    Image: nope\n  condition: 1 of sel_*",
            "  sel_a:\n    User: bob\n  sel_b:\n    OriginalFileName|contains: evil\n  condition: all of sel_*",
            "  sel:\n    Image|endswith: '.exe'\n  filter:\n    User: bob\n  condition: sel and not filter",
        ];
        let event = json!({
            "Image": "C:\\evil.exe",
            "OriginalFileName": "EVIL.EXE",
            "User": "bob",
            "Gone": null,
            "CommandLine": "evil things",
        });
        let view = rsigma_eval::JsonEvent::borrow(&event);
        let sorted = |mut fields: Vec<MatchedField>| {
            fields.sort_by(|a, b| {
                (&a.field, a.value.to_string()).cmp(&(&b.field, b.value.to_string()))
            });
            fields
        };
        let mut matches = 0;
        for detection in detections {
            let yaml =
                format!("title: t\nlogsource:\n  product: windows\ndetection:\n{detection}\n");
            let collection = rsigma_parser::parse_sigma_yaml(&yaml).unwrap();
            let compiled = rsigma_eval::compile_rule(&collection.rules[0]).unwrap();
            let expected = rsigma_eval::evaluate_rule(&compiled, &view).map(rsigma_matched);
            matches += usize::from(expected.is_some());
            let got = decide(&compiled, &view, &mut Vec::new());
            assert_eq!(got.map(sorted), expected.map(sorted), "{detection}");
        }
        assert_eq!(matches, 7);
    }

    fn rules() -> RuleSet {
        RuleSet::from_texts(
            vec![
                rule(
                    "proc",
                    "  product: windows\n  category: process_creation",
                    "  sel:\n    Image|endswith: '\\evil.exe'\n  condition: sel",
                ),
                rule(
                    "security-4688",
                    "  product: windows\n  service: security",
                    "  sel:\n    EventID: 4688\n  condition: sel",
                ),
                rule(
                    "system-4688",
                    "  product: windows\n  service: system",
                    "  sel:\n    EventID: 4688\n  condition: sel",
                ),
                rule(
                    "net",
                    "  product: windows\n  category: network_connection",
                    "  sel:\n    Image|endswith: '\\evil.exe'\n  condition: sel",
                ),
            ],
            Arc::new(Mappings::builtin().unwrap()),
            &LoadOptions::default(),
        )
        .unwrap()
    }

    fn fired(rules: &RuleSet, record: &Value) -> Vec<String> {
        let mut ids: Vec<String> = rules
            .detect(record)
            .into_iter()
            .map(|detection| detection.rule.id.clone())
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn rules_stay_inside_their_logsource() {
        let rules = rules();
        assert_eq!(rules.check().rejected, []);
        let sysmon = |id: u32| {
            json!({"Event": {"System": {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": id},
                              "EventData": {"Image": "C:\\evil.exe"}}})
        };
        assert_eq!(fired(&rules, &sysmon(1)), ["proc"]);
        // A Sysmon network event has an Image field too: only the network rule fires.
        assert_eq!(fired(&rules, &sysmon(3)), ["net"]);
        assert!(fired(&rules, &sysmon(11)).is_empty());

        let security = json!({"Event": {"System": {"Channel": "Security", "EventID": 4688},
                                         "EventData": {"NewProcessName": "C:\\evil.exe"}}});
        assert_eq!(fired(&rules, &security), ["proc", "security-4688"]);
        // The same EventID on the System log is not a Security event.
        let system = json!({"Event": {"System": {"Channel": "System", "EventID": 4688},
                                       "EventData": {"NewProcessName": "C:\\evil.exe"}}});
        assert_eq!(fired(&rules, &system), ["system-4688"]);
        // A record of no known shape meets no rule with a logsource.
        assert!(fired(&rules, &json!({"Image": "C:\\evil.exe", "EventID": 4688})).is_empty());
    }

    #[test]
    fn the_same_detection_from_every_windows_shape() {
        let rules = rules();
        let evtx = json!({"Event": {"System": {"Channel": "Microsoft-Windows-Sysmon/Operational",
                                                "EventID": 1, "Computer": "pc1"},
                                     "EventData": {"Image": "C:\\evil.exe"}}});
        let winlogbeat = json!({"@timestamp": "2026-01-01T00:00:00Z",
                                "winlog": {"channel": "Microsoft-Windows-Sysmon/Operational",
                                           "event_id": 1, "computer_name": "pc1",
                                           "event_data": {"Image": "C:\\evil.exe"}}});
        let flat = json!({"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1,
                          "Hostname": "pc1", "Image": "C:\\evil.exe"});
        let flattened_ecs = json!({"winlog.channel": "Microsoft-Windows-Sysmon/Operational",
                                   "winlog.event_id": "1",
                                   "winlog.event_data": {"Image": "C:\\evil.exe"}});
        for record in [&evtx, &winlogbeat, &flat, &flattened_ecs] {
            assert_eq!(fired(&rules, record), ["proc"], "{record}");
        }
    }

    #[test]
    fn detections_carry_rule_facts() {
        let rules = rules();
        let record = json!({"Event": {"System": {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1},
                                       "EventData": {"Image": "C:\\evil.exe"}}});
        let detection = rules.detect(&record).remove(0);
        assert_eq!(detection.rule.level, Level::High);
        assert_eq!(detection.rule.attack, ["T1059.001"]);
        assert_eq!(detection.rule.path, PathBuf::from("proc.yml"));
        assert_eq!(detection.matched[0].field, "Image");
    }

    #[test]
    fn keywords_search_event_data_not_the_system_block() {
        let rules = RuleSet::from_texts(
            vec![rule(
                "kw",
                "  product: windows\n  service: security",
                "  keywords:\n    - 'workstation7'\n  condition: keywords",
            )],
            Arc::new(Mappings::builtin().unwrap()),
            &LoadOptions::default(),
        )
        .unwrap();
        let in_system = json!({"Event": {"System": {"Channel": "Security", "EventID": 4624,
                                                     "Computer": "workstation7"},
                                          "EventData": {"TargetUserName": "bob"}}});
        assert!(fired(&rules, &in_system).is_empty());
        let in_data = json!({"Event": {"System": {"Channel": "Security", "EventID": 4624},
                                        "EventData": {"WorkstationName": "WORKSTATION7"}}});
        assert_eq!(fired(&rules, &in_data), ["kw"]);
    }

    #[test]
    fn syslog_lines_route_by_program() {
        let rules = RuleSet::from_texts(
            vec![
                rule(
                    "sshd-kw",
                    "  product: linux\n  service: sshd",
                    "  keywords:\n    - 'Invalid user'\n  condition: keywords",
                ),
                rule(
                    "auth-kw",
                    "  product: linux\n  service: auth",
                    "  keywords:\n    - 'Invalid user'\n  condition: keywords",
                ),
                rule(
                    "sudo-kw",
                    "  product: linux\n  service: sudo",
                    "  keywords:\n    - 'Invalid user'\n  condition: keywords",
                ),
                rule(
                    "any-linux",
                    "  product: linux",
                    "  keywords:\n    - 'Invalid user'\n  condition: keywords",
                ),
                rule(
                    "windows-kw",
                    "  product: windows\n  service: security",
                    "  keywords:\n    - 'Invalid user'\n  condition: keywords",
                ),
            ],
            Arc::new(Mappings::builtin().unwrap()),
            &LoadOptions::default(),
        )
        .unwrap();
        let line = crate::source::syslog_record(
            "Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186",
        );
        let logsource = rules.logsource_of(&line);
        assert_eq!(logsource.product.as_deref(), Some("linux"));
        assert_eq!(logsource.services, ["sshd", "auth", "syslog"]);
        assert_eq!(fired(&rules, &line), ["any-linux", "auth-kw", "sshd-kw"]);

        let pam = crate::source::syslog_record(
            "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: Invalid user x",
        );
        assert_eq!(fired(&rules, &pam), ["any-linux", "auth-kw", "sshd-kw"]);
        let kernel = crate::source::syslog_record("Jun 14 15:16:01 combo kernel: Invalid user");
        assert_eq!(rules.logsource_of(&kernel).services, ["syslog"]);
        assert_eq!(fired(&rules, &kernel), ["any-linux"]);
    }

    #[test]
    fn filter_rules_narrow_the_rules_they_name() {
        let filter = (
            PathBuf::from("filter.yml"),
            "title: Not on build hosts\nlogsource:\n  product: windows\n  category: process_creation\nfilter:\n  rules:\n    - proc\n  selection:\n    Computer: build01\n  condition: not selection\n".to_owned(),
        );
        let rules = RuleSet::from_texts(
            vec![
                rule(
                    "proc",
                    "  product: windows\n  category: process_creation",
                    "  sel:\n    Image|endswith: '\\evil.exe'\n  condition: sel",
                ),
                filter,
            ],
            Arc::new(Mappings::builtin().unwrap()),
            &LoadOptions::default(),
        )
        .unwrap();
        assert_eq!(rules.check().filter_rules, 1, "{:?}", rules.check());
        let on = |computer: &str| {
            json!({"Event": {"System": {"Channel": "Microsoft-Windows-Sysmon/Operational",
                                         "EventID": 1, "Computer": computer},
                              "EventData": {"Image": "C:\\evil.exe"}}})
        };
        assert_eq!(fired(&rules, &on("pc1")), ["proc"]);
        assert!(fired(&rules, &on("build01")).is_empty());
    }

    #[test]
    fn a_second_rule_with_a_loaded_id_is_rejected() {
        let first = rule(
            "same",
            "  product: windows\n  category: process_creation",
            "  sel:\n    Image|endswith: '\\a.exe'\n  condition: sel",
        );
        let mut second = rule(
            "same",
            "  product: windows\n  service: security",
            "  sel:\n    EventID: 1\n  condition: sel",
        );
        second.0 = PathBuf::from("copy.yml");
        let rules = RuleSet::from_texts(
            vec![first, second],
            Arc::new(Mappings::builtin().unwrap()),
            &LoadOptions::default(),
        )
        .unwrap();
        assert_eq!(rules.check().loaded, 1);
        let rejected = &rules.check().rejected[0];
        assert_eq!(rejected.path, PathBuf::from("copy.yml"));
        assert!(
            rejected
                .reason
                .contains("duplicate rule id `same`, first loaded from same.yml"),
            "{rejected:?}"
        );
    }

    #[test]
    fn attack_tags_become_technique_ids() {
        assert_eq!(attack_technique("attack.t1059").as_deref(), Some("T1059"));
        assert_eq!(
            attack_technique("attack.t1059.001").as_deref(),
            Some("T1059.001")
        );
        assert_eq!(attack_technique("attack.execution"), None);
        assert_eq!(attack_technique("attack.g0016"), None);
        assert_eq!(attack_technique("attack.t10"), None);
        assert_eq!(attack_technique("car.2016-04-005"), None);
    }
}
