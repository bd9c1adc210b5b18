//! Syslog (RFC 5424 and RFC 3164, parsed by `syslog_loose` through vigil-sigma) over UDP, TCP
//! and TLS (RFC 5425; octet counting per RFC 6587, or newline framing, detected per
//! connection).
//!
//! Syslog carries no credentials: the tenant comes from the listener (a per-tenant deployment
//! sets `syslog.tenant`) or from the sender's network (`syslog.networks`, longest prefix wins,
//! for pooled deployments). A message from an unattributed address is counted and dropped.
//! TCP reads wait while a batch is being published, so a slow bus slows the sender down
//! (TCP flow control) instead of filling memory; UDP is best effort by nature.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio_util::sync::CancellationToken;
use vigil_schema::{Event, TenantId};

use crate::http::{IngestState, publish_admitted};
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
}

impl SyslogConfig {
    /// Whether any message could be attributed to a tenant.
    pub fn attributes_tenants(&self) -> bool {
        self.tenant.is_some() || !self.networks.is_empty()
    }

    /// The tenant of a sender: the longest matching network, else the listener's tenant.
    pub fn tenant_of(&self, peer: IpAddr) -> Option<&TenantId> {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.networks
            .iter()
            .filter(|network| network.cidr.contains(&peer))
            .max_by_key(|network| network.cidr.prefix_len())
            .map(|network| &network.tenant)
            .or(self.tenant.as_ref())
    }
}

/// Collects parsed messages per tenant and publishes them in batches.
struct Batcher {
    state: IngestState,
    config: Arc<SyslogConfig>,
    pending: Vec<(TenantId, Event)>,
    /// Over a tenant's rate, wait (TCP and TLS: the sender is slowed down) instead of dropping
    /// (UDP, which cannot be slowed down).
    wait_for_rate: bool,
}

impl Batcher {
    fn add(&mut self, tenant: &TenantId, line: &str, peer: SocketAddr) {
        let value = vigil_sigma::source::syslog_record(line);
        let key = uuid::Uuid::now_v7().to_string();
        let origin = Origin {
            tenant,
            transport: "syslog",
            peer: Some(peer.to_string()),
            request_key: &key,
            received: time::OffsetDateTime::now_utc(),
        };
        let event = self.state.normalizer.event(&origin, 0, value, line);
        self.pending.push((tenant.clone(), event));
    }

    fn full(&self) -> bool {
        self.pending.len() >= self.config.batch_events.max(1)
    }

    /// Publishes what is pending; on a bus failure the messages are dropped and counted (syslog
    /// has no way to ask the sender again).
    async fn flush(&mut self) {
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
                metrics::counter!(metric_names::SYSLOG_DROPPED, "reason" => "rate")
                    .increment(count);
                continue;
            }
            match publish_admitted(&self.state, &tenant, events).await {
                Ok(()) => {
                    metrics::counter!(metric_names::ACCEPTED, "transport" => "syslog")
                        .increment(count);
                }
                Err(_) => {
                    metrics::counter!(metric_names::SYSLOG_DROPPED, "reason" => "bus")
                        .increment(count);
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
                Err(crate::limits::Limited::Wait(wait)) if self.wait_for_rate => {
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

fn dropped(reason: &'static str) {
    metrics::counter!(metric_names::SYSLOG_DROPPED, "reason" => reason).increment(1);
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
        wait_for_rate: false,
    };
    let flush_every = Duration::from_millis(config.flush_millis.max(1));
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => break,
            received = socket.recv_from(&mut buffer) => received,
            () = tokio::time::sleep(flush_every), if !batcher.pending.is_empty() => {
                batcher.flush().await;
                continue;
            }
        };
        let Ok((length, peer)) = received else {
            continue;
        };
        if length > config.max_message_bytes {
            dropped("too_long");
            continue;
        }
        let Some(tenant) = config.tenant_of(peer.ip()).cloned() else {
            dropped("unattributed");
            continue;
        };
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
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let Some(tenant) = config.tenant_of(peer.ip()).cloned() else {
            dropped("unattributed");
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
                        _ => dropped("tls_handshake"),
                    }
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

/// One message from a connection: `Ok(None)` at the end of the stream.
async fn next_message<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
    octet_counting: bool,
) -> std::io::Result<Option<Result<String, &'static str>>> {
    if octet_counting {
        let mut length = Vec::new();
        let read = reader.read_until(b' ', &mut length).await?;
        if read == 0 {
            return Ok(None);
        }
        let length: usize = match std::str::from_utf8(&length[..length.len().saturating_sub(1)])
            .ok()
            .and_then(|digits| digits.trim().parse().ok())
        {
            Some(length) => length,
            // A broken frame header: the stream cannot be resynchronized.
            None => return Err(std::io::Error::other("invalid octet count")),
        };
        if length > max {
            // Skip the message's bytes to stay in frame.
            let mut skip = (&mut *reader).take(length as u64);
            tokio::io::copy(&mut skip, &mut tokio::io::sink()).await?;
            return Ok(Some(Err("too_long")));
        }
        let mut message = vec![0u8; length];
        reader.read_exact(&mut message).await?;
        Ok(Some(Ok(String::from_utf8_lossy(&message).into_owned())))
    } else {
        let mut line = Vec::new();
        let mut limited = (&mut *reader).take(max as u64 + 1);
        let read = limited.read_until(b'\n', &mut line).await?;
        if read == 0 {
            return Ok(None);
        }
        if line.len() > max && !line.ends_with(b"\n") {
            // Skip the rest of the overlong line.
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest).await?;
            return Ok(Some(Err("too_long")));
        }
        Ok(Some(Ok(String::from_utf8_lossy(&line).into_owned())))
    }
}

