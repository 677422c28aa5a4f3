//! Frappe HR contract: base64 HMAC-SHA256, admin-chosen Employee fields →
//! records, incomplete bodies → fetch, `/api/resource/Employee/{name}`.

mod common;

use common::*;
use tenure_domain::EmploymentStatus;
use tenure_sources::signature::sign_frappe;
use tenure_sources::{ErrorKind, Kind, Outcome};

const SECRET: &str = "frappe-webhook-secret-77f0";

fn signed(body: &[u8]) -> http::HeaderMap {
    headers(&[(
        "X-Frappe-Webhook-Signature",
        &sign_frappe(SECRET.as_bytes(), body),
    )])
}

fn handle(mapping: &str, file: &str) -> Result<Outcome, tenure_sources::AdapterError> {
    let body = fixture(&format!("frappe/{file}"));
    adapter(Kind::Frappe, mapping, Some(SECRET)).handle(
        &signed(&body),
        &body,
        at("2026-02-20T11:40:00Z"),
        300,
    )
}

#[test]
fn a_hire_maps_the_employee_document() {
    let r = one_record(handle("", "employee_hire.json"));
    assert_eq!(r.person_id, "HR-EMP-00042");
    assert_eq!(r.given_name, "Priya");
    assert_eq!(r.family_name, "Nair");
    assert_eq!(r.display_name.as_deref(), Some("Priya Nair"));
    assert_eq!(r.work_email, "priya.nair@acme.example");
    assert_eq!(r.department.as_deref(), Some("Engineering - ACME"));
    assert_eq!(r.organization.as_deref(), Some("Acme Technologies"));
    assert_eq!(r.title.as_deref(), Some("Software Engineer"));
    assert_eq!(r.manager_id.as_deref(), Some("HR-EMP-00007"));
    assert_eq!(r.location.as_deref(), Some("Bengaluru"));
    assert_eq!(r.start_date, Some(date("2026-03-02")));
    assert_eq!(r.employment_status, EmploymentStatus::Active);
    // `modified` has no zone: UTC unless the mapping names the site's zone.
    assert_eq!(r.effective_at, at("2026-02-20T11:32:07.123456Z"));
    let r = one_record(handle("time_zone = \"Asia/Kolkata\"", "employee_hire.json"));
    assert_eq!(r.effective_at, at("2026-02-20T06:02:07.123456Z"));
    assert_eq!(r.time_zone.as_deref(), Some("Asia/Kolkata"));
}

#[test]
fn mover_leaver_and_suspension() {
    let r = one_record(handle("", "employee_mover.json"));
    assert_eq!(r.department.as_deref(), Some("Platform - ACME"));
    assert_eq!(r.manager_id.as_deref(), Some("HR-EMP-00011"));

    let r = one_record(handle("", "employee_left.json"));
    assert_eq!(r.employment_status, EmploymentStatus::Terminated);
    assert_eq!(r.end_date, Some(date("2026-06-30")));

    let r = one_record(handle("", "employee_suspended.json"));
    assert_eq!(r.employment_status, EmploymentStatus::OnLeave);

    let r = one_record(handle(
        "[status]\nSuspended = \"terminated\"",
        "employee_suspended.json",
    ));
    assert_eq!(r.employment_status, EmploymentStatus::Terminated);
}

#[test]
fn a_document_nested_under_doc_is_accepted() {
    let r = one_record(handle("", "employee_doc_wrapped.json"));
    assert_eq!(r.person_id, "HR-EMP-00042");
}

#[test]
fn a_body_without_every_mapped_field_is_fetched() {
    let f = one_fetch(handle("", "employee_partial.json"));
    assert_eq!(f.source_person_id, "HR-EMP-00042");
    assert_eq!(f.occurred_at, at("2026-06-12T18:15:00Z"));
}

