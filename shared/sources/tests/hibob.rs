//! HiBob contract: `Ping test` handshake, base64 HMAC-SHA512, v2 events →
//! fetch, `POST /v1/people/{id}` answers → records.

mod common;

use common::*;
use tenure_domain::EmploymentStatus;
use tenure_sources::signature::sign_hibob;
use tenure_sources::{ErrorKind, Kind, Outcome};

const SECRET: &str = "bob-webhook-secret-91ab";

fn signed(body: &[u8]) -> http::HeaderMap {
    headers(&[
        ("Bob-Signature", &sign_hibob(SECRET.as_bytes(), body)),
        ("Content-Type", "application/json"),
    ])
}

fn handle(file: &str) -> Result<Outcome, tenure_sources::AdapterError> {
    let body = fixture(&format!("hibob/{file}"));
    adapter(Kind::HiBob, "", Some(SECRET)).handle(
        &signed(&body),
        &body,
        at("2026-02-16T14:06:00Z"),
        300,
    )
}

#[test]
fn ping_test_is_answered_signed_or_not_even_before_a_secret_is_set() {
    for file in ["ping.txt", "ping.json"] {
        let body = fixture(&format!("hibob/{file}"));
        for a in [
            adapter(Kind::HiBob, "", None),
            adapter(Kind::HiBob, "", Some(SECRET)),
        ] {
            for h in [headers(&[]), signed(&body)] {
                match a.handle(&h, &body, at("2026-02-16T14:06:00Z"), 300) {
                    Ok(Outcome::Handshake { status, .. }) => assert_eq!(status, 200),
                    other => panic!("{file}: expected a handshake, got {other:?}"),
                }
            }
            assert_eq!(a.handshake_quarantine_reason(&body), None);
        }
    }
}

#[test]
fn every_employee_event_is_fetched() {
    for (file, event, when) in [
        (
            "employee_created.json",
            "employee.created",
            "2026-02-16T14:05:12.915906Z",
        ),
        (
            "employee_updated.json",
            "employee.updated",
            "2026-05-04T08:30:00.120311Z",
        ),
        (
            "employee_joined.json",
            "employee.joined",
            "2026-03-01T22:00:00.004512Z",
        ),
        (
            "employee_left.json",
            "employee.left",
            "2026-06-29T21:00:00.001203Z",
        ),
        (
            "employee_inactivated.json",
            "employee.inactivated",
            "2026-06-29T21:00:00.002210Z",
        ),
        (
            "employee_deleted.json",
            "employee.deleted",
            "2026-02-20T09:12:44.5Z",
        ),
        (
            "employee_access_revoked_immediately.json",
            "employee.access.revoked.immediately",
            "2026-06-12T16:40:03.3Z",
        ),
        (
            "table_entry_created.json",
            "table.entry.created",
            "2026-06-15T12:00:00.000001Z",
        ),
    ] {
        let f = one_fetch(handle(file));
        assert_eq!(f.source_person_id, "3332883884017713238", "{file}");
        assert_eq!(f.event, event, "{file}");
        // Bob's triggeredAt has no offset; it is read as UTC.
        assert_eq!(f.occurred_at, at(when), "{file}");
    }
}

#[test]
fn unrelated_events_are_ignored() {
    let reason = ignored(handle("timeoff_request_created.json"));
    assert!(reason.contains("timeoff.request.created"), "{reason}");
}

#[test]
fn wrong_or_missing_signature_is_unauthorized_and_no_secret_is_config() {
    let body = fixture("hibob/employee_updated.json");
    let a = adapter(Kind::HiBob, "", Some(SECRET));
    let now = at("2026-05-04T08:31:00Z");
    let h = headers(&[("Bob-Signature", &sign_hibob(b"not-the-secret", &body))]);
    error(a.handle(&h, &body, now, 300), ErrorKind::Unauthorized);
    error(
        a.handle(&headers(&[]), &body, now, 300),
        ErrorKind::Unauthorized,
    );
    let h = headers(&[("Bob-Signature", "%%%not base64%%%")]);
    error(a.handle(&h, &body, now, 300), ErrorKind::Unauthorized);
    // A hex SHA-256 is not Bob's scheme.
    let h = headers(&[(
        "Bob-Signature",
        &tenure_sources::signature::sign_gusto(SECRET.as_bytes(), &body),
    )]);
    error(a.handle(&h, &body, now, 300), ErrorKind::Unauthorized);
    error(
        adapter(Kind::HiBob, "", None).handle(&signed(&body), &body, now, 300),
        ErrorKind::Config,
    );
}

