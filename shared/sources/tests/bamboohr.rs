//! BambooHR contract: signed `body ‖ timestamp`, event hooks → fetch, field
//! hooks → records, the employee API → records.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::*;
use tenure_domain::EmploymentStatus;
use tenure_sources::signature::sign_bamboohr;
use tenure_sources::{ErrorKind, Kind, Outcome};

const KEY: &str = "bamboo-private-key-6f1c";

fn now() -> DateTime<Utc> {
    at("2026-02-16T14:05:30Z")
}

/// Headers as BambooHR sends them, signed at `now` with `KEY`.
fn signed(body: &[u8]) -> http::HeaderMap {
    let ts = now().timestamp().to_string();
    let sig = sign_bamboohr(KEY.as_bytes(), body, &ts);
    headers(&[
        ("X-BambooHR-Timestamp", &ts),
        ("X-BambooHR-Signature", &sig),
        ("Content-Type", "application/json"),
    ])
}

fn handle(mapping: &str, fixture_name: &str) -> Result<Outcome, tenure_sources::AdapterError> {
    let body = fixture(&format!("bamboohr/{fixture_name}"));
    adapter(Kind::BambooHr, mapping, Some(KEY)).handle(&signed(&body), &body, now(), 300)
}

#[test]
fn valid_signature_is_accepted_and_event_hooks_ask_for_a_fetch() {
    for (file, event) in [
        ("event_created.json", "employee.created"),
        ("event_updated.json", "employee.updated"),
        ("event_deleted.json", "employee.deleted"),
    ] {
        let f = one_fetch(handle("", file));
        assert_eq!(f.source_person_id, "1042");
        assert_eq!(f.event, event);
        assert_eq!(f.occurred_at, at("2026-02-16T14:05:12Z"));
    }
}

#[test]
fn deletion_is_fetched_and_a_404_revokes_at_once() {
    let a = adapter(Kind::BambooHr, "", Some(KEY));
    let body = fixture("bamboohr/event_deleted.json");
    let f = one_fetch(a.handle(&signed(&body), &body, now(), 300));
    assert!(a.is_deletion(&f));
    let body = fixture("bamboohr/event_updated.json");
    let g = one_fetch(a.handle(&signed(&body), &body, now(), 300));
    assert!(!a.is_deletion(&g));

    let last = a
        .record_from_api(
            &g,
            &json_fixture("bamboohr/api_employee.json"),
            at("2026-02-10T00:00:00Z"),
        )
        .expect("record");
    let revoked = a.revocation_record(&last, &f);
    assert_eq!(revoked.employment_status, EmploymentStatus::Terminated);
    assert!(revoked.revoke_immediately);
    assert_eq!(revoked.effective_at, f.occurred_at);
    assert_eq!(revoked.work_email, last.work_email);
    assert!(revoked.validate().is_ok());
}

#[test]
fn field_hook_hire_maps_every_default_field() {
    let r = one_record(handle("", "fields_hire.json"));
    assert_eq!(r.person_id, "1042");
    assert_eq!(r.given_name, "Charlotte");
    assert_eq!(r.family_name, "Abbott");
    assert_eq!(r.work_email, "cabbott@acme.example");
    assert_eq!(r.employee_number.as_deref(), Some("1042"));
    assert_eq!(r.department.as_deref(), Some("Product"));
    assert_eq!(r.division.as_deref(), Some("North America"));
    assert_eq!(r.title.as_deref(), Some("Product Manager"));
    assert_eq!(r.manager_id.as_deref(), Some("1007"));
    assert_eq!(r.location.as_deref(), Some("Lindon, Utah"));
    assert_eq!(r.start_date, Some(date("2026-03-02")));
    assert_eq!(r.end_date, None, "0000-00-00 means no date");
    assert_eq!(r.employment_status, EmploymentStatus::Active);
    assert_eq!(r.effective_at, at("2026-02-16T14:05:12Z"));
    assert!(!r.revoke_immediately);
}