async fn connection<S: tokio::io::AsyncRead + Unpin + Send>(
    stream: S,
    peer: SocketAddr,
    tenant: TenantId,
    state: IngestState,
    config: Arc<SyslogConfig>,
    shutdown: CancellationToken,
) {
    let mut reader = BufReader::new(stream);
    let timeout = Duration::from_secs(config.read_timeout_secs.max(1));
    let mut batcher = Batcher {
        state,
        config: Arc::clone(&config),
        pending: Vec::new(),
        wait_for_rate: true,
    };
    // RFC 6587: a frame that starts with a digit is octet counted.
    let octet_counting = match tokio::time::timeout(timeout, reader.fill_buf()).await {
        Ok(Ok(bytes)) if !bytes.is_empty() => bytes[0].is_ascii_digit(),
        _ => return,
    };
    let flush_every = Duration::from_millis(config.flush_millis.max(1));
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(flush_every), if !batcher.pending.is_empty() => {
                batcher.flush().await;
                continue;
            }
            next = tokio::time::timeout(timeout, next_message(&mut reader, config.max_message_bytes, octet_counting)) => next,
        };
        match next {
            Err(_) => {
                dropped("idle_timeout");
                break;
            }
            Ok(Err(_)) | Ok(Ok(None)) => break,
            Ok(Ok(Some(Err(reason)))) => dropped(reason),
            Ok(Ok(Some(Ok(message)))) => {
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

    #[test]
    fn the_longest_network_wins_and_the_listener_tenant_is_the_fallback() {
        let config = SyslogConfig {
            tenant: Some(TenantId::new("fallback").unwrap()),
            networks: vec![
                NetworkTenant {
                    cidr: "10.0.0.0/8".parse().unwrap(),
                    tenant: TenantId::new("wide").unwrap(),
                },
                NetworkTenant {
                    cidr: "10.1.0.0/16".parse().unwrap(),
                    tenant: TenantId::new("narrow").unwrap(),
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

    #[tokio::test]
    async fn frames_are_read_by_count_or_by_line() {
        let mut counted = BufReader::new(&b"5 hello11 hello world3 abc"[..]);
        assert_eq!(
            next_message(&mut counted, 8, true).await.unwrap(),
            Some(Ok("hello".into()))
        );
        assert_eq!(
            next_message(&mut counted, 8, true).await.unwrap(),
            Some(Err("too_long"))
        );
        assert_eq!(
            next_message(&mut counted, 8, true).await.unwrap(),
            Some(Ok("abc".into()))
        );
        assert_eq!(next_message(&mut counted, 8, true).await.unwrap(), None);
        let mut broken = BufReader::new(&b"x5 hello"[..]);
        assert!(next_message(&mut broken, 8, true).await.is_err());
        let mut lines = BufReader::new(&b"one\nthis line is too long\ntwo"[..]);
        assert_eq!(
            next_message(&mut lines, 8, false).await.unwrap(),
            Some(Ok("one\n".into()))
        );
        assert_eq!(
            next_message(&mut lines, 8, false).await.unwrap(),
            Some(Err("too_long"))
        );
        assert_eq!(
            next_message(&mut lines, 8, false).await.unwrap(),
            Some(Ok("two".into()))
        );
        assert_eq!(next_message(&mut lines, 8, false).await.unwrap(), None);
    }
}
