//! Personio contract: shared-secret token, dataless events → fetch of the
//! person, v1 employee attributes → records.

mod common;

use common::*;
use tenure_domain::EmploymentStatus;
use tenure_sources::{ErrorKind, Kind, Outcome};

const SECRET: &str = "personio-shared-secret-3c9e";

fn bearer() -> http::HeaderMap {
    headers(&[("Authorization", &format!("Bearer {SECRET}"))])
}

fn handle(file: &str) -> Result<Outcome, tenure_sources::AdapterError> {
    let body = fixture(&format!("personio/{file}"));
    adapter(Kind::Personio, "", Some(SECRET)).handle(
        &bearer(),
        &body,
        at("2026-02-16T14:06:00Z"),
        300,
    )
}

#[test]
fn the_shared_secret_is_accepted_as_bearer_or_tenure_token() {
    let body = fixture("personio/person_created.json");
    let a = adapter(Kind::Personio, "", Some(SECRET));
    let now = at("2026-02-16T14:06:00Z");
    one_fetch(a.handle(&bearer(), &body, now, 300));
    one_fetch(a.handle(
        &headers(&[("Authorization", &format!("bearer  {SECRET}"))]),
        &body,
        now,
        300,
    ));
    one_fetch(a.handle(&headers(&[("X-Tenure-Token", SECRET)]), &body, now, 300));
}

#[test]
fn a_wrong_or_missing_token_is_unauthorized_and_no_secret_is_config() {
    let body = fixture("personio/person_created.json");
    let a = adapter(Kind::Personio, "", Some(SECRET));
    let now = at("2026-02-16T14:06:00Z");
    for h in [
        headers(&[]),
        headers(&[("Authorization", "Bearer personio-shared-secret")]),
        headers(&[("Authorization", &format!("Bearer {SECRET}x"))]),
        headers(&[("Authorization", &format!("Basic {SECRET}"))]),
        headers(&[("X-Tenure-Token", "nope")]),
        headers(&[("Authorization", "Bearer ")]),
    ] {
        error(a.handle(&h, &body, now, 300), ErrorKind::Unauthorized);
    }
    error(
        adapter(Kind::Personio, "", None).handle(&bearer(), &body, now, 300),
        ErrorKind::Config,
    );
}

#[test]
fn person_and_employment_events_fetch_the_person() {
    for (file, event, when) in [
        (
            "person_created.json",
            "person.created",
            "2026-02-16T14:05:12Z",
        ),
        (
            "person_updated.json",
            "person.updated",
            "2026-05-04T08:30:00Z",
        ),
        (
            "person_deleted.json",
            "person.deleted",
            "2026-02-20T09:12:44Z",
        ),
        (
            "employment_updated.json",
            "employment.updated",
            "2026-05-04T08:31:00Z",
        ),
        (
            "employment_started.json",
            "employment.started",
            "2026-03-01T23:00:00Z",
        ),
        (
            "employment_terminated.json",
            "employment.terminated",
            "2026-06-30T22:00:00Z",
        ),
    ] {
        let f = one_fetch(handle(file));
        assert_eq!(
            f.source_person_id, "1001",
            "{file}: the person, not the employment"
        );
        assert_eq!(f.event, event);
        assert_eq!(f.occurred_at, at(when));
    }
    let a = adapter(Kind::Personio, "", Some(SECRET));
    assert!(a.is_deletion(&one_fetch(handle("person_deleted.json"))));
    assert!(!a.is_deletion(&one_fetch(handle("employment_terminated.json"))));
}

#[test]
fn other_events_are_ignored_and_bad_payloads_named() {
    ignored(handle("absence_period_created.json"));
    let e = error(handle("employment_without_person.json"), ErrorKind::Invalid);
    assert_eq!(e.field.as_deref(), Some("payload.person.id"));
    let a = adapter(Kind::Personio, "", Some(SECRET));
    let now = at("2026-02-16T14:06:00Z");
    error(
        a.handle(&bearer(), b"event_name=person.created", now, 300),
        ErrorKind::Malformed,
    );
    error(
        a.handle(&bearer(), b"{\"company_id\":\"1\"}", now, 300),
        ErrorKind::Malformed,
    );
    let mut v = json_fixture("personio/person_created.json");
    v["occurred_at"] = serde_json::Value::Null;
    let body = serde_json::to_vec(&v).expect("json");
    let e = error(a.handle(&bearer(), &body, now, 300), ErrorKind::Invalid);
    assert_eq!(e.field.as_deref(), Some("occurred_at"));
    assert_eq!(a.delivery_id(&bearer(), &body), None);
}

