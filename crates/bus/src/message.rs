use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use vigil_schema::{Payload, Stage};

use crate::headers::{
    HEADER_CONSUMER, HEADER_DEAD_LETTER_REASON, HEADER_DELIVERIES, HEADER_ENCODING,
    HEADER_ORIGINAL_SUBJECT, HEADER_SCHEMA,
};

/// The largest payload accepted after decompression; a larger one is a decode error, so a
/// compressed message can never expand without bound in a consumer.
pub const MAX_DECODED_PAYLOAD: usize = 64 * 1024 * 1024;

/// Payloads smaller than this are sent uncompressed: compressing them saves little.
const COMPRESS_ABOVE: usize = 1024;

/// zstd level for bus payloads: level 1 is the fastest and, on batches of similar events,
/// already shrinks JSON several times.
const ZSTD_LEVEL: i32 = 1;
use crate::metrics_names::DEAD_LETTERS;
use crate::{Acker, BusError, Headers, Result, Subject, trace};

/// A message to publish.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// Where it goes.
    pub subject: Subject,
    /// Stable id: the `Nats-Msg-Id` used for deduplication and downstream idempotency.
    pub id: String,
    /// Headers, trace context included.
    pub headers: Headers,
    /// The encoded payload.
    pub payload: Bytes,
}

impl OutgoingMessage {
    /// A message with the current span's trace context in its headers.
    pub fn new(subject: Subject, id: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        let mut headers = Headers::new();
        trace::inject_current(&mut headers);
        Self {
            subject,
            id: id.into(),
            headers,
            payload: payload.into(),
        }
    }

    /// Encodes `payload` as JSON for its tenant's subject of its stage, with the schema header.
    pub fn encode<T: Payload>(payload: &T, id: impl Into<String>) -> Result<Self> {
        let tenant = payload.tenant().ok_or_else(|| {
            BusError::Codec(format!(
                "a platform-wide {} has no tenant subject to publish on",
                T::KIND
            ))
        })?;
        let bytes = serde_json::to_vec(payload)
            .map_err(|err| BusError::Codec(format!("cannot encode {}: {err}", T::KIND)))?;
        let subject = Subject {
            tenant: tenant.clone(),
            stage: T::STAGE,
            partition: payload.partition(),
        };
        let mut message = Self::new(subject, id, bytes);
        message.headers.insert(HEADER_SCHEMA, T::schema_header());
        Ok(message)
    }
}

impl OutgoingMessage {
    /// As [`OutgoingMessage::encode`], compressing the JSON with zstd when it is larger than
    /// 1 KiB (the `Vigil-Encoding: zstd` header tells consumers). For batches: fewer bytes
    /// through the server is what raises events per second.
    pub fn encode_compressed<T: Payload>(payload: &T, id: impl Into<String>) -> Result<Self> {
        let mut message = Self::encode(payload, id)?;
        if message.payload.len() > COMPRESS_ABOVE {
            let compressed = zstd::bulk::compress(&message.payload, ZSTD_LEVEL)
                .map_err(|err| BusError::Codec(format!("cannot compress {}: {err}", T::KIND)))?;
            message.payload = compressed.into();
            message.headers.insert(HEADER_ENCODING, "zstd");
        }
        Ok(message)
    }
}

