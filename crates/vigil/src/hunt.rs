//! `vigil hunt`: SigmaHQ rules over EVTX and JSON files, offline, on every core.
//!
//! Files are read in parallel, a window of them at a time. EVTX chunks are parsed in parallel by
//! the `evtx` crate and each record is evaluated on the thread that parsed it; JSON documents
//! are evaluated in parallel too. Hits come out in file order, then record order, then rule id,
//! so two runs print the same thing. The summary goes to stderr, so stdout holds only hits.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use vigil_sigma::source::{self, InputKind};
use vigil_sigma::{Detection, Level, Mappings, RuleSet};

/// How `vigil hunt` prints hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HuntFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON array of hits.
    Json,
    /// One JSON object per hit per line.
    Jsonl,
    /// CSV with a header row.
    Csv,
}

/// What `vigil hunt` was asked to do.
#[derive(Debug)]
pub struct HuntOptions {
    /// Files or directories to hunt in.
    pub paths: Vec<PathBuf>,
    /// Rule files or directories.
    pub rules: Vec<PathBuf>,
    /// Output format.
    pub format: HuntFormat,
    /// Hits below this level are not printed.
    pub min_level: Level,
    /// Draw a progress bar on stderr (only when stderr is a terminal).
    pub progress: bool,
    /// The rule cache, if any.
    pub cache_dir: Option<PathBuf>,
    /// Values for `expand` placeholders.
    pub placeholders: BTreeMap<String, Vec<String>>,
}

/// `$XDG_CACHE_HOME/vigil/rules`, else `~/.cache/vigil/rules`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("vigil").join("rules"))
}

/// One rule firing on one record.
#[derive(Debug, Serialize)]
pub struct Hit {
    /// The rule's id.
    pub rule_id: String,
    /// The rule's title.
    pub rule_title: String,
    /// The rule's level.
    pub level: Level,
    /// The file the record came from.
    pub path: String,
    /// The record's id in its file (EVTX `EventRecordID`; for JSON the shape's record id, else
    /// the document's position, from 1).
    pub record_id: Option<serde_json::Value>,
    /// When the record was written, as the record says.
    pub timestamp: Option<String>,
    /// The host the record came from, when its shape says.
    pub computer: Option<String>,
    /// ATT&CK techniques from the rule's tags.
    pub attack: Vec<AttackRef>,
    /// The fields and values that matched.
    pub matched: Vec<vigil_sigma::MatchedField>,
    /// For a correlation: the records its window counted (`PATH#RECORD_ID`, the last 32),
    /// oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
}

/// An ATT&CK technique id and name.
#[derive(Debug, Serialize)]
pub struct AttackRef {
    /// `T1059.001`.
    pub id: String,
    /// Its name, when ATT&CK v18.1 has the id.
    pub name: Option<String>,
}

/// What a hunt read and found, printed to stderr at the end.
#[derive(Debug, Default, Serialize)]
pub struct HuntSummary {
    /// Detection and correlation rules loaded.
    pub rules_loaded: usize,
    /// Rules rejected (run `vigil rules check` for reasons).
    pub rules_rejected: usize,
    /// Files read.
    pub files: usize,
    /// Records evaluated.
    pub records: u64,
    /// Records or chunks that could not be read, and why (first few).
    pub unreadable: u64,
    /// The first reasons records could not be read.
    pub unreadable_reasons: Vec<String>,
    /// Hits printed, by level.
    pub hits_by_level: BTreeMap<Level, u64>,
    /// Rules with the most hits: (rule id, title, hits).
    pub top_rules: Vec<(String, String, u64)>,
    /// Seconds, rule loading included.
    pub seconds: f64,
}

const MAX_REASONS: usize = 10;

/// mimalloc's options that keep memory a one-shot run no longer needs: arenas committed eagerly,
/// freed pages returned only after a delay. Right for the services' throughput; for a hunt,
/// whose memory is mostly rules loaded once, they keep about 100 MB for nothing
/// (docs/BENCHMARKS.md: 208-221 MB against 109-110 MB in the same time).
const ALLOCATOR_OPTIONS: [&str; 2] = ["MIMALLOC_ARENA_EAGER_COMMIT", "MIMALLOC_PURGE_DELAY"];