#[test]
fn malformed_and_invalid_payloads() {
    let a = adapter(Kind::HiBob, "", Some(SECRET));
    let now = at("2026-02-16T14:06:00Z");
    for body in [
        &b"Ping"[..],
        b"{\"companyId\":",
        b"[1,2]",
        b"{\"hello\":\"bob\"}",
    ] {
        error(
            a.handle(&signed(body), body, now, 300),
            ErrorKind::Malformed,
        );
    }
    let e = error(handle("missing_employee.json"), ErrorKind::Invalid);
    assert_eq!(e.field.as_deref(), Some("data.employeeId"));
    let mut v = json_fixture("hibob/employee_updated.json");
    v["triggeredAt"] = "last tuesday".into();
    let body = serde_json::to_vec(&v).expect("json");
    let e = error(
        a.handle(&signed(&body), &body, now, 300),
        ErrorKind::Invalid,
    );
    assert_eq!(e.field.as_deref(), Some("triggeredAt"));
}

#[test]
fn fetch_call_reads_one_employee_with_the_mapped_fields() {
    let a = adapter(
        Kind::HiBob,
        "[fields]\ncost_center = \"work.custom.field_1690200000000\"",
        Some(SECRET),
    );
    let req = request(
        "3332883884017713238",
        "employee.updated",
        "2026-05-04T08:30:00Z",
    );
    let call = a.fetch_call(
        &req,
        &api("https://api.hibob.com", "svc-token", Some("SERVICE-4711")),
    );
    assert_eq!(call.method, http::Method::POST);
    assert_eq!(
        call.url,
        "https://api.hibob.com/v1/people/3332883884017713238"
    );
    assert_eq!(
        header_value(&call, "Authorization"),
        Some(basic("SERVICE-4711", "svc-token").as_str())
    );
    assert_eq!(
        header_value(&call, "Content-Type"),
        Some("application/json")
    );
    let body: serde_json::Value =
        serde_json::from_str(call.body.as_deref().expect("body")).expect("json body");
    assert_eq!(body["humanReadable"], "APPEND");
    let fields: Vec<&str> = body["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    for want in [
        "root.id",
        "root.firstName",
        "root.surname",
        "root.email",
        "work.department",
        "work.reportsTo",
        "work.custom.field_1690200000000",
        "internal.lifecycleStatus",
        "internal.terminationDate",
    ] {
        assert!(fields.contains(&want), "{want} not requested: {fields:?}");
    }
    assert!(
        !fields.iter().any(|f| f.starts_with("humanReadable")),
        "{fields:?}"
    );

    let e = a
        .try_fetch_call(&req, &api("https://api.hibob.com", "svc-token", None))
        .expect_err("no service user");
    assert_eq!(e.kind, ErrorKind::Config);
    assert_eq!(e.field.as_deref(), Some("api.user"));
    assert_eq!(
        a.fetch_call(&req, &api("https://api.hibob.com", "t", None))
            .url,
        ""
    );
}

