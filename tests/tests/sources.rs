//! Every HR source end to end with the real binary: a signed webhook in the
//! vendor's own format (fixtures from its documentation), dataless ones
//! completed from a local stand-in of the vendor's API, an account in a
//! scim2-server tenant, then a termination that deactivates it.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tenure_e2e::{Options, Stack};
use tenure_sources::signature as sig;

const KEY: &str = "vendor-webhook-key";
const API_TOKEN: &str = "hris-api-token";
const PERSONIO_CLIENT: &str = "personio-client-id";
const PERSONIO_SESSION: &str = "personio-session-token";

fn fixture(path: &str) -> anyhow::Result<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    Ok(std::fs::read(dir.join(path))?)
}

fn json_fixture(path: &str) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(&fixture(path)?)?)
}

/// What each vendor's API answers now, by vendor; requests without the
/// configured credentials are refused like the real APIs refuse them.
#[derive(Clone, Default)]
struct Hris {
    people: Arc<Mutex<HashMap<String, Value>>>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl Hris {
    fn set(&self, vendor: &str, answer: Value) {
        if let Ok(mut p) = self.people.lock() {
            p.insert(vendor.to_string(), answer);
        }
    }

    fn answer(&self, vendor: &str, id: &str, headers: &HeaderMap) -> (StatusCode, Json<Value>) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(format!("{vendor}:{id}"));
        }
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // Personio takes a session token obtained from /v1/auth, never the
        // client secret itself.
        let allowed = match vendor {
            "personio" => auth == format!("Bearer {PERSONIO_SESSION}"),
            _ => auth.contains(API_TOKEN) || auth.starts_with("Basic "),
        };
        if !allowed {
            return (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({"error": "unauthorized"})),
            );
        }
        match self.people.lock().ok().and_then(|p| p.get(vendor).cloned()) {
            Some(v) => (StatusCode::OK, Json(v)),
            None => (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({"error": "not found"})),
            ),
        }
    }
}

async fn start_hris(hris: Hris) -> anyhow::Result<u16> {
    // One person-read endpoint per vendor, each at that vendor's own path.
    type Answer = std::future::Ready<(StatusCode, Json<Value>)>;
    fn person(
        vendor: &'static str,
    ) -> impl Fn(State<Hris>, Path<String>, HeaderMap) -> Answer + Clone + Send + Sync + 'static
    {
        move |State(h): State<Hris>, Path(id): Path<String>, headers: HeaderMap| {
            std::future::ready(h.answer(vendor, &id, &headers))
        }
    }
    async fn personio_auth(Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
        if body["client_id"] == PERSONIO_CLIENT && body["client_secret"] == API_TOKEN {
            let token = serde_json::json!({"success": true, "data": {"token": PERSONIO_SESSION}});
            (StatusCode::OK, Json(token))
        } else {
            (
                StatusCode::UNAUTHORIZED,
                Json(serde_json::json!({"success": false})),
            )
        }
    }
    let app = Router::new()
        .route("/personio/v1/auth", post(personio_auth))
        .route("/bamboohr/v1/employees/{id}/", get(person("bamboohr")))
        .route("/hibob/v1/people/{id}", post(person("hibob")))
        .route(
            "/personio/v1/company/employees/{id}",
            get(person("personio")),
        )
        .route("/gusto/v1/employees/{id}", get(person("gusto")))
        .with_state(hris);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(port)
}

fn sources(hris_port: u16) -> String {
    let api = |vendor: &str, user: &str| {
        format!(
            "[source.api]\nbase_url = \"http://127.0.0.1:{hris_port}/{vendor}\"\ntoken = {{ env = \"TENURE_HRIS_TOKEN\" }}\nmax_attempts = 2\ntimeout_ms = 2000\n{user}"
        )
    };
    format!(
        r#"
[[source]]
name = "bamboo"
kind = "bamboohr"
secret = {{ env = "TENURE_VENDOR_KEY" }}
{bamboo}
[[source]]
name = "bob"
kind = "hibob"
secret = {{ env = "TENURE_VENDOR_KEY" }}
{bob}
[[source]]
name = "personio"
kind = "personio"
secret = {{ env = "TENURE_VENDOR_KEY" }}
{personio}
[[source]]
name = "gusto"
kind = "gusto"
secret = {{ env = "TENURE_VENDOR_KEY" }}
{gusto}
[[source]]
name = "deel"
kind = "deel"
secret = {{ env = "TENURE_VENDOR_KEY" }}
[[source]]
name = "frappe"
kind = "frappe"
secret = {{ env = "TENURE_VENDOR_KEY" }}
"#,
        bamboo = api("bamboohr", ""),
        bob = api("hibob", "user = \"SERVICE-USER\"\n"),
        personio = api("personio", &format!("user = \"{PERSONIO_CLIENT}\"\n")),
        gusto = api("gusto", ""),
    )
}