#[test]
fn errors_name_field_and_attribute() {
    let e = error(handle("", "employee_no_last_name.json"), ErrorKind::Invalid);
    assert_eq!(e.to_string(), "last_name (family_name): missing");
    let e = error(handle("", "form_encoded.txt"), ErrorKind::Malformed);
    assert!(e.message.contains("JSON"), "{e}");

    let mut v = json_fixture("frappe/employee_hire.json");
    v["status"] = "On Notice".into();
    let body = serde_json::to_vec(&v).expect("json");
    let a = adapter(Kind::Frappe, "", Some(SECRET));
    let e = error(
        a.handle(&signed(&body), &body, at("2026-02-20T11:40:00Z"), 300),
        ErrorKind::Config,
    );
    assert_eq!(e.field.as_deref(), Some("status (employment_status)"));
}

#[test]
fn work_email_can_fall_back_to_the_personal_address() {
    let mut v = json_fixture("frappe/employee_hire.json");
    v["company_email"] = serde_json::Value::Null;
    let body = serde_json::to_vec(&v).expect("json");
    let a = adapter(Kind::Frappe, "", Some(SECRET));
    let e = error(
        a.handle(&signed(&body), &body, at("2026-02-20T11:40:00Z"), 300),
        ErrorKind::Invalid,
    );
    assert_eq!(e.field.as_deref(), Some("company_email (work_email)"));
    let a = adapter(
        Kind::Frappe,
        "[fields]\nwork_email = \"company_email|personal_email\"",
        Some(SECRET),
    );
    let r = one_record(a.handle(&signed(&body), &body, at("2026-02-20T11:40:00Z"), 300));
    assert_eq!(r.work_email, "priya@example.com");
}

#[test]
fn wrong_or_missing_signature_is_unauthorized() {
    let body = fixture("frappe/employee_hire.json");
    let a = adapter(Kind::Frappe, "", Some(SECRET));
    let now = at("2026-02-20T11:40:00Z");
    let h = headers(&[("X-Frappe-Webhook-Signature", &sign_frappe(b"other", &body))]);
    error(a.handle(&h, &body, now, 300), ErrorKind::Unauthorized);
    error(
        a.handle(&headers(&[]), &body, now, 300),
        ErrorKind::Unauthorized,
    );
    error(
        adapter(Kind::Frappe, "", None).handle(&signed(&body), &body, now, 300),
        ErrorKind::Config,
    );
}

#[test]
fn delivery_id_identifies_one_saved_version() {
    let a = adapter(Kind::Frappe, "", Some(SECRET));
    let hire = fixture("frappe/employee_hire.json");
    let mover = fixture("frappe/employee_mover.json");
    let id = a.delivery_id(&signed(&hire), &hire).expect("id");
    assert!(id.starts_with("frappe:"), "{id}");
    assert_eq!(a.delivery_id(&signed(&hire), &hire), Some(id.clone()));
    assert_ne!(a.delivery_id(&signed(&mover), &mover), Some(id.clone()));
    let wrapped = fixture("frappe/employee_doc_wrapped.json");
    assert_eq!(a.delivery_id(&signed(&wrapped), &wrapped), Some(id));
}

#[test]
fn fetch_call_and_api_answer() {
    let a = adapter(Kind::Frappe, "", Some(SECRET));
    let req = request("HR-EMP-00042", "employee.webhook", "2026-06-12T18:15:00Z");
    let call = a.fetch_call(
        &req,
        &api("https://hr.acme.example", "api-secret", Some("api-key")),
    );
    assert_eq!(
        call.url,
        "https://hr.acme.example/api/resource/Employee/HR-EMP-00042"
    );
    assert_eq!(
        header_value(&call, "Authorization"),
        Some("token api-key:api-secret")
    );
    let call = a.fetch_call(
        &req,
        &api("https://hr.acme.example", "api-key:api-secret", None),
    );
    assert_eq!(
        header_value(&call, "Authorization"),
        Some("token api-key:api-secret")
    );
    let r = a
        .record_from_api(
            &req,
            &json_fixture("frappe/api_employee.json"),
            at("2026-06-12T18:15:05Z"),
        )
        .expect("record");
    assert_eq!(r.department.as_deref(), Some("Platform - ACME"));
    assert_eq!(r.effective_at, at("2026-06-12T18:15:05Z"));
}
