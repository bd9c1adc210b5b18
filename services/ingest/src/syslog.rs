//! Syslog (RFC 5424 and RFC 3164, parsed by `syslog_loose` through vigil-sigma) over UDP, TCP
//! and TLS (RFC 5425; octet counting per RFC 6587, or newline framing, detected per
//! connection).
//!
//! Syslog carries no credentials: the tenant comes from the listener (a per-tenant deployment
//! sets `syslog.tenant`) or from the sender's network (`syslog.networks`, longest prefix wins,
//! for pooled deployments). A message from an unattributed address is counted and dropped.
//! TCP reads wait while a batch is being published, so a slow bus slows the sender down
//! (TCP flow control) instead of filling memory; when the bus is down, a TCP or TLS connection
//! stops reading and publishes its batch again until the bus takes it (syslog has no way to ask
//! the sender again, so giving up would lose it). UDP is best effort by nature: what the bus
//! refuses is counted and dropped.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, FramedRead};
use tokio_util::sync::CancellationToken;
use vigil_schema::{Event, TenantId};

use crate::http::{IngestState, batches, publish_batches};
use crate::metric_names;
use crate::normalize::Origin;

/// Syslog listeners (`[ingest.syslog]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    /// UDP listen address; none disables UDP.
    pub udp_listen: Option<SocketAddr>,
    /// TCP listen address; none disables TCP.
    pub tcp_listen: Option<SocketAddr>,
    /// TLS listen address, used when `tls` names a certificate and key.
    pub tls_listen: Option<SocketAddr>,
    /// The server certificate and key (PEM) for syslog over TLS.
    pub tls: Option<TlsFiles>,
    /// The tenant of every message (a per-tenant deployment).
    pub tenant: Option<TenantId>,
    /// Sender networks and their tenants (a pooled deployment); checked before `tenant`.
    pub networks: Vec<NetworkTenant>,
    /// The time zone of senders' RFC 3164 timestamps, which name none (an IANA name such as
    /// `Europe/Berlin`, with its daylight saving time); a network may give its own. UTC when
    /// unset.
    pub timezone: Option<TimeZone>,
    /// Longest message accepted, in bytes; longer ones are counted and dropped.
    pub max_message_bytes: usize,
    /// A TCP connection idle this long is closed, in seconds.
    pub read_timeout_secs: u64,
    /// Messages per published batch.
    pub batch_events: usize,
    /// A partial batch is published after this long, in milliseconds.
    pub flush_millis: u64,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        Self {
            udp_listen: Some(SocketAddr::from(([0, 0, 0, 0], 5514))),
            tcp_listen: Some(SocketAddr::from(([0, 0, 0, 0], 5514))),
            tls_listen: Some(SocketAddr::from(([0, 0, 0, 0], 6514))),
            tls: None,
            tenant: None,
            networks: Vec::new(),
            timezone: None,
            max_message_bytes: 64 * 1024,
            read_timeout_secs: 300,
            batch_events: 500,
            flush_millis: 200,
        }
    }
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert_file: std::path::PathBuf,
    /// The private key.
    pub key_file: std::path::PathBuf,
}

impl TlsFiles {
    /// A TLS acceptor over rustls (ring); errors name the file.
    pub fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert_file)
            .and_then(|certs| certs.collect())
            .map_err(|err| format!("ingest.syslog.tls: {}: {err}", self.cert_file.display()))?;
        let key = PrivateKeyDer::from_pem_file(&self.key_file)
            .map_err(|err| format!("ingest.syslog.tls: {}: {err}", self.key_file.display()))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("ingest.syslog.tls: {err}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|err| format!("ingest.syslog.tls: {err}"))?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// A sender network and its tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkTenant {
    /// e.g. `10.20.0.0/16` or `2001:db8::/32`.
    pub cidr: ipnet::IpNet,
    /// The tenant of senders in it.
    pub tenant: TenantId,
    /// Its senders' time zone, when it is not the listener's.
    #[serde(default)]
    pub timezone: Option<TimeZone>,
}