/// The vendor's signature headers for `body`.
fn signed(kind: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let key = KEY.as_bytes();
    let mut h = vec![("content-type", "application/json".to_string())];
    match kind {
        "bamboohr" => {
            let ts = chrono::Utc::now().timestamp().to_string();
            h.push((
                sig::H_BAMBOOHR_SIGNATURE,
                sig::sign_bamboohr(key, body, &ts),
            ));
            h.push((sig::H_BAMBOOHR_TIMESTAMP, ts));
        }
        "hibob" => h.push((sig::H_HIBOB_SIGNATURE, sig::sign_hibob(key, body))),
        "personio" => h.push(("authorization", format!("Bearer {KEY}"))),
        "gusto" => h.push((sig::H_GUSTO_SIGNATURE, sig::sign_gusto(key, body))),
        "deel" => h.push((sig::H_DEEL_SIGNATURE, sig::sign_deel(key, body))),
        "frappe" => h.push((sig::H_FRAPPE_SIGNATURE, sig::sign_frappe(key, body))),
        _ => {}
    }
    h
}

struct Case {
    source: &'static str,
    kind: &'static str,
    email: &'static str,
    /// (webhook fixture, API answer fixture when the webhook is dataless)
    hire: (&'static str, Option<&'static str>),
    leave: (&'static str, Option<&'static str>),
}

const CASES: [Case; 6] = [
    Case {
        source: "bamboo",
        kind: "bamboohr",
        email: "cabbott@acme.example",
        hire: (
            "bamboohr/event_created.json",
            Some("bamboohr/api_employee.json"),
        ),
        leave: (
            "bamboohr/event_updated.json",
            Some("bamboohr/api_employee_terminated.json"),
        ),
    },
    Case {
        source: "bob",
        kind: "hibob",
        email: "maya.cohen@acme.example",
        hire: ("hibob/employee_joined.json", Some("hibob/api_person.json")),
        leave: (
            "hibob/employee_left.json",
            Some("hibob/api_person_terminated.json"),
        ),
    },
    Case {
        source: "personio",
        kind: "personio",
        email: "lena.hoffmann@acme.example",
        hire: (
            "personio/employment_started.json",
            Some("personio/api_employee.json"),
        ),
        leave: (
            "personio/employment_terminated.json",
            Some("personio/api_employee_terminated.json"),
        ),
    },
    Case {
        source: "gusto",
        kind: "gusto",
        email: "jordan.reyes@acme.example",
        hire: (
            "gusto/employee_created.json",
            Some("gusto/api_employee.json"),
        ),
        leave: (
            "gusto/employee_terminated.json",
            Some("gusto/api_employee_terminated.json"),
        ),
    },
    Case {
        source: "deel",
        kind: "deel",
        email: "amara.okafor@acme.example",
        hire: ("deel/employee_created.json", None),
        leave: ("deel/employee_offboarding.json", None),
    },
    Case {
        source: "frappe",
        kind: "frappe",
        email: "priya.nair@acme.example",
        hire: ("frappe/employee_hire.json", None),
        leave: ("frappe/employee_left.json", None),
    },
];

fn active(u: Option<&Value>) -> bool {
    u.is_some_and(|u| u["active"] != Value::Bool(false))
}

