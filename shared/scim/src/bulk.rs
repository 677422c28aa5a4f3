//! SCIM Bulk (RFC 7644 §3.7): several user operations in one `POST /Bulk`.
//!
//! Each operation's result is turned into what the single call would have
//! produced — a [`Call`] with its own [`CallRecord`] or a [`ScimError`] — so
//! the caller handles a 409 inside a bulk response exactly like the 409 of a
//! single `POST /Users`.

use std::collections::HashMap;
use std::ops::Range;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::client::{http_error, invalid, parse_json, truncate, Call, Raw, ScimClient};
use crate::diff::Op;
use crate::error::{CallRecord, ScimError};
use crate::profile::Profile;
use crate::user::{get_ci, RemoteUser, PATCH_OP_SCHEMA};

pub const BULK_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
pub const BULK_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";

/// The limits a server announces for bulk requests (RFC 7643 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkLimits {
    /// Most operations in one request.
    pub max_operations: usize,
    /// Largest request body, in bytes.
    pub max_payload_size: usize,
}

/// One user operation of a bulk request.
#[derive(Clone, Debug, PartialEq)]
pub struct BulkItem {
    /// Unique within the request; the server echoes it in the result.
    pub bulk_id: String,
    pub op: Op,
    /// Sent as the operation's `version` (the bulk form of `If-Match`) on
    /// PATCH, PUT and DELETE; ignored on a create.
    pub etag: Option<String>,
}

/// The answer to one bulk request.
#[derive(Debug)]
pub struct BulkCall {
    /// The `POST /Bulk` exchange itself.
    pub record: CallRecord,
    /// Per item, in the order of the request: what the single call would
    /// have returned, its record carrying the operation's method, path and
    /// status and the latency of the whole request. `None` when the server
    /// did not run the operation (it stopped after `failOnErrors` errors, or
    /// left the operation out of its answer): nothing is known about it.
    pub results: Vec<Option<Result<Call<Option<RemoteUser>>, ScimError>>>,
}

/// Bytes of the request around the operations, with room to spare.
const ENVELOPE_BYTES: usize = 160;

impl BulkLimits {
    /// Splits `items` into consecutive runs that each fit one request: at
    /// most `max_operations` operations and an encoded body of at most
    /// `max_payload_size` bytes. An item too large to fit a request on its
    /// own gets a run of its own, which [`ScimClient::bulk_users`] refuses
    /// without sending, so the caller sends it as a single call.
    pub fn chunks(
        &self,
        client: &ScimClient,
        items: &[BulkItem],
        profile: &Profile,
    ) -> Result<Vec<Range<usize>>, ScimError> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut size = ENVELOPE_BYTES;
        for (i, item) in items.iter().enumerate() {
            let len = encoded_len(&client.bulk_operation(item, profile)?) + 1;
            let full = i - start >= self.max_operations.max(1)
                || (i > start && size + len > self.max_payload_size);
            if full {
                out.push(start..i);
                start = i;
                size = ENVELOPE_BYTES;
            }
            size += len;
        }
        if start < items.len() {
            out.push(start..items.len());
        }
        Ok(out)
    }
}

fn encoded_len(v: &Value) -> usize {
    serde_json::to_vec(v)
        .map(|b| b.len())
        .unwrap_or(usize::MAX / 2)
}

impl ScimClient {
    /// One operation as it goes into the `Operations` of a bulk request;
    /// an op the profile forbids is a `Config` error, as in
    /// [`ScimClient::execute_with`].
    fn bulk_operation(&self, item: &BulkItem, profile: &Profile) -> Result<Value, ScimError> {
        let path = |id: &str| self.url(&["Users", id], &[]).map(|(_, rel)| rel);
        let mut op = Map::new();
        match &item.op {
            Op::Create(spec) => {
                op.insert("method".into(), "POST".into());
                op.insert("path".into(), "/Users".into());
                op.insert("data".into(), spec.to_scim_with(profile));
            }
            Op::Patch { id, ops } => {
                if ops.is_empty() {
                    return Err(ScimError::Config("PATCH without operations".into()));
                }
                if !profile.external_id
                    && ops
                        .iter()
                        .any(|p| p.path.eq_ignore_ascii_case(crate::diff::PATH_EXTERNAL_ID))
                {
                    return Err(ScimError::Config(format!(
                        "profile {} does not store externalId; plan with diff_with",
                        profile.name
                    )));
                }
                op.insert("method".into(), "PATCH".into());
                op.insert("path".into(), path(id)?.into());
                op.insert(
                    "data".into(),
                    json!({ "schemas": [PATCH_OP_SCHEMA], "Operations": ops }),
                );
            }
            Op::Replace { id, spec } => {
                if !profile.put_allowed {
                    return Err(ScimError::Config(format!(
                        "profile {} does not allow PUT; plan with diff_with",
                        profile.name
                    )));
                }
                let mut data = spec.to_scim_with(profile);
                if let Some(obj) = data.as_object_mut() {
                    obj.insert("id".into(), id.as_str().into());
                }
                op.insert("method".into(), "PUT".into());
                op.insert("path".into(), path(id)?.into());
                op.insert("data".into(), data);
            }
            Op::Delete { id } => {
                op.insert("method".into(), "DELETE".into());
                op.insert("path".into(), path(id)?.into());
            }
        }
        op.insert("bulkId".into(), item.bulk_id.as_str().into());
        if let (Some(tag), false) = (&item.etag, matches!(item.op, Op::Create(_))) {
            op.insert("version".into(), tag.as_str().into());
        }
        Ok(Value::Object(op))
    }