#[test]
fn fetch_call_is_the_v1_employee_request() {
    let a = adapter(Kind::Personio, "", Some(SECRET));
    let call = a.fetch_call(
        &request("1001", "person.updated", "2026-05-04T08:30:00Z"),
        &api("https://api.personio.de/", "papi-token-xyz", None),
    );
    assert_eq!(call.method, http::Method::GET);
    assert_eq!(
        call.url,
        "https://api.personio.de/v1/company/employees/1001"
    );
    assert_eq!(
        header_value(&call, "Authorization"),
        Some("Bearer papi-token-xyz")
    );
    assert_eq!(header_value(&call, "Accept"), Some("application/json"));
}

#[test]
fn api_attributes_map_to_records() {
    let a = adapter(
        Kind::Personio,
        "[fields]\ntime_zone = \"dynamic_1146702\"",
        Some(SECRET),
    );
    let req = request("1001", "employment.updated", "2026-05-04T08:31:00Z");
    let fetched = at("2026-05-04T08:31:02Z");

    let r = a
        .record_from_api(&req, &json_fixture("personio/api_employee.json"), fetched)
        .expect("active");
    assert_eq!(r.person_id, "1001");
    assert_eq!(r.given_name, "Lena");
    assert_eq!(r.family_name, "Hoffmann");
    assert_eq!(r.work_email, "lena.hoffmann@acme.example");
    assert_eq!(r.department.as_deref(), Some("Engineering"));
    assert_eq!(r.cost_center.as_deref(), Some("CC-ENG"));
    assert_eq!(r.organization.as_deref(), Some("Acme GmbH"));
    assert_eq!(r.title.as_deref(), Some("Backend Engineer"));
    assert_eq!(r.manager_id.as_deref(), Some("1000"));
    assert_eq!(r.location.as_deref(), Some("Munich"));
    assert_eq!(r.time_zone.as_deref(), Some("Europe/Berlin"));
    // "2026-03-02T00:00:00+01:00": the local date as written.
    assert_eq!(r.start_date, Some(date("2026-03-02")));
    assert_eq!(r.end_date, None);
    assert_eq!(r.employment_status, EmploymentStatus::Active);
    assert_eq!(r.effective_at, fetched);

    let r = a
        .record_from_api(
            &req,
            &json_fixture("personio/api_employee_termination_scheduled.json"),
            fetched,
        )
        .expect("scheduled");
    assert_eq!(r.employment_status, EmploymentStatus::Active);
    assert_eq!(r.end_date, Some(date("2026-06-30")));

    let r = a
        .record_from_api(
            &req,
            &json_fixture("personio/api_employee_terminated.json"),
            fetched,
        )
        .expect("terminated");
    assert_eq!(r.employment_status, EmploymentStatus::Terminated);
    assert_eq!(r.end_date, Some(date("2026-06-30")));

    let r = a
        .record_from_api(
            &req,
            &json_fixture("personio/api_employee_on_leave.json"),
            fetched,
        )
        .expect("leave");
    assert_eq!(r.employment_status, EmploymentStatus::OnLeave);
}

#[test]
fn attributes_not_whitelisted_are_configuration_errors() {
    let a = adapter(
        Kind::Personio,
        "[fields]\ncost_center = \"dynamic_999\"",
        Some(SECRET),
    );
    let req = request("1001", "person.updated", "2026-05-04T08:30:00Z");
    let e = a
        .record_from_api(
            &req,
            &json_fixture("personio/api_employee.json"),
            at("2026-05-04T08:31:00Z"),
        )
        .expect_err("not whitelisted");
    assert_eq!(e.kind, ErrorKind::Config);
    assert_eq!(
        e.field.as_deref(),
        Some("data.attributes.dynamic_999 (cost_center)")
    );

    let a = adapter(Kind::Personio, "", Some(SECRET));
    let mut v = json_fixture("personio/api_employee.json");
    v["data"]["attributes"]["email"]["value"] = serde_json::Value::Null;
    let e = a
        .record_from_api(&req, &v, at("2026-05-04T08:31:00Z"))
        .expect_err("no email");
    assert_eq!(e.to_string(), "data.attributes.email (work_email): missing");
    assert_eq!(e.kind, ErrorKind::Invalid);

    let e = a
        .record_from_api(
            &req,
            &serde_json::json!({"success": false, "error": {"code": 0, "message": "Unauthorized"}}),
            at("2026-05-04T08:31:00Z"),
        )
        .expect_err("error answer");
    assert_eq!(e.kind, ErrorKind::Invalid);
    let e = a
        .record_from_api(
            &req,
            &serde_json::json!({"data": []}),
            at("2026-05-04T08:31:00Z"),
        )
        .expect_err("wrong shape");
    assert_eq!(e.kind, ErrorKind::Malformed);
}
