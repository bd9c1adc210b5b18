//! One batch of a tenant's events against its effective content: Sigma detections (global and
//! own rules, with the tenant's overrides), correlations in event time, and threat-intel
//! matches, turned into alerts with stable ids.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use vigil_runtime::EventFields;
use vigil_schema::{
    Alert, AlertId, AlertSource, AttackTechnique, CorrelationBatch, CorrelationEvent,
    CorrelationFeed, Event, EventId, FieldValue, IntelMatch, Level, MatchedField, RuleScope,
    TenantId,
};
use vigil_sigma::{CorrelationHit, Correlator, Detection, Fed, RuleInfo};

use crate::content::{Content, Override, TenantContent};
use vigil_intel::{IndicatorKind, IndicatorMeta, IntelSet};

/// Batch ids remembered as applied to the correlation state, so a batch redelivered after its
/// state was saved is not counted twice.
const APPLIED_BATCHES: usize = 256;

/// How far ahead of this process's clock an event's time may be and still count in correlation
/// windows.
const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// One tenant's correlation state in one partition; the first stage keeps one per tenant, never
/// fed, to route events by.
#[derive(Debug)]
pub struct TenantState {
    /// Correlations of the global rules.
    pub global: Correlator,
    /// Correlations of the tenant's own rules.
    pub own: Option<Correlator>,
    /// The latest event time seen, Unix seconds.
    pub watermark: i64,
    /// Batches already counted.
    pub applied: VecDeque<String>,
    /// The content generation the correlators were built from.
    pub generation: u64,
    /// The stored state's version this state matches (`None`: nothing stored).
    pub stored_version: Option<i64>,
    /// Whether the state in memory is the stored one (false after a failed save or
    /// publication: it is read again before the next batch).
    pub synced: bool,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    watermark: i64,
    applied: VecDeque<String>,
    global: serde_json::Value,
    #[serde(default)]
    own: Option<serde_json::Value>,
}

impl TenantState {
    /// Fresh state for the content's correlations.
    pub fn new(content: &Content, tenant: Option<&TenantContent>) -> Self {
        Self {
            global: content.global.rules.correlator(),
            own: tenant
                .and_then(|t| t.rules.as_ref())
                .map(|rules| rules.correlator()),
            watermark: i64::MIN,
            applied: VecDeque::new(),
            generation: content.generation,
            stored_version: None,
            synced: false,
        }
    }

    /// Whether the tenant has any correlation rule.
    pub fn correlates(&self) -> bool {
        !self.global.is_empty() || self.own.as_ref().is_some_and(|own| !own.is_empty())
    }

    /// Rebuilds the correlators for new content, keeping the windows of correlations that
    /// still exist.
    pub fn follow(&mut self, content: &Content, tenant: Option<&TenantContent>) {
        if self.generation == content.generation {
            return;
        }
        let snapshot = self.snapshot();
        let (stored_version, synced) = (self.stored_version, self.synced);
        *self = Self::new(content, tenant);
        let _ = self.restore(&snapshot);
        self.stored_version = stored_version;
        self.synced = synced;
    }

    /// The state as bytes for the store.
    pub fn snapshot(&self) -> Vec<u8> {
        let parse = |bytes: Vec<u8>| serde_json::from_slice(&bytes).unwrap_or_default();
        let snapshot = Snapshot {
            watermark: self.watermark,
            applied: self.applied.clone(),
            global: parse(self.global.snapshot()),
            own: self.own.as_ref().map(|own| parse(own.snapshot())),
        };
        serde_json::to_vec(&snapshot).unwrap_or_default()
    }

