//! Request bodies: decompression with a bound on the decoded size (no gzip or zstd bomb gets
//! past it), and JSON records from a JSON object, a JSON array or NDJSON.

use std::io::Read;

use serde_json::Value;

/// Why a body was refused. Each names the problem; none of the body reaches the bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// `Content-Encoding` other than identity, gzip or zstd.
    #[error("unsupported Content-Encoding {0:?}: use gzip, zstd or none")]
    Encoding(String),
    /// The compressed body is not valid gzip or zstd.
    #[error("the body is not valid {encoding}: {reason}")]
    Corrupt {
        /// gzip or zstd.
        encoding: &'static str,
        /// The decoder's reason.
        reason: String,
    },
    /// The decoded body exceeds the limit.
    #[error("the decoded body exceeds {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Not UTF-8.
    #[error("the body is not UTF-8 (first invalid byte at offset {offset})")]
    Utf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// Not JSON, or nested too deeply.
    #[error("record {index}: invalid JSON at line {line}, column {column}: {reason}")]
    Json {
        /// Record number, from 0.
        index: usize,
        /// Line in the body.
        line: usize,
        /// Column in the line.
        column: usize,
        /// serde_json's reason.
        reason: String,
    },
    /// A record that is not a JSON object.
    #[error("record {index} is a JSON {kind}; every event must be a JSON object")]
    NotObject {
        /// Record number.
        index: usize,
        /// What it was instead.
        kind: &'static str,
    },
    /// More records than allowed in one request.
    #[error("more than {limit} events in one request; split it")]
    TooManyRecords {
        /// The limit.
        limit: usize,
    },
    /// No record at all.
    #[error("the body holds no event")]
    Empty,
    /// A record nested deeper than allowed.
    #[error("record {index} nests {depth} levels of objects and arrays; at most {limit}")]
    TooDeep {
        /// Record number.
        index: usize,
        /// Its depth.
        depth: usize,
        /// The limit.
        limit: usize,
    },
}

/// Decodes `body` per its `Content-Encoding`, refusing more than `limit` decoded bytes.
pub fn decode(encoding: Option<&str>, body: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("" | "identity") => {
            if body.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            Ok(body.to_vec())
        }
        Some("gzip" | "x-gzip") => {
            bounded_read(flate2::read::MultiGzDecoder::new(body), limit, "gzip")
        }
        Some("zstd") => {
            let decoder =
                zstd::stream::read::Decoder::new(body).map_err(|err| BodyError::Corrupt {
                    encoding: "zstd",
                    reason: err.to_string(),
                })?;
            bounded_read(decoder, limit, "zstd")
        }
        Some(other) => Err(BodyError::Encoding(other.to_owned())),
    }
}

fn bounded_read(
    reader: impl Read,
    limit: usize,
    encoding: &'static str,
) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    // One byte past the limit tells "exactly at the limit" from "over it".
    let mut limited = reader.take(limit as u64 + 1);
    limited
        .read_to_end(&mut out)
        .map_err(|err| BodyError::Corrupt {
            encoding,
            reason: err.to_string(),
        })?;
    if out.len() > limit {
        return Err(BodyError::TooLarge { limit });
    }
    Ok(out)
}

/// One record of a body: its JSON value (or its fields) and its own text.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a, T = Value> {
    /// The parsed object.
    pub value: T,
    /// The record's text in the body, for the bounded raw copy.
    pub text: &'a str,
}

/// What a record is parsed into: a JSON value (for a tenant's parser and HEC's envelope) or
/// the flat fields of a normalized event, read in one pass.
pub trait Parsed: serde::de::DeserializeOwned {
    /// Whether the record is a JSON object.
    fn is_object(&self) -> bool;
    /// Its levels of objects and arrays: 1 for an object of scalars.
    fn depth(&self) -> usize;
}

impl Parsed for Value {
    fn is_object(&self) -> bool {
        self.is_object()
    }

    fn depth(&self) -> usize {
        match self {
            Value::Array(items) => 1 + items.iter().map(Parsed::depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(Parsed::depth).max().unwrap_or(0),
            _ => 0,
        }
    }
}

/// A record parsed straight into flat fields, with no `Value` in between
/// ([`vigil_schema::Fields::deserialize_nested`]); only an object parses.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatObject(pub vigil_schema::Fields, usize);

impl<'de> serde::Deserialize<'de> for FlatObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        vigil_schema::Fields::deserialize_nested_with_depth(deserializer)
            .map(|(fields, depth)| FlatObject(fields, depth))
    }
}

