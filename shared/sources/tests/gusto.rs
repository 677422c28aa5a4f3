//! Gusto contract: verification-token handshake, hex HMAC-SHA256 with the
//! token, employee events → fetch, `GET /v1/employees/{uuid}` → records.

mod common;

use common::*;
use tenure_domain::EmploymentStatus;
use tenure_sources::signature::sign_gusto;
use tenure_sources::{ErrorKind, Kind, Outcome};

const TOKEN: &str = "asQ9iUk7HVMPh5DXgqXRnOmGpzLgHQXMCu8h2nLzWq0";
const EMPLOYEE: &str = "bcfc9744-0ab3-4ef3-ab0d-e728255d659c";

fn signed(body: &[u8]) -> http::HeaderMap {
    headers(&[("X-Gusto-Signature", &sign_gusto(TOKEN.as_bytes(), body))])
}

fn handle(file: &str) -> Result<Outcome, tenure_sources::AdapterError> {
    let body = fixture(&format!("gusto/{file}"));
    adapter(Kind::Gusto, "", Some(TOKEN)).handle(
        &signed(&body),
        &body,
        at("2026-02-16T14:06:00Z"),
        300,
    )
}

#[test]
fn verification_is_answered_and_kept_for_the_operator_without_echoing_the_token() {
    let body = fixture("gusto/verification.json");
    for a in [
        adapter(Kind::Gusto, "", None),
        adapter(Kind::Gusto, "", Some("old-token")),
    ] {
        match a.handle(&headers(&[]), &body, at("2026-02-16T14:06:00Z"), 300) {
            Ok(Outcome::Handshake {
                status,
                content_type,
                body: answer,
            }) => {
                assert_eq!(status, 200);
                assert_eq!(content_type, "application/json");
                assert!(!answer.contains(TOKEN), "the token must not be echoed");
            }
            other => panic!("expected a handshake, got {other:?}"),
        }
        let reason = a
            .handshake_quarantine_reason(&body)
            .expect("kept for the operator");
        assert!(reason.contains("verification token"), "{reason}");
        assert!(!reason.contains(TOKEN));
    }
    let event = fixture("gusto/employee_created.json");
    assert_eq!(
        adapter(Kind::Gusto, "", Some(TOKEN)).handshake_quarantine_reason(&event),
        None
    );
}

#[test]
fn employee_events_are_fetched_by_entity_uuid() {
    for (file, event, when) in [
        ("employee_created.json", "employee.created", 1771250712),
        ("employee_updated.json", "employee.updated", 1777883400),
        (
            "employee_terminated.json",
            "employee.terminated",
            1781286300,
        ),
        (
            "employee_termination_effective.json",
            "employee.termination_effective",
            1782889200,
        ),
        (
            "employee_termination_cancelled.json",
            "employee.termination_cancelled",
            1781890000,
        ),
        ("employee_rehired.json", "employee.rehired", 1796000000),
        (
            "employee_rehire_effective.json",
            "employee.rehire_effective",
            1798963200,
        ),
    ] {
        let f = one_fetch(handle(file));
        assert_eq!(f.source_person_id, EMPLOYEE, "{file}");
        assert_eq!(f.event, event);
        assert_eq!(f.occurred_at.timestamp(), when);
    }
}

#[test]
fn other_entities_are_ignored() {
    let reason = ignored(handle("employee_bank_account_created.json"));
    assert!(reason.contains("BankAccount"), "{reason}");
    ignored(handle("payroll_paid.json"));
}

#[test]
fn delivery_id_is_the_event_uuid() {
    let body = fixture("gusto/employee_terminated.json");
    let a = adapter(Kind::Gusto, "", Some(TOKEN));
    assert_eq!(
        a.delivery_id(&signed(&body), &body).as_deref(),
        Some("7d1e9f2a-5b3c-4a8e-b6d0-3e2f1a9c8b70")
    );
    assert_eq!(a.delivery_id(&headers(&[]), b"not json"), None);
}

#[test]
fn wrong_or_missing_signature_is_unauthorized_and_no_token_is_config() {
    let body = fixture("gusto/employee_updated.json");
    let a = adapter(Kind::Gusto, "", Some(TOKEN));
    let now = at("2026-05-04T08:31:00Z");
    let h = headers(&[("X-Gusto-Signature", &sign_gusto(b"someone-else", &body))]);
    error(a.handle(&h, &body, now, 300), ErrorKind::Unauthorized);
    error(
        a.handle(&headers(&[]), &body, now, 300),
        ErrorKind::Unauthorized,
    );
    let e = error(
        adapter(Kind::Gusto, "", None).handle(&signed(&body), &body, now, 300),
        ErrorKind::Config,
    );
    assert!(!e.message.contains(TOKEN));
}