/// An IANA time zone (`Europe/Berlin`, `UTC`), written by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(pub chrono_tz::Tz);

impl Serialize for TimeZone {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map(TimeZone).map_err(|_| {
            serde::de::Error::custom(format!(
                "unknown time zone {name:?}: expected an IANA name such as Europe/Berlin or UTC"
            ))
        })
    }
}

impl SyslogConfig {
    /// Whether any message could be attributed to a tenant.
    pub fn attributes_tenants(&self) -> bool {
        self.tenant.is_some() || !self.networks.is_empty()
    }

    /// The tenant of a sender: the longest matching network, else the listener's tenant.
    pub fn tenant_of(&self, peer: IpAddr) -> Option<&TenantId> {
        self.network_of(peer)
            .map(|network| &network.tenant)
            .or(self.tenant.as_ref())
    }

    /// The time zone of a sender's RFC 3164 timestamps: its network's, else the listener's,
    /// else UTC.
    pub fn timezone_of(&self, peer: IpAddr) -> chrono_tz::Tz {
        self.network_of(peer)
            .and_then(|network| network.timezone)
            .or(self.timezone)
            .map_or(chrono_tz::Tz::UTC, |TimeZone(zone)| zone)
    }

    /// The longest network that holds `peer`.
    fn network_of(&self, peer: IpAddr) -> Option<&NetworkTenant> {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.networks
            .iter()
            .filter(|network| network.cidr.contains(&peer))
            .max_by_key(|network| network.cidr.prefix_len())
    }
}

/// Collects parsed messages per tenant and publishes them in batches.
struct Batcher {
    state: IngestState,
    config: Arc<SyslogConfig>,
    pending: Vec<(TenantId, Event)>,
    /// When what is pending must be published: `flush_millis` after its first message, however
    /// many arrive meanwhile.
    flush_at: Option<tokio::time::Instant>,
    /// A stream sender (TCP, TLS) waits, for the tenant's rate and for the bus, and is slowed
    /// down meanwhile; a datagram sender (UDP) cannot be slowed down, so what is over the rate
    /// or refused by the bus is dropped and counted.
    stream: bool,
    shutdown: CancellationToken,
}

impl Batcher {
    fn add(&mut self, tenant: &TenantId, line: &str, peer: SocketAddr) {
        let zone = self.config.timezone_of(peer.ip());
        let value = vigil_sigma::source::syslog_record_in(line, Some(zone));
        let key = uuid::Uuid::now_v7().to_string();
        let origin = Origin {
            tenant,
            transport: "syslog",
            peer: Some(peer.to_string()),
            request_key: &key,
            received: time::OffsetDateTime::now_utc(),
        };
        let event = self.state.normalizer.event(&origin, 0, value, line);
        if self.pending.is_empty() {
            self.flush_at = Some(
                tokio::time::Instant::now()
                    + Duration::from_millis(self.config.flush_millis.max(1)),
            );
        }
        self.pending.push((tenant.clone(), event));
    }