/// The payload as sent, decompressed according to its `Vigil-Encoding` header.
fn decoded_payload<'a>(
    headers: &Headers,
    payload: &'a Bytes,
) -> Result<std::borrow::Cow<'a, [u8]>> {
    match headers.get(HEADER_ENCODING) {
        None | Some("identity") => Ok(std::borrow::Cow::Borrowed(payload)),
        Some("zstd") => {
            // One frame that states its size (Vigil's publishers write exactly that:
            // `bulk::compress`) is decompressed in one call straight into a buffer of that
            // size. The stream decoder below copies every byte once more out of its window,
            // and `read_to_end` zeroes the buffer first: together a tenth of decoding an event
            // batch (`cargo bench -p vigil-detect --bench decode`).
            let single_frame = zstd::zstd_safe::find_frame_compressed_size(payload)
                .is_ok_and(|frame| frame == payload.len());
            let stated = zstd::zstd_safe::get_frame_content_size(payload)
                .ok()
                .flatten();
            // A size past 64 times the payload goes to the stream, which reserves no more than
            // that up front: a header's claim alone never reserves up to the limit.
            let plausible = |size: u64| size <= (payload.len() as u64).saturating_mul(64);
            match stated {
                Some(size) if single_frame && size > MAX_DECODED_PAYLOAD as u64 => Err(too_large()),
                Some(size) if single_frame && plausible(size) => {
                    // At most the limit, so it fits a `usize`.
                    let size = usize::try_from(size).map_err(|_| too_large())?;
                    let out = zstd::bulk::decompress(payload, size).map_err(|err| {
                        BusError::Codec(format!("cannot decompress zstd payload: {err}"))
                    })?;
                    Ok(std::borrow::Cow::Owned(out))
                }
                _ => decompress_stream(payload, stated).map(std::borrow::Cow::Owned),
            }
        }
        Some(other) => Err(BusError::Codec(format!(
            "unsupported payload encoding {other:?}: expected zstd or none"
        ))),
    }
}

/// Decompresses a zstd payload of several frames, or one that does not state its size, as a
/// stream, never past [`MAX_DECODED_PAYLOAD`].
fn decompress_stream(payload: &[u8], stated: Option<u64>) -> Result<Vec<u8>> {
    use std::io::Read;
    let decoder = zstd::stream::read::Decoder::new(payload)
        .map_err(|err| BusError::Codec(format!("cannot decompress payload: {err}")))?;
    // Sized by the first frame's content size where it states one, so a batch of JSON (about
    // 8:1) is not regrown and copied three times. Whatever a header claims, no more is
    // reserved than 64 times the payload or the limit; a larger output still grows as it is
    // read.
    let expected = stated
        .and_then(|size| usize::try_from(size).ok())
        .unwrap_or_else(|| payload.len().saturating_mul(4));
    let mut out = Vec::with_capacity(
        expected
            .min(payload.len().saturating_mul(64))
            .min(MAX_DECODED_PAYLOAD)
            + 1,
    );
    decoder
        .take(MAX_DECODED_PAYLOAD as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|err| BusError::Codec(format!("cannot decompress zstd payload: {err}")))?;
    if out.len() > MAX_DECODED_PAYLOAD {
        return Err(too_large());
    }
    Ok(out)
}

fn too_large() -> BusError {
    BusError::Codec(format!(
        "decompressed payload exceeds {} MiB",
        MAX_DECODED_PAYLOAD / (1024 * 1024)
    ))
}

/// Decodes a payload as `T`: checks the schema header when there is one, decompresses as the
/// `Vigil-Encoding` header says and parses the JSON. [`Delivery::decode`] is this plus the
/// tenant check; it is public so that benchmarks time the consumers' own decoding.
pub fn decode_payload<T: Payload>(headers: &Headers, payload: &Bytes) -> Result<T> {
    if let Some(schema) = headers.get(HEADER_SCHEMA) {
        let expected = T::schema_header();
        if schema != expected {
            return Err(BusError::Codec(format!(
                "payload schema {schema} is not the expected {expected}"
            )));
        }
    }
    let payload = decoded_payload(headers, payload)?;
    // JSON is UTF-8 throughout (RFC 8259), so the payload is checked once, whole, and parsed as
    // text: `from_slice` checks each string on its own, 8 % of decoding an event batch
    // (`cargo bench -p vigil-detect --bench decode`). Unlike `from_slice`, this also refuses
    // bad UTF-8 inside a value the type skips; Vigil's producers serialize Rust strings and
    // never write any.
    let text = std::str::from_utf8(&payload).map_err(|err| {
        BusError::Codec(format!(
            "cannot decode {}: the payload is not UTF-8: {err}",
            T::KIND
        ))
    })?;
    serde_json::from_str(text)
        .map_err(|err| BusError::Codec(format!("cannot decode {}: {err}", T::KIND)))
}