    /// Restores state saved by [`TenantState::snapshot`].
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let snapshot: Snapshot = serde_json::from_slice(bytes)
            .map_err(|err| format!("unreadable detection state: {err}"))?;
        let bytes = |value: &serde_json::Value| serde_json::to_vec(value).unwrap_or_default();
        // Each part may fail alone (a correlation removed since): what restores, restores.
        let mut result = self.global.restore(&bytes(&snapshot.global));
        if let (Some(own), Some(saved)) = (self.own.as_mut(), snapshot.own.as_ref()) {
            result = result.and(own.restore(&bytes(saved)));
        }
        self.watermark = snapshot.watermark;
        self.applied = snapshot.applied;
        result
    }

    /// Takes `partition`'s share (of `partitions`) of a state saved whole, before correlation
    /// state was partitioned: its windows, and the watermark. Batch ids are not kept (they were
    /// event batches').
    pub fn restore_partition(
        &mut self,
        bytes: &[u8],
        partition: u32,
        partitions: u32,
    ) -> Result<(), String> {
        let snapshot: Snapshot = serde_json::from_slice(bytes)
            .map_err(|err| format!("unreadable detection state: {err}"))?;
        let bytes = |value: &serde_json::Value| serde_json::to_vec(value).unwrap_or_default();
        let share = |correlator: &mut Correlator, saved: &serde_json::Value| {
            let mut parts = correlator.partition_snapshot(&bytes(saved), partitions)?;
            match parts.remove(&partition) {
                Some(part) => correlator.restore(&part),
                None => Ok(()),
            }
        };
        let mut result = share(&mut self.global, &snapshot.global);
        if let (Some(own), Some(saved)) = (self.own.as_mut(), snapshot.own.as_ref()) {
            result = result.and(share(own, saved));
        }
        self.watermark = snapshot.watermark;
        result
    }
}

/// What a batch of events produced.
#[derive(Debug, Default)]
pub struct BatchResult {
    /// Alerts, in event order.
    pub alerts: Vec<Alert>,
    /// The events that feed correlations, one batch per partition of the tenant's correlation
    /// state, in partition order.
    pub correlate: Vec<CorrelationBatch>,
    /// Hits suppressed by the tenant's overrides.
    pub suppressed: u64,
}

/// What one event produced, computed in parallel.
#[derive(Default)]
struct EventOutcome {
    /// Its alerts, Sigma's before intel's.
    alerts: Vec<Alert>,
    /// Hits suppressed by the tenant's overrides.
    suppressed: u64,
    /// The event with what it feeds, per partition, in partition order.
    feeds: Vec<(u32, CorrelationEvent)>,
}

struct IntelHit {
    meta: IndicatorMeta,
    field: String,
    value: String,
}

/// What evaluating one event needs of its batch.
struct BatchContext<'a> {
    content: &'a Content,
    tenant: &'a TenantId,
    tenant_content: Option<&'a TenantContent>,
    router: &'a TenantState,
    intel: Vec<&'a IntelSet>,
    overrides: &'a rustc_hash::FxHashMap<String, Override>,
    partitions: u32,
    now: time::OffsetDateTime,
}

impl BatchContext<'_> {
    /// One event's alerts, suppressed hits and correlation feeds.
    fn event(&self, event: &Event) -> EventOutcome {
        let fields = &EventFields(&event.fields);
        let mut outcome = EventOutcome::default();
        let keep = |detection: &Detection, outcome: &mut EventOutcome| match self
            .overrides
            .get(&detection.rule.id)
        {
            Some(o) if o.enabled == Some(false) => false,
            Some(o) if excepted(o, event) => {
                outcome.suppressed += 1;
                false
            }
            _ => true,
        };
        let replaced = |id: &str| self.tenant_content.is_some_and(|t| t.own.contains(id));
        let mut global = self.content.global.rules.detect_flat(fields);
        global.retain(|detection| !replaced(&detection.rule.id) && keep(detection, &mut outcome));
        let mut own = self
            .tenant_content
            .and_then(|t| t.rules.as_ref())
            .map(|rules| rules.detect_flat(fields))
            .unwrap_or_default();
        own.retain(|detection| keep(detection, &mut outcome));

        if self.router.correlates() {
            let mut feeds: BTreeMap<u32, Vec<CorrelationFeed>> = BTreeMap::new();
            let mut add = |scope: RuleScope, routes: Vec<(u32, Vec<Fed>)>| {
                for (partition, fed) in routes {
                    feeds
                        .entry(partition)
                        .or_default()
                        .extend(fed.into_iter().map(|fed| CorrelationFeed {
                            scope,
                            chain: fed.chain,
                            rule: fed.rule,
                        }));
                }
            };
            add(
                RuleScope::Global,
                self.router.global.route(fields, &global, self.partitions),
            );
            if let Some(correlator) = &self.router.own {
                add(
                    RuleScope::Own,
                    correlator.route(fields, &own, self.partitions),
                );
            }
            outcome.feeds = feeds
                .into_iter()
                .map(|(partition, feeds)| {
                    let event = event.clone();
                    (partition, CorrelationEvent { event, feeds })
                })
                .collect();
        }

        for detection in &global {
            if !self.router.global.is_silent(&detection.rule.id) {
                outcome.alerts.push(sigma_alert(
                    self.tenant,
                    event,
                    detection,
                    self.overrides,
                    self.now,
                ));
            }
        }
        for detection in &own {
            let own_rule = self
                .tenant_content
                .is_some_and(|t| t.own.contains(&detection.rule.id));
            let silent = self
                .router
                .own
                .as_ref()
                .is_some_and(|c| c.is_silent(&detection.rule.id));
            if own_rule && !silent {
                outcome.alerts.push(sigma_alert(
                    self.tenant,
                    event,
                    detection,
                    self.overrides,
                    self.now,
                ));
            }
        }
        for hit in intel_hits(&self.intel, event, self.now.unix_timestamp()) {
            let rule_id = format!("intel/{}", hit.meta.feed);
            match self.overrides.get(&rule_id) {
                Some(o) if o.enabled == Some(false) => {}
                Some(o) if excepted(o, event) => outcome.suppressed += 1,
                _ => outcome.alerts.push(intel_alert(
                    self.tenant,
                    event,
                    rule_id,
                    hit,
                    self.overrides,
                    self.now,
                )),
            }
        }
        outcome
    }
}