    /// Waits until what is pending is due (forever when nothing is).
    async fn due(&self) {
        match self.flush_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    fn full(&self) -> bool {
        self.pending.len() >= self.config.batch_events.max(1)
    }

    /// Publishes what is pending. On a bus failure a stream sender's messages are published
    /// again (with backoff, until shutdown) while its connection reads nothing; a datagram
    /// sender's are dropped and counted.
    async fn flush(&mut self) {
        self.flush_at = None;
        if self.pending.is_empty() {
            return;
        }
        let mut by_tenant: std::collections::BTreeMap<TenantId, Vec<Event>> = Default::default();
        for (tenant, event) in self.pending.drain(..) {
            by_tenant.entry(tenant).or_default().push(event);
        }
        for (tenant, events) in by_tenant {
            let count = events.len() as u64;
            if !self.admit(&tenant, events.len()).await {
                dropped(Some(&tenant), "rate", count);
                continue;
            }
            let batches = batches(&self.state, &tenant, events);
            let mut backoff = Duration::from_millis(100);
            loop {
                match publish_batches(&self.state, &batches).await {
                    Ok(()) => {
                        metrics::counter!(metric_names::ACCEPTED, "transport" => "syslog")
                            .increment(count);
                        break;
                    }
                    Err(err) if self.stream && transient(&err) && !self.shutdown.is_cancelled() => {
                        tracing::warn!(tenant = %tenant, error = %err, retry_in = ?backoff,
                            "publishing syslog messages failed; the connection reads nothing until the bus takes them");
                        tokio::select! {
                            () = self.shutdown.cancelled() => {}
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    Err(err) => {
                        tracing::warn!(tenant = %tenant, error = %err, messages = count,
                            "publishing syslog messages failed; they are dropped");
                        dropped(Some(&tenant), "bus", count);
                        break;
                    }
                }
            }
        }
    }
}

impl Batcher {
    /// Takes `events` from the tenant's rate; a stream sender waits for it, a datagram sender
    /// does not.
    async fn admit(&self, tenant: &TenantId, events: usize) -> bool {
        loop {
            match self.state.rates.admit(tenant, events) {
                Ok(()) => return true,
                Err(crate::limits::Limited::Wait(wait)) if self.stream => {
                    tokio::time::sleep(wait).await;
                }
                Err(_) => {
                    metrics::counter!(metric_names::RATE_LIMITED, "tenant" => tenant.to_string())
                        .increment(events as u64);
                    return false;
                }
            }
        }
    }
}

/// Counts dropped messages by tenant (empty when the sender has none) and reason.
fn dropped(tenant: Option<&TenantId>, reason: &'static str, messages: u64) {
    let tenant = tenant.map_or_else(String::new, ToString::to_string);
    metrics::counter!(metric_names::SYSLOG_DROPPED, "tenant" => tenant, "reason" => reason)
        .increment(messages);
}

/// Serves UDP syslog until `shutdown`.
pub async fn serve_udp(
    socket: tokio::net::UdpSocket,
    state: IngestState,
    config: Arc<SyslogConfig>,
    shutdown: CancellationToken,
) {
    let mut buffer = vec![0u8; config.max_message_bytes.max(512) + 1];
    let mut batcher = Batcher {
        state,
        config: Arc::clone(&config),
        pending: Vec::new(),
        flush_at: None,
        stream: false,
        shutdown: shutdown.clone(),
    };
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => break,
            received = socket.recv_from(&mut buffer) => received,
            () = batcher.due() => {
                batcher.flush().await;
                continue;
            }
        };
        let Ok((length, peer)) = received else {
            continue;
        };
        let Some(tenant) = config.tenant_of(peer.ip()).cloned() else {
            dropped(None, "unattributed", 1);
            continue;
        };
        if length > batcher.state.config_for(&tenant).syslog.max_message_bytes {
            dropped(Some(&tenant), "too_long", 1);
            continue;
        }
        let Ok(text) = std::str::from_utf8(&buffer[..length]) else {
            // Syslog payloads may be any bytes; keep what is readable.
            let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
            batcher.add(&tenant, text.trim_end(), peer);
            if batcher.full() {
                batcher.flush().await;
            }
            continue;
        };
        batcher.add(&tenant, text.trim_end_matches(['\n', '\r', '\0']), peer);
        if batcher.full() {
            batcher.flush().await;
        }
    }
    batcher.flush().await;
}

/// Serves syslog over TCP, or over TLS when an acceptor is given (a handshake gets 10 seconds),
/// until `shutdown`; one task per connection.
pub async fn serve_stream(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: IngestState,
    config: Arc<SyslogConfig>,
    shutdown: CancellationToken,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %err, "accepting a syslog connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(tenant) = config.tenant_of(peer.ip()).cloned() else {
            dropped(None, "unattributed", 1);
            continue;
        };
        let (tls, state, config, shutdown) = (
            tls.clone(),
            state.clone(),
            Arc::clone(&config),
            shutdown.clone(),
        );
        connections.spawn(async move {
            match tls {
                None => connection(stream, peer, tenant, state, config, shutdown).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            connection(stream, peer, tenant, state, config, shutdown).await;
                        }
                        _ => dropped(Some(&tenant), "tls_handshake", 1),
                    }
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    // Each connection publishes what it holds once more on shutdown; give them the time.
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "syslog connections still publishing 10 s after shutdown; stopping them"
        );
        connections.shutdown().await;
    }
}

