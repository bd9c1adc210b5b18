//! Reading records from files for hunting: Windows `.evtx` (the `evtx` crate, chunks parsed in
//! parallel) and JSON (one document, an array of documents, concatenated documents or NDJSON).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{SigmaError, one_line};

/// `root` itself when it is a file, else every file below it that `keep` accepts, walked
/// recursively in name order. A path that cannot be read is an error naming it.
pub fn files_under(root: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<Vec<PathBuf>, SigmaError> {
    let read_error = |path: &Path, err: std::io::Error| SigmaError::Read {
        path: path.to_owned(),
        reason: err.to_string(),
    };
    let metadata = std::fs::metadata(root).map_err(|err| read_error(root, err))?;
    if metadata.is_file() {
        return Ok(vec![root.to_owned()]);
    }
    let mut files = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|err| read_error(&dir, err))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .collect();
        entries.sort();
        let mut subdirs = Vec::new();
        for entry in entries {
            if entry.is_dir() {
                subdirs.push(entry);
            } else if keep(&entry) {
                files.push(entry);
            }
        }
        // Depth first, in name order.
        pending.extend(subdirs.into_iter().rev());
    }
    files.sort();
    Ok(files)
}

/// A record read from an EVTX file, rendered as the `evtx` crate's JSON.
#[derive(Debug)]
pub struct EvtxRecord {
    /// `EventRecordID`.
    pub record_id: u64,
    /// When the record was written (RFC 3339).
    pub timestamp: String,
    /// The record.
    pub data: Value,
}

/// Which reader a file needs, by extension: `.evtx`; `.json`/`.jsonl`/`.ndjson`; `.log`
/// (syslog lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Windows event log file.
    Evtx,
    /// JSON or NDJSON.
    Json,
    /// Syslog lines (RFC 3164 or 5424), as in /var/log/auth.log.
    Syslog,
}

impl InputKind {
    /// The reader for `path`, or `None` for a file hunting does not read.
    pub fn of(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "evtx" => Some(Self::Evtx),
            "json" | "jsonl" | "ndjson" => Some(Self::Json),
            "log" => Some(Self::Syslog),
            _ => None,
        }
    }

    /// The reader for a file named explicitly, whatever its extension: by extension, else JSON
    /// when the text starts like JSON, else syslog lines (`/var/log/auth.log`, `messages`).
    pub fn sniff(path: &Path, head: &[u8]) -> Self {
        if let Some(kind) = Self::of(path) {
            return kind;
        }
        match head.iter().find(|byte| !byte.is_ascii_whitespace()) {
            Some(b'{' | b'[') => Self::Json,
            _ => Self::Syslog,
        }
    }
}

/// Fields auditd writes hex-encoded when their value holds a space, a quote or a control
/// character (unquoted, then).
fn audit_hex_field(key: &str) -> bool {
    matches!(
        key,
        "proctitle" | "name" | "exe" | "comm" | "cwd" | "path" | "data" | "cmd"
    ) || (key.len() > 1 && key.starts_with('a') && key[1..].bytes().all(|b| b.is_ascii_digit()))
}

fn decode_hex(text: &str) -> Option<String> {
    if text.len() < 2
        || !text.len().is_multiple_of(2)
        || !text.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .filter_map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok())
        .map(|byte| if byte == 0 { b' ' } else { byte })
        .collect();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// `key=value` pairs: values bare, `"double"` or `'single'` quoted; a single-quoted `msg`
/// (USER_* records) holds pairs of its own, which are added too.
fn audit_pairs(text: &str, record: &mut serde_json::Map<String, Value>) {
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{1d}');
        if rest.is_empty() {
            return;
        }
        let Some(equals) = rest.find('=') else {
            return;
        };
        let key = &rest[..equals];
        if key.is_empty() || key.contains(char::is_whitespace) {
            // Not a pair: skip the word.
            rest = rest
                .split_once(char::is_whitespace)
                .map_or("", |(_, after)| after);
            continue;
        }
        let after = &rest[equals + 1..];
        let (value, quoted, remaining) = match after.chars().next() {
            Some(quote @ ('"' | '\'')) => match after[1..].find(quote) {
                Some(end) => (&after[1..=end], Some(quote), &after[end + 2..]),
                None => (&after[1..], Some(quote), ""),
            },
            _ => {
                let end = after
                    .find(|c: char| c.is_whitespace() || c == '\u{1d}')
                    .unwrap_or(after.len());
                (&after[..end], None, &after[end..])
            }
        };
        rest = remaining;
        if key == "msg" && quoted == Some('\'') {
            audit_pairs(value, record);
            continue;
        }
        let value = match quoted {
            None if audit_hex_field(key) => decode_hex(value).unwrap_or_else(|| value.to_owned()),
            _ => value.to_owned(),
        };
        record.entry(key.to_owned()).or_insert(Value::from(value));
    }
}

