//! Webhook authentication, one function per vendor scheme. Every comparison
//! is constant-time: HMAC tags through `verify_slice`, shared tokens by
//! comparing SHA-256 digests with `subtle` (so neither the content nor the
//! length of the secret leaks through timing).
//!
//! The `sign_*` functions build the header value a sender puts on a request.
//! Tenure itself never sends these webhooks; they exist so that tests, demos
//! and the ingest service's own tests can produce authentic requests without
//! re-implementing each vendor's scheme.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;
type HmacSha512 = Hmac<Sha512>;

/// Generic source: Unix seconds of the signature.
pub const H_TENURE_TIMESTAMP: &str = "x-tenure-timestamp";
/// Generic source: `v1=<hex>` tags, comma-separated.
pub const H_TENURE_SIGNATURE: &str = "x-tenure-signature";
/// Generic source: the sender's own delivery id.
pub const H_TENURE_DELIVERY: &str = "x-tenure-delivery";
/// Personio (which signs nothing): the shared secret, when not sent as a
/// bearer token in `Authorization`.
pub const H_TENURE_TOKEN: &str = "x-tenure-token";
pub const H_BAMBOOHR_SIGNATURE: &str = "x-bamboohr-signature";
pub const H_BAMBOOHR_TIMESTAMP: &str = "x-bamboohr-timestamp";
pub const H_HIBOB_SIGNATURE: &str = "bob-signature";
pub const H_GUSTO_SIGNATURE: &str = "x-gusto-signature";
pub const H_DEEL_SIGNATURE: &str = "x-deel-signature";
pub const H_FRAPPE_SIGNATURE: &str = "x-frappe-webhook-signature";

fn mac256(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length, so construction cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        m.update(p);
    }
    m
}

fn mac512(key: &[u8], parts: &[&[u8]]) -> HmacSha512 {
    let mut m = <HmacSha512 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        m.update(p);
    }
    m
}

/// Decodes a hex tag, tolerating surrounding blanks and a `sha256=` prefix
/// (some proxies and relays add one).
fn hex_tag(value: &str) -> Option<Vec<u8>> {
    let v = value.trim();
    let v = v.strip_prefix("sha256=").unwrap_or(v);
    hex::decode(v).ok()
}

fn b64_tag(value: &str) -> Option<Vec<u8>> {
    BASE64.decode(value.trim()).ok()
}

/// hex HMAC-SHA256(key, parts…) compared in constant time.
pub(crate) fn verify_hex_sha256(key: &[u8], parts: &[&[u8]], header: &str) -> bool {
    hex_tag(header).is_some_and(|tag| mac256(key, parts).verify_slice(&tag).is_ok())
}

/// base64 HMAC-SHA256(key, parts…) compared in constant time.
pub(crate) fn verify_b64_sha256(key: &[u8], parts: &[&[u8]], header: &str) -> bool {
    b64_tag(header).is_some_and(|tag| mac256(key, parts).verify_slice(&tag).is_ok())
}

/// base64 HMAC-SHA512(key, parts…) compared in constant time.
pub(crate) fn verify_b64_sha512(key: &[u8], parts: &[&[u8]], header: &str) -> bool {
    b64_tag(header).is_some_and(|tag| mac512(key, parts).verify_slice(&tag).is_ok())
}

/// Compares a presented token with the configured one. Both are hashed
/// first, so the comparison takes the same time whatever their lengths.
/// Every bearer-token check in Tenure goes through this.
pub fn token_matches(expected: &[u8], presented: &[u8]) -> bool {
    let a = Sha256::digest(expected);
    let b = Sha256::digest(presented);
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// Why a generic-source request was refused. The messages are the ones the
/// ingest service has always answered with (ADR 0009).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenericSignatureError {
    #[error("header X-Tenure-Timestamp is missing")]
    MissingTimestamp,
    #[error("header X-Tenure-Timestamp must be Unix seconds")]
    BadTimestamp,
    #[error(
        "timestamp is {skew_secs} s away from the server clock; resend with a fresh timestamp"
    )]
    Stale { skew_secs: i64 },
    #[error("header X-Tenure-Signature is missing (expected v2=<hex>)")]
    MissingSignature,
    #[error("signature does not match the body")]
    Mismatch,
    #[error("signature does not match the timestamp, delivery id and body (v2)")]
    MismatchV2,
}