#[test]
fn field_hook_mover_and_termination() {
    let body = fixture("bamboohr/fields_mover.json");
    let a = adapter(Kind::BambooHr, "", Some(KEY));
    let later = at("2026-05-04T08:30:10Z");
    let ts = later.timestamp().to_string();
    let h = headers(&[
        ("X-BambooHR-Timestamp", &ts),
        (
            "X-BambooHR-Signature",
            &sign_bamboohr(KEY.as_bytes(), &body, &ts),
        ),
    ]);
    let r = one_record(a.handle(&h, &body, later, 300));
    assert_eq!(r.department.as_deref(), Some("Marketing"));
    assert_eq!(r.title.as_deref(), Some("Senior Product Marketing Manager"));
    assert_eq!(r.manager_id.as_deref(), Some("1011"));
    assert_eq!(r.effective_at, at("2026-05-04T08:30:00Z"));

    let r = one_record(handle("", "fields_termination.json"));
    assert_eq!(r.employment_status, EmploymentStatus::Terminated);
    assert_eq!(r.end_date, Some(date("2026-06-30")));
}

#[test]
fn field_hook_created_and_deleted_carry_no_data_and_are_fetched() {
    let f = one_fetch(handle("", "fields_created.json"));
    assert_eq!(
        (f.source_person_id.as_str(), f.event.as_str()),
        ("1043", "employee_with_fields.created")
    );
    let f = one_fetch(handle("", "fields_deleted.json"));
    assert_eq!(f.event, "employee_with_fields.deleted");
    assert!(adapter(Kind::BambooHr, "", Some(KEY)).is_deletion(&f));
}

#[test]
fn field_hook_without_every_mapped_field_is_fetched_not_truncated() {
    // Display names (no aliases) and no supervisor id posted: with the
    // default mapping the manager would be lost, so the person is fetched.
    let f = one_fetch(handle("", "fields_display_names_us_dates.json"));
    assert_eq!(f.source_person_id, "1050");
    assert_eq!(f.event, "employee_with_fields.updated");
}

#[test]
fn overrides_custom_field_status_map_and_us_dates() {
    let mapping = r#"
        date_format = "MM/DD/YYYY"
        [fields]
        manager_id = ""
        cost_center = "customCostCentre"
        employment_status = "employmentHistoryStatus"
        [status]
        "Full-Time" = "active"
        "Leave of Absence" = "on_leave"
        "Terminated" = "terminated"
    "#;
    let r = one_record(handle(mapping, "fields_display_names_us_dates.json"));
    assert_eq!(r.person_id, "1050");
    assert_eq!(r.given_name, "Robert");
    assert_eq!(r.employee_number.as_deref(), Some("1050"));
    assert_eq!(r.cost_center.as_deref(), Some("CC-4711"));
    assert_eq!(r.start_date, Some(date("2026-04-01")));
    assert_eq!(r.end_date, None);
    assert_eq!(r.employment_status, EmploymentStatus::OnLeave);
    assert_eq!(r.manager_id, None);
}

#[test]
fn us_dates_without_the_format_are_named() {
    let mapping = "[fields]\nmanager_id = \"\"";
    let e = error(
        handle(mapping, "fields_display_names_us_dates.json"),
        ErrorKind::Invalid,
    );
    assert_eq!(
        e.field.as_deref(),
        Some("employees[0].fields.Hire Date (start_date)")
    );
    assert!(e.message.contains("04/01/2026"), "{e}");
}

#[test]
fn wrong_or_missing_signature_is_unauthorized() {
    let body = fixture("bamboohr/event_updated.json");
    let a = adapter(Kind::BambooHr, "", Some(KEY));
    let ts = now().timestamp().to_string();

    let wrong_key = sign_bamboohr(b"another-key", &body, &ts);
    let h = headers(&[
        ("X-BambooHR-Timestamp", &ts),
        ("X-BambooHR-Signature", &wrong_key),
    ]);
    error(a.handle(&h, &body, now(), 300), ErrorKind::Unauthorized);

    // The signature covers the timestamp: a fresh timestamp on an old
    // signature fails.
    let old_ts = (now() - Duration::seconds(3600)).timestamp().to_string();
    let old_sig = sign_bamboohr(KEY.as_bytes(), &body, &old_ts);
    let h = headers(&[
        ("X-BambooHR-Timestamp", &ts),
        ("X-BambooHR-Signature", &old_sig),
    ]);
    error(a.handle(&h, &body, now(), 300), ErrorKind::Unauthorized);

    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    error(
        a.handle(&signed(&body), &tampered, now(), 300),
        ErrorKind::Unauthorized,
    );

    let h = headers(&[("X-BambooHR-Timestamp", &ts)]);
    let e = error(a.handle(&h, &body, now(), 300), ErrorKind::Unauthorized);
    assert!(e.message.contains("X-BambooHR-Signature"));

    let sig = sign_bamboohr(KEY.as_bytes(), &body, &ts);
    let h = headers(&[("X-BambooHR-Signature", &sig)]);
    let e = error(a.handle(&h, &body, now(), 300), ErrorKind::Unauthorized);
    assert!(e.message.contains("X-BambooHR-Timestamp"));

    let h = headers(&[
        ("X-BambooHR-Timestamp", "soon"),
        ("X-BambooHR-Signature", &sig),
    ]);
    error(a.handle(&h, &body, now(), 300), ErrorKind::Unauthorized);
}