#[test]
fn malformed_and_invalid_payloads() {
    let a = adapter(Kind::Gusto, "", Some(TOKEN));
    let now = at("2026-05-04T08:31:00Z");
    for body in [&b"<xml/>"[..], b"{\"uuid\":\"x\"}", b"null"] {
        error(
            a.handle(&signed(body), body, now, 300),
            ErrorKind::Malformed,
        );
    }
    let mut v = json_fixture("gusto/employee_updated.json");
    v.as_object_mut().map(|o| o.remove("entity_uuid"));
    let body = serde_json::to_vec(&v).expect("json");
    let e = error(
        a.handle(&signed(&body), &body, now, 300),
        ErrorKind::Invalid,
    );
    assert_eq!(e.field.as_deref(), Some("entity_uuid"));
}

#[test]
fn fetch_call_is_the_employee_request() {
    let call = adapter(Kind::Gusto, "", Some(TOKEN)).fetch_call(
        &request(EMPLOYEE, "employee.updated", "2026-05-04T08:30:00Z"),
        &api("https://api.gusto.com", "gusto-oauth-token", None),
    );
    assert_eq!(call.method, http::Method::GET);
    assert_eq!(
        call.url,
        format!("https://api.gusto.com/v1/employees/{EMPLOYEE}")
    );
    assert_eq!(
        header_value(&call, "Authorization"),
        Some("Bearer gusto-oauth-token")
    );
}

#[test]
fn api_answers_map_hires_terminations_cancellations_and_rehires() {
    let a = adapter(Kind::Gusto, "", Some(TOKEN));
    let req = request(EMPLOYEE, "employee.updated", "2026-05-04T08:30:00Z");

    let r = a
        .record_from_api(
            &req,
            &json_fixture("gusto/api_employee.json"),
            at("2026-02-16T14:06:00Z"),
        )
        .expect("active");
    assert_eq!(r.person_id, EMPLOYEE);
    assert_eq!(r.given_name, "Jordan");
    assert_eq!(r.family_name, "Reyes");
    assert_eq!(
        r.work_email, "jordan.reyes@acme.example",
        "the work address, not the personal one"
    );
    assert_eq!(r.department.as_deref(), Some("Sales"));
    assert_eq!(
        r.title.as_deref(),
        Some("Account Executive"),
        "the primary job"
    );
    assert_eq!(r.start_date, Some(date("2026-03-02")));
    assert_eq!(
        r.manager_id.as_deref(),
        Some("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")
    );
    assert_eq!(r.employment_status, EmploymentStatus::Active);
    assert_eq!(r.end_date, None);

    // employee.terminated: scheduled, not yet effective.
    let r = a
        .record_from_api(
            &req,
            &json_fixture("gusto/api_employee_termination_scheduled.json"),
            at("2026-06-12T17:45:00Z"),
        )
        .expect("scheduled");
    assert_eq!(r.employment_status, EmploymentStatus::Active);
    assert_eq!(r.end_date, Some(date("2026-06-30")));
    // The day after the last day, before Gusto has processed it.
    let r = a
        .record_from_api(
            &req,
            &json_fixture("gusto/api_employee_termination_scheduled.json"),
            at("2026-07-01T05:00:00Z"),
        )
        .expect("processing");
    assert_eq!(r.end_date, Some(date("2026-06-30")));

    // employee.terminated_effective.
    let r = a
        .record_from_api(
            &req,
            &json_fixture("gusto/api_employee_terminated.json"),
            at("2026-07-01T08:00:00Z"),
        )
        .expect("terminated");
    assert_eq!(r.employment_status, EmploymentStatus::Terminated);
    assert_eq!(r.end_date, Some(date("2026-06-30")));

    // employee.termination_cancelled: the termination is gone.
    let r = a
        .record_from_api(
            &req,
            &json_fixture("gusto/api_employee.json"),
            at("2026-06-20T00:00:00Z"),
        )
        .expect("cancelled");
    assert_eq!(
        (r.employment_status, r.end_date),
        (EmploymentStatus::Active, None)
    );

    // employee.rehire_effective: not terminated, the old termination stays
    // listed and must not end the new employment.
    let r = a
        .record_from_api(
            &req,
            &json_fixture("gusto/api_employee_rehired.json"),
            at("2027-01-04T08:00:00Z"),
        )
        .expect("rehired");
    assert_eq!(
        (r.employment_status, r.end_date),
        (EmploymentStatus::Active, None)
    );
}

#[test]
fn api_errors_name_the_field() {
    let a = adapter(Kind::Gusto, "", Some(TOKEN));
    let req = request(EMPLOYEE, "employee.updated", "2026-05-04T08:30:00Z");
    let mut v = json_fixture("gusto/api_employee.json");
    v["work_email"] = serde_json::Value::Null;
    let e = a
        .record_from_api(&req, &v, at("2026-05-04T08:31:00Z"))
        .expect_err("no work email");
    assert_eq!(e.to_string(), "work_email (work_email): missing");

    // A tenant without work addresses can fall back to the personal one.
    let a = adapter(
        Kind::Gusto,
        "[fields]\nwork_email = \"work_email|email\"",
        Some(TOKEN),
    );
    let r = a
        .record_from_api(&req, &v, at("2026-05-04T08:31:00Z"))
        .expect("fallback");
    assert_eq!(r.work_email, "jordan.personal@example.com");
}