#[test]
fn api_answers_map_to_records() {
    let a = adapter(
        Kind::HiBob,
        "[fields]\ncost_center = \"work.custom.field_1690200000000\"",
        Some(SECRET),
    );
    let req = request(
        "3332883884017713238",
        "employee.joined",
        "2026-03-01T22:00:00Z",
    );
    let fetched = at("2026-03-01T22:00:05Z");

    let r = a
        .record_from_api(&req, &json_fixture("hibob/api_person.json"), fetched)
        .expect("record");
    assert_eq!(r.person_id, "3332883884017713238");
    assert_eq!(r.given_name, "Maya");
    assert_eq!(r.family_name, "Cohen");
    assert_eq!(r.display_name.as_deref(), Some("Maya Cohen"));
    assert_eq!(r.work_email, "maya.cohen@acme.example");
    assert_eq!(r.employee_number.as_deref(), Some("1042"));
    assert_eq!(r.department.as_deref(), Some("Engineering"));
    assert_eq!(r.title.as_deref(), Some("Backend Engineer"));
    assert_eq!(r.location.as_deref(), Some("Tel Aviv"));
    assert_eq!(r.manager_id.as_deref(), Some("3332883804594373380"));
    assert_eq!(r.cost_center.as_deref(), Some("CC-4711"));
    assert_eq!(r.start_date, Some(date("2026-03-02")));
    assert_eq!(r.end_date, None);
    assert_eq!(r.employment_status, EmploymentStatus::Active);
    assert_eq!(r.effective_at, fetched);
    assert!(!r.revoke_immediately);

    let r = a
        .record_from_api(
            &req,
            &json_fixture("hibob/api_person_garden_leave.json"),
            fetched,
        )
        .expect("garden leave");
    assert_eq!(r.employment_status, EmploymentStatus::OnLeave);
    assert_eq!(r.end_date, Some(date("2026-06-30")));

    let r = a
        .record_from_api(
            &req,
            &json_fixture("hibob/api_person_terminated.json"),
            fetched,
        )
        .expect("terminated");
    assert_eq!(r.employment_status, EmploymentStatus::Terminated);
    assert_eq!(r.end_date, Some(date("2026-06-30")));
}

#[test]
fn immediate_revocation_marks_the_fetched_record() {
    let a = adapter(Kind::HiBob, "", Some(SECRET));
    let f = one_fetch(handle("employee_access_revoked_immediately.json"));
    // The API still shows the future termination date.
    let r = a
        .record_from_api(
            &f,
            &json_fixture("hibob/api_person_garden_leave.json"),
            at("2026-06-12T16:40:10Z"),
        )
        .expect("record");
    assert!(r.revoke_immediately);
    assert_eq!(r.end_date, Some(date("2026-06-30")));
    let deleted = one_fetch(handle("employee_deleted.json"));
    assert!(a.is_deletion(&deleted));
    assert!(!a.is_deletion(&f));
}

#[test]
fn api_mapping_errors_name_field_and_attribute() {
    let a = adapter(Kind::HiBob, "", Some(SECRET));
    let req = request(
        "3332883884017713238",
        "employee.updated",
        "2026-05-04T08:30:00Z",
    );
    let mut v = json_fixture("hibob/api_person.json");
    v["internal"]["lifecycleStatus"] = "sabbatical".into();
    let e = a
        .record_from_api(&req, &v, at("2026-05-04T08:31:00Z"))
        .expect_err("unmapped status");
    assert_eq!(e.kind, ErrorKind::Config);
    assert_eq!(
        e.field.as_deref(),
        Some("internal.lifecycleStatus (employment_status)")
    );

    let mut v = json_fixture("hibob/api_person.json");
    v.as_object_mut().map(|o| o.remove("email"));
    let e = a
        .record_from_api(&req, &v, at("2026-05-04T08:31:00Z"))
        .expect_err("no email");
    assert_eq!(
        e.kind,
        ErrorKind::Config,
        "not sent at all: the service user may not read it"
    );
    assert_eq!(e.field.as_deref(), Some("email (work_email)"));

    // A status override for a tenant's own lifecycle status.
    let a = adapter(
        Kind::HiBob,
        "[status]\nsabbatical = \"on_leave\"",
        Some(SECRET),
    );
    let r = a
        .record_from_api(
            &req,
            &v_with_status("sabbatical"),
            at("2026-05-04T08:31:00Z"),
        )
        .expect("record");
    assert_eq!(r.employment_status, EmploymentStatus::OnLeave);
}

fn v_with_status(s: &str) -> serde_json::Value {
    let mut v = json_fixture("hibob/api_person.json");
    v["internal"]["lifecycleStatus"] = s.into();
    v
}

#[test]
fn no_delivery_id_in_bob_payloads() {
    let body = fixture("hibob/employee_updated.json");
    assert_eq!(
        adapter(Kind::HiBob, "", Some(SECRET)).delivery_id(&signed(&body), &body),
        None
    );
}