/// Whether publishing may succeed when tried again (the bus was down, slow or full), as
/// opposed to a batch the bus can never take.
fn transient(err: &vigil_bus::BusError) -> bool {
    match err {
        vigil_bus::BusError::Backpressure { .. } | vigil_bus::BusError::Connect { .. } => true,
        vigil_bus::BusError::Publish { reason, .. } => !reason.contains("maximum payload"),
        _ => false,
    }
}

/// The longest octet count read before its space (RFC 6587 frames are far shorter).
const MAX_COUNT_DIGITS: usize = 10;

/// RFC 6587 framing of a syslog stream, detected from its first byte: octet counting
/// (`LEN SP MSG`) or one message per line. The stream's buffer holds a message that has not
/// arrived whole, so a sender that pauses mid-message loses nothing while the connection
/// publishes a batch. Items are messages, or the reason one was skipped (`too_long`).
#[derive(Debug)]
struct Frames {
    max: usize,
    framing: Option<Framing>,
    skip: Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    OctetCounting,
    Lines,
}

/// What is left of a message that was too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    Nothing,
    Bytes(usize),
    ToNewline,
}

impl Frames {
    fn new(max: usize) -> Self {
        Self {
            max,
            framing: None,
            skip: Skip::Nothing,
        }
    }
}

