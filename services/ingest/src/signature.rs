//! Webhook authentication for the generic source: HMAC-SHA256 over
//! `"<timestamp>.<raw body>"`, with the timestamp checked against the clock so
//! a captured request cannot be replayed later.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const H_TIMESTAMP: &str = "x-tenure-timestamp";
pub const H_SIGNATURE: &str = "x-tenure-signature";
pub const H_DELIVERY: &str = "x-tenure-delivery";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("header X-Tenure-Timestamp is missing")]
    MissingTimestamp,
    #[error("header X-Tenure-Timestamp must be Unix seconds")]
    BadTimestamp,
    #[error(
        "timestamp is {skew_secs} s away from the server clock; resend with a fresh timestamp"
    )]
    Stale { skew_secs: i64 },
    #[error("header X-Tenure-Signature is missing (expected v1=<hex>)")]
    MissingSignature,
    #[error("signature does not match the body")]
    Mismatch,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The header value a sender puts in `X-Tenure-Signature`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, &timestamp.to_string(), body)
        .finalize()
        .into_bytes();
    format!("v1={}", hex::encode(tag))
}

/// Checks the timestamp window, then each `v1=` signature in constant time.
/// Several comma-separated signatures let a sender rotate secrets.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
    max_skew_secs: u64,
) -> Result<(), SignatureError> {
    let ts = timestamp.ok_or(SignatureError::MissingTimestamp)?.trim();
    let secs: i64 = ts.parse().map_err(|_| SignatureError::BadTimestamp)?;
    let skew = now.timestamp() - secs;
    if skew.unsigned_abs() > max_skew_secs {
        return Err(SignatureError::Stale { skew_secs: skew });
    }
    let sig = signature.ok_or(SignatureError::MissingSignature)?;
    let expected = mac(secret, ts, body);
    let ok = sig
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("v1="))
        .filter_map(|h| hex::decode(h).ok())
        .any(|tag| expected.clone().verify_slice(&tag).is_ok());
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_failures() {
        let now = Utc::now();
        let ts = now.timestamp();
        let body = br#"{"a":1}"#;
        let sig = sign(b"k", ts, body);
        let t = ts.to_string();
        assert_eq!(verify(b"k", Some(&t), Some(&sig), body, now, 300), Ok(()));
        assert_eq!(
            verify(b"other", Some(&t), Some(&sig), body, now, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", Some(&t), Some(&sig), b"{\"a\":2}", now, 300),
            Err(SignatureError::Mismatch)
        );
        let rotated = format!("v1=00ff, {sig}");
        assert_eq!(
            verify(b"k", Some(&t), Some(&rotated), body, now, 300),
            Ok(())
        );
        let old = (ts - 301).to_string();
        let old_sig = sign(b"k", ts - 301, body);
        assert!(matches!(
            verify(b"k", Some(&old), Some(&old_sig), body, now, 300),
            Err(SignatureError::Stale { .. })
        ));
        assert_eq!(
            verify(b"k", None, Some(&sig), body, now, 300),
            Err(SignatureError::MissingTimestamp)
        );
        assert_eq!(
            verify(b"k", Some("yesterday"), Some(&sig), body, now, 300),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify(b"k", Some(&t), None, body, now, 300),
            Err(SignatureError::MissingSignature)
        );
        assert_eq!(
            verify(b"k", Some(&t), Some("v1=zz"), body, now, 300),
            Err(SignatureError::Mismatch)
        );
    }
}