/// One auditd log line, raw or ENRICHED (`type=EXECVE msg=audit(1700000000.123:42): argc=2
/// a0="ls" a1=2D6C61`), as a record: `type`, `timestamp` (RFC 3339), `audit_serial` and every
/// `key=value`, hex-encoded values decoded. `None` when the line is not an audit record.
pub fn audit_record(line: &str) -> Option<Value> {
    let line = line.trim();
    let rest = line.strip_prefix("type=")?;
    let (kind, rest) = rest.split_once(char::is_whitespace)?;
    let rest = rest.trim_start().strip_prefix("msg=audit(")?;
    let (stamp, rest) = rest.split_once("):")?;
    let (seconds, serial) = stamp.split_once(':')?;
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, "0"));
    let whole: i64 = whole.parse().ok()?;
    let millis: i64 = format!("{fraction:0<3}")[..3].parse().ok()?;
    let timestamp = time::OffsetDateTime::from_unix_timestamp(whole)
        .ok()?
        .checked_add(time::Duration::milliseconds(millis))?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()?;
    let mut record = serde_json::Map::new();
    record.insert("type".to_owned(), Value::from(kind));
    record.insert("timestamp".to_owned(), Value::from(timestamp));
    record.insert(
        "audit_serial".to_owned(),
        Value::from(serial.parse::<u64>().ok()?),
    );
    audit_pairs(rest, &mut record);
    Some(Value::Object(record))
}

/// One web server access log line in the Common or Combined Log Format (Apache's and nginx's
/// default: `203.0.113.9 - alice [10/Oct/2026:13:55:36 -0700] "GET /a?b=1 HTTP/1.1" 200 2326
/// "http://ref/" "curl/8.5"`) as a record with the W3C field names Sigma's `webserver` rules
/// use: `c-ip`, `cs-username`, `timestamp` (RFC 3339), `cs-method`, `cs-uri-stem` (the path),
/// `cs-uri-query` (the whole request URI, path and query, as SigmaHQ's rules match it),
/// `cs-version`, `sc-status` and `sc-bytes` (numbers), `cs-referer`, `cs-user-agent`; `-` stays
/// out. `None` when the line is not one.
pub fn access_record(line: &str) -> Option<Value> {
    let line = line.trim();
    let mut words = line.splitn(4, ' ');
    let (client, ident, user, rest) = (words.next()?, words.next()?, words.next()?, words.next()?);
    let rest = rest.strip_prefix('[')?;
    let (stamp, rest) = rest.split_once("] ")?;
    let format = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
    );
    let timestamp = time::OffsetDateTime::parse(stamp, &format)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()?;
    let (request, rest) = quoted(rest)?;
    let mut words = rest.trim_start().splitn(3, ' ');
    let status: u16 = words.next()?.parse().ok()?;
    let bytes = words.next()?;
    let mut record = serde_json::Map::new();
    let mut put = |key: &str, value: &str| {
        if !value.is_empty() && value != "-" {
            record.insert(key.to_owned(), Value::from(value));
        }
    };
    put("c-ip", client);
    put("cs-ident", ident);
    put("cs-username", user);
    put("timestamp", &timestamp);
    let mut parts = request.splitn(3, ' ');
    let method = parts.next().unwrap_or_default();
    let uri = parts.next().unwrap_or_default();
    put("cs-method", method);
    put("cs-uri-stem", uri.split('?').next().unwrap_or_default());
    put("cs-uri-query", uri);
    put("cs-version", parts.next().unwrap_or_default());
    if let Some(rest) = words.next()
        && let Some((referer, rest)) = quoted(rest.trim_start())
    {
        put("cs-referer", &referer);
        if let Some((agent, _)) = quoted(rest.trim_start()) {
            put("cs-user-agent", &agent);
        }
    }
    record.insert("sc-status".to_owned(), Value::from(status));
    if let Ok(bytes) = bytes.parse::<u64>() {
        record.insert("sc-bytes".to_owned(), Value::from(bytes));
    }
    // A request line that is not one (a TLS handshake sent to a plain port) keeps its text.
    if !record.contains_key("cs-method") {
        record.insert("cs-method".to_owned(), Value::from("-"));
    }
    Some(Value::Object(record))
}