/// Runs this process again with both options off, unless the caller set either (or the
/// restart is impossible, when the hunt goes on as it is). mimalloc reads them only when it
/// starts, and setting them from inside needs its `unsafe` C API, which the workspace forbids.
pub(crate) fn restart_with_lean_allocator() {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        if ALLOCATOR_OPTIONS
            .iter()
            .any(|name| std::env::var_os(name).is_some())
        {
            return;
        }
        let Ok(binary) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new(binary);
        if let Some(name) = args.next() {
            command.arg0(name);
        }
        let error = command
            .args(args)
            .env(ALLOCATOR_OPTIONS[0], "0")
            .env(ALLOCATOR_OPTIONS[1], "0")
            .exec();
        tracing::debug!(%error, "vigil hunt could not restart with a leaner allocator");
    }
}

/// Runs a hunt, writing hits to `out`. Returns the summary, or an error for a path that cannot
/// be read at all or output that cannot be written.
pub fn hunt(options: &HuntOptions, out: &mut dyn Write) -> Result<HuntSummary, String> {
    let started = Instant::now();
    let mappings = Arc::new(Mappings::builtin().map_err(|err| err.to_string())?);
    let load_options = vigil_sigma::LoadOptions {
        cache_dir: options.cache_dir.clone(),
        placeholders: options.placeholders.clone(),
    };
    let rules = Arc::new(
        RuleSet::load_with(&options.rules, mappings, &load_options)
            .map_err(|err| err.to_string())?,
    );
    let mut summary = HuntSummary {
        rules_loaded: rules.check().loaded,
        rules_rejected: rules.check().rejected.len(),
        ..HuntSummary::default()
    };

    let mut files = Vec::new();
    for path in &options.paths {
        collect_inputs(path, &mut files)?;
    }
    let progress = progress_bar(options.progress, &files);
    let mut writer = HitWriter::new(options.format, out);
    writer.start()?;
    let mut counts: BTreeMap<String, (String, u64)> = BTreeMap::new();
    // Correlations see records in file order, then record order, at each record's own time.
    let mut correlator = rules.correlator();
    let correlate = !correlator.is_empty();
    // Files are read and evaluated a window at a time, the window's files in parallel (many
    // small files keep every core busy, and the logsources they meet build their evaluators at
    // the same time); what they give is reported in file order.
    for window in windows(&files, WINDOW_FILES, WINDOW_BYTES) {
        let read: Vec<_> = match window {
            // Alone, a file has every core: the `evtx` crate parses its chunks on rayon's pool.
            [(path, kind)] => vec![read_file(path, *kind, &rules, 0, correlate)],
            // Side by side, each EVTX file is parsed on its own thread: the `evtx` crate waits
            // for its chunks outside rayon, so pool threads waiting on each other's chunks
            // could deadlock.
            _ => window
                .par_iter()
                .map(|(path, kind)| read_file(path, *kind, &rules, 1, correlate))
                .collect(),
        };
        for ((path, _), records) in window.iter().zip(read) {
            summary.files += 1;
            if let Some(bar) = &progress {
                bar.set_message(path.display().to_string());
            }
            let shown = path.display().to_string();
            let records = match records {
                Ok(records) => records,
                Err(reason) => {
                    summary.unreadable += 1;
                    push_reason(&mut summary, format!("{shown}: {reason}"));
                    continue;
                }
            };
            for record in records {
                let RecordResult {
                    record,
                    record_id,
                    timestamp,
                    computer,
                    detections,
                    error,
                } = record;
                if let Some(reason) = error {
                    summary.unreadable += 1;
                    push_reason(&mut summary, format!("{shown}: {reason}"));
                    continue;
                }
                summary.records += 1;
                for detection in &detections {
                    if detection.rule.level < options.min_level {
                        continue;
                    }
                    *summary
                        .hits_by_level
                        .entry(detection.rule.level)
                        .or_default() += 1;
                    let entry = counts
                        .entry(detection.rule.id.clone())
                        .or_insert_with(|| (detection.rule.title.clone(), 0));
                    entry.1 += 1;
                    writer.write(&to_hit(
                        detection, &shown, &record_id, &timestamp, &computer,
                    ))?;
                }
                if let Some(record) = &record
                    && let Some(at) = timestamp.as_deref().and_then(epoch_seconds)
                {
                    // Named only when a correlation counts it: `PATH#RECORD_ID`.
                    let id = detections
                        .iter()
                        .any(|detection| correlator.is_fed_by(&detection.rule.id))
                        .then(|| {
                            let record = record_id.as_ref().map(value_text).unwrap_or_default();
                            format!("{shown}#{record}")
                        });
                    for hit in correlator.observe(record, &detections, at, id.as_deref()) {
                        if hit.rule.level < options.min_level {
                            continue;
                        }
                        *summary.hits_by_level.entry(hit.rule.level).or_default() += 1;
                        let entry = counts
                            .entry(hit.rule.id.clone())
                            .or_insert_with(|| (hit.rule.title.clone(), 0));
                        entry.1 += 1;
                        writer.write(&correlation_hit(&hit, &shown, &record_id, &timestamp))?;
                    }
                }
            }
            if let Some(bar) = &progress {
                bar.inc(file_size(path));
            }
        }
    }
    writer.finish()?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let mut top: Vec<(String, String, u64)> = counts
        .into_iter()
        .map(|(id, (title, hits))| (id, title, hits))
        .collect();
    top.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    top.truncate(10);
    summary.top_rules = top;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// At most this many files, or this many bytes of them, are read at once: a window's results
/// (detections, record ids and times; records only when correlations need them) are held until
/// it is reported.
const WINDOW_FILES: usize = 64;
const WINDOW_BYTES: u64 = 64 << 20;

/// Consecutive runs of `files` of at most `max_files` files and `max_bytes` bytes (a larger file
/// is a window of its own, and is parsed in parallel inside).
fn windows(
    files: &[(PathBuf, InputKind)],
    max_files: usize,
    max_bytes: u64,
) -> Vec<&[(PathBuf, InputKind)]> {
    let mut windows = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, (path, _)) in files.iter().enumerate() {
        let size = file_size(path);
        if index > start && (index - start == max_files || bytes + size > max_bytes) {
            windows.push(&files[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    if start < files.len() {
        windows.push(&files[start..]);
    }
    windows
}

fn push_reason(summary: &mut HuntSummary, reason: String) {
    if summary.unreadable_reasons.len() < MAX_REASONS {
        summary.unreadable_reasons.push(reason);
    }
}

impl RecordResult {
    fn failed(reason: String) -> Self {
        Self {
            record: None,
            record_id: None,
            timestamp: None,
            computer: None,
            detections: Vec::new(),
            error: Some(reason),
        }
    }
}

struct RecordResult {
    /// The record itself, kept only when correlations need it (it had detections).
    record: Option<serde_json::Value>,
    record_id: Option<serde_json::Value>,
    timestamp: Option<String>,
    computer: Option<String>,
    detections: Vec<Detection>,
    error: Option<String>,
}

/// Detections and what the output shows of one record. `fallback_id` is used when the record
/// names no id of its own (its position in the file); the record is kept for correlations only
/// when it has detections.
fn evaluate(
    rules: &RuleSet,
    record: &serde_json::Value,
    fallback_id: serde_json::Value,
    correlate: bool,
) -> RecordResult {
    let detections = rules.detect(record);
    let meta = rules.record_meta(record);
    RecordResult {
        record: (correlate && !detections.is_empty()).then(|| record.clone()),
        record_id: Some(meta.record_id.unwrap_or(fallback_id)),
        timestamp: meta.timestamp,
        computer: meta.computer,
        detections,
        error: None,
    }
}

/// One file's records, evaluated. `evtx_threads` as [`source::scan_evtx`] takes it.
fn read_file(
    path: &Path,
    kind: InputKind,
    rules: &Arc<RuleSet>,
    evtx_threads: usize,
    correlate: bool,
) -> Result<Vec<RecordResult>, String> {
    match kind {
        InputKind::Evtx => evtx_records(path, rules, evtx_threads, correlate),
        InputKind::Json => json_records(path, rules, correlate),
        InputKind::Syslog => syslog_records(path, rules, correlate),
    }
}

fn evtx_records(
    path: &Path,
    rules: &Arc<RuleSet>,
    threads: usize,
    correlate: bool,
) -> Result<Vec<RecordResult>, String> {
    let rules = Arc::clone(rules);
    let records = source::scan_evtx(path, threads, move |record| match record {
        // The record's own EventRecordID and TimeCreated; the chunk header's numbers are the
        // fallback (they differ in exported or filtered logs).
        Ok(record) => {
            let mut result = evaluate(
                &rules,
                &record.data,
                serde_json::Value::from(record.record_id),
                correlate,
            );
            result.timestamp.get_or_insert(record.timestamp);
            result
        }
        Err(reason) => RecordResult::failed(reason),
    })
    .map_err(|err| err.to_string())?;
    Ok(records)
}

fn json_records(
    path: &Path,
    rules: &RuleSet,
    correlate: bool,
) -> Result<Vec<RecordResult>, String> {
    let text = std::fs::read_to_string(path).map_err(|err| format!("cannot read: {err}"))?;
    let (documents, error) = source::json_records(&text);
    let mut results: Vec<RecordResult> = documents
        .par_iter()
        .enumerate()
        .map(|(index, document)| {
            evaluate(
                rules,
                document,
                serde_json::Value::from(index + 1),
                correlate,
            )
        })
        .collect();
    if let Some(reason) = error {
        results.push(RecordResult::failed(reason));
    }
    Ok(results)
}

/// Syslog or auditd lines; the record id is the line number.
fn syslog_records(
    path: &Path,
    rules: &RuleSet,
    correlate: bool,
) -> Result<Vec<RecordResult>, String> {
    let bytes = std::fs::read(path).map_err(|err| format!("cannot read: {err}"))?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .collect();
    Ok(lines
        .par_iter()
        .map(|(number, line)| {
            let mut result = evaluate(
                rules,
                &source::log_record(line),
                serde_json::Value::from(number + 1),
                correlate,
            );
            // Hits point at the line, whatever id the record carries (auditd's serial).
            result.record_id = Some(serde_json::Value::from(number + 1));
            result
        })
        .collect())
}

/// RFC 3339 (as EVTX and most JSON logs write it) to Unix seconds.
fn epoch_seconds(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp)
}

fn correlation_hit(
    hit: &vigil_sigma::CorrelationHit,
    path: &str,
    record_id: &Option<serde_json::Value>,
    timestamp: &Option<String>,
) -> Hit {
    Hit {
        rule_id: hit.rule.id.clone(),
        rule_title: hit.rule.title.clone(),
        level: hit.rule.level,
        path: path.to_owned(),
        record_id: record_id.clone(),
        timestamp: timestamp.clone(),
        computer: None,
        attack: attack_refs(&hit.rule.attack),
        matched: hit
            .group_key
            .iter()
            .map(|(field, value)| vigil_sigma::MatchedField {
                field: field.clone(),
                value: serde_json::Value::from(value.as_str()),
            })
            .collect(),
        events: hit.events.clone(),
    }
}

fn attack_refs(ids: &[String]) -> Vec<AttackRef> {
    ids.iter()
        .map(|id| AttackRef {
            id: id.clone(),
            name: vigil_sigma::technique(id).map(|technique| technique.name),
        })
        .collect()
}

fn to_hit(
    detection: &Detection,
    path: &str,
    record_id: &Option<serde_json::Value>,
    timestamp: &Option<String>,
    computer: &Option<String>,
) -> Hit {
    Hit {
        rule_id: detection.rule.id.clone(),
        rule_title: detection.rule.title.clone(),
        level: detection.rule.level,
        path: path.to_owned(),
        record_id: record_id.clone(),
        timestamp: timestamp.clone(),
        computer: computer.clone(),
        attack: attack_refs(&detection.rule.attack),
        matched: detection.matched.clone(),
        events: Vec::new(),
    }
}

fn collect_inputs(path: &Path, files: &mut Vec<(PathBuf, InputKind)>) -> Result<(), String> {
    let found = source::files_under(path, &|file| InputKind::of(file).is_some())
        .map_err(|err| err.to_string())?;
    for file in found {
        let kind = match InputKind::of(&file) {
            Some(kind) => kind,
            // A file named on the command line is read whatever its extension: JSON when it
            // starts like JSON, else syslog lines (`/var/log/auth.log.1`, `messages`).
            None => {
                let mut head = [0u8; 64];
                let read = std::fs::File::open(&file)
                    .and_then(|mut opened| std::io::Read::read(&mut opened, &mut head))
                    .unwrap_or(0);
                InputKind::sniff(&file, &head[..read])
            }
        };
        files.push((file, kind));
    }
    Ok(())
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |metadata| metadata.len())
}

fn progress_bar(wanted: bool, files: &[(PathBuf, InputKind)]) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !wanted || !std::io::stderr().is_terminal() {
        return None;
    }
    let total: u64 = files.iter().map(|(path, _)| file_size(path)).sum();
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {bytes}/{total_bytes} {elapsed} {wide_msg}",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

struct HitWriter<'a> {
    format: HuntFormat,
    out: &'a mut dyn Write,
    written: usize,
}

impl<'a> HitWriter<'a> {
    fn new(format: HuntFormat, out: &'a mut dyn Write) -> Self {
        Self {
            format,
            out,
            written: 0,
        }
    }

    fn io(err: impl std::fmt::Display) -> String {
        format!("cannot write output: {err}")
    }

    fn start(&mut self) -> Result<(), String> {
        match self.format {
            HuntFormat::Json => self.out.write_all(b"[").map_err(Self::io),
            HuntFormat::Csv => self.csv_row(&[
                "timestamp",
                "level",
                "rule_id",
                "rule_title",
                "path",
                "record_id",
                "computer",
                "attack",
            ]),
            HuntFormat::Table => writeln!(
                self.out,
                "{:<28} {:<8} {:<36} {:>10}  TITLE",
                "TIMESTAMP", "LEVEL", "RULE ID", "RECORD"
            )
            .map_err(Self::io),
            HuntFormat::Jsonl => Ok(()),
        }
    }

    /// One CSV row, quoted as RFC 4180 requires.
    fn csv_row(&mut self, fields: &[&str]) -> Result<(), String> {
        let mut writer = csv::WriterBuilder::new().from_writer(Vec::new());
        writer.write_record(fields).map_err(Self::io)?;
        let row = writer.into_inner().map_err(Self::io)?;
        self.out.write_all(&row).map_err(Self::io)
    }

    fn write(&mut self, hit: &Hit) -> Result<(), String> {
        match self.format {
            HuntFormat::Jsonl => {
                serde_json::to_writer(&mut *self.out, hit).map_err(Self::io)?;
                self.out.write_all(b"\n").map_err(Self::io)?;
            }
            HuntFormat::Json => {
                if self.written > 0 {
                    self.out.write_all(b",").map_err(Self::io)?;
                }
                self.out.write_all(b"\n").map_err(Self::io)?;
                serde_json::to_writer(&mut *self.out, hit).map_err(Self::io)?;
            }
            HuntFormat::Csv => {
                let record_id = hit.record_id.as_ref().map(value_text).unwrap_or_default();
                let attack: Vec<&str> = hit.attack.iter().map(|a| a.id.as_str()).collect();
                self.csv_row(&[
                    hit.timestamp.as_deref().unwrap_or(""),
                    hit.level.as_str(),
                    &hit.rule_id,
                    &hit.rule_title,
                    &hit.path,
                    &record_id,
                    hit.computer.as_deref().unwrap_or(""),
                    &attack.join(";"),
                ])?;
            }
            HuntFormat::Table => {
                let record_id = hit.record_id.as_ref().map(value_text).unwrap_or_default();
                writeln!(
                    self.out,
                    "{:<28} {:<8} {:<36} {:>10}  {}",
                    hit.timestamp.as_deref().unwrap_or("-"),
                    hit.level.as_str(),
                    hit.rule_id,
                    record_id,
                    hit.rule_title
                )
                .map_err(Self::io)?;
            }
        }
        self.written += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        if self.format == HuntFormat::Json {
            self.out
                .write_all(if self.written > 0 { b"\n]\n" } else { b"]\n" })
                .map_err(Self::io)?;
        }
        self.out.flush().map_err(Self::io)
    }
}

fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The summary as people read it.
pub fn render_summary(summary: &HuntSummary) -> String {
    let mut out = format!(
        "{} rules loaded ({} rejected; `vigil rules check` says why), {} files, {} records",
        summary.rules_loaded, summary.rules_rejected, summary.files, summary.records
    );
    if summary.unreadable > 0 {
        out.push_str(&format!(", {} unreadable", summary.unreadable));
    }
    let hits: u64 = summary.hits_by_level.values().sum();
    out.push_str(&format!(", {hits} hits in {:.2} s", summary.seconds));
    if hits > 0 {
        let levels: Vec<String> = summary
            .hits_by_level
            .iter()
            .rev()
            .map(|(level, count)| format!("{level} {count}"))
            .collect();
        out.push_str(&format!("\nhits by level: {}", levels.join(", ")));
        out.push_str("\ntop rules:");
        for (id, title, count) in &summary.top_rules {
            out.push_str(&format!("\n  {count:>6}  {id}  {title}"));
        }
    }
    for reason in &summary.unreadable_reasons {
        out.push_str(&format!("\nunreadable: {reason}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_keep_file_order_within_their_limits() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [10usize, 10, 10, 50, 5, 5, 5, 5, 5];
        let files: Vec<(PathBuf, InputKind)> = sizes
            .iter()
            .enumerate()
            .map(|(index, size)| {
                let path = dir.path().join(format!("{index}.json"));
                std::fs::write(&path, vec![b' '; *size]).unwrap();
                (path, InputKind::Json)
            })
            .collect();
        let lengths: Vec<usize> = windows(&files, 3, 25).iter().map(|w| w.len()).collect();
        // 10+10 (a third would pass 25 bytes), 10, 50 alone, then 5+5+5 (three files), 5+5.
        assert_eq!(lengths, [2, 1, 1, 3, 2]);
        let flattened: Vec<&PathBuf> = windows(&files, 3, 25)
            .into_iter()
            .flatten()
            .map(|(path, _)| path)
            .collect();
        assert_eq!(
            flattened,
            files.iter().map(|(path, _)| path).collect::<Vec<_>>()
        );
        assert!(windows(&[], 3, 25).is_empty());
    }
}
