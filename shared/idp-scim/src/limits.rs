//! What a value may hold before it is stored: no NUL characters anywhere
//! (PostgreSQL's `text` and `jsonb` cannot hold U+0000), and documented
//! length limits for the values that are indexed here or downstream (the
//! mirror's `userName`, `externalId` and group `displayName` indexes; the
//! engine's correlation keys from e-mails, user names and employee numbers)
//! or that travel in every identity snapshot. A B-tree index entry holds at
//! most 2,704 bytes; the limits leave room for four bytes per character.
//! A value over a limit is refused with 400 `invalidValue` naming the
//! attribute, never cut, so what Tenure holds is what the IdP sent.

use serde_json::{Map, Value};

use crate::error::ScimError;
use crate::resource::is_urn;
use crate::schema::{Kind, ENTERPRISE_SCHEMA};

/// Identifiers that are indexed: `userName`, `externalId`, a group's
/// `displayName`, the enterprise `employeeNumber`.
pub const MAX_ID_CHARS: usize = 256;
/// An e-mail address (RFC 5321: 254 octets in a path).
pub const MAX_EMAIL_CHARS: usize = 254;
/// Names carried in every identity snapshot: a user's `displayName`,
/// `nickName`, `title` and the parts of `name`.
pub const MAX_NAME_CHARS: usize = 1024;
/// Values of `emails` one user may have.
pub const MAX_EMAILS: usize = 100;

fn limit(kind: Kind, path: &str) -> Option<usize> {
    let enterprise_number = format!("{ENTERPRISE_SCHEMA}:employeeNumber");
    match (kind, path) {
        (_, "externalId") => Some(MAX_ID_CHARS),
        (Kind::User, "userName") => Some(MAX_ID_CHARS),
        (Kind::User, "emails.value") => Some(MAX_EMAIL_CHARS),
        (Kind::User, "displayName" | "nickName" | "title") => Some(MAX_NAME_CHARS),
        (Kind::User, p) if p.starts_with("name.") => Some(MAX_NAME_CHARS),
        (Kind::User, p) if p == enterprise_number => Some(MAX_ID_CHARS),
        (Kind::Group, "displayName") => Some(MAX_ID_CHARS),
        _ => None,
    }
}

fn shown(path: &str) -> String {
    if path.is_empty() {
        "an attribute name".to_string()
    } else {
        format!("'{}'", path.chars().take(200).collect::<String>())
    }
}

fn walk(kind: Kind, path: &str, v: &Value) -> Result<(), ScimError> {
    match v {
        Value::String(s) => {
            if s.contains('\0') {
                return Err(ScimError::invalid_value(format!(
                    "{} contains a NUL character",
                    shown(path)
                )));
            }
            if let Some(max) = limit(kind, path) {
                let n = s.chars().count();
                if n > max {
                    return Err(ScimError::invalid_value(format!(
                        "{} is {n} characters long; at most {max} are accepted",
                        shown(path)
                    )));
                }
            }
            Ok(())
        }
        Value::Array(items) => {
            if kind == Kind::User && path == "emails" && items.len() > MAX_EMAILS {
                return Err(ScimError::invalid_value(format!(
                    "'emails' has {} values; at most {MAX_EMAILS} are accepted",
                    items.len()
                )));
            }
            items.iter().try_for_each(|x| walk(kind, path, x))
        }
        Value::Object(o) => check_object(kind, path, o, '.'),
        _ => Ok(()),
    }
}

/// `sep` joins `path` and a key: `:` under an extension's URN
/// (`urn:…:User:employeeNumber`), `.` below that (`name.givenName`).
fn check_object(
    kind: Kind,
    path: &str,
    o: &Map<String, Value>,
    sep: char,
) -> Result<(), ScimError> {
    for (k, x) in o {
        if k.contains('\0') {
            return Err(ScimError::invalid_value(format!(
                "an attribute name under {} contains a NUL character",
                if path.is_empty() {
                    "the resource".to_string()
                } else {
                    shown(path)
                }
            )));
        }
        let child = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}{sep}{k}")
        };
        match x {
            // Only a top-level URN key is an extension container.
            Value::Object(inner) => {
                let next = if path.is_empty() && is_urn(k) {
                    ':'
                } else {
                    '.'
                };
                check_object(kind, &child, inner, next)?
            }
            _ => walk(kind, &child, x)?,
        }
    }
    Ok(())
}