/// The bus's confirmation that a message is durably stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishReceipt {
    /// The stream sequence of the stored message.
    pub sequence: u64,
    /// Whether a message with the same id was already stored within the duplicate window; the
    /// new one was dropped.
    pub duplicate: bool,
}

/// A message handed to a consumer. Exactly one of [`Delivery::ack`], [`Delivery::nak`] or
/// [`Delivery::dead_letter`] should be called; dropping it unacknowledged means it is redelivered
/// after the consumer's ack wait.
pub struct Delivery {
    /// The subject it was published on; its tenant is the message's tenant.
    pub subject: Subject,
    /// The publisher's message id.
    pub id: Option<String>,
    /// Headers.
    pub headers: Headers,
    /// The payload.
    pub payload: Bytes,
    /// How often this message has been delivered to the consumer, from 1.
    pub deliveries: u32,
    /// The stream sequence.
    pub sequence: u64,
    /// The durable consumer name on the server (`<service>-<tenant>` or `<service>-all`).
    pub(crate) consumer: Arc<str>,
    /// The service's consumer name, a bounded metric label.
    pub(crate) consumer_label: Arc<str>,
    pub(crate) acker: Box<dyn Acker>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("subject", &self.subject.to_string())
            .field("id", &self.id)
            .field("deliveries", &self.deliveries)
            .field("sequence", &self.sequence)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Delivery {
    /// Confirms the message was processed and its output is durable.
    pub async fn ack(self) -> Result<()> {
        self.acker.ack().await
    }

    /// Asks for redelivery, after `delay` when given.
    pub async fn nak(self, delay: Option<Duration>) -> Result<()> {
        self.acker.nak(delay).await
    }

    /// Tells the bus the message is still being worked on, restarting its ack wait.
    pub async fn in_progress(&self) -> Result<()> {
        self.acker.in_progress().await
    }

    /// Moves the message to its tenant's dead-letter subject with `reason`, then stops its
    /// redelivery. `kind` is a short, bounded label for metrics (`decode`, `handler`, ...).
    pub async fn dead_letter(self, kind: &'static str, reason: &str) -> Result<()> {
        let stage = self.subject.stage;
        let mut message = OutgoingMessage {
            subject: Subject::new(self.subject.tenant.clone(), Stage::Deadletter),
            id: format!(
                "dl.{}.{}",
                self.consumer,
                self.id.clone().unwrap_or_else(|| self.sequence.to_string())
            ),
            headers: self.headers.clone(),
            payload: self.payload.clone(),
        };
        // Header values are single-line; keep the reason readable and bounded.
        let reason: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(1024)
            .collect();
        message.headers.insert(HEADER_DEAD_LETTER_REASON, reason);
        message
            .headers
            .insert(HEADER_ORIGINAL_SUBJECT, self.subject.to_string());
        message
            .headers
            .insert(HEADER_CONSUMER, self.consumer.to_string());
        message
            .headers
            .insert(HEADER_DELIVERIES, self.deliveries.to_string());
        self.acker.dead_letter(message).await?;
        metrics::counter!(DEAD_LETTERS, "stage" => stage.as_str(), "consumer" => self.consumer_label.to_string(), "reason" => kind)
            .increment(1);
        Ok(())
    }

    /// Decodes the payload as `T`, checking the schema header and that the payload's tenant is
    /// the subject's tenant.
    pub fn decode<T: Payload>(&self) -> Result<T> {
        let value: T = decode_payload(&self.headers, &self.payload)?;
        match value.tenant() {
            Some(tenant) if *tenant != self.subject.tenant => Err(BusError::Codec(format!(
                "payload of tenant {tenant} arrived on subject {} of another tenant",
                self.subject
            ))),
            _ => Ok(value),
        }
    }

    /// The publisher's trace context, to parent the consumer's span.
    pub fn parent_context(&self) -> opentelemetry::Context {
        trace::extract(&self.headers)
    }

    /// Makes `span` a child of the publisher's span.
    pub fn follow(&self, span: &tracing::Span) {
        // Fails only when no OpenTelemetry layer is installed, where there is nothing to link.
        let _ = span.set_parent(self.parent_context());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zstd_headers() -> Headers {
        let mut headers = Headers::new();
        headers.insert(HEADER_ENCODING, "zstd");
        headers
    }

    fn stream_compressed(parts: &[&[u8]]) -> Bytes {
        // The stream encoder does not state the content size in the frame header.
        let mut out = Vec::new();
        for part in parts {
            let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
            std::io::Write::write_all(&mut encoder, part).unwrap();
            out.extend(encoder.finish().unwrap());
        }
        out.into()
    }

    #[test]
    fn a_frame_that_states_its_size_decompresses_in_one_call() {
        let text = br#"{"tenant":"acme","events":[]}"#.repeat(100);
        let payload = Bytes::from(zstd::bulk::compress(&text, ZSTD_LEVEL).unwrap());
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&payload).ok(),
            Some(Some(text.len() as u64))
        );
        assert_eq!(
            &decoded_payload(&zstd_headers(), &payload).unwrap()[..],
            &text[..]
        );
    }

