//! The HTTP surface: routes, bearer authentication, body limits, content
//! types, conditional requests and the discovery endpoints.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::error::ScimError;
use crate::filter;
use crate::resource::{etag, location, Projection};
use crate::schema::{self, Kind, LIST_RESPONSE, SEARCH_REQUEST, SPC_SCHEMA};
use crate::service::{self, etag_matches, ListParams, Rendered};
use crate::Provider;

pub(crate) const SCIM_CONTENT_TYPE: &str = "application/scim+json";

type St = State<Arc<Provider>>;
type Q = Result<Query<Vec<(String, String)>>, QueryRejection>;

pub(crate) fn router(p: Arc<Provider>) -> Router {
    let mut r = Router::new();
    for kind in [Kind::User, Kind::Group] {
        let base = format!("/{}", kind.endpoint());
        r = r
            .route(
                &base,
                get(move |s: St, q: Q| list(s, kind, q))
                    .post(move |s: St, h: HeaderMap, b: Body| create(s, kind, h, b))
                    .fallback(method_not_allowed),
            )
            .route(
                &format!("{base}/.search"),
                post(move |s: St, h: HeaderMap, b: Body| search(s, kind, h, b))
                    .fallback(method_not_allowed),
            )
            .route(
                &format!("{base}/{{id}}"),
                get(move |s: St, id: Path<String>, q: Q, h: HeaderMap| get_one(s, kind, id, q, h))
                    .put(
                        move |s: St, id: Path<String>, q: Q, h: HeaderMap, b: Body| {
                            put(s, kind, id, q, h, b)
                        },
                    )
                    .patch(
                        move |s: St, id: Path<String>, q: Q, h: HeaderMap, b: Body| {
                            patch(s, kind, id, q, h, b)
                        },
                    )
                    .delete(move |s: St, id: Path<String>, h: HeaderMap| delete(s, kind, id, h))
                    .fallback(method_not_allowed),
            );
    }
    r.route(
        "/ServiceProviderConfig",
        get(service_provider_config).fallback(method_not_allowed),
    )
    .route(
        "/ResourceTypes",
        get(resource_types).fallback(method_not_allowed),
    )
    .route(
        "/ResourceTypes/{name}",
        get(resource_type).fallback(method_not_allowed),
    )
    .route("/Schemas", get(schemas).fallback(method_not_allowed))
    .route(
        "/Schemas/{id}",
        get(schema_one).fallback(method_not_allowed),
    )
    .route("/.search", any(not_implemented))
    .route("/Bulk", any(not_implemented))
    .fallback(not_found)
    .layer(middleware::from_fn_with_state(p.clone(), authenticate))
    .with_state(p)
}

/// Bearer authentication on every route, compared in constant time. An
/// empty configured token admits nobody.
async fn authenticate(State(p): St, req: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "scim_request",
        provider = %p.name,
        method = %req.method(),
        path = %req.uri().path(),
    );
    async move {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let ok = match presented {
            Some(t) if !p.token.is_empty() => {
                tenure_sources::signature::token_matches(p.token.as_bytes(), t.as_bytes())
            }
            _ => false,
        };
        if !ok {
            return ScimError::unauthorized().into_response();
        }
        let resp = next.run(req).await;
        tracing::debug!(status = resp.status().as_u16(), "scim response");
        resp
    }
    .instrument(span)
    .await
}

async fn method_not_allowed() -> ScimError {
    ScimError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        "this method is not allowed on this endpoint",
    )
}

async fn not_found() -> ScimError {
    ScimError::not_found("no such endpoint")
}

async fn not_implemented() -> ScimError {
    ScimError::new(
        StatusCode::NOT_IMPLEMENTED,
        None,
        "not supported by this service provider (see /ServiceProviderConfig)",
    )
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SCIM_CONTENT_TYPE),
    );
    resp
}

fn resource_response(p: &Provider, kind: Kind, status: StatusCode, r: Rendered) -> Response {
    let tag = etag(r.version);
    let loc = location(p.base(), kind, r.id);
    let mut resp = json_response(status, Value::Object(r.body));
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&loc) {
        h.insert(header::LOCATION, v);
    }
    resp
}

/// Query parameters, looked up ignoring case.
struct Params(Vec<(String, String)>);