/// A double-quoted string at the start of `text` (`\"` and `\\` unescaped, as Apache writes
/// them) and what follows it.
fn quoted(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((value, &body[at + 1..])),
            '\\' => match chars.next() {
                Some((_, escaped @ ('"' | '\\'))) => value.push(escaped),
                Some((_, other)) => {
                    value.push('\\');
                    value.push(other);
                }
                None => value.push('\\'),
            },
            c => value.push(c),
        }
    }
    None
}

/// One line of a `.log` file: an auditd record or a web access log line when it is one, else
/// syslog.
pub fn log_record(line: &str) -> Value {
    audit_record(line)
        .or_else(|| access_record(line))
        .unwrap_or_else(|| syslog_record(line))
}

/// One syslog line as a record: `timestamp` (RFC 3339), `host`, `program`, `pid`, `facility`,
/// `severity`, `message`. A year-less RFC 3164 timestamp gets the current year, or last year
/// when that would put it in the future. A line syslog cannot parse keeps its text as
/// `message` with no program. A message that is itself an auditd record (audisp's syslog
/// plugin) or an access log line (nginx's and Apache's syslog logging) becomes that record,
/// with the sender's `host`. RFC 3164 timestamps, which carry no zone, are read in the local
/// time zone (see [`syslog_record_in`]).
pub fn syslog_record(line: &str) -> Value {
    syslog_record_in(line, None)
}

/// [`syslog_record`], reading RFC 3164 timestamps in `zone` (the sender's, an IANA zone with
/// its daylight saving time) instead of the local time zone. RFC 5424 timestamps carry their
/// own offset.
pub fn syslog_record_in(line: &str, zone: Option<chrono_tz::Tz>) -> Value {
    use chrono::Datelike;
    // Today where the sender is: a sender east of UTC is a day ahead for some hours.
    let now = match zone {
        Some(zone) => chrono::Utc::now().with_timezone(&zone).date_naive(),
        None => chrono::Local::now().date_naive(),
    };
    let infer_year = move |(month, day, ..): syslog_loose::IncompleteDate| {
        let this_year = now.year();
        let today = (now.month(), now.day());
        if (month, day) > today {
            this_year - 1
        } else {
            this_year
        }
    };
    let variant = syslog_loose::Variant::Either;
    let mut message = match zone {
        // Read as UTC, so the wall-clock time is as written; placed in `zone` below.
        Some(_) => {
            use chrono::Offset;
            syslog_loose::parse_message_with_year_tz(
                line,
                infer_year,
                Some(chrono::Utc.fix()),
                variant,
            )
        }
        None => syslog_loose::parse_message_with_year(line, infer_year, variant),
    };
    if let (Some(zone), Some(timestamp)) = (zone, message.timestamp)
        && bsd_timestamp(line)
    {
        use chrono::TimeZone;
        // A wall-clock time daylight saving time repeats takes the earlier; one it skips (the
        // clock jumped over it) is read an hour later, as the sender's clock meant it.
        let written = timestamp.naive_local();
        message.timestamp = zone
            .from_local_datetime(&written)
            .earliest()
            .or_else(|| {
                zone.from_local_datetime(&(written + chrono::Duration::hours(1)))
                    .earliest()
            })
            .map(|local| local.fixed_offset());
    }
    let mut record = serde_json::Map::new();
    if let Some(timestamp) = message.timestamp {
        record.insert("timestamp".to_owned(), Value::from(timestamp.to_rfc3339()));
    }
    if let Some(host) = message.hostname {
        record.insert("host".to_owned(), Value::from(host));
    }
    if let Some(program) = message.appname {
        record.insert("program".to_owned(), Value::from(program));
    }
    if let Some(pid) = message.procid {
        record.insert("pid".to_owned(), Value::from(pid.to_string()));
    }
    if let Some(facility) = message.facility {
        record.insert("facility".to_owned(), Value::from(facility.as_str()));
    }
    if let Some(severity) = message.severity {
        record.insert("severity".to_owned(), Value::from(severity.as_str()));
    }
    if let Some(Value::Object(mut inner)) =
        audit_record(message.msg).or_else(|| access_record(message.msg))
    {
        if let Some(host) = message.hostname {
            inner.insert("host".to_owned(), Value::from(host));
        }
        return Value::Object(inner);
    }
    record.insert("message".to_owned(), Value::from(message.msg));
    Value::Object(record)
}