#[tokio::test]
async fn every_source_hires_and_terminates_through_to_the_app() -> anyhow::Result<()> {
    let hris = Hris::default();
    let hris_port = start_hris(hris.clone()).await?;
    std::env::set_var("TENURE_VENDOR_KEY", KEY);
    std::env::set_var("TENURE_HRIS_TOKEN", API_TOKEN);
    let mut stack = Stack::with_options(Options {
        extra: sources(hris_port),
        // Six leavers in a row is what the mass-change guard exists to
        // hold; here they are the point of the test.
        wiki: "mass_change = { enabled = false }".into(),
        ..Options::default()
    })
    .await?;
    stack.start_core().await?;
    stack.start_fanout()?;
    let wiki = stack.wiki_tenant.clone();

    let only = std::env::var("TENURE_TEST_SOURCE").ok();
    for case in CASES
        .iter()
        .filter(|c| only.as_deref().is_none_or(|o| o == c.source))
    {
        let path = format!("/v1/sources/{}/webhook", case.source);
        if let Some(api) = case.hire.1 {
            hris.set(case.kind, json_fixture(api)?);
        }
        let body = fixture(case.hire.0)?;
        let (status, answer) = stack
            .post_raw(&path, &signed(case.kind, &body), &body)
            .await?;
        assert_eq!(status, 202, "{}: {answer}", case.source);
        stack
            .wait_user(&wiki, case.email, active)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}\n{}", case.source, stack.log("core.log")))?;

        if let Some(api) = case.leave.1 {
            hris.set(case.kind, json_fixture(api)?);
        }
        let body = fixture(case.leave.0)?;
        let (status, answer) = stack
            .post_raw(&path, &signed(case.kind, &body), &body)
            .await?;
        assert_eq!(status, 202, "{}: {answer}", case.source);
        stack
            .wait_user(&wiki, case.email, |u| {
                u.is_some_and(|u| u["active"] == Value::Bool(false))
            })
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}\n{}", case.source, stack.log("core.log")))?;
    }
    // Dataless vendors were read back through their APIs, with credentials.
    let calls = hris.calls.lock().map(|c| c.clone()).unwrap_or_default();
    for vendor in ["bamboohr", "hibob", "personio", "gusto"]
        .into_iter()
        .filter(|_| only.is_none())
    {
        assert!(
            calls.iter().filter(|c| c.starts_with(vendor)).count() >= 2,
            "{vendor} fetched twice: {calls:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn handshakes_forgeries_and_unknown_sources_are_answered_without_effect() -> anyhow::Result<()>
{
    let hris = Hris::default();
    let hris_port = start_hris(hris.clone()).await?;
    std::env::set_var("TENURE_VENDOR_KEY", KEY);
    std::env::set_var("TENURE_HRIS_TOKEN", API_TOKEN);
    let mut stack = Stack::with_options(Options {
        extra: sources(hris_port),
        ..Options::default()
    })
    .await?;
    stack.start_core().await?;

    // HiBob's setup call is a plain-text "Ping test".
    let (status, _) = stack
        .post_raw(
            "/v1/sources/bob/webhook",
            &[("content-type", "text/plain".into())],
            b"Ping test",
        )
        .await?;
    assert_eq!(status, 200);
    // Gusto's verification call is answered and its token kept for the operator.
    let body = fixture("gusto/verification.json")?;
    let (status, _) = stack
        .post_raw(
            "/v1/sources/gusto/webhook",
            &[("content-type", "application/json".into())],
            &body,
        )
        .await?;
    assert_eq!(status, 200);
    let listing = stack.tenure(&["quarantine", "list"]).output()?;
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("verification token"), "{listing}");

    // A forged HiBob event and a wrong Personio secret are refused.
    let body = fixture("hibob/employee_joined.json")?;
    let mut headers = signed("hibob", b"something else");
    headers[0] = ("content-type", "application/json".into());
    let (status, answer) = stack
        .post_raw("/v1/sources/bob/webhook", &headers, &body)
        .await?;
    assert_eq!(status, 401, "{answer}");
    let body = fixture("personio/employment_started.json")?;
    let (status, _) = stack
        .post_raw(
            "/v1/sources/personio/webhook",
            &[("authorization", "Bearer wrong".into())],
            &body,
        )
        .await?;
    assert_eq!(status, 401);
    let (status, answer) = stack
        .post_raw("/v1/sources/nobody/webhook", &[], b"{}")
        .await?;
    assert_eq!(status, 404, "{answer}");
    assert!(answer.contains("unknown_source"));
    // Nothing was fetched: no forged webhook reached the HRIS API.
    assert!(hris.calls.lock().map(|c| c.is_empty()).unwrap_or(false));
    Ok(())
}