impl Params {
    fn from(q: Q) -> Result<Self, ScimError> {
        q.map(|Query(v)| Params(v))
            .map_err(|e| ScimError::invalid_value(format!("invalid query string: {e}")))
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn header(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Reads a JSON body of at most `max_body_bytes` (413 beyond), sent as
/// `application/scim+json` or `application/json` (415 otherwise).
async fn read_json(p: &Provider, headers: &HeaderMap, body: Body) -> Result<Value, ScimError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        let mime = ct.split(';').next().unwrap_or_default().trim();
        if !mime.eq_ignore_ascii_case(SCIM_CONTENT_TYPE)
            && !mime.eq_ignore_ascii_case("application/json")
        {
            return Err(ScimError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                "send application/scim+json or application/json",
            ));
        }
    }
    let too_large = || {
        ScimError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            format!("the request body exceeds {} bytes", p.max_body_bytes),
        )
    };
    let declared =
        header(headers, header::CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > p.max_body_bytes as u64) {
        return Err(too_large());
    }
    let bytes = match Limited::new(body, p.max_body_bytes).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Err(_) => return Err(ScimError::invalid_syntax("could not read the request body")),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ScimError::invalid_syntax("the request body is empty"));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ScimError::invalid_syntax(format!("invalid JSON: {e}")))
}

fn parse_index(v: Option<&str>, name: &str) -> Result<Option<i64>, ScimError> {
    v.map(|s| {
        s.trim()
            .parse::<i64>()
            .map_err(|_| ScimError::invalid_value(format!("'{name}' must be an integer")))
    })
    .transpose()
}

fn list_params(
    kind: Kind,
    filter: Option<&str>,
    start_index: Option<i64>,
    count: Option<i64>,
    projection: Projection,
) -> Result<ListParams, ScimError> {
    let filter = filter
        .filter(|f| !f.trim().is_empty())
        .map(|f| filter::parse(kind, f).map_err(ScimError::invalid_filter))
        .transpose()?;
    Ok(ListParams {
        filter,
        // RFC 7644 §3.4.2.4: below 1 means 1; a negative count means 0.
        start_index: usize::try_from(start_index.unwrap_or(1).max(1)).unwrap_or(usize::MAX),
        count: count.map(|c| usize::try_from(c.max(0)).unwrap_or(usize::MAX)),
        projection,
    })
}

async fn list(State(p): St, kind: Kind, q: Q) -> Result<Response, ScimError> {
    let q = Params::from(q)?;
    let params = list_params(
        kind,
        q.get("filter"),
        parse_index(q.get("startIndex"), "startIndex")?,
        parse_index(q.get("count"), "count")?,
        Projection::new(kind, q.all("attributes"), q.all("excludedAttributes")),
    )?;
    Ok(json_response(
        StatusCode::OK,
        service::list(&p, kind, params).await?,
    ))
}

/// `POST /Users/.search` and `POST /Groups/.search` (RFC 7644 §3.4.3).
async fn search(State(p): St, kind: Kind, h: HeaderMap, b: Body) -> Result<Response, ScimError> {
    let body = read_json(&p, &h, b).await?;
    let Value::Object(m) = body else {
        return Err(ScimError::invalid_syntax(format!(
            "the body must be a {SEARCH_REQUEST} object"
        )));
    };
    let get = |k: &str| filter::get_ci(&m, k);
    let strings = |k: &str| -> Result<Vec<String>, ScimError> {
        match get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| ScimError::invalid_value(format!("'{k}' must hold strings")))
                })
                .collect(),
            Some(_) => Err(ScimError::invalid_value(format!(
                "'{k}' must be a list of strings"
            ))),
        }
    };
    let int = |k: &str| -> Result<Option<i64>, ScimError> {
        match get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| ScimError::invalid_value(format!("'{k}' must be an integer"))),
        }
    };
    let filter = match get("filter") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(ScimError::invalid_filter("'filter' must be a string")),
    };
    let attributes = strings("attributes")?;
    let excluded = strings("excludedAttributes")?;
    let params = list_params(
        kind,
        filter,
        int("startIndex")?,
        int("count")?,
        Projection::new(
            kind,
            attributes.iter().map(String::as_str),
            excluded.iter().map(String::as_str),
        ),
    )?;
    Ok(json_response(
        StatusCode::OK,
        service::list(&p, kind, params).await?,
    ))
}