    /// Sends `items` as one `POST /Bulk` (RFC 7644 §3.7) under `profile`
    /// and maps each operation's result to what the single call would have
    /// returned (see [`BulkCall::results`]).
    ///
    /// Nothing is sent, and a `Config` error comes back, when there are no
    /// items, two share a `bulkId`, an op is one the profile forbids, or the
    /// request would exceed `limits` (split with [`BulkLimits::chunks`]
    /// first). A failure of the request as a whole (a non-2xx answer, no
    /// answer, an unreadable body) is an error of the usual kinds, with the
    /// record of the `POST /Bulk`. `fail_on_errors` asks the server to stop
    /// after that many failed operations; the operations it then skips come
    /// back as `None`.
    pub async fn bulk_users(
        &self,
        items: &[BulkItem],
        profile: &Profile,
        limits: BulkLimits,
        fail_on_errors: Option<u32>,
    ) -> Result<BulkCall, ScimError> {
        if items.is_empty() {
            return Err(ScimError::Config("bulk request without operations".into()));
        }
        if items.len() > limits.max_operations {
            return Err(ScimError::Config(format!(
                "{} operations exceed the server's maxOperations ({})",
                items.len(),
                limits.max_operations
            )));
        }
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if item.bulk_id.is_empty() || index.insert(&item.bulk_id, i).is_some() {
                return Err(ScimError::Config(format!(
                    "bulkId {:?} is empty or not unique in the request",
                    item.bulk_id
                )));
            }
        }
        let operations = items
            .iter()
            .map(|item| self.bulk_operation(item, profile))
            .collect::<Result<Vec<_>, _>>()?;
        let mut body = json!({ "schemas": [BULK_REQUEST_SCHEMA], "Operations": operations });
        if let (Some(n), Some(obj)) = (fail_on_errors, body.as_object_mut()) {
            obj.insert("failOnErrors".into(), n.into());
        }
        let size = encoded_len(&body);
        if size > limits.max_payload_size {
            return Err(ScimError::Config(format!(
                "bulk request of {size} bytes exceeds the server's maxPayloadSize ({})",
                limits.max_payload_size
            )));
        }
        let (url, rel) = self.url(&["Bulk"], &[])?;
        let (raw, record) = self
            .send(Method::POST, url, rel, None, Some(&body), None)
            .await?;
        if !raw.status.is_success() {
            return Err(http_error(raw, record));
        }
        let answers = parse_answers(&raw, &record)?;
        let mut results: Vec<Option<Result<Call<Option<RemoteUser>>, ScimError>>> =
            (0..items.len()).map(|_| None).collect();
        for answer in answers {
            let Some(obj) = answer.as_object() else {
                return Err(invalid(record, "a bulk result is not an object".into()));
            };
            let Some(i) = get_ci(obj, "bulkId")
                .and_then(Value::as_str)
                .and_then(|id| index.get(id).copied())
            else {
                // Every operation carries a bulkId; a result without a known
                // one cannot be attributed, so it is not guessed at.
                tracing::warn!("bulk result without a bulkId of the request; ignored");
                continue;
            };
            let (item, sent) = (&items[i], &operations[i]);
            results[i] = Some(operation_result(item, sent, obj, &record));
        }
        Ok(BulkCall { record, results })
    }
}

/// The `Operations` of a bulk response.
fn parse_answers(raw: &Raw, record: &CallRecord) -> Result<Vec<Value>, ScimError> {
    let doc = parse_json(raw, record)?;
    match doc.as_object().and_then(|o| get_ci(o, "Operations")) {
        Some(Value::Array(items)) => Ok(items.clone()),
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(_) => Err(invalid(
            record.clone(),
            "bulk response Operations is not an array".into(),
        )),
    }
}

/// `status` as RFC 7644 writes it (`"201"`), as a number, or in the older
/// `{"code": "201"}` form.
fn status_of(v: Option<&Value>) -> Option<u16> {
    match v? {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        Value::Object(o) => status_of(get_ci(o, "code")),
        _ => None,
    }
}

