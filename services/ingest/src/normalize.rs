//! JSON records to the schema's [`Event`]: shape and Sigma logsource from vigil-sigma's mapping
//! data, event time from the record, entities for baseline and triage, the raw record kept
//! bounded.

use std::net::IpAddr;
use std::sync::Arc;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use vigil_schema::{
    Entities, Event, EventId, FieldValue, Fields, Logsource, RAW_RECORD_MAX_BYTES, RawRecord,
    Source, TenantId,
};
use vigil_sigma::Mappings;

/// Field names (the last segment of a flattened key) that name each entity, in priority order.
const USER: &[&str] = &[
    "TargetUserName",
    "SubjectUserName",
    "User",
    "UserName",
    "user.name",
    "userIdentity.userName",
    "userIdentity.arn",
    "acct",
    "cs-username",
];
const HOST: &[&str] = &["Computer", "host.name", "Hostname", "hostname", "host"];
const SRC_IP: &[&str] = &[
    "IpAddress",
    "SourceIp",
    "SourceAddress",
    "source.ip",
    "sourceIPAddress",
    "src_ip",
    "client.ip",
    "c-ip",
];
const DST_IP: &[&str] = &["DestinationIp", "DestAddress", "destination.ip", "dst_ip"];
const PROCESS: &[&str] = &[
    "Image",
    "NewProcessName",
    "ProcessName",
    "process.executable",
    "exe",
    "comm",
];

/// Turns records into events using the compiled-in mapping data.
#[derive(Debug, Clone)]
pub struct Normalizer {
    mappings: Arc<Mappings>,
    parsers: Arc<crate::parsers::Parsers>,
}

/// Where a record came from and how the request identifies it.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    /// The verified tenant.
    pub tenant: &'a TenantId,
    /// `http`, `hec`, `otlp`, `syslog`, `evtx`.
    pub transport: &'static str,
    /// The sending peer.
    pub peer: Option<String>,
    /// The request's idempotency key (a client's `Idempotency-Key`, or a fresh random one):
    /// a retried request with the same key yields the same event ids, which the bus drops.
    pub request_key: &'a str,
    /// When the request arrived.
    pub received: OffsetDateTime,
}

impl Normalizer {
    /// A normalizer over Vigil's built-in shapes and logsource mappings.
    pub fn builtin() -> Result<Self, vigil_sigma::MappingError> {
        Ok(Self {
            mappings: Arc::new(Mappings::builtin()?),
            parsers: Arc::default(),
        })
    }

    /// With tenants' custom parsers (VRL programs).
    pub fn with_parsers(mut self, parsers: crate::parsers::Parsers) -> Self {
        self.parsers = Arc::new(parsers);
        self
    }

    /// Whether the tenant's records go through a custom parser, which needs each record as
    /// a JSON value; other records can be parsed straight into fields
    /// ([`Normalizer::event_from_fields`]).
    pub fn has_parser(&self, tenant: &TenantId) -> bool {
        self.parsers.get(tenant).is_some()
    }

    /// The event for record number `index` of a request.
    pub fn event(
        &self,
        origin: &Origin<'_>,
        index: usize,
        value: serde_json::Value,
        text: &str,
    ) -> Event {
        // A tenant's own parser first; a record it fails on enters as generic text, with why.
        let (fields, parse_error) = match self.parsers.get(origin.tenant) {
            None => (Fields::from_json(value), None),
            Some(parser) => match parser.apply(value) {
                Ok(value) => (Fields::from_json(value), None),
                Err(error) => {
                    metrics::counter!(crate::metric_names::PARSER_FAILURES, "tenant" => origin.tenant.to_string())
                        .increment(1);
                    (
                        Fields::from_pairs([("message", FieldValue::from(text))]),
                        Some(format!("custom parser: {error}")),
                    )
                }
            },
        };
        let mut event = self.event_from_fields(origin, index, fields, text);
        event.parse_error = parse_error;
        event
    }

