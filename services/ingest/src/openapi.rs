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
    paths(
        crate::generic_record,
        crate::source_webhook,
        crate::identity::idp_events,
        crate::stats
    ),
    components(schemas(crate::ErrorBody, crate::Accepted, crate::unauthenticated::StatsSnapshot)),
    tags(
        (name = "sources", description = "HR system webhooks"),
        (name = "operations", description = "Counters for operators (docs/security.md)"),
        (name = "idp", description = "Identity provider notifications (Authentik)")
    )
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

#[cfg(test)]
mod tests {
    /// The checked-in document is what the service serves; regenerate with
    /// `TENURE_WRITE_OPENAPI=1 cargo test -p tenure-ingest openapi`.
    #[test]
    fn openapi_document_is_checked_in_and_current() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi/ingest.json");
        let current = super::document();
        if std::env::var_os("TENURE_WRITE_OPENAPI").is_some() {
            std::fs::write(&path, format!("{current}\n")).expect("write docs/openapi/ingest.json");
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            checked_in.trim_end(),
            current.trim_end(),
            "docs/openapi/ingest.json is stale: run TENURE_WRITE_OPENAPI=1 cargo test -p tenure-ingest openapi"
        );
        let doc: serde_json::Value = serde_json::from_str(&current).expect("JSON");
        for path in [
            "/v1/sources/generic/records",
            "/v1/sources/{name}/webhook",
            "/v1/idp/{name}/events",
        ] {
            assert!(doc["paths"][path]["post"].is_object(), "{path} documented");
        }
    }
}
