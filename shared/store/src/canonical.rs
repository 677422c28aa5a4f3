//! Canonical JSON used as hash input.
//!
//! The hash chain is recomputed from what PostgreSQL hands back, and jsonb
//! neither keeps the key order it was given nor promises any order useful to
//! us; serde_json's own map order also depends on a crate feature
//! (`preserve_order`) that any crate in the build can switch on. So key order
//! is decided here, independently of both.

use serde_json::{Number, Value};

/// Serialises `value` compactly with object keys sorted by their UTF-8 bytes,
/// recursively.
pub fn to_canonical_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, value);
    out
}

/// Appends the canonical serialisation of `value` to `out`.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, key);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

fn write_number(out: &mut Vec<u8>, n: &Number) {
    // jsonb stores numbers as `numeric`, which has no negative zero: -0.0
    // comes back as 0.0. Every other number survives the round trip as is
    // (integers exactly, floats via shortest round-trip formatting).
    if n.as_f64() == Some(0.0) && n.is_f64() {
        out.extend_from_slice(b"0.0");
    } else {
        out.extend_from_slice(n.to_string().as_bytes());
    }
}

pub(crate) fn write_string(out: &mut Vec<u8>, s: &str) {
    // serde_json's string escaping is deterministic (it only escapes `"`, `\`
    // and control characters), so it can be reused; the only thing we must
    // not delegate is key ordering. Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn canonical(v: &Value) -> String {
        String::from_utf8(to_canonical_bytes(v)).expect("canonical JSON is UTF-8")
    }

    #[test]
    fn key_order_does_not_matter() {
        // The second text uses jsonb's output order (shorter keys first).
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"zz":[{"y":2,"x":1}],"c":"x"},"aa":3}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a": {"c": "x", "zz": [{"x": 1, "y": 2}]}, "b": 1, "aa": 3}"#)
                .unwrap();
        assert_eq!(to_canonical_bytes(&a), to_canonical_bytes(&b));
        assert_eq!(
            canonical(&a),
            r#"{"a":{"c":"x","zz":[{"x":1,"y":2}]},"aa":3,"b":1}"#
        );
    }

    #[test]
    fn maps_built_in_different_insertion_orders_agree() {
        let keys = ["delta", "alpha", "charlie", "bravo", "ä", "Z"];
        let mut forward = Map::new();
        for (i, k) in keys.iter().enumerate() {
            forward.insert((*k).to_owned(), json!(i));
        }
        let mut backward = Map::new();
        for (i, k) in keys.iter().enumerate().rev() {
            backward.insert((*k).to_owned(), json!(i));
        }
        let (f, b) = (Value::Object(forward), Value::Object(backward));
        assert_eq!(canonical(&f), canonical(&b));
        // Byte order: uppercase before lowercase, multi-byte UTF-8 last.
        assert_eq!(
            canonical(&f),
            r#"{"Z":5,"alpha":1,"bravo":3,"charlie":2,"delta":0,"ä":4}"#
        );
    }

    #[test]
    fn arrays_keep_their_order() {
        assert_eq!(canonical(&json!([3, 1, 2])), "[3,1,2]");
    }

    #[test]
    fn numbers_and_strings_are_kept_as_is() {
        let v = json!({
            "int": 42,
            "neg": -7,
            "big": u64::MAX,
            "float": 1.5,
            "whole_float": 5.0,
            "tiny": 1.5e-10,
            "s": "quote \" backslash \\ newline \n tab \t ctl \u{1} é 😀",
        });
        assert_eq!(
            canonical(&v),
            concat!(
                r#"{"big":18446744073709551615,"float":1.5,"int":42,"neg":-7,"#,
                r#""s":"quote \" backslash \\ newline \n tab \t ctl \u0001 é 😀","#,
                r#""tiny":1.5e-10,"whole_float":5.0}"#
            )
        );
    }

    #[test]
    fn negative_zero_matches_what_jsonb_returns() {
        assert_eq!(canonical(&json!(-0.0)), canonical(&json!(0.0)));
    }
}
