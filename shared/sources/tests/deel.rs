//! Deel contract: HMAC-SHA256 over "POST" ‖ body, person resources →
//! records, id-only resources → fetch.

mod common;

use common::*;
use tenure_domain::EmploymentStatus;
use tenure_sources::signature::sign_deel;
use tenure_sources::{ErrorKind, Kind, Outcome};

const KEY: &str = "deel-signing-key-5d2a";
const PERSON: &str = "8b5f1e2a-3c4d-4e5f-9a0b-1c2d3e4f5a6b";

fn signed(body: &[u8]) -> http::HeaderMap {
    headers(&[
        ("x-deel-signature", &sign_deel(KEY.as_bytes(), body)),
        ("x-deel-hmac-label", "Tenure"),
        ("x-deel-webhook-version", "v2"),
    ])
}

fn handle(mapping: &str, file: &str) -> Result<Outcome, tenure_sources::AdapterError> {
    let body = fixture(&format!("deel/{file}"));
    adapter(Kind::Deel, mapping, Some(KEY)).handle(
        &signed(&body),
        &body,
        at("2026-02-12T10:00:02Z"),
        300,
    )
}

#[test]
fn a_hire_maps_the_resource() {
    let r = one_record(handle("", "employee_created.json"));
    assert_eq!(r.person_id, PERSON);
    assert_eq!(r.given_name, "Amara");
    assert_eq!(r.family_name, "Okafor");
    assert_eq!(r.work_email, "amara.okafor@acme.example");
    assert_eq!(r.title.as_deref(), Some("Data Analyst"));
    assert_eq!(r.department.as_deref(), Some("Analytics"));
    assert_eq!(
        r.manager_id.as_deref(),
        Some("5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b")
    );
    assert_eq!(r.location.as_deref(), Some("NG"));
    assert_eq!(r.start_date, Some(date("2026-03-02")));
    assert_eq!(r.end_date, None);
    assert_eq!(
        r.employment_status,
        EmploymentStatus::Active,
        "onboarding is a hire"
    );
    assert_eq!(r.effective_at, at("2026-02-12T10:00:00Z"));
}

#[test]
fn custom_fields_and_zones_by_override() {
    let mapping = r#"
        [fields]
        cost_center = "custom_fields[name=Cost Centre].value"
        time_zone = "timezone"
        employee_number = "worker_id"
    "#;
    let r = one_record(handle(mapping, "employee_created.json"));
    assert_eq!(r.cost_center.as_deref(), Some("CC-2040"));
    assert_eq!(r.time_zone.as_deref(), Some("Africa/Lagos"));
    assert_eq!(r.employee_number.as_deref(), Some("100234"));
}

#[test]
fn mover_and_offboarding() {
    let r = one_record(handle("", "employee_updated_mover.json"));
    assert_eq!(r.department.as_deref(), Some("Finance"));
    assert_eq!(r.title.as_deref(), Some("Senior Data Analyst"));
    assert_eq!(r.effective_at, at("2026-05-04T08:30:00Z"));

    let r = one_record(handle("", "employee_offboarding.json"));
    assert_eq!(
        r.employment_status,
        EmploymentStatus::Active,
        "works until the last day"
    );
    assert_eq!(r.end_date, Some(date("2026-06-30")));
}

#[test]
fn a_resource_with_only_an_id_is_fetched() {
    let f = one_fetch(handle("", "worker_updated_id_only.json"));
    assert_eq!(f.source_person_id, PERSON);
    assert_eq!(f.event, "worker.v2.updated");
    assert_eq!(f.occurred_at, at("2026-05-05T12:00:00Z"));
}

#[test]
fn a_resource_without_a_status_is_fetched_rather_than_guessed() {
    let mut v = json_fixture("deel/employee_updated_mover.json");
    v["data"]["resource"]
        .as_object_mut()
        .map(|o| o.remove("hiring_status"));
    let body = serde_json::to_vec(&v).expect("json");
    let a = adapter(Kind::Deel, "", Some(KEY));
    let f = one_fetch(a.handle(&signed(&body), &body, at("2026-05-04T08:30:02Z"), 300));
    assert_eq!(f.source_person_id, PERSON);
}

#[test]
fn contract_events_are_ignored() {
    ignored(handle("", "contract_status_updated.json"));
}

