//! CSV import contract: rows validated one by one, errors with line, column
//! and attribute; headers renamed through the mapping.

mod common;

use common::*;
use tenure_domain::EmploymentStatus;
use tenure_sources::{Kind, RowError};

fn import(mapping: &str, file: &str) -> Vec<Result<tenure_domain::SourceRecord, RowError>> {
    let data = fixture(&format!("csv/{file}"));
    adapter(Kind::Csv, mapping, None).records_from_csv(&data[..], at("2026-02-16T00:00:00Z"))
}

#[test]
fn good_rows_become_records_and_bad_rows_say_where() {
    let rows = import("", "people.csv");
    assert_eq!(rows.len(), 6);

    let ana = rows[0].as_ref().expect("line 2");
    assert_eq!(ana.person_id, "E-100");
    assert_eq!(ana.time_zone.as_deref(), Some("Europe/Lisbon"));
    assert_eq!(ana.start_date, Some(date("2026-03-02")));
    assert_eq!(ana.sequence, Some(2));
    assert_eq!(ana.effective_at, at("2026-02-16T00:00:00Z"));

    let ben = rows[1].as_ref().expect("line 3");
    assert_eq!(ben.employment_status, EmploymentStatus::Terminated);
    assert_eq!(ben.end_date, Some(date("2026-02-27")));

    let e = rows[2].as_ref().expect_err("line 4: no family name");
    assert_eq!(
        (e.line, e.column.as_deref(), e.attribute.as_deref()),
        (4, Some("family_name"), Some("family_name"))
    );
    assert_eq!(
        e.to_string(),
        "line 4, column \"family_name\" (family_name): missing"
    );

    let e = rows[3].as_ref().expect_err("line 5: bad e-mail");
    assert_eq!((e.line, e.column.as_deref()), (5, Some("work_email")));

    let e = rows[4].as_ref().expect_err("line 6: unknown status");
    assert_eq!(
        (e.line, e.attribute.as_deref()),
        (6, Some("employment_status"))
    );
    assert!(e.message.contains("retired"), "{e}");

    let fay = rows[5].as_ref().expect("line 7, quoted cells");
    assert_eq!(fay.title.as_deref(), Some("Lead, Logistics"));
    assert_eq!(fay.employment_status, EmploymentStatus::OnLeave);
}

#[test]
fn a_vendor_export_maps_through_overrides() {
    let mapping = r#"
        person_id = "Employee ID"
        date_format = "MM/DD/YYYY"
        [fields]
        given_name = "First"
        family_name = "Last"
        work_email = "E-mail"
        department = "Dept"
        cost_center = "Cost Centre"
        employment_status = "Status"
        start_date = "Hire Date"
        end_date = "Last Day"
        [status]
        Employed = "active"
        Left = "terminated"
    "#;
    let rows = import(mapping, "hris_export.csv");
    assert_eq!(rows.len(), 3);
    let gina = rows[0].as_ref().expect("line 2");
    assert_eq!(gina.person_id, "7001");
    assert_eq!(gina.cost_center.as_deref(), Some("CC-310"));
    assert_eq!(gina.start_date, Some(date("2026-03-02")));
    let hugo = rows[1].as_ref().expect("line 3");
    assert_eq!(hugo.employment_status, EmploymentStatus::Terminated);
    assert_eq!(hugo.end_date, Some(date("2026-02-27")));
    let e = rows[2].as_ref().expect_err("line 4: bad date");
    assert_eq!(
        (e.line, e.column.as_deref(), e.attribute.as_deref()),
        (4, Some("Hire Date"), Some("start_date"))
    );
    assert!(e.message.contains("MM/DD/YYYY"), "{e}");
}

#[test]
fn a_missing_required_column_fails_the_header() {
    let rows = import("", "missing_column.csv");
    assert_eq!(rows.len(), 1);
    let e = rows[0].as_ref().expect_err("header");
    assert_eq!(
        (e.line, e.column.as_deref(), e.attribute.as_deref()),
        (1, Some("family_name"), Some("family_name"))
    );
}

#[test]
fn ragged_rows_are_reported_and_the_rest_imported() {
    let rows = import("", "ragged.csv");
    assert_eq!(rows.len(), 3);
    assert!(rows[0].is_ok());
    let e = rows[1].as_ref().expect_err("line 3");
    assert_eq!(e.line, 3);
    assert!(e.message.contains("4 cells"), "{e}");
    assert_eq!(
        rows[2].as_ref().map(|r| r.person_id.as_str()).ok(),
        Some("E-3")
    );
}

#[test]
fn empty_and_binary_input_do_not_panic() {
    let a = adapter(Kind::Csv, "", None);
    let rows = a.records_from_csv(&b""[..], at("2026-02-16T00:00:00Z"));
    assert_eq!(rows.len(), 1);
    assert!(rows[0].is_err());
    let rows = a.records_from_csv(
        &b"\xff\xfe\x00garbage\n\x00\x01"[..],
        at("2026-02-16T00:00:00Z"),
    );
    assert!(rows.iter().all(Result::is_err));
    // A UTF-8 byte-order mark before the header is ignored.
    let with_bom = b"\xef\xbb\xbfperson_id,given_name,family_name,work_email,employment_status\nE-1,Ana,Silva,ana@acme.example,active\n";
    let rows = a.records_from_csv(&with_bom[..], at("2026-02-16T00:00:00Z"));
    assert!(
        matches!(rows.as_slice(), [Ok(r)] if r.person_id == "E-1"),
        "{rows:?}"
    );
}

#[test]
fn a_bamboohr_export_maps_with_the_bamboohr_mapping() {
    let data = b"id,firstName,lastName,workEmail,employeeNumber,department,division,jobTitle,supervisorEId,location,hireDate,terminationDate,status\n\
1042,Charlotte,Abbott,cabbott@acme.example,1042,Product,North America,Product Manager,1007,\"Lindon, Utah\",2026-03-02,0000-00-00,Active\n";
    let rows =
        adapter(Kind::BambooHr, "", None).records_from_csv(&data[..], at("2026-02-16T00:00:00Z"));
    let r = rows[0].as_ref().expect("row");
    assert_eq!(r.location.as_deref(), Some("Lindon, Utah"));
    assert_eq!(r.end_date, None);
}