impl Decoder for Frames {
    type Item = Result<String, &'static str>;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<Self::Item>> {
        match self.skip {
            Skip::Nothing => {}
            Skip::Bytes(left) => {
                let skipped = left.min(buf.len());
                buf.advance(skipped);
                if skipped < left {
                    self.skip = Skip::Bytes(left - skipped);
                    return Ok(None);
                }
                self.skip = Skip::Nothing;
            }
            Skip::ToNewline => match buf.iter().position(|&byte| byte == b'\n') {
                Some(newline) => {
                    buf.advance(newline + 1);
                    self.skip = Skip::Nothing;
                }
                None => {
                    buf.clear();
                    return Ok(None);
                }
            },
        }
        if buf.is_empty() {
            return Ok(None);
        }
        let framing = *self.framing.get_or_insert(if buf[0].is_ascii_digit() {
            Framing::OctetCounting
        } else {
            Framing::Lines
        });
        match framing {
            Framing::OctetCounting => {
                // Some senders end each frame with a newline as well.
                let Some(start) = buf.iter().position(|byte| !byte.is_ascii_whitespace()) else {
                    buf.clear();
                    return Ok(None);
                };
                buf.advance(start);
                let Some(space) = buf
                    .iter()
                    .take(MAX_COUNT_DIGITS + 1)
                    .position(|&byte| byte == b' ')
                else {
                    if buf.len() > MAX_COUNT_DIGITS {
                        return Err(invalid_count());
                    }
                    return Ok(None);
                };
                // A broken frame header: the stream cannot be resynchronized.
                let length: usize = std::str::from_utf8(&buf[..space])
                    .ok()
                    .filter(|digits| {
                        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|digits| digits.parse().ok())
                    .ok_or_else(invalid_count)?;
                if length > self.max {
                    // Skip the message's bytes to stay in frame.
                    buf.advance(space + 1);
                    self.skip = Skip::Bytes(length);
                    return Ok(Some(Err("too_long")));
                }
                if buf.len() < space + 1 + length {
                    buf.reserve(space + 1 + length - buf.len());
                    return Ok(None);
                }
                buf.advance(space + 1);
                let message = buf.split_to(length);
                Ok(Some(Ok(String::from_utf8_lossy(&message).into_owned())))
            }
            Framing::Lines => {
                let window = &buf[..buf.len().min(self.max + 1)];
                match window.iter().position(|&byte| byte == b'\n') {
                    Some(newline) => {
                        let line = buf.split_to(newline + 1);
                        Ok(Some(Ok(
                            String::from_utf8_lossy(&line[..newline]).into_owned()
                        )))
                    }
                    None if buf.len() > self.max => {
                        self.skip = Skip::ToNewline;
                        Ok(Some(Err("too_long")))
                    }
                    None => Ok(None),
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<Self::Item>> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        // A last line without its newline is a message; a cut octet-counted frame or the rest
        // of a skipped one is not.
        let last = (self.framing == Some(Framing::Lines) && self.skip == Skip::Nothing)
            .then(|| String::from_utf8_lossy(buf).into_owned())
            .filter(|line| !line.is_empty());
        buf.clear();
        Ok(last.map(Ok))
    }
}

fn invalid_count() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "invalid octet count")
}

async fn connection<S: tokio::io::AsyncRead + Unpin + Send>(
    stream: S,
    peer: SocketAddr,
    tenant: TenantId,
    state: IngestState,
    config: Arc<SyslogConfig>,
    shutdown: CancellationToken,
) {
    // The tenant's own limit, at most the listener's.
    let max = state.config_for(&tenant).syslog.max_message_bytes;
    let mut frames = FramedRead::new(stream, Frames::new(max));
    let timeout = Duration::from_secs(config.read_timeout_secs.max(1));
    let mut batcher = Batcher {
        state,
        config: Arc::clone(&config),
        pending: Vec::new(),
        flush_at: None,
        stream: true,
        shutdown: shutdown.clone(),
    };
    loop {
        // Reading a frame is cancel safe: what has arrived of a message stays in the buffer.
        let next = tokio::select! {
            () = shutdown.cancelled() => break,
            () = batcher.due() => {
                batcher.flush().await;
                continue;
            }
            next = tokio::time::timeout(timeout, frames.next()) => next,
        };
        match next {
            Err(_) => {
                dropped(Some(&tenant), "idle_timeout", 1);
                break;
            }
            Ok(Some(Err(err))) => {
                tracing::debug!(peer = %peer, error = %err, "syslog connection closed");
                if err.kind() == std::io::ErrorKind::InvalidData {
                    dropped(Some(&tenant), "framing", 1);
                }
                break;
            }
            Ok(None) => break,
            Ok(Some(Ok(Err(reason)))) => dropped(Some(&tenant), reason, 1),
            Ok(Some(Ok(Ok(message)))) => {
                let message = message.trim_end_matches(['\n', '\r', '\0']);
                if !message.trim().is_empty() {
                    batcher.add(&tenant, message, peer);
                    if batcher.full() {
                        batcher.flush().await;
                    }
                }
            }
        }
    }
    batcher.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame `stream` decodes to, fed in pieces of `piece` bytes, then the end.
    fn frames(stream: &[u8], piece: usize, max: usize) -> Vec<Result<String, &'static str>> {
        let mut decoder = Frames::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in stream.chunks(piece) {
            buf.extend_from_slice(chunk);
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                out.push(frame);
            }
        }
        while let Some(frame) = decoder.decode_eof(&mut buf).unwrap() {
            out.push(frame);
        }
        out
    }

    #[test]
    fn frames_are_the_same_however_the_stream_is_cut() {
        let octets = b"11 <13>hello a\n12 <13>hello bb 4 <1>c";
        let lines = b"<13>hello a\r\n<13>hello bb\n\n<1>c";
        for piece in 1..=octets.len() {
            assert_eq!(
                frames(octets, piece, 64),
                [
                    Ok("<13>hello a".to_owned()),
                    Ok("<13>hello bb".into()),
                    Ok("<1>c".into())
                ],
                "octet counting in pieces of {piece}"
            );
            assert_eq!(
                frames(lines, piece, 64),
                [
                    Ok("<13>hello a\r".to_owned()),
                    Ok("<13>hello bb".into()),
                    Ok(String::new()),
                    Ok("<1>c".into())
                ],
                "lines in pieces of {piece}"
            );
        }
    }

    #[test]
    fn a_message_over_the_limit_is_skipped_and_the_next_one_kept() {
        for piece in [1, 3, 7, 100] {
            assert_eq!(
                frames(b"10 0123456789 3 abc5 de\nfg", piece, 8),
                [Err("too_long"), Ok("abc".to_owned()), Ok("de\nfg".into())],
            );
            // A line of exactly the limit is kept; one byte more is not.
            assert_eq!(
                frames(b"abcdefgh\nabcdefghi\nok\n", piece, 8),
                [Ok("abcdefgh".to_owned()), Err("too_long"), Ok("ok".into())],
            );
        }
        // The rest of a skipped line is not a message at the end of the stream.
        assert_eq!(
            frames(b"ok\n0123456789abc", 4, 8),
            [Ok("ok".to_owned()), Err("too_long")]
        );
        // Nor is a cut octet-counted frame.
        assert_eq!(frames(b"3 abc10 abc", 4, 64), [Ok("abc".to_owned())]);
    }

    #[test]
    fn a_broken_octet_count_is_an_error() {
        for stream in [&b"12x <13>hello"[..], b"123456789012345 x", b"5 hello9-1 x"] {
            let mut decoder = Frames::new(64);
            let mut buf = BytesMut::from(stream);
            let result =
                std::iter::from_fn(|| decoder.decode(&mut buf).transpose()).find(Result::is_err);
            let err = result.expect("an error").unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
            assert_eq!(err.to_string(), "invalid octet count");
        }
    }

    #[test]
    fn the_longest_network_wins_and_the_listener_tenant_is_the_fallback() {
        let config = SyslogConfig {
            tenant: Some(TenantId::new("fallback").unwrap()),
            networks: vec![
                NetworkTenant {
                    cidr: "10.0.0.0/8".parse().unwrap(),
                    tenant: TenantId::new("wide").unwrap(),
                    timezone: None,
                },
                NetworkTenant {
                    cidr: "10.1.0.0/16".parse().unwrap(),
                    tenant: TenantId::new("narrow").unwrap(),
                    timezone: Some(TimeZone(chrono_tz::Tz::Asia__Tokyo)),
                },
            ],
            ..Default::default()
        };
        let tenant = |ip: &str| config.tenant_of(ip.parse().unwrap()).map(|t| t.to_string());
        assert_eq!(tenant("10.1.2.3").as_deref(), Some("narrow"));
        assert_eq!(tenant("10.2.2.3").as_deref(), Some("wide"));
        assert_eq!(tenant("::ffff:10.1.0.9").as_deref(), Some("narrow"));
        assert_eq!(tenant("192.0.2.1").as_deref(), Some("fallback"));
        let pooled = SyslogConfig {
            tenant: None,
            ..config
        };
        assert_eq!(pooled.tenant_of("192.0.2.1".parse().unwrap()), None);
    }

    #[test]
    fn time_zones_come_from_the_network_then_the_listener_then_utc() {
        let config: SyslogConfig = toml::from_str(
            r#"
            timezone = "Europe/Berlin"
            networks = [
                { cidr = "10.0.0.0/8", tenant = "wide" },
                { cidr = "10.1.0.0/16", tenant = "narrow", timezone = "Asia/Tokyo" },
            ]
            "#,
        )
        .unwrap();
        let zone = |ip: &str| config.timezone_of(ip.parse().unwrap());
        assert_eq!(zone("10.1.2.3"), chrono_tz::Tz::Asia__Tokyo);
        assert_eq!(zone("10.2.2.3"), chrono_tz::Tz::Europe__Berlin);
        assert_eq!(
            SyslogConfig::default().timezone_of("10.1.2.3".parse().unwrap()),
            chrono_tz::Tz::UTC
        );
        let error = toml::from_str::<SyslogConfig>(r#"timezone = "Mars/Olympus""#).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unknown time zone \"Mars/Olympus\": expected an IANA name"),
            "{error}"
        );
    }
}