/// Evaluates a batch: Sigma and intel alerts, and what each event feeds in which partition of
/// the tenant's correlation state (of `partitions`). `router` only routes: it is never fed.
/// `batch_id` identifies the batch across redeliveries.
pub fn evaluate_batch(
    content: &Content,
    tenant: &TenantId,
    router: &TenantState,
    events: &[Event],
    batch_id: &str,
    partitions: u32,
    now: time::OffsetDateTime,
) -> BatchResult {
    let tenant_content = content.tenant(tenant).map(Arc::as_ref);
    let intel: Vec<&IntelSet> = [
        Some(content.global.intel.as_ref()),
        tenant_content.map(|t| t.intel.as_ref()),
    ]
    .into_iter()
    .flatten()
    .filter(|set| !set.is_empty())
    .collect();
    let no_overrides = rustc_hash::FxHashMap::default();
    let batch = BatchContext {
        content,
        tenant,
        tenant_content,
        router,
        intel,
        overrides: tenant_content.map_or(&no_overrides, |t| &t.overrides),
        partitions,
        now,
    };
    // Each event whole in parallel (detection, overrides, alerts, correlation routing); only
    // the merge into the batch's result is sequential.
    let outcomes: Vec<EventOutcome> = events.par_iter().map(|event| batch.event(event)).collect();

    let mut result = BatchResult::default();
    let mut routed: BTreeMap<u32, CorrelationBatch> = BTreeMap::new();
    for outcome in outcomes {
        result.alerts.extend(outcome.alerts);
        result.suppressed += outcome.suppressed;
        for (partition, fed) in outcome.feeds {
            routed
                .entry(partition)
                .or_insert_with(|| CorrelationBatch {
                    tenant: tenant.clone(),
                    partition,
                    source: batch_id.to_owned(),
                    events: Vec::new(),
                })
                .events
                .push(fed);
        }
    }
    result.correlate = routed.into_values().collect();
    result
}

/// What a correlation batch produced.
#[derive(Debug, Default)]
pub struct CorrelateResult {
    /// Correlation alerts, in event order.
    pub alerts: Vec<Alert>,
    /// Whether the partition's state changed.
    pub dirty: bool,
    /// Events too late for the partition's windows.
    pub late: u64,
    /// Hits suppressed by the tenant's overrides.
    pub suppressed: u64,
}

