//! Generic webhook contract: the documented `X-Tenure-*` scheme over a
//! `SourceRecord` body (docs/api.md, ADR 0009).

mod common;

use chrono::Duration;
use common::*;
use tenure_sources::signature::{sign_generic, sign_generic_v2};
use tenure_sources::{ErrorKind, Kind};

const SECRET: &str = "generic-secret-0a1b";

fn signed(body: &[u8], ts: i64) -> http::HeaderMap {
    headers(&[
        ("X-Tenure-Timestamp", &ts.to_string()),
        (
            "X-Tenure-Signature",
            &sign_generic(SECRET.as_bytes(), ts, body),
        ),
    ])
}

#[test]
fn a_signed_record_is_accepted() {
    let now = at("2026-02-16T14:05:30Z");
    let body = fixture("generic/record_hire.json");
    let r = one_record(adapter(Kind::Generic, "", Some(SECRET)).handle(
        &signed(&body, now.timestamp()),
        &body,
        now,
        300,
    ));
    assert_eq!(r.person_id, "E-1");
    assert_eq!(r.department.as_deref(), Some("Engineering"));
    assert_eq!(r.time_zone, None);
    // The source's default zone fills a record that has none.
    let r = one_record(
        adapter(Kind::Generic, "time_zone = \"Europe/Lisbon\"", Some(SECRET)).handle(
            &signed(&body, now.timestamp()),
            &body,
            now,
            300,
        ),
    );
    assert_eq!(r.time_zone.as_deref(), Some("Europe/Lisbon"));
}

#[test]
fn rotation_and_both_tag_prefixes() {
    let now = at("2026-02-16T14:05:30Z");
    let body = fixture("generic/record_hire.json");
    let ts = now.timestamp();
    let good = sign_generic(SECRET.as_bytes(), ts, &body);
    let a = adapter(Kind::Generic, "", Some(SECRET));
    for sig in [
        format!("v1=00ff, {good}"),
        good.replacen("v1=", "sha256=", 1),
        good.to_uppercase().replacen("V1=", "v1=", 1),
    ] {
        let h = headers(&[
            ("X-Tenure-Timestamp", &ts.to_string()),
            ("X-Tenure-Signature", &sig),
        ]);
        one_record(a.handle(&h, &body, now, 300));
    }
}

#[test]
fn wrong_missing_or_stale_signatures_are_unauthorized() {
    let now = at("2026-02-16T14:05:30Z");
    let body = fixture("generic/record_hire.json");
    let a = adapter(Kind::Generic, "", Some(SECRET));
    let ts = now.timestamp();
    let other = headers(&[
        ("X-Tenure-Timestamp", &ts.to_string()),
        ("X-Tenure-Signature", &sign_generic(b"other", ts, &body)),
    ]);
    error(a.handle(&other, &body, now, 300), ErrorKind::Unauthorized);
    error(
        a.handle(&headers(&[]), &body, now, 300),
        ErrorKind::Unauthorized,
    );
    let stale = signed(&body, (now - Duration::seconds(301)).timestamp());
    let e = error(a.handle(&stale, &body, now, 300), ErrorKind::Unauthorized);
    assert!(e.message.contains("301 s"), "{e}");
    error(
        adapter(Kind::Generic, "", None).handle(&signed(&body, ts), &body, now, 300),
        ErrorKind::Config,
    );
}

#[test]
fn invalid_records_name_the_field() {
    let now = at("2026-02-16T14:05:30Z");
    let a = adapter(Kind::Generic, "", Some(SECRET));
    let body = fixture("generic/record_bad_email.json");
    let e = error(
        a.handle(&signed(&body, now.timestamp()), &body, now, 300),
        ErrorKind::Invalid,
    );
    assert_eq!(e.field.as_deref(), Some("work_email"));
    let body = b"{\"person_id\": ";
    error(
        a.handle(&signed(body, now.timestamp()), body, now, 300),
        ErrorKind::Malformed,
    );
}

#[test]
fn delivery_id_comes_from_the_header_when_it_is_clean() {
    let a = adapter(Kind::Generic, "", Some(SECRET));
    let body = fixture("generic/record_hire.json");
    assert_eq!(
        a.delivery_id(&headers(&[("X-Tenure-Delivery", "hr-42:7")]), &body)
            .as_deref(),
        Some("hr-42:7")
    );
    assert_eq!(
        a.delivery_id(
            &headers(&[("X-Tenure-Delivery", "no spaces please")]),
            &body
        ),
        None
    );
    assert_eq!(a.delivery_id(&headers(&[]), &body), None);
}

#[test]
fn v2_signs_the_delivery_id_so_a_new_one_is_refused() {
    let now = at("2026-02-16T14:05:30Z");
    let body = fixture("generic/record_hire.json");
    let ts = now.timestamp();
    let a = adapter(Kind::Generic, "", Some(SECRET));
    let sig = sign_generic_v2(SECRET.as_bytes(), ts, "hr-42:7", &body);
    let with = |delivery: &str| {
        headers(&[
            ("X-Tenure-Timestamp", &ts.to_string()),
            ("X-Tenure-Signature", &sig),
            ("X-Tenure-Delivery", delivery),
        ])
    };
    one_record(a.handle(&with("hr-42:7"), &body, now, 300));
    let e = error(
        a.handle(&with("hr-42:8"), &body, now, 300),
        ErrorKind::Unauthorized,
    );
    assert!(e.message.contains("delivery id"), "{e}");
}

#[test]
fn trailing_bytes_after_the_record_are_malformed() {
    let now = at("2026-02-16T14:05:30Z");
    let a = adapter(Kind::Generic, "", Some(SECRET));
    let mut body = fixture("generic/record_hire.json");
    body.extend_from_slice(b"xyz");
    let e = error(
        a.handle(&signed(&body, now.timestamp()), &body, now, 300),
        ErrorKind::Malformed,
    );
    assert!(e.message.contains("trailing"), "{e}");
    // Trailing whitespace is still one JSON document.
    let mut body = fixture("generic/record_hire.json");
    body.extend_from_slice(b"\n\n");
    one_record(a.handle(&signed(&body, now.timestamp()), &body, now, 300));
}