/// Checks a normalised resource (canonical attribute names).
pub(crate) fn check(kind: Kind, data: &Map<String, Value>) -> Result<(), ScimError> {
    check_object(kind, "", data, '.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detail(kind: Kind, v: Value) -> Option<String> {
        let m = v.as_object().cloned().unwrap_or_default();
        check(kind, &m).err().map(|e| e.detail)
    }

    #[test]
    fn nul_characters_are_refused_wherever_they_are_naming_the_attribute() {
        assert_eq!(detail(Kind::User, json!({"userName": "ana"})), None);
        let d = detail(Kind::User, json!({"userName": "a\u{0}na"})).unwrap_or_default();
        assert!(d.contains("'userName'") && d.contains("NUL"), "{d}");
        let d = detail(
            Kind::User,
            json!({"userName": "ana", "emails": [{"value": "a@x.org"}, {"value": "b\u{0}@x.org"}]}),
        )
        .unwrap_or_default();
        assert!(d.contains("'emails.value'"), "{d}");
        let d = detail(
            Kind::User,
            json!({"userName": "ana", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R\u{0}D"}}),
        )
        .unwrap_or_default();
        assert!(
            d.contains("'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department'"),
            "{d}"
        );
        let d = detail(Kind::User, json!({"userName": "ana", "x\u{0}": 1})).unwrap_or_default();
        assert!(d.contains("attribute name"), "{d}");
        let d = detail(
            Kind::Group,
            json!({"displayName": "devs", "members": [{"value": "u", "display": "A\u{0}"}]}),
        )
        .unwrap_or_default();
        assert!(d.contains("'members.display'"), "{d}");
    }

    #[test]
    fn indexed_and_snapshot_values_have_documented_limits() {
        let long = |n: usize| "é".repeat(n);
        assert_eq!(detail(Kind::User, json!({"userName": long(256)})), None);
        let d = detail(Kind::User, json!({"userName": long(257)})).unwrap_or_default();
        assert!(
            d.contains("'userName' is 257 characters long; at most 256"),
            "{d}"
        );
        let email = format!("{}@example.com", "a".repeat(242));
        assert_eq!(email.len(), 254);
        assert_eq!(
            detail(
                Kind::User,
                json!({"userName": "a", "emails": [{"value": email}]})
            ),
            None
        );
        let d = detail(
            Kind::User,
            json!({"userName": "a", "emails": [{"value": format!("{}@example.com", "a".repeat(9000))}]}),
        )
        .unwrap_or_default();
        assert!(d.contains("'emails.value'") && d.contains("254"), "{d}");
        let d = detail(
            Kind::User,
            json!({"userName": "a", "name": {"givenName": long(1025)}}),
        )
        .unwrap_or_default();
        assert!(d.contains("'name.givenName'"), "{d}");
        let d = detail(
            Kind::User,
            json!({"userName": "a", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"employeeNumber": long(300)}}),
        )
        .unwrap_or_default();
        assert!(d.contains("employeeNumber"), "{d}");
        let d = detail(Kind::Group, json!({"displayName": long(257)})).unwrap_or_default();
        assert!(d.contains("'displayName'"), "{d}");
        let d = detail(
            Kind::User,
            json!({"userName": "a", "externalId": long(257)}),
        )
        .unwrap_or_default();
        assert!(d.contains("'externalId'"), "{d}");
        // A user's displayName may be longer than a group's.
        assert_eq!(
            detail(
                Kind::User,
                json!({"userName": "a", "displayName": long(1000)})
            ),
            None
        );
        // Unindexed values are bounded only by the body size.
        assert_eq!(
            detail(
                Kind::User,
                json!({"userName": "a", "profileUrl": long(5000)})
            ),
            None
        );
        let many: Vec<Value> = (0..101)
            .map(|i| json!({"value": format!("a{i}@x.org")}))
            .collect();
        let d = detail(Kind::User, json!({"userName": "a", "emails": many})).unwrap_or_default();
        assert!(d.contains("101 values"), "{d}");
    }
}