/// The last path segment of a `location`, percent-decoded: the id.
fn id_from_location(location: &str) -> Option<String> {
    let path = location.split(['?', '#']).next()?.trim_end_matches('/');
    let (_, last) = path.rsplit_once('/')?;
    let bytes = last.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.is_empty())
}

/// One operation's result as the single call's `Call` or `ScimError`.
fn operation_result(
    item: &BulkItem,
    sent: &Value,
    answer: &Map<String, Value>,
    bulk: &CallRecord,
) -> Result<Call<Option<RemoteUser>>, ScimError> {
    let method = sent["method"].as_str().unwrap_or_default().to_owned();
    let path = sent["path"].as_str().unwrap_or_default().to_owned();
    let target_id = match &item.op {
        Op::Create(_) => None,
        Op::Patch { id, .. } | Op::Replace { id, .. } | Op::Delete { id } => Some(id.clone()),
    };
    let mut record = CallRecord {
        method,
        path,
        status: None,
        latency_ms: bulk.latency_ms,
        remote_id: target_id.clone(),
        error: None,
    };
    let Some(status) = status_of(get_ci(answer, "status")) else {
        return Err(invalid(record, "bulk result without a status".into()));
    };
    record.status = Some(status);
    let response = get_ci(answer, "response").filter(|v| v.is_object());
    let deleted_already = matches!(item.op, Op::Delete { .. }) && status == 404;
    if !(200..300).contains(&status) && !deleted_already {
        return Err(operation_error(record, status, response));
    }
    if matches!(item.op, Op::Delete { .. }) {
        return Ok(Call {
            value: None,
            record,
        });
    }
    let version = get_ci(answer, "version")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let location_id = get_ci(answer, "location")
        .and_then(Value::as_str)
        .and_then(id_from_location);
    // The resource as the server returned it, else as sent (a bulk answer
    // usually carries only location and version).
    let user = match response {
        Some(doc) if get_ci(doc.as_object().unwrap_or(&Map::new()), "id").is_some() => {
            Some(RemoteUser::from_scim(doc).map_err(|e| invalid(record.clone(), e.to_string()))?)
        }
        _ => match &item.op {
            Op::Create(_) | Op::Replace { .. } => {
                let Some(id) = location_id.clone().or(target_id) else {
                    return Err(invalid(
                        record,
                        "bulk create succeeded without a location".into(),
                    ));
                };
                let mut data = sent["data"].clone();
                if let Some(obj) = data.as_object_mut() {
                    obj.insert("id".into(), id.into());
                }
                Some(
                    RemoteUser::from_scim(&data)
                        .map_err(|e| invalid(record.clone(), e.to_string()))?,
                )
            }
            // As a PATCH answered with 204: the caller applies the ops.
            _ => None,
        },
    };
    let user = user.map(|mut u| {
        if u.etag.is_none() {
            u.etag = version;
        }
        u
    });
    if let Some(u) = &user {
        record.remote_id = Some(u.id.clone());
    }
    Ok(Call {
        value: user,
        record,
    })
}

/// A failed operation as the `Http` error of the single call.
fn operation_error(mut record: CallRecord, status: u16, response: Option<&Value>) -> ScimError {
    let obj = response.and_then(Value::as_object);
    let scim_type = obj
        .and_then(|o| get_ci(o, "scimType"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let detail = obj
        .and_then(|o| get_ci(o, "detail"))
        .and_then(Value::as_str)
        .map(truncate)
        .unwrap_or_else(|| {
            StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("no detail")
                .to_owned()
        });
    record.error = Some(match &scim_type {
        Some(t) => format!("HTTP {status} ({t}): {detail}"),
        None => format!("HTTP {status}: {detail}"),
    });
    ScimError::Http {
        record,
        status,
        scim_type,
        detail,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_in_every_form() {
        assert_eq!(status_of(Some(&json!("201"))), Some(201));
        assert_eq!(status_of(Some(&json!(409))), Some(409));
        assert_eq!(status_of(Some(&json!({"code": "400"}))), Some(400));
        assert_eq!(status_of(Some(&json!("soon"))), None);
        assert_eq!(status_of(None), None);
    }

    #[test]
    fn ids_from_locations() {
        assert_eq!(
            id_from_location("https://h/scim/v2/Users/92b7").as_deref(),
            Some("92b7")
        );
        assert_eq!(
            id_from_location("https://h/v2/Users/a%20b/").as_deref(),
            Some("a b")
        );
        assert_eq!(id_from_location("https://h/v2/Users/%zz"), None);
        assert_eq!(id_from_location("https://h/v2/Users/%2"), None);
        assert_eq!(id_from_location("nowhere"), None);
    }
}
