//! The per-stream hash chain.
//!
//! Each event's `hash` is `SHA-256(prev_hash ‖ canonical_event_bytes)`, where
//! `prev_hash` is the previous event's hash in the same stream (32 zero bytes
//! for version 1). Changing, removing or reordering a stored event therefore
//! breaks the chain from that point on. This format is persisted: changing it
//! invalidates every existing chain.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::canonical::{write_string, write_value};

/// `prev_hash` of the first event of every stream.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// The fields of an event covered by its hash.
#[derive(Clone, Copy, Debug)]
pub struct EventFields<'a> {
    pub stream_id: &'a str,
    pub version: i64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub data: &'a Value,
    pub metadata: &'a Value,
    pub recorded_at: DateTime<Utc>,
}

/// Canonical JSON of the object
/// `{data, event_id, event_type, metadata, recorded_at, stream_id, version}`
/// with keys sorted recursively; `recorded_at` is RFC 3339 in UTC with exactly
/// six fractional digits and a `Z` suffix.
pub fn canonical_event_bytes(fields: &EventFields<'_>) -> Vec<u8> {
    // The envelope is written by hand, already in sorted key order, so that
    // potentially large `data` values need not be cloned into a temporary
    // object. A unit test checks this equals the generic canonicalisation.
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"data\":");
    write_value(&mut out, fields.data);
    out.extend_from_slice(b",\"event_id\":");
    write_string(&mut out, &fields.event_id.hyphenated().to_string());
    out.extend_from_slice(b",\"event_type\":");
    write_string(&mut out, fields.event_type);
    out.extend_from_slice(b",\"metadata\":");
    write_value(&mut out, fields.metadata);
    out.extend_from_slice(b",\"recorded_at\":");
    write_string(
        &mut out,
        &fields
            .recorded_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
    );
    out.extend_from_slice(b",\"stream_id\":");
    write_string(&mut out, fields.stream_id);
    out.extend_from_slice(b",\"version\":");
    out.extend_from_slice(fields.version.to_string().as_bytes());
    out.push(b'}');
    out
}

/// `SHA-256(prev_hash ‖ canonical_event_bytes(fields))`.
pub fn event_hash(prev_hash: &[u8], fields: &EventFields<'_>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(canonical_event_bytes(fields));
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::to_canonical_bytes;
    use chrono::TimeZone;
    use serde_json::json;

    fn sample_time() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 2, 29, 12, 34, 56)
            .single()
            .expect("valid date")
            + chrono::Duration::microseconds(789)
    }

    fn sample<'a>(data: &'a Value, metadata: &'a Value) -> EventFields<'a> {
        EventFields {
            stream_id: "person-1",
            version: 3,
            event_id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            event_type: "PersonHired",
            data,
            metadata,
            recorded_at: sample_time(),
        }
    }

    #[test]
    fn hand_written_envelope_equals_generic_canonicalisation() {
        let data = json!({"z": [1, {"b": 2, "a": 1}], "a": null});
        let metadata = json!({"actor": "system", "correlation_id": Uuid::nil()});
        let fields = sample(&data, &metadata);
        let generic = to_canonical_bytes(&json!({
            "stream_id": fields.stream_id,
            "version": fields.version,
            "event_id": fields.event_id,
            "event_type": fields.event_type,
            "data": data,
            "metadata": metadata,
            "recorded_at": "2024-02-29T12:34:56.000789Z",
        }));
        assert_eq!(canonical_event_bytes(&fields), generic);
    }

    #[test]
    fn hash_format_is_stable() {
        // Pins the persisted format: if this changes, existing chains no
        // longer verify.
        let data = json!({"b": 1, "a": "x"});
        let metadata = json!({"actor": "system"});
        let fields = sample(&data, &metadata);
        assert_eq!(
            String::from_utf8(canonical_event_bytes(&fields)).expect("utf-8"),
            concat!(
                r#"{"data":{"a":"x","b":1},"event_id":"01234567-89ab-cdef-0123-456789abcdef","#,
                r#""event_type":"PersonHired","metadata":{"actor":"system"},"#,
                r#""recorded_at":"2024-02-29T12:34:56.000789Z","stream_id":"person-1","version":3}"#
            )
        );
        assert_eq!(
            hex::encode(event_hash(&GENESIS_HASH, &fields)),
            "8da32a8e1fa5318eead27389592968ea4e70d556da2be3acea817c15d6e03591"
        );
    }

    #[test]
    fn every_field_and_the_link_affect_the_hash() {
        let data = json!({"a": 1});
        let other_data = json!({"a": 2});
        let metadata = json!({"actor": "x"});
        let other_metadata = json!({"actor": "y"});
        let base = sample(&data, &metadata);
        let h = event_hash(&GENESIS_HASH, &base);
        let variants = [
            EventFields {
                stream_id: "person-2",
                ..base
            },
            EventFields { version: 4, ..base },
            EventFields {
                event_id: Uuid::nil(),
                ..base
            },
            EventFields {
                event_type: "PersonLeft",
                ..base
            },
            EventFields {
                data: &other_data,
                ..base
            },
            EventFields {
                metadata: &other_metadata,
                ..base
            },
            EventFields {
                recorded_at: base.recorded_at + chrono::Duration::microseconds(1),
                ..base
            },
        ];
        for v in &variants {
            assert_ne!(event_hash(&GENESIS_HASH, v), h, "{v:?}");
        }
        assert_ne!(event_hash(&[1u8; 32], &base), h);
    }
}