#[test]
fn the_signature_covers_post_and_the_body() {
    let body = fixture("deel/employee_created.json");
    let a = adapter(Kind::Deel, "", Some(KEY));
    let now = at("2026-02-12T10:00:02Z");
    // HMAC of the body alone (without "POST") is not Deel's scheme.
    let h = headers(&[("x-deel-signature", &sign_gusto_like(&body))]);
    error(a.handle(&h, &body, now, 300), ErrorKind::Unauthorized);
    let h = headers(&[("x-deel-signature", &sign_deel(b"other", &body))]);
    error(a.handle(&h, &body, now, 300), ErrorKind::Unauthorized);
    error(
        a.handle(&headers(&[]), &body, now, 300),
        ErrorKind::Unauthorized,
    );
    error(
        adapter(Kind::Deel, "", None).handle(&signed(&body), &body, now, 300),
        ErrorKind::Config,
    );
}

fn sign_gusto_like(body: &[u8]) -> String {
    tenure_sources::signature::sign_gusto(KEY.as_bytes(), body)
}

#[test]
fn malformed_and_invalid_payloads() {
    let a = adapter(Kind::Deel, "", Some(KEY));
    let now = at("2026-02-12T10:00:02Z");
    for body in [&b"POST"[..], b"{\"event\":\"x\"}", b"[]"] {
        error(
            a.handle(&signed(body), body, now, 300),
            ErrorKind::Malformed,
        );
    }
    let e = error(handle("", "missing_meta.json"), ErrorKind::Invalid);
    assert_eq!(e.field.as_deref(), Some("data.meta"));

    let mut v = json_fixture("deel/employee_created.json");
    v["data"]["resource"]["start_date"] = "sometime".into();
    let body = serde_json::to_vec(&v).expect("json");
    let e = error(
        a.handle(&signed(&body), &body, now, 300),
        ErrorKind::Invalid,
    );
    assert_eq!(
        e.field.as_deref(),
        Some("data.resource.start_date (start_date)")
    );

    let mut v = json_fixture("deel/employee_created.json");
    v["data"]["resource"]["hiring_status"] = "paused".into();
    let body = serde_json::to_vec(&v).expect("json");
    let e = error(a.handle(&signed(&body), &body, now, 300), ErrorKind::Config);
    assert_eq!(
        e.field.as_deref(),
        Some("data.resource.hiring_status (employment_status)")
    );
}

#[test]
fn resources_may_come_as_a_list() {
    let mut v = json_fixture("deel/employee_created.json");
    let one = v["data"]["resource"].clone();
    let mut two = one.clone();
    two["id"] = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".into();
    two["work_email"] = "kofi.mensah@acme.example".into();
    two["first_name"] = "Kofi".into();
    v["data"]["resource"] = serde_json::json!([one, two]);
    let body = serde_json::to_vec(&v).expect("json");
    let a = adapter(Kind::Deel, "", Some(KEY));
    let rs = records(a.handle(&signed(&body), &body, at("2026-02-12T10:00:02Z"), 300));
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[1].given_name, "Kofi");

    v["data"]["resource"][1] = serde_json::json!({"id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"});
    let body = serde_json::to_vec(&v).expect("json");
    let fs = fetches(a.handle(&signed(&body), &body, at("2026-02-12T10:00:02Z"), 300));
    assert_eq!(fs.len(), 2, "a mixed list is fetched whole");
}

#[test]
fn delivery_id_is_the_tracking_id() {
    let body = fixture("deel/employee_updated_mover.json");
    assert_eq!(
        adapter(Kind::Deel, "", Some(KEY))
            .delivery_id(&signed(&body), &body)
            .as_deref(),
        Some("-A3hBP_Bhn48yZWj9FHhpiAV5aM0")
    );
}

#[test]
fn fetch_call_and_api_answer() {
    let a = adapter(Kind::Deel, "", Some(KEY));
    let req = request(PERSON, "worker.v2.updated", "2026-05-05T12:00:00Z");
    let call = a.fetch_call(
        &req,
        &api("https://api.letsdeel.com", "deel-api-token", None),
    );
    assert_eq!(
        call.url,
        format!("https://api.letsdeel.com/rest/v2/people/{PERSON}")
    );
    assert_eq!(
        header_value(&call, "Authorization"),
        Some("Bearer deel-api-token")
    );
    let r = a
        .record_from_api(
            &req,
            &json_fixture("deel/api_person.json"),
            at("2026-05-05T12:00:03Z"),
        )
        .expect("record");
    assert_eq!(r.department.as_deref(), Some("Finance"));
    assert_eq!(r.effective_at, at("2026-05-05T12:00:03Z"));
}