async fn create(State(p): St, kind: Kind, h: HeaderMap, b: Body) -> Result<Response, ScimError> {
    let body = read_json(&p, &h, b).await?;
    let r = service::create(&p, kind, body).await?;
    Ok(resource_response(&p, kind, StatusCode::CREATED, r))
}

async fn get_one(
    State(p): St,
    kind: Kind,
    Path(id): Path<String>,
    q: Q,
    h: HeaderMap,
) -> Result<Response, ScimError> {
    let q = Params::from(q)?;
    let projection = Projection::new(kind, q.all("attributes"), q.all("excludedAttributes"));
    let r = service::get(&p, kind, &id, &projection).await?;
    if header(&h, header::IF_NONE_MATCH).is_some_and(|v| etag_matches(v, r.version)) {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&etag(r.version)) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        return Ok(resp);
    }
    Ok(resource_response(&p, kind, StatusCode::OK, r))
}

async fn put(
    State(p): St,
    kind: Kind,
    Path(id): Path<String>,
    q: Q,
    h: HeaderMap,
    b: Body,
) -> Result<Response, ScimError> {
    let q = Params::from(q)?;
    let body = read_json(&p, &h, b).await?;
    let mut r = service::replace(&p, kind, &id, header(&h, header::IF_MATCH), body).await?;
    r.body = Projection::new(kind, q.all("attributes"), q.all("excludedAttributes")).apply(r.body);
    Ok(resource_response(&p, kind, StatusCode::OK, r))
}

async fn patch(
    State(p): St,
    kind: Kind,
    Path(id): Path<String>,
    q: Q,
    h: HeaderMap,
    b: Body,
) -> Result<Response, ScimError> {
    let q = Params::from(q)?;
    let body = read_json(&p, &h, b).await?;
    let mut r = service::patch(&p, kind, &id, header(&h, header::IF_MATCH), body).await?;
    r.body = Projection::new(kind, q.all("attributes"), q.all("excludedAttributes")).apply(r.body);
    Ok(resource_response(&p, kind, StatusCode::OK, r))
}

async fn delete(
    State(p): St,
    kind: Kind,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Result<Response, ScimError> {
    service::delete(&p, kind, &id, header(&h, header::IF_MATCH)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn list_of(items: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_RESPONSE],
        "totalResults": items.len(),
        "startIndex": 1,
        "itemsPerPage": items.len(),
        "Resources": items,
    })
}

async fn service_provider_config(State(p): St) -> Response {
    json_response(
        StatusCode::OK,
        json!({
            "schemas": [SPC_SCHEMA],
            "patch": {"supported": true},
            // Bulk is not supported. maxOperations is still set because
            // Authentik sizes its member PATCH requests by it (all operations
            // in one request when it is 0).
            "bulk": {"supported": false, "maxOperations": 1000, "maxPayloadSize": p.max_body_bytes},
            "filter": {"supported": true, "maxResults": p.max_results},
            "changePassword": {"supported": false},
            "sort": {"supported": false},
            "etag": {"supported": true},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "Authentication with the bearer token configured for this identity provider.",
                "primary": true,
            }],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": format!("{}/ServiceProviderConfig", p.base()),
            },
        }),
    )
}

async fn resource_types(State(p): St) -> Response {
    json_response(
        StatusCode::OK,
        list_of(
            [Kind::User, Kind::Group]
                .iter()
                .map(|k| k.resource_type_json(p.base()))
                .collect(),
        ),
    )
}

async fn resource_type(State(p): St, Path(name): Path<String>) -> Result<Response, ScimError> {
    let kind = [Kind::User, Kind::Group]
        .into_iter()
        .find(|k| k.name().eq_ignore_ascii_case(&name))
        .ok_or_else(|| ScimError::not_found("no such resource type"))?;
    Ok(json_response(
        StatusCode::OK,
        kind.resource_type_json(p.base()),
    ))
}

async fn schemas(State(p): St) -> Response {
    json_response(
        StatusCode::OK,
        list_of(schema::ALL.iter().map(|s| s.to_json(p.base())).collect()),
    )
}

async fn schema_one(State(p): St, Path(id): Path<String>) -> Result<Response, ScimError> {
    let s = schema::ALL
        .iter()
        .find(|s| s.id.eq_ignore_ascii_case(&id))
        .ok_or_else(|| ScimError::not_found("no such schema"))?;
    Ok(json_response(StatusCode::OK, s.to_json(p.base())))
}