/// Whether a syslog line's timestamp is RFC 3164's `Mmm dd hh:mm:ss`, which names no zone.
fn bsd_timestamp(line: &str) -> bool {
    let rest = line.trim_start();
    let rest = match rest.strip_prefix('<') {
        Some(rest) => rest.split_once('>').map_or(rest, |(_, rest)| rest),
        None => rest,
    };
    rest.starts_with(|c: char| c.is_ascii_alphabetic())
}

/// Maps every record of an EVTX file through `f`, parsing chunks on `threads` threads (0: one
/// per core) and running `f` on those threads; the results, in record order. A corrupt chunk
/// or record reaches `f` as `Err(reason)`; the scan goes on.
pub fn scan_evtx<U, F>(path: &Path, threads: usize, f: F) -> Result<Vec<U>, SigmaError>
where
    U: Send + 'static,
    F: FnMut(Result<EvtxRecord, String>) -> U + Send + Sync + Clone + 'static,
{
    let mut results = Vec::new();
    stream_evtx(path, threads, f, |item| {
        results.push(item);
        true
    })?;
    Ok(results)
}

/// [`scan_evtx`] without collecting: each record's result goes to `sink` in record order as
/// the scan goes (memory stays bounded by what `sink` keeps; the parsing threads work a few
/// chunks ahead). The scan stops early when `sink` returns `false`.
pub fn stream_evtx<U, F>(
    path: &Path,
    threads: usize,
    f: F,
    mut sink: impl FnMut(U) -> bool,
) -> Result<(), SigmaError>
where
    U: Send + 'static,
    F: FnMut(Result<EvtxRecord, String>) -> U + Send + Sync + Clone + 'static,
{
    let settings = evtx::ParserSettings::new()
        .num_threads(threads)
        .separate_json_attributes(false);
    let mut parser = evtx::EvtxParser::from_path(path)
        .map_err(|err| SigmaError::Read {
            path: path.to_owned(),
            reason: err.to_string(),
        })?
        .with_configuration(settings);
    // `serialized_records` runs `f` on the parsing threads; what it returns per record (hits,
    // not the records themselves, when hunting) reaches `sink` in order.
    let mut on_error = f.clone();
    for result in parser.serialized_records(move |record| {
        let mut f = f.clone();
        let item = record
            .and_then(evtx::EvtxRecord::into_json_value)
            .map(|record| EvtxRecord {
                record_id: record.event_record_id,
                timestamp: record.timestamp.to_string(),
                data: record.data,
            })
            .map_err(|err| one_line(&err.to_string()));
        Ok(f(item))
    }) {
        let item = result.unwrap_or_else(|err| on_error(Err(one_line(&err.to_string()))));
        if !sink(item) {
            break;
        }
    }
    Ok(())
}