#[test]
fn replay_outside_the_skew_window_is_refused() {
    let body = fixture("bamboohr/event_updated.json");
    let a = adapter(Kind::BambooHr, "", Some(KEY));
    let h = signed(&body);
    assert!(a
        .handle(&h, &body, now() + Duration::seconds(299), 300)
        .is_ok());
    let e = error(
        a.handle(&h, &body, now() + Duration::seconds(301), 300),
        ErrorKind::Unauthorized,
    );
    assert!(e.message.contains("301 s"), "{e}");
    error(
        a.handle(&h, &body, now() - Duration::seconds(301), 300),
        ErrorKind::Unauthorized,
    );
}

#[test]
fn iso_timestamp_headers_are_accepted() {
    let body = fixture("bamboohr/event_updated.json");
    let ts = "2026-02-16T14:05:30+0000";
    let h = headers(&[
        ("X-BambooHR-Timestamp", ts),
        (
            "X-BambooHR-Signature",
            &sign_bamboohr(KEY.as_bytes(), &body, ts),
        ),
    ]);
    one_fetch(adapter(Kind::BambooHr, "", Some(KEY)).handle(&h, &body, now(), 300));
}

#[test]
fn missing_secret_is_a_configuration_error() {
    let body = fixture("bamboohr/event_updated.json");
    let e = error(
        adapter(Kind::BambooHr, "", None).handle(&signed(&body), &body, now(), 300),
        ErrorKind::Config,
    );
    assert!(e.message.contains("replayed"), "{e}");
}

#[test]
fn malformed_and_invalid_payloads_name_the_problem() {
    error(handle("", "not_json.txt"), ErrorKind::Malformed);
    error(handle("", "wrong_shape.json"), ErrorKind::Malformed);
    let e = error(
        handle("", "event_missing_employee.json"),
        ErrorKind::Invalid,
    );
    assert_eq!(e.field.as_deref(), Some("data.employeeId"));

    let a = adapter(Kind::BambooHr, "", Some(KEY));
    let mut v = json_fixture("bamboohr/fields_hire.json");
    v["employees"][0]["fields"]["workEmail"] = "cabbott".into();
    let body = serde_json::to_vec(&v).expect("json");
    let e = error(
        a.handle(&signed(&body), &body, now(), 300),
        ErrorKind::Invalid,
    );
    assert_eq!(
        e.field.as_deref(),
        Some("employees[0].fields.workEmail (work_email)")
    );

    let mut v = json_fixture("bamboohr/fields_hire.json");
    v["employees"][0]["fields"]["workEmail"] = serde_json::Value::Null;
    let body = serde_json::to_vec(&v).expect("json");
    let e = error(
        a.handle(&signed(&body), &body, now(), 300),
        ErrorKind::Invalid,
    );
    assert_eq!(
        e.to_string(),
        "employees[0].fields.workEmail (work_email): missing"
    );

    let mut v = json_fixture("bamboohr/fields_hire.json");
    v["employees"][0]["action"] = "Renamed".into();
    let body = serde_json::to_vec(&v).expect("json");
    let e = error(
        a.handle(&signed(&body), &body, now(), 300),
        ErrorKind::Invalid,
    );
    assert_eq!(e.field.as_deref(), Some("employees[0].action"));

    let mut v = json_fixture("bamboohr/fields_hire.json");
    v["employees"][0]["fields"]["status"] = "Contractor".into();
    let body = serde_json::to_vec(&v).expect("json");
    let e = error(
        a.handle(&signed(&body), &body, now(), 300),
        ErrorKind::Config,
    );
    assert_eq!(
        e.field.as_deref(),
        Some("employees[0].fields.status (employment_status)")
    );
    assert!(e.message.contains("status.\"Contractor\""), "{e}");
}

#[test]
fn no_delivery_id_in_bamboohr_payloads() {
    let body = fixture("bamboohr/event_updated.json");
    assert_eq!(
        adapter(Kind::BambooHr, "", Some(KEY)).delivery_id(&signed(&body), &body),
        None
    );
}

