//! `/v1/audit/...`: the compliance questions of docs/audit.md over HTTP,
//! answered by `tenure-audit` exactly as `tenure audit …` answers them,
//! as JSON (default) or CSV (`?format=csv` or `Accept: text/csv`).

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tenure_audit::render::{render, Format, Report};
use tenure_audit::{read, review, search, time, AuditError};
use uuid::Uuid;

use crate::{error, ApiState};

/// Why a query was not answered.
pub enum Refused {
    /// The caller's parameters are unusable (400).
    Bad(String),
    NotFound(String),
    Failed(AuditError),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Bad(m) => error(StatusCode::BAD_REQUEST, "invalid_request", m),
            Refused::NotFound(m) => error(StatusCode::NOT_FOUND, "not_found", m),
            Refused::Failed(e) => failed(e),
        }
    }
}

/// `?format=` wins over `Accept`; JSON unless either asks for CSV (or the
/// CLI's text table).
pub fn negotiate(format: Option<&str>, headers: &HeaderMap) -> Result<Format, Refused> {
    if let Some(f) = format {
        return f
            .parse()
            .map_err(|e: AuditError| Refused::Bad(e.to_string()));
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Ok(if accept.contains("text/csv") {
        Format::Csv
    } else {
        Format::Json
    })
}

fn respond<R: Report>(report: &R, format: Format, name: &str) -> Response {
    match format {
        Format::Json => Json(report).into_response(),
        Format::Csv | Format::Table => match render(report, format) {
            Ok(text) => {
                let (ctype, ext) = match format {
                    Format::Csv => ("text/csv; charset=utf-8", "csv"),
                    _ => ("text/plain; charset=utf-8", "txt"),
                };
                (
                    [
                        (header::CONTENT_TYPE, ctype.to_owned()),
                        (
                            header::CONTENT_DISPOSITION,
                            format!("inline; filename=\"{name}.{ext}\""),
                        ),
                    ],
                    text,
                )
                    .into_response()
            }
            Err(e) => failed(e),
        },
    }
}

fn failed(e: AuditError) -> Response {
    match e {
        AuditError::Invalid(m) => error(StatusCode::BAD_REQUEST, "invalid_request", m),
        other => crate::db_error(other),
    }
}

fn instant(name: &str, v: Option<&str>) -> Result<Option<DateTime<Utc>>, Refused> {
    v.map(time::parse_instant)
        .transpose()
        .map_err(|e| Refused::Bad(format!("{name}: {e}")))
}

fn bound(name: &str, v: Option<&str>) -> Result<Option<DateTime<Utc>>, Refused> {
    v.map(time::parse_bound)
        .transpose()
        .map_err(|e| Refused::Bad(format!("{name}: {e}")))
}

/// A person id as given, else the person a key (work e-mail, source id)
/// names now; the answer itself is then read from events only.
async fn person(state: &ApiState, key: &str) -> Result<Uuid, Refused> {
    if let Ok(id) = key.parse() {
        return Ok(id);
    }
    let not_found = || Refused::NotFound(format!("no person matches {key:?}; give the person id"));
    if key.contains('\0') {
        return Err(not_found());
    }
    match crate::queries::find_person(&state.pool, key).await {
        Ok(Some(p)) => Ok(p.person_id),
        Ok(None) => Err(not_found()),
        Err(e) => Err(Refused::Failed(AuditError::Database(e))),
    }
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r.into_response(),
        }
    };
}

#[derive(Deserialize)]
pub struct AccessQuery {
    app: Option<String>,
    at: Option<String>,
    person: Option<String>,
    #[serde(default)]
    all: bool,
    format: Option<String>,
}