impl Parsed for FlatObject {
    fn is_object(&self) -> bool {
        true
    }

    fn depth(&self) -> usize {
        self.1
    }
}

/// Splits a body into records: one JSON object, a JSON array of objects, or NDJSON (objects
/// separated by whitespace or newlines). serde_json's recursion limit (128 levels) refuses
/// deeply nested input while it is read.
pub fn records<T: Parsed>(
    body: &[u8],
    max_records: usize,
) -> Result<Vec<Record<'_, T>>, BodyError> {
    records_within(body, max_records, usize::MAX)
}

/// [`records`], refusing a record nested more than `max_depth` levels (a tenant's limit).
pub fn records_within<T: Parsed>(
    body: &[u8],
    max_records: usize,
    max_depth: usize,
) -> Result<Vec<Record<'_, T>>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|err| BodyError::Utf8 {
        offset: err.valid_up_to(),
    })?;
    let trimmed = text.trim_start();
    let mut records = Vec::new();
    if trimmed.starts_with('[') {
        // Borrowed raw values keep each record's own text without copying it.
        let values: Vec<&serde_json::value::RawValue> =
            serde_json::from_str(text).map_err(|err| json_error(0, text, err))?;
        if values.len() > max_records {
            return Err(BodyError::TooManyRecords { limit: max_records });
        }
        for (index, raw) in values.into_iter().enumerate() {
            let value: T =
                serde_json::from_str(raw.get()).map_err(|err| json_error(index, raw.get(), err))?;
            records.push(object(index, value, raw.get(), max_depth)?);
        }
    } else {
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<T>();
        let mut start = stream.byte_offset();
        while let Some(next) = stream.next() {
            let index = records.len();
            let value = next.map_err(|err| json_error(index, &text[start..], err))?;
            if index >= max_records {
                return Err(BodyError::TooManyRecords { limit: max_records });
            }
            let end = stream.byte_offset();
            records.push(object(index, value, text[start..end].trim(), max_depth)?);
            start = end;
        }
    }
    if records.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(records)
}

/// What a record that is not an object is, from its first byte.
fn kind_of(text: &str) -> Option<&'static str> {
    match text.trim_start().bytes().next()? {
        b'[' => Some("array"),
        b'"' => Some("string"),
        b'-' | b'0'..=b'9' => Some("number"),
        b't' | b'f' => Some("boolean"),
        b'n' => Some("null"),
        _ => None,
    }
}

/// A record that failed to parse: not an object when it starts as another JSON value does
/// and was refused for its type, else invalid JSON.
fn json_error(index: usize, text: &str, err: serde_json::Error) -> BodyError {
    match kind_of(text) {
        Some(kind) if err.is_data() => BodyError::NotObject { index, kind },
        _ => BodyError::Json {
            index,
            line: err.line(),
            column: err.column(),
            reason: err.to_string(),
        },
    }
}