/// Every JSON document in `text`: a top-level array yields its elements; concatenated
/// documents and NDJSON yield one each. Text that is not JSON ends the scan with an error that
/// names the byte offset; documents before it are kept.
pub fn json_records(text: &str) -> (Vec<Value>, Option<String>) {
    let mut records = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    loop {
        let offset = stream.byte_offset();
        match stream.next() {
            None => return (records, None),
            Some(Ok(Value::Array(items))) => records.extend(items),
            Some(Ok(value)) => records.push(value),
            Some(Err(err)) => {
                return (
                    records,
                    Some(format!("invalid JSON at byte {offset}: {err}")),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_in_every_layout() {
        assert_eq!(json_records("{\"a\":1}").0, [json!({"a": 1})]);
        assert_eq!(json_records("[{\"a\":1},{\"a\":2}]").0.len(), 2);
        assert_eq!(json_records("{\"a\":1}\n{\"a\":2}\n").0.len(), 2);
        assert_eq!(json_records("{\"a\":1}{\"a\":2}").0.len(), 2);
        let (records, error) = json_records("{\"a\":1}\n{\"a\":");
        assert_eq!(records.len(), 1);
        assert!(error.unwrap().contains("byte 7"));
    }

    #[test]
    fn syslog_lines_become_records() {
        let record = syslog_record(
            "Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186",
        );
        assert_eq!(record["host"], "LabSZ");
        assert_eq!(record["program"], "sshd");
        assert_eq!(record["pid"], "24200");
        assert_eq!(
            record["message"],
            "Invalid user webmaster from 173.234.31.186"
        );
        assert!(
            record["timestamp"]
                .as_str()
                .unwrap()
                .contains("-12-10T06:55:46")
        );

        let rfc5424 = syslog_record(
            "<38>1 2026-11-27T10:00:00Z web1 sudo 991 - - alice : TTY=pts/0 ; COMMAND=/bin/sh",
        );
        assert_eq!(rfc5424["program"], "sudo");
        assert_eq!(rfc5424["facility"], "auth");
        assert_eq!(rfc5424["timestamp"], "2026-11-27T10:00:00+00:00");

        let garbage = syslog_record("\u{0}not syslog at all");
        assert!(garbage["message"].is_string());
    }

    #[test]
    fn access_log_lines_become_webserver_records() {
        let combined = access_record(
            r#"203.0.113.9 - alice [10/Oct/2026:13:55:36 -0700] "GET /cgi-bin/../../etc/passwd?x=1&y=\"2\" HTTP/1.1" 404 153 "-" "curl/8.5.0""#,
        )
        .unwrap();
        assert_eq!(
            combined,
            json!({
                "c-ip": "203.0.113.9",
                "cs-username": "alice",
                "timestamp": "2026-10-10T13:55:36-07:00",
                "cs-method": "GET",
                "cs-uri-stem": "/cgi-bin/../../etc/passwd",
                "cs-uri-query": "/cgi-bin/../../etc/passwd?x=1&y=\"2\"",
                "cs-version": "HTTP/1.1",
                "cs-user-agent": "curl/8.5.0",
                "sc-status": 404,
                "sc-bytes": 153,
            })
        );
        // The Common Log Format, and a request line that is not one.
        let common =
            access_record(r#"::1 - - [01/Jan/2026:00:00:00 +0000] "\x16\x03\x01" 400 - "#).unwrap();
        assert_eq!(common["cs-method"], "\\x16\\x03\\x01");
        assert_eq!(common["sc-status"], 400);
        assert!(common.get("sc-bytes").is_none());
        for not_access in [
            "",
            "Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user",
            "1.2.3.4 - - [not a date] \"GET / HTTP/1.1\" 200 1",
            "1.2.3.4 - - [01/Jan/2026:00:00:00 +0000] \"GET / HTTP/1.1 200 1",
            "1.2.3.4 - - [01/Jan/2026:00:00:00 +0000] \"GET / HTTP/1.1\" OK 1",
        ] {
            assert_eq!(access_record(not_access), None, "{not_access}");
        }
        // Over syslog (nginx's `access_log syslog:`), with the sender as host.
        let over_syslog = syslog_record(
            r#"<190>Dec 10 06:55:46 web1 nginx: 203.0.113.9 - - [10/Dec/2026:06:55:46 +0000] "POST /login HTTP/1.1" 200 12 "-" "x""#,
        );
        assert_eq!(over_syslog["host"], "web1");
        assert_eq!(over_syslog["cs-method"], "POST");
        assert!(over_syslog.get("program").is_none());
    }

    #[test]
    fn rfc3164_timestamps_are_read_in_the_senders_zone() {
        let line = "<38>Jul 10 06:55:46 host sshd[1]: Accepted publickey for a from 192.0.2.1";
        let at = |zone: &str| {
            syslog_record_in(line, Some(zone.parse().unwrap()))["timestamp"]
                .as_str()
                .unwrap()
                .split_once('T')
                .unwrap()
                .1
                .to_owned()
        };
        assert_eq!(at("UTC"), "06:55:46+00:00");
        // Summer time.
        assert_eq!(at("Europe/Berlin"), "06:55:46+02:00");
        assert_eq!(at("America/New_York"), "06:55:46-04:00");
        // RFC 5424 says its own offset.
        let rfc5424 = syslog_record_in(
            "<38>1 2026-11-27T10:00:00+01:00 web1 sudo 991 - - x",
            Some("America/New_York".parse().unwrap()),
        );
        assert_eq!(rfc5424["timestamp"], "2026-11-27T10:00:00+01:00");
    }

    /// A line written today where the sender is dates to this year, also while UTC is still
    /// at yesterday (Kiritimati is UTC+14).
    #[test]
    fn the_year_is_inferred_in_the_senders_zone() {
        let zone: chrono_tz::Tz = "Pacific/Kiritimati".parse().unwrap();
        let now = chrono::Utc::now().with_timezone(&zone);
        let line = format!("<38>{} host sshd[1]: x", now.format("%b %e %H:%M:%S"));
        let record = syslog_record_in(&line, Some(zone));
        let year = record["timestamp"].as_str().unwrap()[..4].to_owned();
        assert_eq!(year, now.format("%Y").to_string(), "{line}: {record}");
    }

    #[test]
    fn audit_records_over_syslog_are_audit_records() {
        let record = syslog_record(
            "<14>Dec 10 06:55:46 db1 audispd: type=EXECVE msg=audit(1700000000.5:42): argc=2 a0=\"ls\" a1=\"-la\"",
        );
        assert_eq!(record["type"], "EXECVE");
        assert_eq!(record["audit_serial"], 42);
        assert_eq!(record["a1"], "-la");
        assert_eq!(record["host"], "db1");
    }

    #[test]
    fn audit_lines_become_records() {
        let record = audit_record(
            "type=EXECVE msg=audit(1700000000.5:42): argc=3 a0=\"arecord\" a1=2D7676 a2=\"-fdat\"",
        )
        .unwrap();
        assert_eq!(record["type"], "EXECVE");
        assert_eq!(record["audit_serial"], 42);
        assert_eq!(record["timestamp"], "2023-11-14T22:13:20.5Z");
        assert_eq!(record["a0"], "arecord");
        assert_eq!(record["a1"], "-vv");
        assert_eq!(record["a2"], "-fdat");

        let enriched = audit_record(
            "type=SYSCALL msg=audit(1700000000.123:7): arch=c000003e syscall=319 success=yes exe=\"/usr/bin/ecasound\"\u{1d}ARCH=x86_64 SYSCALL=memfd_create",
        )
        .unwrap();
        assert_eq!(enriched["SYSCALL"], "memfd_create");
        assert_eq!(enriched["syscall"], "319");
        assert_eq!(enriched["exe"], "/usr/bin/ecasound");

        let user = audit_record(
            "type=USER_LOGIN msg=audit(1700000000.000:9): pid=1 uid=0 msg='op=login acct=\"root\" exe=\"/usr/sbin/sshd\" res=failed'",
        )
        .unwrap();
        assert_eq!(user["acct"], "root");
        assert_eq!(user["res"], "failed");

        assert!(audit_record("Dec 10 06:55:46 LabSZ sshd[24200]: type=x").is_none());
        assert!(audit_record("type=EXECVE msg=audit(garbage").is_none());
        assert_eq!(
            log_record("Dec 10 06:55:46 LabSZ sshd[1]: hi")["program"],
            "sshd"
        );
    }

    #[test]
    fn input_kinds_by_extension() {
        assert_eq!(InputKind::of(Path::new("a/b.EVTX")), Some(InputKind::Evtx));
        assert_eq!(InputKind::of(Path::new("b.ndjson")), Some(InputKind::Json));
        assert_eq!(InputKind::of(Path::new("b.txt")), None);
        assert_eq!(
            InputKind::of(Path::new("auth.log")),
            Some(InputKind::Syslog)
        );
        assert_eq!(
            InputKind::sniff(Path::new("messages"), b"  {\"a\":1}"),
            InputKind::Json
        );
        assert_eq!(
            InputKind::sniff(Path::new("messages"), b"Dec 10 ..."),
            InputKind::Syslog
        );
        assert_eq!(InputKind::of(Path::new("noext")), None);
    }

    #[test]
    fn a_file_that_is_not_evtx_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.evtx");
        std::fs::write(&path, b"not an evtx file at all").unwrap();
        let result = scan_evtx(&path, 1, |record| record.is_ok());
        match result {
            Err(err) => assert!(err.to_string().contains("bad.evtx"), "{err}"),
            Ok(items) => assert!(items.iter().all(|ok| !ok)),
        }
    }
}