    /// The event for record number `index` of a request, from its fields as parsed (no
    /// custom parser runs: see [`Normalizer::has_parser`]).
    pub fn event_from_fields(
        &self,
        origin: &Origin<'_>,
        index: usize,
        fields: Fields,
        text: &str,
    ) -> Event {
        let description = self
            .mappings
            .describe_flat(&vigil_runtime::EventFields(&fields));
        let meta = description.meta;
        let event_time = meta
            .timestamp
            .as_deref()
            .and_then(parse_time)
            .unwrap_or(origin.received);
        let mut entities = Entities {
            user: find_text(&fields, USER),
            host: meta.computer.filter(|host| !host.is_empty()),
            src_ip: find_ip(&fields, SRC_IP),
            dst_ip: find_ip(&fields, DST_IP),
            process: find_text(&fields, PROCESS),
        };
        if entities.host.is_none() {
            entities.host = find_text(&fields, HOST);
        }
        if let Some(program) = fields.get_str("program")
            && let Some(message) = fields.get_str("message")
        {
            let (user, address, process) = program_entities(program, message);
            entities.user = entities.user.take().or(user);
            entities.src_ip = entities.src_ip.or(address);
            entities.process = entities.process.take().or(process);
        }
        let logsource = description.logsource;
        Event {
            id: EventId::derive(&[
                origin.tenant.as_str().as_bytes(),
                origin.request_key.as_bytes(),
                &(index as u64).to_le_bytes(),
            ]),
            tenant: origin.tenant.clone(),
            event_time,
            received_time: origin.received,
            source: Source {
                transport: origin.transport.to_owned(),
                format: description.shape.to_owned(),
                peer: origin.peer.clone(),
            },
            logsource: Logsource {
                product: logsource.product,
                category: logsource.categories.into_iter().next(),
                service: logsource.services.into_iter().next(),
            },
            entities,
            fields,
            raw: Some(RawRecord::bounded(text, RAW_RECORD_MAX_BYTES)),
            parse_error: None,
        }
    }
}

/// A record a listener produced, with the event time when the protocol carries it apart from
/// the record (HEC `time`, OTLP `timeUnixNano`).
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The record.
    pub value: serde_json::Value,
    /// Its text as received, for the bounded raw copy.
    pub text: String,
    /// The event time given by the protocol.
    pub time: Option<OffsetDateTime>,
}

impl Normalizer {
    /// Every record of one request as events, in order.
    pub fn events(&self, origin: &Origin<'_>, incoming: Vec<Incoming>) -> Vec<Event> {
        incoming
            .into_iter()
            .enumerate()
            .map(|(index, record)| {
                let mut event = self.event(origin, index, record.value, &record.text);
                if let Some(time) = record.time {
                    event.event_time = time;
                }
                event
            })
            .collect()
    }
}

/// RFC 3339, or epoch seconds or milliseconds.
fn parse_time(text: &str) -> Option<OffsetDateTime> {
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(time);
    }
    let number: f64 = text.trim().parse().ok()?;
    if !number.is_finite() || number <= 0.0 {
        return None;
    }
    // Epoch milliseconds from 2001 on are above 1e12; seconds stay below until the year 33658.
    let nanos = if number >= 1e12 {
        number * 1e6
    } else {
        number * 1e9
    };
    OffsetDateTime::from_unix_timestamp_nanos(nanos as i128).ok()
}

/// Whether a flattened key names `name`: the key itself, or its last segments after a `.`.
fn names(key: &str, name: &str) -> bool {
    key.len() >= name.len()
        && key.ends_with(name)
        && (key.len() == name.len() || key.as_bytes()[key.len() - name.len() - 1] == b'.')
}

/// The value of the highest-priority name in `names_in_order` that `keep` accepts, in one pass
/// over the fields without allocating.
fn find<'f, T>(
    fields: &'f Fields,
    names_in_order: &[&str],
    keep: impl Fn(&'f FieldValue) -> Option<T>,
) -> Option<T> {
    let mut best: Option<(usize, T)> = None;
    for (key, value) in fields {
        let Some(rank) = names_in_order.iter().position(|name| names(key, name)) else {
            continue;
        };
        if best
            .as_ref()
            .is_some_and(|(best_rank, _)| *best_rank <= rank)
        {
            continue;
        }
        if let Some(found) = keep(value) {
            best = Some((rank, found));
        }
    }
    best.map(|(_, found)| found)
}

fn find_text(fields: &Fields, names_in_order: &[&str]) -> Option<String> {
    find(fields, names_in_order, |value| {
        value
            .as_str()
            .map(str::trim)
            .filter(|text| !text.is_empty() && *text != "-")
            .map(str::to_owned)
    })
}