fn object<T: Parsed>(
    index: usize,
    value: T,
    text: &str,
    max_depth: usize,
) -> Result<Record<'_, T>, BodyError> {
    if value.is_object() {
        let depth = value.depth();
        if depth > max_depth {
            return Err(BodyError::TooDeep {
                index,
                depth,
                limit: max_depth,
            });
        }
        return Ok(Record { value, text });
    }
    let kind = kind_of(text).unwrap_or("value");
    Err(BodyError::NotObject { index, kind })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn objects_arrays_and_ndjson<T: Parsed + PartialEq + std::fmt::Debug>() {
        let one = records::<T>(br#"{"a":1}"#, 10).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].text, r#"{"a":1}"#);
        let array = records::<T>(br#" [{"a":1}, {"b":2}] "#, 10).unwrap();
        assert_eq!(array.len(), 2);
        assert_eq!(array[1].text, r#"{"b":2}"#);
        let ndjson = records::<T>(b"{\"a\":1}\n{\"b\":2}\n\n{\"c\":3}\n", 10).unwrap();
        assert_eq!(ndjson.len(), 3);
        assert_eq!(ndjson[2].text, r#"{"c":3}"#);
    }

    fn bad_bodies_name_the_problem<T: Parsed + PartialEq + std::fmt::Debug>() {
        assert_eq!(records::<T>(b"", 10), Err(BodyError::Empty));
        assert_eq!(records::<T>(b"  \n", 10), Err(BodyError::Empty));
        assert!(matches!(
            records::<T>(b"{\"a\":1}\n{\"b\":", 10),
            Err(BodyError::Json { index: 1, .. })
        ));
        assert_eq!(
            records::<T>(b"[1]", 10),
            Err(BodyError::NotObject {
                index: 0,
                kind: "number"
            })
        );
        assert_eq!(
            records::<T>(b"{}\n\"x\"", 10),
            Err(BodyError::NotObject {
                index: 1,
                kind: "string"
            })
        );
        assert_eq!(
            records::<T>(b"{\"a\":\xff}", 10),
            Err(BodyError::Utf8 { offset: 5 })
        );
        assert_eq!(
            records::<T>(b"{}{}{}", 2),
            Err(BodyError::TooManyRecords { limit: 2 })
        );
        assert_eq!(
            records::<T>(b"[{},{},{}]", 2),
            Err(BodyError::TooManyRecords { limit: 2 })
        );
        // A value parser meets the recursion limit, a field parser the array.
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert!(matches!(
            records::<T>(deep.as_bytes(), 10),
            Err(BodyError::Json { .. } | BodyError::NotObject { kind: "array", .. })
        ));
        let deep_object = format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000));
        let err = records::<T>(deep_object.as_bytes(), 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("recursion limit"), "{err}");
    }

    #[test]
    fn records_as_values_and_as_fields_split_alike() {
        objects_arrays_and_ndjson::<Value>();
        objects_arrays_and_ndjson::<FlatObject>();
        let ndjson = records::<FlatObject>(b"{\"a\":{\"b\":1}}\n{\"c\":[2]}", 10).unwrap();
        assert_eq!(
            ndjson[0].value.0.get("a.b"),
            Some(&vigil_schema::FieldValue::Int(1))
        );
        assert_eq!(ndjson[1].text, r#"{"c":[2]}"#);
    }

    #[test]
    fn records_deeper_than_the_limit_are_refused_alike() {
        fn check<T: Parsed + std::fmt::Debug>() {
            let body = b"{\"a\":1}\n{\"a\":[{\"b\":[1]}]}";
            assert_eq!(records_within::<T>(body, 10, 4).unwrap().len(), 2);
            assert_eq!(
                records_within::<T>(body, 10, 3).unwrap_err().to_string(),
                "record 1 nests 4 levels of objects and arrays; at most 3"
            );
        }
        check::<Value>();
        check::<FlatObject>();
    }

    #[test]
    fn bad_bodies_name_the_problem_as_values_and_as_fields() {
        bad_bodies_name_the_problem::<Value>();
        bad_bodies_name_the_problem::<FlatObject>();
        assert_eq!(
            records::<FlatObject>(b"{}\nnull", 10),
            Err(BodyError::NotObject {
                index: 1,
                kind: "null"
            })
        );
    }

    #[test]
    fn decompression_is_bounded() {
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&vec![b' '; 10_000_000]).unwrap();
        let bomb = gzip.finish().unwrap();
        assert!(bomb.len() < 100_000);
        assert_eq!(
            decode(Some("gzip"), &bomb, 1_000_000),
            Err(BodyError::TooLarge { limit: 1_000_000 })
        );
        let zstd_bomb = zstd::bulk::compress(&vec![b' '; 10_000_000], 1).unwrap();
        assert_eq!(
            decode(Some("zstd"), &zstd_bomb, 1_000_000),
            Err(BodyError::TooLarge { limit: 1_000_000 })
        );
        let small = zstd::bulk::compress(br#"{"a":1}"#, 1).unwrap();
        assert_eq!(decode(Some("zstd"), &small, 100).unwrap(), br#"{"a":1}"#);
        assert!(matches!(
            decode(Some("gzip"), b"not gzip", 100),
            Err(BodyError::Corrupt {
                encoding: "gzip",
                ..
            })
        ));
        let truncated = &bomb[..bomb.len() / 2];
        assert!(matches!(
            decode(Some("gzip"), truncated, 100_000_000),
            Err(BodyError::Corrupt { .. })
        ));
        assert_eq!(
            decode(Some("br"), b"x", 10),
            Err(BodyError::Encoding("br".into()))
        );
        assert_eq!(
            decode(None, &[0; 11], 10),
            Err(BodyError::TooLarge { limit: 10 })
        );
    }
}