/// Feeds a correlation batch to one partition's state. A batch the state already counted (a
/// redelivery after its state was saved) changes nothing and gives no alert: its alerts were
/// published before that save.
pub fn correlate_batch(
    content: &Content,
    state: &mut TenantState,
    batch: &CorrelationBatch,
    allowed_lateness: i64,
    now: time::OffsetDateTime,
) -> CorrelateResult {
    let mut result = CorrelateResult::default();
    let batch_id = batch.message_id();
    if !state.correlates() || state.applied.iter().any(|id| *id == batch_id) {
        return result;
    }
    let tenant = &batch.tenant;
    let now_secs = now.unix_timestamp();
    let no_overrides = rustc_hash::FxHashMap::default();
    let overrides = content
        .tenant(tenant)
        .map_or(&no_overrides, |t| &t.overrides);
    for item in &batch.events {
        let event = &item.event;
        let event_time = event.event_time.unix_timestamp();
        // An event from the future (a sender's wrong clock) is not fed: it would move the
        // watermark ahead and make every real event late.
        let future = event_time > now_secs.saturating_add(MAX_CLOCK_SKEW_SECS);
        let late = future
            || (state.watermark != i64::MIN
                && event_time < state.watermark.saturating_sub(allowed_lateness));
        if late {
            result.late += 1;
            continue;
        }
        let scoped = |scope: RuleScope| -> Vec<Fed> {
            item.feeds
                .iter()
                .filter(|feed| feed.scope == scope)
                .map(|feed| Fed {
                    chain: feed.chain.clone(),
                    rule: feed.rule.clone(),
                })
                .collect()
        };
        let fields = &EventFields(&event.fields);
        let id = event.id.to_string();
        let mut hits =
            state
                .global
                .observe_fed(fields, &scoped(RuleScope::Global), event_time, Some(&id));
        if let Some(own) = state.own.as_mut() {
            hits.extend(own.observe_fed(fields, &scoped(RuleScope::Own), event_time, Some(&id)));
        }
        state.watermark = state.watermark.max(event_time);
        result.dirty = true;
        for hit in &hits {
            match overrides.get(&hit.rule.id) {
                Some(o) if o.enabled == Some(false) => {}
                Some(o) if excepted(o, event) => result.suppressed += 1,
                _ => result
                    .alerts
                    .push(correlation_alert(tenant, event, hit, overrides, now)),
            }
        }
    }
    if state.watermark != i64::MIN {
        let horizon = state.watermark.saturating_sub(allowed_lateness);
        state.global.evict_expired(horizon);
        if let Some(own) = state.own.as_mut() {
            own.evict_expired(horizon);
        }
    }
    if result.dirty {
        state.applied.push_back(batch_id);
        while state.applied.len() > APPLIED_BATCHES {
            state.applied.pop_front();
        }
    }
    result
}

/// Whether an override's exceptions suppress a hit on `event`.
fn excepted(rule: &Override, event: &Event) -> bool {
    rule.exceptions.iter().any(|exception| {
        let matches = |value: &str| {
            exception
                .values
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(value))
        };
        let entities = &event.entities;
        let entity = match exception.field.to_ascii_lowercase().as_str() {
            "user" => entities.user.clone(),
            "host" => entities.host.clone(),
            "src_ip" => entities.src_ip.map(|ip| ip.to_string()),
            "dst_ip" => entities.dst_ip.map(|ip| ip.to_string()),
            "process" => entities.process.clone(),
            _ => None,
        };
        if entity.as_deref().is_some_and(matches) {
            return true;
        }
        event.fields.iter().any(|(key, value)| {
            let named = key.eq_ignore_ascii_case(&exception.field)
                || key.rsplit('.').next().is_some_and(|last| {
                    last.eq_ignore_ascii_case(&exception.field) && key.len() > exception.field.len()
                });
            named && field_text(value).is_some_and(|text| matches(&text))
        })
    })
}