    #[test]
    fn frames_without_a_size_or_several_frames_decompress_as_a_stream() {
        let (a, b) = (b"first part ".repeat(50), b"second part".repeat(50));
        let one = stream_compressed(&[&a]);
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&one).ok(),
            Some(None)
        );
        assert_eq!(&decoded_payload(&zstd_headers(), &one).unwrap()[..], &a[..]);

        let mut two = zstd::bulk::compress(&a, ZSTD_LEVEL).unwrap();
        two.extend(zstd::bulk::compress(&b, ZSTD_LEVEL).unwrap());
        let two = Bytes::from(two);
        assert_eq!(
            &decoded_payload(&zstd_headers(), &two).unwrap()[..],
            &[a, b].concat()[..]
        );
    }

    #[test]
    fn a_frame_that_claims_more_than_64_times_its_size_is_read_as_a_stream() {
        // 1 MiB of zeros compresses to a few dozen bytes: its stated size alone reserves
        // nothing, and it still decompresses whole.
        let zeros = vec![0u8; 1 << 20];
        let payload = Bytes::from(zstd::bulk::compress(&zeros, ZSTD_LEVEL).unwrap());
        assert!(payload.len() * 64 < zeros.len());
        assert_eq!(
            &decoded_payload(&zstd_headers(), &payload).unwrap()[..],
            &zeros[..]
        );
    }

    #[test]
    fn a_stream_past_the_limit_is_refused() {
        let zeros = vec![0u8; MAX_DECODED_PAYLOAD + 1];
        let bomb = stream_compressed(&[&zeros]);
        drop(zeros);
        let err = decoded_payload(&zstd_headers(), &bomb).unwrap_err();
        assert_eq!(err.to_string(), "decompressed payload exceeds 64 MiB");
    }

    #[test]
    fn a_truncated_frame_is_refused_with_a_reason() {
        let text = b"some text to compress ".repeat(100);
        let whole = zstd::bulk::compress(&text, ZSTD_LEVEL).unwrap();
        let cut = Bytes::copy_from_slice(&whole[..whole.len() - 4]);
        let err = decoded_payload(&zstd_headers(), &cut).unwrap_err();
        assert!(
            err.to_string().contains("cannot decompress zstd payload"),
            "{err}"
        );
    }
}
