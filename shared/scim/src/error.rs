//! Errors and the per-call audit record.
//!
//! Every error that comes from talking to a server carries the [`CallRecord`]
//! of the failed call, so the caller can write the failure to its audit log
//! exactly like a success.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What one HTTP exchange with a SCIM server looked like, for the audit log.
///
/// It never holds credentials: only the method, the path relative to the
/// app's base URL, and the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub method: String,
    /// Relative to the base URL, e.g. `/Users/abc` or `/Users?filter=...`.
    pub path: String,
    /// `None` when no response arrived (connection error, timeout).
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub remote_id: Option<String>,
    pub error: Option<String>,
}

/// Errors of the SCIM client and of parsing SCIM resources.
#[derive(thiserror::Error, Debug)]
pub enum ScimError {
    /// The server answered with a non-success status.
    #[error("{} {} failed with HTTP {status}{}: {detail}", .record.method, .record.path, fmt_scim_type(.scim_type))]
    Http {
        record: CallRecord,
        status: u16,
        scim_type: Option<String>,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// No response: connection refused or reset, DNS, TLS, timeout.
    #[error("{} {} failed{}: {detail}", .record.method, .record.path, if *.timeout { " (timeout)" } else { "" })]
    Transport {
        record: CallRecord,
        detail: String,
        timeout: bool,
    },
    /// The server answered with success but the body is not what SCIM says.
    #[error("{} {} returned an invalid response: {detail}", .record.method, .record.path)]
    InvalidResponse { record: CallRecord, detail: String },
    /// A lookup by a supposedly unique attribute matched several resources;
    /// picking one would risk acting on the wrong account.
    #[error("{} {} matched {count} resources by {attribute}; refusing to guess", .record.method, .record.path)]
    Ambiguous {
        record: CallRecord,
        attribute: String,
        count: usize,
    },
    /// A SCIM document handed to [`crate::RemoteUser::from_scim`] directly
    /// (not through the client, which reports `InvalidResponse` instead).
    #[error("invalid SCIM resource: {0}")]
    InvalidResource(String),
    /// The client was asked for something it cannot do; no request was sent.
    #[error("SCIM client configuration: {0}")]
    Config(String),
    /// The caller's side failed before the request (e.g. the audit of what
    /// is about to be sent could not be recorded); nothing was sent, and
    /// trying again may work.
    #[error("not sent: {0}")]
    NotSent(String),
}

fn fmt_scim_type(scim_type: &Option<String>) -> String {
    match scim_type {
        Some(t) => format!(" ({t})"),
        None => String::new(),
    }
}

impl ScimError {
    /// Whether trying the same call again may succeed: server errors, rate
    /// limiting, request timeouts and transport failures. A 4xx other than
    /// 408/429 says the request itself is wrong, and 501 says the server
    /// lacks the feature, so repeating those is pointless. That includes 412:
    /// see [`ScimError::is_precondition_failed`].
    pub fn is_retryable(&self) -> bool {
        match self {
            ScimError::Http { status, .. } => {
                (*status >= 500 && *status != 501) || *status == 429 || *status == 408
            }
            ScimError::Transport { .. } | ScimError::NotSent(_) => true,
            _ => false,
        }
    }

    /// The delay the server asked for with `Retry-After`, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ScimError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The audit record of the failed call; `None` when no call was made.
    pub fn record(&self) -> Option<&CallRecord> {
        match self {
            ScimError::Http { record, .. }
            | ScimError::Transport { record, .. }
            | ScimError::InvalidResponse { record, .. }
            | ScimError::Ambiguous { record, .. } => Some(record),
            ScimError::InvalidResource(_) | ScimError::Config(_) | ScimError::NotSent(_) => None,
        }
    }

    /// The HTTP status of an `Http` error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ScimError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The RFC 7644 `scimType` of an `Http` error, e.g. `uniqueness`.
    pub fn scim_type(&self) -> Option<&str> {
        match self {
            ScimError::Http { scim_type, .. } => scim_type.as_deref(),
            _ => None,
        }
    }