/// Which scheme authenticated a generic request (ADR 0021).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureVersion {
    /// `v1=`: covers timestamp and body, not the delivery id. Deprecated:
    /// a captured request can be sent again with a new `X-Tenure-Delivery`.
    V1,
    /// `v2=`: covers timestamp, delivery id and body.
    V2,
}

/// The deprecated v1 value of `X-Tenure-Signature`:
/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`. It does not
/// cover `X-Tenure-Delivery`; prefer [`sign_generic_v2`].
pub fn sign_generic(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let tag = mac256(secret, &[ts.as_bytes(), b".", body])
        .finalize()
        .into_bytes();
    format!("v1={}", hex::encode(tag))
}

fn v2_mac(secret: &[u8], ts: &str, delivery: &str, body: &[u8]) -> HmacSha256 {
    mac256(
        secret,
        &[b"v2:", ts.as_bytes(), b":", delivery.as_bytes(), b":", body],
    )
}

/// The value a sender puts in `X-Tenure-Signature`:
/// `v2=<hex HMAC-SHA256(secret, "v2:<timestamp>:<delivery id>:<raw body>")>`,
/// where the delivery id is the `X-Tenure-Delivery` header as sent (empty
/// when the request has none).
pub fn sign_generic_v2(secret: &[u8], timestamp: i64, delivery: &str, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let tag = v2_mac(secret, &ts, delivery.trim(), body)
        .finalize()
        .into_bytes();
    format!("v2={}", hex::encode(tag))
}

/// The scheme a signature header claims: v2 when it carries any `v2=`
/// tag (then v1 tags in it are ignored, so removing the v2 tag is the only
/// way to fall back to v1, and [`verify_generic`] reports that as V1).
pub fn generic_version(signature: Option<&str>) -> SignatureVersion {
    let has_v2 = signature.is_some_and(|s| s.split(',').any(|p| p.trim().starts_with("v2=")));
    if has_v2 {
        SignatureVersion::V2
    } else {
        SignatureVersion::V1
    }
}

/// Checks the timestamp window, then each comma-separated tag in constant
/// time; any matching tag suffices, so a sender can sign with the old and
/// the new secret while rotating. When the header has `v2=` tags only they
/// count (over timestamp, `delivery` and body); otherwise `v1=<hex>` tags
/// over timestamp and body (`sha256=<hex>` is a synonym of `v1=`).
/// `delivery` is the `X-Tenure-Delivery` header, `None` when absent.
pub fn verify_generic(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    delivery: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
    max_skew_secs: u64,
) -> Result<SignatureVersion, GenericSignatureError> {
    let ts = timestamp
        .ok_or(GenericSignatureError::MissingTimestamp)?
        .trim();
    let secs: i64 = ts
        .parse()
        .map_err(|_| GenericSignatureError::BadTimestamp)?;
    let skew = now.timestamp().saturating_sub(secs);
    if skew.unsigned_abs() > max_skew_secs {
        return Err(GenericSignatureError::Stale { skew_secs: skew });
    }
    let sig = signature.ok_or(GenericSignatureError::MissingSignature)?;
    let version = generic_version(Some(sig));
    let expected = match version {
        SignatureVersion::V2 => v2_mac(secret, ts, delivery.unwrap_or("").trim(), body),
        SignatureVersion::V1 => mac256(secret, &[ts.as_bytes(), b".", body]),
    };
    let ok = sig
        .split(',')
        .filter_map(|part| {
            let p = part.trim();
            match version {
                SignatureVersion::V2 => p.strip_prefix("v2="),
                SignatureVersion::V1 => p.strip_prefix("v1=").or_else(|| p.strip_prefix("sha256=")),
            }
        })
        .filter_map(|h| hex::decode(h.trim()).ok())
        .any(|tag| expected.clone().verify_slice(&tag).is_ok());
    match (ok, version) {
        (true, v) => Ok(v),
        (false, SignatureVersion::V2) => Err(GenericSignatureError::MismatchV2),
        (false, SignatureVersion::V1) => Err(GenericSignatureError::Mismatch),
    }
}

/// `X-BambooHR-Signature`: hex HMAC-SHA256(key, raw body ‖ the
/// `X-BambooHR-Timestamp` header exactly as sent).
pub fn sign_bamboohr(key: &[u8], body: &[u8], timestamp_header: &str) -> String {
    hex::encode(
        mac256(key, &[body, timestamp_header.as_bytes()])
            .finalize()
            .into_bytes(),
    )
}

/// `Bob-Signature`: base64 HMAC-SHA512(secret, raw body).
pub fn sign_hibob(secret: &[u8], body: &[u8]) -> String {
    BASE64.encode(mac512(secret, &[body]).finalize().into_bytes())
}

/// `X-Gusto-Signature`: hex HMAC-SHA256(verification token, raw body).
pub fn sign_gusto(verification_token: &[u8], body: &[u8]) -> String {
    hex::encode(mac256(verification_token, &[body]).finalize().into_bytes())
}

/// `x-deel-signature`: hex HMAC-SHA256(signing key, "POST" ‖ raw body).
pub fn sign_deel(key: &[u8], body: &[u8]) -> String {
    hex::encode(mac256(key, &[b"POST", body]).finalize().into_bytes())
}

/// `X-Frappe-Webhook-Signature`: base64 HMAC-SHA256(webhook secret, raw body).
pub fn sign_frappe(secret: &[u8], body: &[u8]) -> String {
    BASE64.encode(mac256(secret, &[body]).finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_round_trip_rotation_and_failures() {
        let now = Utc::now();
        let ts = now.timestamp();
        let body = br#"{"a":1}"#;
        let sig = sign_generic(b"k", ts, body);
        let t = ts.to_string();
        assert_eq!(
            verify_generic(b"k", Some(&t), Some(&sig), None, body, now, 300),
            Ok(SignatureVersion::V1)
        );
        assert_eq!(
            verify_generic(b"other", Some(&t), Some(&sig), None, body, now, 300),
            Err(GenericSignatureError::Mismatch)
        );
        assert_eq!(
            verify_generic(b"k", Some(&t), Some(&sig), None, b"{\"a\":2}", now, 300),
            Err(GenericSignatureError::Mismatch)
        );
        let rotated = format!("v1=00ff, {sig}");
        assert_eq!(
            verify_generic(b"k", Some(&t), Some(&rotated), None, body, now, 300),
            Ok(SignatureVersion::V1)
        );
        let sha_prefixed = sig.replacen("v1=", "sha256=", 1);
        assert_eq!(
            verify_generic(b"k", Some(&t), Some(&sha_prefixed), None, body, now, 300),
            Ok(SignatureVersion::V1)
        );
        let old = (ts - 301).to_string();
        let old_sig = sign_generic(b"k", ts - 301, body);
        assert!(matches!(
            verify_generic(b"k", Some(&old), Some(&old_sig), None, body, now, 300),
            Err(GenericSignatureError::Stale { .. })
        ));
        assert_eq!(
            verify_generic(b"k", None, Some(&sig), None, body, now, 300),
            Err(GenericSignatureError::MissingTimestamp)
        );
        assert_eq!(
            verify_generic(b"k", Some("yesterday"), Some(&sig), None, body, now, 300),
            Err(GenericSignatureError::BadTimestamp)
        );
        assert_eq!(
            verify_generic(b"k", Some(&t), None, None, body, now, 300),
            Err(GenericSignatureError::MissingSignature)
        );
        assert_eq!(
            verify_generic(b"k", Some(&t), Some("v1=zz"), None, body, now, 300),
            Err(GenericSignatureError::Mismatch)
        );
        assert!(matches!(
            verify_generic(
                b"k",
                Some(&i64::MIN.to_string()),
                Some(&sig),
                None,
                body,
                now,
                300
            ),
            Err(GenericSignatureError::Stale { .. })
        ));
    }

    #[test]
    fn v2_covers_the_delivery_id_and_cannot_be_downgraded() {
        let now = Utc::now();
        let ts = now.timestamp();
        let t = ts.to_string();
        let body = br#"{"a":1}"#;
        let v2 = sign_generic_v2(b"k", ts, "d-1", body);
        let verify = |sig: &str, delivery: Option<&str>| {
            verify_generic(b"k", Some(&t), Some(sig), delivery, body, now, 300)
        };
        assert_eq!(verify(&v2, Some("d-1")), Ok(SignatureVersion::V2));
        assert_eq!(verify(&v2, Some(" d-1 ")), Ok(SignatureVersion::V2));
        assert_eq!(
            verify(&v2, Some("d-2")),
            Err(GenericSignatureError::MismatchV2)
        );
        assert_eq!(verify(&v2, None), Err(GenericSignatureError::MismatchV2));
        // No delivery header signs the empty id, and adding one breaks it.
        let none = sign_generic_v2(b"k", ts, "", body);
        assert_eq!(verify(&none, None), Ok(SignatureVersion::V2));
        assert_eq!(
            verify(&none, Some("x")),
            Err(GenericSignatureError::MismatchV2)
        );
        // A valid v1 tag beside a v2 tag that no longer matches does not
        // rescue the request: v2 present means v2 only.
        let both = format!("{v2},{}", sign_generic(b"k", ts, body));
        assert_eq!(
            verify(&both, Some("d-2")),
            Err(GenericSignatureError::MismatchV2)
        );
        assert_eq!(generic_version(Some(&both)), SignatureVersion::V2);
        assert_eq!(
            generic_version(Some(&sign_generic(b"k", ts, body))),
            SignatureVersion::V1
        );
        assert_eq!(generic_version(None), SignatureVersion::V1);
    }

    #[test]
    fn vendor_schemes_round_trip() {
        let body = b"{}";
        assert!(verify_hex_sha256(
            b"k",
            &[body, b"1700000000"],
            &sign_bamboohr(b"k", body, "1700000000")
        ));
        assert!(!verify_hex_sha256(
            b"k",
            &[body, b"1700000001"],
            &sign_bamboohr(b"k", body, "1700000000")
        ));
        assert!(verify_b64_sha512(b"k", &[body], &sign_hibob(b"k", body)));
        assert!(verify_hex_sha256(b"k", &[body], &sign_gusto(b"k", body)));
        assert!(verify_hex_sha256(
            b"k",
            &[body],
            &format!("sha256={}", sign_gusto(b"k", body))
        ));
        assert!(verify_hex_sha256(
            b"k",
            &[b"POST", body],
            &sign_deel(b"k", body)
        ));
        assert!(!verify_hex_sha256(b"k", &[body], &sign_deel(b"k", body)));
        assert!(verify_b64_sha256(b"k", &[body], &sign_frappe(b"k", body)));
        assert!(!verify_b64_sha256(b"k", &[body], "not base64!"));
        assert!(!verify_hex_sha256(b"k", &[body], ""));
    }

    #[test]
    fn tokens_compare_by_content_only() {
        assert!(token_matches(b"s3cret", b"s3cret"));
        assert!(!token_matches(b"s3cret", b"s3cre"));
        assert!(!token_matches(b"s3cret", b""));
    }
}
