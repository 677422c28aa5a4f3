//! No input may panic an adapter: arbitrary bodies with valid signatures,
//! mutated fixtures, and arbitrary API answers all end in `Ok` or `Err`.

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::Value;
use tenure_sources::signature::*;
use tenure_sources::Kind;

const SECRET: &str = "robustness-secret";

fn signed_headers(kind: Kind, body: &[u8], ts: i64) -> http::HeaderMap {
    let s = SECRET.as_bytes();
    let t = ts.to_string();
    match kind {
        Kind::Generic => headers(&[
            ("X-Tenure-Timestamp", &t),
            ("X-Tenure-Signature", &sign_generic(s, ts, body)),
        ]),
        Kind::BambooHr => headers(&[
            ("X-BambooHR-Timestamp", &t),
            ("X-BambooHR-Signature", &sign_bamboohr(s, body, &t)),
        ]),
        Kind::HiBob => headers(&[("Bob-Signature", &sign_hibob(s, body))]),
        Kind::Personio => headers(&[("Authorization", &format!("Bearer {SECRET}"))]),
        Kind::Gusto => headers(&[("X-Gusto-Signature", &sign_gusto(s, body))]),
        Kind::Deel => headers(&[("x-deel-signature", &sign_deel(s, body))]),
        Kind::Frappe => headers(&[("X-Frappe-Webhook-Signature", &sign_frappe(s, body))]),
        Kind::Csv => headers(&[]),
    }
}

const FIXTURES: [&str; 12] = [
    "bamboohr/fields_hire.json",
    "bamboohr/event_updated.json",
    "hibob/employee_updated.json",
    "hibob/api_person.json",
    "personio/employment_updated.json",
    "personio/api_employee.json",
    "gusto/employee_updated.json",
    "gusto/api_employee_terminated.json",
    "deel/employee_created.json",
    "frappe/employee_hire.json",
    "generic/record_hire.json",
    "deel/api_person.json",
];

/// Replaces the value at a pseudo-random position with `replacement`.
fn mutate(v: &mut Value, pick: &mut impl FnMut() -> usize, replacement: &Value) {
    match v {
        Value::Object(o) if !o.is_empty() => {
            let i = pick() % (o.len() + 1);
            if i == o.len() {
                *v = replacement.clone();
            } else if let Some((_, child)) = o.iter_mut().nth(i) {
                mutate(child, pick, replacement);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            let i = pick() % (a.len() + 1);
            if i == a.len() {
                *v = replacement.clone();
            } else if let Some(child) = a.get_mut(i) {
                mutate(child, pick, replacement);
            }
        }
        _ => *v = replacement.clone(),
    }
}

fn replacements() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(Value::Bool(true)),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::from),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!([{"id": null}, 3, "x"])),
        Just(Value::from("0000-00-00")),
        Just(Value::from("2026-02-30")),
        Just(Value::from("\u{0}\u{7}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_signed_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400), k in 0usize..7) {
        let kind = Kind::ALL[k];
        let now = at("2026-02-16T14:05:30Z");
        let a = adapter(kind, "", Some(SECRET));
        let h = signed_headers(kind, &body, now.timestamp());
        let _ = a.handle(&h, &body, now, 300);
        let _ = a.delivery_id(&h, &body);
        let _ = a.handshake_quarantine_reason(&body);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        f in 0usize..FIXTURES.len(),
        k in 0usize..7,
        seeds in proptest::collection::vec(any::<usize>(), 1..8),
        replacement in replacements(),
    ) {
        let mut v = json_fixture(FIXTURES[f]);
        let mut it = seeds.into_iter().cycle();
        let mut pick = move || it.next().unwrap_or(0);
        mutate(&mut v, &mut pick, &replacement);
        let body = serde_json::to_vec(&v).expect("json");
        let kind = Kind::ALL[k];
        let now = at("2026-02-16T14:05:30Z");
        let a = adapter(kind, "", Some(SECRET));
        let h = signed_headers(kind, &body, now.timestamp());
        let _ = a.handle(&h, &body, now, 300);
        let req = request("1042", "employee.updated", "2026-02-16T14:05:12Z");
        let _ = a.record_from_api(&req, &v, now);
        let _ = a.fetch_call(&req, &api("https://api.example.com", "t", Some("u")));
        let _ = a.records_from_csv(&body[..], now);
    }

    #[test]
    fn arbitrary_ids_stay_inside_the_path(id in ".{0,60}", k in 1usize..7) {
        let kind = Kind::ALL[k];
        let a = adapter(kind, "", Some(SECRET));
        let call = a.fetch_call(&request(&id, "employee.updated", "2026-02-16T14:05:12Z"), &api("https://api.example.com/base", "t", Some("u")));
        let trimmed = id.trim();
        if trimmed.is_empty() || trimmed == "." || trimmed == ".." || trimmed.chars().any(char::is_control) {
            prop_assert_eq!(call.url, "");
            return Ok(());
        }
        prop_assert!(call.url.starts_with("https://api.example.com/base/"));
        let rest = &call.url["https://api.example.com/base/".len()..];
        let path = rest.split('?').next().unwrap_or("");
        // Every segment after the base is a literal: no "." or ".." and no
        // raw slash, query or fragment characters from the id.
        prop_assert!(path.split('/').all(|seg| seg != "." && seg != ".."), "{}", call.url);
        prop_assert!(!rest.contains('#'));
    }
}