/// Programs whose syslog messages name a user and a client address in the words OpenSSH and
/// PAM use (`for user X`, `user=X`, `from ADDR`, `rhost=ADDR`): login, session, FTP, Kerberos,
/// cron and account daemons. Compared without a path or a `(pam_unix)` suffix.
const AUTH_PROGRAMS: &[&str] = &[
    "sshd",
    "su",
    "login",
    "ftpd",
    "vsftpd",
    "proftpd",
    "pure-ftpd",
    "klogind",
    "krb5kdc",
    "kadmind",
    "rlogind",
    "rshd",
    "telnetd",
    "in.telnetd",
    "xinetd",
    "cron",
    "crond",
    "systemd-logind",
    "gdm-password",
    "polkitd",
    "dovecot",
    "passwd",
    "chpasswd",
    "chage",
    "useradd",
    "userdel",
    "usermod",
    "groupadd",
    "groupdel",
    "gpasswd",
];

/// The user, client address and (for sudo) command a syslog message names, by its program.
fn program_entities(
    program: &str,
    message: &str,
) -> (Option<String>, Option<IpAddr>, Option<String>) {
    let base = program.split('(').next().unwrap_or(program);
    let base = base.rsplit('/').next().unwrap_or(base);
    if base.eq_ignore_ascii_case("sudo") {
        return sudo_entities(message);
    }
    if AUTH_PROGRAMS
        .iter()
        .any(|known| known.eq_ignore_ascii_case(base))
    {
        let (user, address) = auth_entities(message);
        return (user, address, None);
    }
    (None, None, None)
}

/// sudo's command log (`alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id
/// -u`): the invoking user and the command's program. Its PAM lines read like other daemons'.
fn sudo_entities(message: &str) -> (Option<String>, Option<IpAddr>, Option<String>) {
    let Some((user, rest)) = message.split_once(" : ") else {
        let (user, address) = auth_entities(message);
        return (user, address, None);
    };
    let user = user.trim();
    let user = (!user.is_empty() && !user.contains(char::is_whitespace)).then(|| user.to_owned());
    let command = rest
        .split(" ; ")
        .find_map(|part| part.trim().strip_prefix("COMMAND="))
        .and_then(|command| command.split_whitespace().next())
        .map(str::to_owned);
    (user, None, command)
}

/// The user and client address in the words OpenSSH and PAM write (`Failed password for invalid
/// user admin from 203.0.113.9 port 5022 ssh2`, `Accepted publickey for deploy from …`,
/// `Invalid user x from …`, `Connection closed by …`, `Received disconnect from …`, PAM's
/// `rhost=… user=…`, `reverse mapping checking getaddrinfo for … [addr]`), and other daemons
/// borrow (`session opened for user x`, `FAILED LOGIN 1 FROM addr FOR x,`, `name=x`), so syslog
/// lines carry the entities that baselines, triage and threat intelligence match on.
fn auth_entities(message: &str) -> (Option<String>, Option<IpAddr>) {
    let words: Vec<&str> = message.split_whitespace().collect();
    let address = |word: &str| -> Option<IpAddr> {
        word.trim_matches(|c| matches!(c, '[' | ']' | ':' | ',' | ';'))
            .parse()
            .ok()
    };
    // A name as written (`root,`, `'bob'`, `alice.`), or nothing for PAM's placeholders.
    // `root(uid=0)` (cron) is root; `(null)` is no one.
    let name = |word: &str| -> Option<String> {
        let word = word.split('(').next().unwrap_or_default();
        let name = word.trim_matches(|c| matches!(c, ',' | '.' | ';' | ':' | '\'' | '"'));
        (!name.is_empty() && name != "unknown").then(|| name.to_owned())
    };
    let mut user = None;
    let mut ip = None;
    for (index, word) in words.iter().enumerate() {
        let next = words.get(index + 1).copied();
        let lower = word.to_ascii_lowercase();
        match lower.as_str() {
            "from" | "by" if ip.is_none() => {
                // `Connection closed by invalid user x 203.0.113.9 port 22`.
                ip = words[index + 1..].iter().take(4).find_map(|w| address(w));
            }
            // `user unknown` (PAM) says there is no such user; it names none.
            "user" if user.is_none() && next.is_some_and(|n| !n.eq_ignore_ascii_case("from")) => {
                user = next.and_then(name);
            }
            "for" if user.is_none() => {
                // `for invalid user x from` is handled by `user`; `for x from` (OpenSSH),
                // `FOR root, …` (login) and `password changed for x` (passwd) name x.
                let after = words.get(index + 2).map(|w| w.to_ascii_lowercase());
                if let Some(next) = next
                    && !next.eq_ignore_ascii_case("invalid")
                    && !next.eq_ignore_ascii_case("user")
                    && (next.ends_with(',')
                        || matches!(after.as_deref(), None | Some("from" | "by")))
                {
                    user = name(next);
                }
            }
            _ => {
                if let Some(host) = word.strip_prefix("rhost=")
                    && ip.is_none()
                {
                    ip = address(host);
                } else if let Some(value) = word
                    .strip_prefix("user=")
                    .or_else(|| word.strip_prefix("name="))
                    && user.is_none()
                {
                    user = name(value);
                } else if ip.is_none() && word.starts_with('[') && word.ends_with(']') {
                    ip = address(word);
                }
            }
        }
    }
    (user, ip)
}