fn field_text(value: &FieldValue) -> Option<String> {
    match value {
        FieldValue::Str(text) => Some(text.to_string()),
        FieldValue::Int(number) => Some(number.to_string()),
        FieldValue::Float(number) => Some(number.to_string()),
        FieldValue::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Field names (the last segment of a key, ASCII case ignored) whose values are looked up in
/// the intel sets, and as what.
const INTEL_FIELDS: &[(&str, IndicatorKind)] = &[
    ("SourceIp", IndicatorKind::Ip),
    ("DestinationIp", IndicatorKind::Ip),
    ("IpAddress", IndicatorKind::Ip),
    ("ip", IndicatorKind::Ip),
    ("src_ip", IndicatorKind::Ip),
    ("dst_ip", IndicatorKind::Ip),
    ("ClientIP", IndicatorKind::Ip),
    ("c-ip", IndicatorKind::Ip),
    ("sourceIPAddress", IndicatorKind::Ip),
    ("SourceAddress", IndicatorKind::Ip),
    ("DestAddress", IndicatorKind::Ip),
    ("DestinationAddress", IndicatorKind::Ip),
    ("RemoteAddress", IndicatorKind::Ip),
    ("addr", IndicatorKind::Ip),
    ("QueryName", IndicatorKind::Domain),
    ("DestinationHostname", IndicatorKind::Domain),
    ("domain", IndicatorKind::Domain),
    ("registered_domain", IndicatorKind::Domain),
    ("cs-host", IndicatorKind::Domain),
    ("server_name", IndicatorKind::Domain),
    ("url", IndicatorKind::Url),
    ("full", IndicatorKind::Url),
    ("original", IndicatorKind::Url),
    ("Hashes", IndicatorKind::Hash),
    ("Hash", IndicatorKind::Hash),
    ("md5", IndicatorKind::Hash),
    ("sha1", IndicatorKind::Hash),
    ("sha256", IndicatorKind::Hash),
];

fn intel_hits(sets: &[&IntelSet], event: &Event, now: i64) -> Vec<IntelHit> {
    let mut hits: Vec<IntelHit> = Vec::new();
    if sets.is_empty() {
        return hits;
    }
    let mut record = |meta: IndicatorMeta, field: &str, value: &str| {
        let seen = hits
            .iter()
            .any(|hit| hit.meta.feed == meta.feed && hit.meta.indicator == meta.indicator);
        if !seen {
            hits.push(IntelHit {
                meta,
                field: field.to_owned(),
                value: value.to_owned(),
            });
        }
    };
    for (name, address) in [
        ("src_ip", event.entities.src_ip),
        ("dst_ip", event.entities.dst_ip),
    ] {
        if let Some(address) = address {
            for set in sets {
                if let Some(meta) = set.lookup_ip(address, now) {
                    record(meta, name, &address.to_string());
                }
            }
        }
    }
    for (key, value) in event.fields.iter() {
        let last = key.rsplit('.').next().unwrap_or(key);
        let Some(kind) = INTEL_FIELDS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(last))
            .map(|(_, kind)| *kind)
        else {
            continue;
        };
        // `url.domain` and `url.full` (ECS) vs a bare `domain` or `full` elsewhere.
        let kind = if kind == IndicatorKind::Url
            && !last.eq_ignore_ascii_case("url")
            && !key.to_ascii_lowercase().contains("url.")
        {
            continue;
        } else {
            kind
        };
        let mut texts: Vec<&str> = Vec::new();
        match value {
            FieldValue::Str(text) => texts.push(text),
            FieldValue::Array(items) => texts.extend(items.iter().filter_map(FieldValue::as_str)),
            _ => continue,
        }
        for text in texts {
            for set in sets.iter().filter(|set| set.has(kind)) {
                match kind {
                    IndicatorKind::Ip => {
                        let address = text.trim().trim_start_matches("::ffff:");
                        if let Ok(address) = address.parse()
                            && let Some(meta) = set.lookup_ip(address, now)
                        {
                            record(meta, key, text);
                        }
                    }
                    IndicatorKind::Domain => {
                        if let Some(meta) = set.lookup_domain(text, now) {
                            record(meta, key, text);
                        }
                    }
                    IndicatorKind::Url => {
                        if let Some(meta) = set.lookup_url(text, now) {
                            record(meta, key, text);
                        }
                    }
                    IndicatorKind::Hash => {
                        // Sysmon's `Hashes`: `SHA1=…,MD5=…,SHA256=…,IMPHASH=…`.
                        for part in text.split(',') {
                            let digest = part.rsplit('=').next().unwrap_or(part).trim();
                            if let Some(meta) = set.lookup_hash(digest, now) {
                                record(meta, key, digest);
                            }
                        }
                    }
                }
            }
        }
    }
    hits
}

fn attack(rule: &RuleInfo) -> Vec<AttackTechnique> {
    rule.attack
        .iter()
        .map(|id| match vigil_sigma::technique(id) {
            Some(technique) => AttackTechnique {
                id: technique.id,
                name: technique.name,
                tactics: technique.tactics,
            },
            None => AttackTechnique {
                id: id.clone(),
                name: String::new(),
                tactics: Vec::new(),
            },
        })
        .collect()
}

fn level(rule: &RuleInfo, overrides: &rustc_hash::FxHashMap<String, Override>) -> Level {
    overrides
        .get(&rule.id)
        .and_then(|o| o.level)
        .unwrap_or_else(|| rule.level.as_str().parse().unwrap_or(Level::Informational))
}

fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn sigma_alert(
    tenant: &TenantId,
    event: &Event,
    detection: &Detection,
    overrides: &rustc_hash::FxHashMap<String, Override>,
    now: time::OffsetDateTime,
) -> Alert {
    let rule = &detection.rule;
    Alert {
        id: AlertId::derive(&[
            tenant.as_str().as_bytes(),
            b"sigma",
            rule.id.as_bytes(),
            event.id.as_uuid().as_bytes(),
        ]),
        tenant: tenant.clone(),
        source: AlertSource::Sigma,
        rule_id: rule.id.clone(),
        rule_title: rule.title.clone(),
        level: level(rule, overrides),
        attack: attack(rule),
        event_ids: vec![event.id],
        matched: detection
            .matched
            .iter()
            .map(|m| MatchedField {
                field: m.field.clone(),
                value: value_text(&m.value),
            })
            .collect(),
        entities: event.entities.clone(),
        intel: None,
        event_time: event.event_time,
        detected_time: now,
    }
}

fn correlation_alert(
    tenant: &TenantId,
    event: &Event,
    hit: &CorrelationHit,
    overrides: &rustc_hash::FxHashMap<String, Override>,
    now: time::OffsetDateTime,
) -> Alert {
    let rule = &hit.rule;
    let group: Vec<u8> = hit
        .group_key
        .iter()
        .flat_map(|(field, value)| [field.as_bytes(), b"=", value.as_bytes(), b"\n"].concat())
        .collect();
    let mut matched: Vec<MatchedField> = hit
        .group_key
        .iter()
        .map(|(field, value)| MatchedField {
            field: field.clone(),
            value: value.clone(),
        })
        .collect();
    matched.push(MatchedField {
        field: hit.correlation_type.clone(),
        value: hit.aggregated_value.to_string(),
    });
    // The events the window counted (the last `MAX_CORRELATION_EVENTS`), the firing one last.
    let mut event_ids: Vec<EventId> = hit
        .events
        .iter()
        .filter_map(|id| id.parse().ok())
        .filter(|id| *id != event.id)
        .collect();
    event_ids.push(event.id);
    Alert {
        id: AlertId::derive(&[
            tenant.as_str().as_bytes(),
            b"correlation",
            rule.id.as_bytes(),
            &group,
            event.id.as_uuid().as_bytes(),
        ]),
        tenant: tenant.clone(),
        source: AlertSource::Correlation,
        rule_id: rule.id.clone(),
        rule_title: rule.title.clone(),
        level: level(rule, overrides),
        attack: attack(rule),
        event_ids,
        matched,
        entities: event.entities.clone(),
        intel: None,
        event_time: event.event_time,
        detected_time: now,
    }
}

fn intel_alert(
    tenant: &TenantId,
    event: &Event,
    rule_id: String,
    hit: IntelHit,
    overrides: &rustc_hash::FxHashMap<String, Override>,
    now: time::OffsetDateTime,
) -> Alert {
    let meta = hit.meta;
    let default_level = match meta.confidence {
        Some(c) if c >= 80 => Level::High,
        Some(c) if c < 40 => Level::Low,
        _ => Level::Medium,
    };
    Alert {
        id: AlertId::derive(&[
            tenant.as_str().as_bytes(),
            b"intel",
            meta.feed.as_bytes(),
            meta.indicator.as_bytes(),
            event.id.as_uuid().as_bytes(),
        ]),
        tenant: tenant.clone(),
        source: AlertSource::Intel,
        rule_title: format!(
            "Threat intelligence match: {} ({})",
            meta.indicator, meta.feed
        ),
        level: overrides
            .get(&rule_id)
            .and_then(|o| o.level)
            .unwrap_or(default_level),
        rule_id,
        attack: Vec::new(),
        event_ids: vec![event.id],
        matched: vec![MatchedField {
            field: hit.field,
            value: hit.value,
        }],
        entities: event.entities.clone(),
        intel: Some(IntelMatch {
            feed: meta.feed.to_string(),
            indicator: meta.indicator.to_string(),
            confidence: meta.confidence,
            labels: meta.labels.to_vec(),
        }),
        event_time: event.event_time,
        detected_time: now,
    }
}