#[test]
fn fetch_call_is_the_documented_employee_request() {
    let a = adapter(
        Kind::BambooHr,
        "[fields]\ncost_center = \"customCostCentre\"",
        Some(KEY),
    );
    let call = a.fetch_call(
        &request("1042", "employee.updated", "2026-02-16T14:05:12Z"),
        &api(
            "https://api.bamboohr.com/api/gateway.php/acme/",
            "api-key-123",
            None,
        ),
    );
    assert_eq!(call.method, http::Method::GET);
    assert_eq!(
        call.url,
        "https://api.bamboohr.com/api/gateway.php/acme/v1/employees/1042/?fields=firstName,lastName,workEmail,employeeNumber,department,customCostCentre,division,jobTitle,supervisorEId,location,status,hireDate,terminationDate"
    );
    assert_eq!(
        header_value(&call, "Authorization"),
        Some(basic("api-key-123", "x").as_str())
    );
    assert_eq!(header_value(&call, "Accept"), Some("application/json"));
    assert_eq!(call.body, None);

    // An id from a payload cannot change the path.
    let call = a.fetch_call(
        &request("../1042?x=1", "employee.updated", "2026-02-16T14:05:12Z"),
        &api("https://api.bamboohr.com/api/gateway.php/acme", "k", None),
    );
    assert!(
        call.url
            .contains("/v1/employees/..%2F1042%3Fx%3D1/?fields="),
        "{}",
        call.url
    );
}

#[test]
fn api_answers_map_to_records() {
    let a = adapter(
        Kind::BambooHr,
        "[fields]\ncost_center = \"customCostCentre\"",
        Some(KEY),
    );
    let req = request("1042", "employee.updated", "2026-02-16T14:05:12Z");
    let fetched = at("2026-02-16T14:06:00Z");

    let r = a
        .record_from_api(&req, &json_fixture("bamboohr/api_employee.json"), fetched)
        .expect("active");
    assert_eq!(r.employment_status, EmploymentStatus::Active);
    assert_eq!(r.cost_center.as_deref(), Some("CC-1200"));
    assert_eq!(r.effective_at, fetched);
    assert_eq!(r.end_date, None);

    let r = a
        .record_from_api(
            &req,
            &json_fixture("bamboohr/api_employee_terminated.json"),
            fetched,
        )
        .expect("terminated");
    assert_eq!(r.employment_status, EmploymentStatus::Terminated);
    assert_eq!(r.end_date, Some(date("2026-06-30")));

    // A rehire keeps the old termination date, before the new hire date.
    let r = a
        .record_from_api(
            &req,
            &json_fixture("bamboohr/api_employee_rehired.json"),
            fetched,
        )
        .expect("rehired");
    assert_eq!(r.employment_status, EmploymentStatus::Active);
    assert_eq!(r.start_date, Some(date("2027-01-04")));
    assert_eq!(r.end_date, None);

    let other = request("1043", "employee.updated", "2026-02-16T14:05:12Z");
    let e = a
        .record_from_api(&other, &json_fixture("bamboohr/api_employee.json"), fetched)
        .expect_err("answer for another person");
    assert_eq!(e.kind, ErrorKind::Invalid);

    let e = a
        .record_from_api(&req, &serde_json::json!(["not", "an", "employee"]), fetched)
        .expect_err("not an object");
    assert_eq!(e.kind, ErrorKind::Malformed);
}

#[test]
fn api_status_override_reads_the_employment_status_history() {
    let a = adapter(
        Kind::BambooHr,
        r#"
        [fields]
        employment_status = "employmentHistoryStatus"
        [status]
        "Full-Time" = "active"
        "Terminated" = "terminated"
        "#,
        Some(KEY),
    );
    let req = request("1042", "employee.updated", "2026-02-16T14:05:12Z");
    let r = a
        .record_from_api(
            &req,
            &json_fixture("bamboohr/api_employee_terminated.json"),
            now(),
        )
        .expect("record");
    assert_eq!(r.employment_status, EmploymentStatus::Terminated);
    let call = a.fetch_call(
        &req,
        &api("https://api.bamboohr.com/api/gateway.php/acme", "k", None),
    );
    assert!(call.url.contains("employmentHistoryStatus"), "{}", call.url);
    assert!(!call.url.contains(",status,"), "{}", call.url);
}