fn find_ip(fields: &Fields, names_in_order: &[&str]) -> Option<IpAddr> {
    find(fields, names_in_order, |value| {
        value
            .as_str()
            .and_then(|text| text.trim().trim_start_matches("::ffff:").parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshd_messages_name_their_user_and_client() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let user = |s: &str| Some(s.to_owned());
        for (message, expected) in [
            (
                "Failed password for invalid user webmaster from 173.234.31.186 port 38926 ssh2",
                (user("webmaster"), ip("173.234.31.186")),
            ),
            (
                "Failed password for root from 5.36.59.76 port 42393 ssh2",
                (user("root"), ip("5.36.59.76")),
            ),
            (
                "Accepted password for fztu from 119.137.62.142 port 49116 ssh2",
                (user("fztu"), ip("119.137.62.142")),
            ),
            (
                "Invalid user test9 from 52.80.34.196",
                (user("test9"), ip("52.80.34.196")),
            ),
            (
                "Received disconnect from 52.80.34.196: 11: Bye Bye [preauth]",
                (None, ip("52.80.34.196")),
            ),
            (
                "Connection closed by 173.234.31.186 [preauth]",
                (None, ip("173.234.31.186")),
            ),
            (
                "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=112.95.230.3  user=root",
                (user("root"), ip("112.95.230.3")),
            ),
            (
                "reverse mapping checking getaddrinfo for ns.example.com [173.234.31.186] failed - POSSIBLE BREAK-IN ATTEMPT!",
                (None, ip("173.234.31.186")),
            ),
            (
                "pam_unix(sshd:auth): check pass; user unknown",
                (None, None),
            ),
            ("Server listening on 0.0.0.0 port 22.", (None, None)),
        ] {
            assert_eq!(auth_entities(message), expected, "{message}");
        }
    }

    #[test]
    fn other_programs_name_their_user_client_and_command() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let user = |s: &str| Some(s.to_owned());
        for (program, message, expected) in [
            // loghub's Linux_2k.
            (
                "su(pam_unix)",
                "session opened for user cyrus by (uid=0)",
                (user("cyrus"), None, None),
            ),
            (
                "sshd(pam_unix)",
                "authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4 ",
                (None, ip("218.188.2.4"), None),
            ),
            (
                "ftpd",
                "connection from 24.54.76.216 (24-54-76-216.bflony.adelphia.net) at Sun Jul 17 23:21:54 2005 ",
                (None, ip("24.54.76.216"), None),
            ),
            (
                "klogind",
                "Authentication failed from 163.27.187.39 (163.27.187.39): Permission denied in replay cache code ",
                (None, ip("163.27.187.39"), None),
            ),
            (
                "login(pam_unix)",
                "check pass; user unknown",
                (None, None, None),
            ),
            // util-linux, shadow, systemd, sudo and cron as they log today.
            (
                "login",
                "FAILED LOGIN 1 FROM 192.0.2.7 FOR root, Authentication failure",
                (user("root"), ip("192.0.2.7"), None),
            ),
            (
                "useradd",
                "new user: name=bob, UID=1001, GID=1001, home=/home/bob, shell=/bin/bash, from=/dev/pts/0",
                (user("bob"), None, None),
            ),
            ("userdel", "delete user 'bob'", (user("bob"), None, None)),
            (
                "passwd",
                "pam_unix(passwd:chauthtok): password changed for carol",
                (user("carol"), None, None),
            ),
            (
                "systemd-logind",
                "New session 42 of user alice.",
                (user("alice"), None, None),
            ),
            (
                "CRON",
                "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
                (user("root"), None, None),
            ),
            (
                "sudo",
                "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/id -u",
                (user("alice"), None, Some("/usr/bin/id".to_owned())),
            ),
            (
                "sudo",
                "pam_unix(sudo:session): session opened for user root by alice(uid=1000)",
                (user("root"), None, None),
            ),
            // Programs that name no one are left alone.
            (
                "kernel",
                "user 5 from 10.0.0.1 did something",
                (None, None, None),
            ),
        ] {
            assert_eq!(
                program_entities(program, message),
                expected,
                "{program}: {message}"
            );
        }
    }

    fn origin(tenant: &TenantId) -> Origin<'_> {
        Origin {
            tenant,
            transport: "http",
            peer: None,
            request_key: "k",
            received: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        }
    }

    #[test]
    fn sysmon_evtx_json_is_recognized_with_entities() {
        let tenant = TenantId::new("acme").unwrap();
        let normalizer = Normalizer::builtin().unwrap();
        let record = serde_json::json!({"Event": {
            "System": {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1,
                       "Computer": "ws1.acme.local",
                       "TimeCreated": {"#attributes": {"SystemTime": "2024-05-01T10:00:00.5Z"}},
                       "EventRecordID": 42},
            "EventData": {"Image": "C:\\Windows\\System32\\whoami.exe", "User": "ACME\\alice",
                          "CommandLine": "whoami /priv"}}});
        let text = record.to_string();
        let event = normalizer.event(&origin(&tenant), 0, record, &text);
        assert_eq!(event.logsource.product.as_deref(), Some("windows"));
        assert_eq!(
            event.logsource.category.as_deref(),
            Some("process_creation")
        );
        assert_eq!(event.source.format, "evtx");
        assert_eq!(event.entities.host.as_deref(), Some("ws1.acme.local"));
        assert_eq!(event.entities.user.as_deref(), Some("ACME\\alice"));
        assert_eq!(
            event.entities.process.as_deref(),
            Some("C:\\Windows\\System32\\whoami.exe")
        );
        assert_eq!(event.event_time.unix_timestamp(), 1_714_557_600);
        assert_eq!(event.raw.unwrap().text, text);
    }

    #[test]
    fn unknown_json_keeps_its_fields_and_the_receive_time() {
        let tenant = TenantId::new("acme").unwrap();
        let normalizer = Normalizer::builtin().unwrap();
        let record = serde_json::json!({"message": "hello", "source": {"ip": "10.1.2.3"}});
        let event = normalizer.event(&origin(&tenant), 3, record, "{}");
        assert_eq!(event.source.format, "json");
        assert!(event.logsource.product.is_none());
        assert_eq!(event.event_time, origin(&tenant).received);
        assert_eq!(event.entities.src_ip, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(event.fields.get_str("message"), Some("hello"));
        // The same request key and index give the same id; another index another id.
        let again = normalizer.event(&origin(&tenant), 3, serde_json::json!({}), "{}");
        let other = normalizer.event(&origin(&tenant), 4, serde_json::json!({}), "{}");
        assert_eq!(event.id, again.id);
        assert_ne!(event.id, other.id);
    }

    #[test]
    fn entity_names_match_whole_segments_in_priority_order() {
        assert!(names("Event.EventData.User", "User"));
        assert!(names("User", "User"));
        assert!(!names("Event.EventData.TargetUser", "User"));
        let fields = Fields::from_json(serde_json::json!({
            "SubjectUserName": "svc", "TargetUserName": "alice", "user": {"name": "-"}
        }));
        assert_eq!(find_text(&fields, USER).as_deref(), Some("alice"));
        let fields = Fields::from_json(serde_json::json!({"SubjectUserName": "-", "User": "bob"}));
        assert_eq!(find_text(&fields, USER).as_deref(), Some("bob"));
    }

    #[test]
    fn times_parse_from_rfc3339_and_epochs() {
        assert_eq!(
            parse_time("1700000000").unwrap().unix_timestamp(),
            1_700_000_000
        );
        assert_eq!(
            parse_time("1700000000123").unwrap().unix_timestamp(),
            1_700_000_000
        );
        assert_eq!(
            parse_time("2024-01-02T03:04:05+02:00")
                .unwrap()
                .unix_timestamp(),
            1_704_157_445
        );
        assert!(parse_time("yesterday").is_none());
        assert!(parse_time("-5").is_none());
        assert!(parse_time("NaN").is_none());
    }
}