    /// A conditional write (`If-Match`) lost: the account changed on the
    /// server since it was read (HTTP 412, RFC 7644 §3.14). Repeating the
    /// same request fails the same way, so [`ScimError::is_retryable`] is
    /// false; the remedy is to read the account again, diff again and send
    /// the new plan with the new version.
    pub fn is_precondition_failed(&self) -> bool {
        self.status() == Some(412)
    }

    /// The attribute a refused write (400) was refused for, when the
    /// server's error names one: `name.formatted` from "name.formatted is
    /// required", `emails.type` from "attribute 'emails.type' is not
    /// supported". Known SCIM attribute paths are looked for first, then a
    /// quoted name after the word "attribute". `None` when the server does
    /// not say, or the error is not a refusal.
    pub fn refused_attribute(&self) -> Option<String> {
        match self {
            ScimError::Http {
                status: 400 | 409 | 422,
                detail,
                ..
            } => attribute_in(detail),
            _ => None,
        }
    }

    /// For [`crate::ScimClient::service_provider_config`]: the server has no
    /// discovery endpoint (404 or 501), so the caller should fall back to
    /// configured or default capabilities instead of failing.
    pub fn is_discovery_unsupported(&self) -> bool {
        matches!(self.status(), Some(404 | 501))
    }
}

/// Most characters of a server's error body kept in errors, logs and the
/// audit: enough for any SCIM `detail`, far less than a proxy's error page.
pub const MAX_ERROR_BODY_CHARS: usize = 512;

/// A server's error body made fit for logs and the audit: an HTML page
/// becomes its `<title>` (or, without one, its text with tags, scripts and
/// styles stripped), whitespace runs become one space, and the result is cut
/// at [`MAX_ERROR_BODY_CHARS`] characters. `None` for an empty body.
pub fn summarize_body(body: &str) -> Option<String> {
    let text = body.trim();
    if text.is_empty() {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let html = lower.starts_with('<')
        && (lower.contains("<html")
            || lower.contains("<!doctype")
            || lower.contains("<body")
            || lower.contains("<title")
            || lower.contains("</"));
    let plain = if html {
        match html_title(text, &lower) {
            Some(title) => format!("HTML error page: {title}"),
            None => strip_tags(text),
        }
    } else {
        text.to_owned()
    };
    let collapsed = plain.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return None;
    }
    Some(cap(&collapsed, MAX_ERROR_BODY_CHARS))
}

/// `s` cut to at most `max` characters, marked with `...` when cut.
pub fn cap(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

/// The text of the first `<title>`, when it has any. `lower` is `text`
/// lowercased (ASCII only, so byte offsets agree).
fn html_title(text: &str, lower: &str) -> Option<String> {
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    let title = strip_tags(&text[start..end]);
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    (!title.is_empty()).then_some(title)
}

/// The text of an HTML fragment: tags dropped, `<script>` and `<style>`
/// dropped with their content, a few entities decoded.
fn strip_tags(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len().min(4096));
    let mut i = 0;
    while i < html.len() {
        let rest = &lower[i..];
        if rest.starts_with('<') {
            let skip_to = ["script", "style"]
                .iter()
                .find(|t| rest[1..].starts_with(*t))
                .and_then(|t| rest.find(&format!("</{t}")).map(|e| e + 2 + t.len()));
            let from = skip_to.unwrap_or(0);
            match rest[from..].find('>') {
                Some(close) => {
                    i += from + close + 1;
                    out.push(' ');
                }
                None => break,
            }
        } else {
            let next = rest.find('<').unwrap_or(rest.len());
            out.push_str(&html[i..i + next]);
            i += next;
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// SCIM User attribute paths a server's error may name, longest first so
/// that `name.formatted` wins over `name`.
const KNOWN_ATTRIBUTES: [&str; 31] = [
    "name.honorificPrefix",
    "name.honorificSuffix",
    "name.middleName",
    "name.familyName",
    "name.givenName",
    "name.formatted",
    "emails.primary",
    "emails.value",
    "emails.type",
    "preferredLanguage",
    "employeeNumber",
    "organization",
    "phoneNumbers",
    "displayName",
    "costCenter",
    "department",
    "externalId",
    "profileUrl",
    "addresses",
    "division",
    "nickName",
    "userName",
    "userType",
    "timezone",
    "manager",
    "members",
    "emails",
    "active",
    "locale",
    "title",
    "name",
];

/// The attribute an error message names, if it names one.
fn attribute_in(detail: &str) -> Option<String> {
    let lower = detail.to_ascii_lowercase();
    let boundary =
        |c: Option<char>| c.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'));
    for known in KNOWN_ATTRIBUTES {
        let k = known.to_ascii_lowercase();
        let mut from = 0;
        while let Some(pos) = lower[from..].find(&k) {
            let at = from + pos;
            let before = lower[..at].chars().next_back();
            let after = lower[at + k.len()..].chars().next();
            if boundary(before) && boundary(after) {
                return Some(known.to_owned());
            }
            from = at + k.len();
        }
    }
    // "attribute 'x'", "attribute \"x\"", "attribute `x`".
    let at = lower.find("attribute")? + "attribute".len();
    let rest = detail[at..].trim_start_matches(|c: char| c == 's' || c == ':' || c.is_whitespace());
    let quote = rest
        .chars()
        .next()
        .filter(|c| matches!(c, '\'' | '"' | '`'))?;
    let inner = &rest[1..];
    let end = inner.find(quote)?;
    let name = &inner[..end];
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '$' | '-'));
    ok.then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_pages_shrink_to_their_title() {
        let page = format!(
            "<!DOCTYPE html>\n<html><head><title>500 Internal\n Server Error</title><style>body{{x:1}}</style></head><body>{}</body></html>",
            "<p>stack trace</p>".repeat(2000)
        );
        assert_eq!(
            summarize_body(&page).as_deref(),
            Some("HTML error page: 500 Internal Server Error")
        );
        let untitled = format!(
            "<html><body><script>var a = '<b>';</script><h1>Bad &amp; gateway</h1>{}</body></html>",
            "<div>x</div>".repeat(1000)
        );
        let s = summarize_body(&untitled).expect("text");
        assert!(s.starts_with("Bad & gateway x x"), "{s}");
        assert!(s.chars().count() <= MAX_ERROR_BODY_CHARS + 3, "{}", s.len());
        assert!(!s.contains('<') && !s.contains("var a"), "{s}");
    }

    #[test]
    fn plain_bodies_are_capped_and_empty_ones_dropped() {
        assert_eq!(summarize_body("  \n "), None);
        assert_eq!(
            summarize_body("oops\n  twice").as_deref(),
            Some("oops twice")
        );
        let long = "é".repeat(2000);
        let s = summarize_body(&long).expect("text");
        assert_eq!(s.chars().count(), MAX_ERROR_BODY_CHARS + 3);
        assert_eq!(summarize_body("<not html").as_deref(), Some("<not html"));
    }

    #[test]
    fn refused_attributes_are_found_in_the_detail() {
        for (detail, want) in [
            ("name.formatted is required", Some("name.formatted")),
            (
                "Attribute 'emails.type' is not supported",
                Some("emails.type"),
            ),
            ("invalid value for emails.primary", Some("emails.primary")),
            ("the attribute \"x-custom\" is unknown", Some("x-custom")),
            ("userName must be unique", Some("userName")),
            ("surname too long", None),
            ("something went wrong", None),
        ] {
            assert_eq!(attribute_in(detail).as_deref(), want, "{detail}");
        }
    }
}
