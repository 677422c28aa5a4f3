//! The OpenAPI document of the ingest endpoints, generated from the
//! handlers' annotations, served at `/openapi.json` and checked in at
//! `docs/openapi/ingest.json` (a test keeps the two equal).

use axum::response::IntoResponse;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tenure ingest",
        description = "Signed HR webhooks in; records and fetch-back requests out to JetStream. \
The inbound SCIM 2.0 endpoint for identity providers (`/scim/v2`, RFC 7644) is described by its own \
`/ServiceProviderConfig`, `/ResourceTypes` and `/Schemas`.",
        license(name = "Apache-2.0")
    ),
    paths(crate::generic_record, crate::source_webhook),
    components(schemas(crate::ErrorBody, crate::Accepted)),
    tags((name = "sources", description = "HR system webhooks"))
)]
pub struct IngestApi;

/// The document as pretty JSON, exactly as checked in.
pub fn document() -> String {
    IngestApi::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

pub async fn serve() -> impl IntoResponse {
    ([("content-type", "application/json")], document())
}