/// `tenure audit access`.
pub async fn access(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<AccessQuery>,
) -> Response {
    let format = tri!(negotiate(q.format.as_deref(), &headers));
    let at = tri!(instant("at", q.at.as_deref()));
    if let Some(key) = &q.person {
        let id = tri!(person(&state, key).await);
        return match read::person_access(&state.pool, id, q.app.as_deref(), at).await {
            Ok(r) => respond(&r, format, "person-access"),
            Err(e) => failed(e),
        };
    }
    let (Some(app), Some(at)) = (q.app.as_deref(), at) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "give app and at (or person)",
        );
    };
    match read::access_at(&state.pool, app, at, q.all).await {
        Ok(r) => respond(&r, format, "access"),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
pub struct ReviewQuery {
    app: Option<String>,
    at: Option<String>,
    #[serde(default)]
    all: bool,
    format: Option<String>,
}

/// `tenure audit review`: the access review export.
pub async fn access_review(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<ReviewQuery>,
) -> Response {
    let format = tri!(negotiate(q.format.as_deref(), &headers));
    let at = tri!(instant("at", q.at.as_deref())).unwrap_or_else(Utc::now);
    match review::access_review(&state.pool, q.app.as_deref(), at, q.all).await {
        Ok(r) => respond(&r, format, "access-review"),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
pub struct DeprovisionQuery {
    from: Option<String>,
    to: Option<String>,
    sla: Option<String>,
    #[serde(default)]
    breaches: bool,
    format: Option<String>,
}

/// `tenure audit deprovision`.
pub async fn deprovision(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<DeprovisionQuery>,
) -> Response {
    let format = tri!(negotiate(q.format.as_deref(), &headers));
    let now = Utc::now();
    let Some(from) = tri!(bound("from", q.from.as_deref())) else {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "give from");
    };
    let to = tri!(bound("to", q.to.as_deref())).unwrap_or(now);
    let sla_secs = match q.sla.as_deref().map(time::parse_duration).transpose() {
        Ok(Some(d)) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Ok(None) => state.deprovision_sla_secs,
        Err(e) => return failed(e),
    };
    match read::deprovision(&state.pool, from, to, sla_secs, now).await {
        Ok(mut r) => {
            if q.breaches {
                r.rows.retain(|r| r.breach);
            }
            respond(&r, format, "deprovision")
        }
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
pub struct FormatQuery {
    format: Option<String>,
}

/// `tenure audit exceptions`. Always 200: the report says what is wrong.
pub async fn exceptions(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<FormatQuery>,
) -> Response {
    let format = tri!(negotiate(q.format.as_deref(), &headers));
    match read::exceptions(&state.pool).await {
        Ok(r) => respond(&r, format, "exceptions"),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
pub struct EventsQuery {
    person: Option<String>,
    app: Option<String>,
    /// Event types, comma-separated.
    #[serde(rename = "type")]
    event_types: Option<String>,
    correlation: Option<Uuid>,
    from: Option<String>,
    to: Option<String>,
    after: Option<i64>,
    limit: Option<i64>,
    format: Option<String>,
}

/// `tenure audit search`: a page of events; `next_cursor` (JSON) or the
/// `Link`-like `X-Next-Cursor` header (CSV) is the `after` of the next page.
pub async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Response {
    let format = tri!(negotiate(q.format.as_deref(), &headers));
    let person_id = match &q.person {
        Some(key) => Some(tri!(person(&state, key).await)),
        None => None,
    };
    let filter = search::SearchFilter {
        person_id,
        app: q.app.clone(),
        event_types: q
            .event_types
            .as_deref()
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        correlation_id: q.correlation,
        from: tri!(bound("from", q.from.as_deref())),
        to: tri!(bound("to", q.to.as_deref())),
        after: q.after,
        limit: q.limit.unwrap_or(100).clamp(1, 10_000),
    };
    match search::search(&state.pool, &filter).await {
        Ok(page) => {
            let mut r = respond(&page, format, "events");
            if let Some(next) = page.next_cursor {
                if let Ok(v) = next.to_string().parse() {
                    r.headers_mut().insert("x-next-cursor", v);
                }
            }
            r
        }
        Err(e) => failed(e),
    }
}
