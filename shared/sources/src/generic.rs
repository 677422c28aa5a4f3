//! The generic webhook: Tenure's own documented format (docs/api.md,
//! ADR 0009). The body is one `SourceRecord` as JSON, signed with
//! `X-Tenure-Signature: v2=<hex HMAC-SHA256(secret, "v2:<ts>:<delivery>:<body>")>`
//! over `X-Tenure-Timestamp` and `X-Tenure-Delivery` (or the deprecated
//! `v1=` over timestamp and body only, ADR 0021). No field mapping applies,
//! except that the mapping's `time_zone` fills in a record that has none.

use chrono::{DateTime, Utc};
use http::HeaderMap;
use tenure_domain::record::ParseError;
use tenure_domain::SourceRecord;

use crate::adapter::{header, Adapter, AdapterError, Outcome};
use crate::signature::{verify_generic, H_TENURE_DELIVERY, H_TENURE_SIGNATURE, H_TENURE_TIMESTAMP};

pub(crate) fn handle(
    adapter: &Adapter,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
    max_skew_secs: u64,
) -> Result<Outcome, AdapterError> {
    let secret = adapter.secret()?;
    verify_generic(
        secret,
        header(headers, H_TENURE_TIMESTAMP),
        header(headers, H_TENURE_SIGNATURE),
        header(headers, H_TENURE_DELIVERY),
        body,
        now,
        max_skew_secs,
    )
    .map_err(|e| AdapterError::unauthorized(e.to_string()))?;
    let mut record = SourceRecord::from_json(body).map_err(|e| match e {
        ParseError::Syntax(m) => AdapterError::malformed(format!("malformed JSON: {m}")),
        ParseError::Invalid(r) => AdapterError::invalid(r.field, r.message),
    })?;
    if record.time_zone.is_none() {
        if let Some(zone) = &adapter.mapping.time_zone {
            record.time_zone = Some(zone.trim().to_string());
            record
                .validate()
                .map_err(|e| AdapterError::config(Some("mapping.time_zone".into()), e.message))?;
        }
    }
    Ok(Outcome::Records(vec![record]))
}
