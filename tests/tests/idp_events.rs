//! Authentik's notification webhook, end to end with the real binary: a
//! notification names a user, ingest answers 202, its worker reads the user
//! and its groups from a local stand-in of Authentik's API and writes them
//! into the SCIM mirror, and the groups decide the git account as SCIM
//! pushes would.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tenure_e2e::{person, wait_for, Options, Stack};

const IDP_TOKEN: &str = "authentik-pushes-with-this";
const API_TOKEN: &str = "authentik-api-token";
const WEBHOOK_TOKEN: &str = "authentik-notifies-with-this";
const DEVELOPERS: &str = "5e4c2b2e-3f0f-4b8e-9a0a-1c2d3e4f5a6b";

/// Authentik's users, as its API serves them.
#[derive(Default)]
struct Authentik {
    users: Mutex<Vec<Value>>,
    calls: Mutex<usize>,
}

type St = State<Arc<Authentik>>;

fn authorised(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {API_TOKEN}"))
}

fn page(results: Vec<Value>) -> Value {
    json!({
        "pagination": {"next": 0, "previous": 0, "count": results.len(), "current": 1,
                       "total_pages": 1, "start_index": 1, "end_index": results.len()},
        "results": results,
    })
}

fn denied() -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(json!({"detail": "Authentication credentials were not provided."})),
    )
        .into_response()
}

async fn list_users(s: St, h: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    if !authorised(&h) {
        return denied();
    }
    *s.calls.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    let users = s.users.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let found: Vec<Value> = users
        .into_iter()
        .filter(|u| {
            q.get("username")
                .is_none_or(|n| u["username"] == n.as_str())
                && q.get("email").is_none_or(|e| u["email"] == e.as_str())
        })
        .collect();
    Json(page(found)).into_response()
}

async fn one_user(s: St, h: HeaderMap, Path(pk): Path<i64>) -> Response {
    if !authorised(&h) {
        return denied();
    }
    *s.calls.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    let users = s.users.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match users.into_iter().find(|u| u["pk"] == pk) {
        Some(u) => Json(u).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"detail": "No User matches the given query."})),
        )
            .into_response(),
    }
}

async fn authentik_api(state: Arc<Authentik>) -> anyhow::Result<String> {
    let app = Router::new()
        .route("/api/v3/core/users/", get(list_users))
        .route("/api/v3/core/users/{pk}/", get(one_user))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

fn asilva(groups: &[&str]) -> Value {
    json!({
        "pk": 7,
        "username": "asilva",
        "name": "Ana Silva",
        "is_active": true,
        "is_superuser": false,
        "email": "Ana.Silva@example.com",
        "uid": "7c5bcd02c7fa1a7f2c3e8c3f0d1b2a99",
        "type": "internal",
        "path": "users",
        "attributes": {},
        "groups": groups.iter().map(|_| DEVELOPERS).collect::<Vec<_>>(),
        "groups_obj": groups.iter().map(|g| json!({
            "pk": DEVELOPERS, "num_pk": 1, "name": g, "is_superuser": false,
            "parent": null, "parent_name": null, "attributes": {}
        })).collect::<Vec<_>>(),
    })
}

/// The body of the recommended property mapping.
fn mapped(event: &str, action: &str) -> Value {
    json!({
        "event_pk": event,
        "action": action,
        "model_app": "authentik_core",
        "model_name": "user",
        "pk": 7,
        "name": "asilva",
        "username": "asilva",
    })
}

#[tokio::test]
async fn authentik_notifications_refetch_users_into_the_mirror() -> anyhow::Result<()> {
    std::env::set_var("TENURE_IDP_TOKEN", IDP_TOKEN);
    std::env::set_var("TENURE_AK_API_TOKEN", API_TOKEN);
    std::env::set_var("TENURE_AK_WEBHOOK_TOKEN", WEBHOOK_TOKEN);
    let authentik = Arc::new(Authentik::default());
    let api_url = authentik_api(authentik.clone()).await?;
    let mut stack = Stack::with_options(Options {
        git: "rule = '\"developers\" in person.groups'\n".into(),
        extra: format!(
            "[[idp]]\nname = \"authentik\"\ntoken = {{ env = \"TENURE_IDP_TOKEN\" }}\ncorrelate = \"email\"\n\
             api_url = \"{api_url}\"\napi_token = {{ env = \"TENURE_AK_API_TOKEN\" }}\n\
             webhook_token = {{ env = \"TENURE_AK_WEBHOOK_TOKEN\" }}\n\n\
             [[idp]]\nname = \"legacy\"\ntoken = {{ env = \"TENURE_IDP_TOKEN\" }}\n"
        ),
        ..Options::default()
    })
    .await?;
    stack.start_core().await?;
    stack.start_fanout()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;

    // Authentik's SCIM provider has pushed its groups (no members yet).
    let resp = http
        .post(format!(
            "http://127.0.0.1:{}/scim/v2/authentik/Groups",
            stack.ingest_port
        ))
        .bearer_auth(IDP_TOKEN)
        .header("content-type", "application/scim+json")
        .body(
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "developers"})
                .to_string(),
        )
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 201);

    // HR hires Ana: the wiki has no rule, git wants "developers".
    stack
        .send(
            &person(
                "E-1",
                "Ana",
                "Silva",
                "Engineering",
                "active",
                "2026-01-05T08:00:00Z",
            ),
            "hire",
        )
        .await?;
    let (wiki, git) = (stack.wiki_tenant.clone(), stack.git_tenant.clone());
    stack
        .wait_user(&wiki, "ana.silva@example.com", |u| u.is_some())
        .await?;
    assert!(stack.scim_user(&git, "ana.silva").await?.is_none());

    let notify = |body: Value, token: &str| {
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let headers = vec![
            ("content-type", "application/json".to_string()),
            ("authorization", format!("Bearer {token}")),
        ];
        let stack = &stack;
        async move {
            stack
                .post_raw("/v1/idp/authentik/events", &headers, &body)
                .await
        }
    };

    // Authentik: Ana is in "developers"; "user asilva updated".
    *authentik.users.lock().unwrap_or_else(|e| e.into_inner()) = vec![asilva(&["developers"])];
    let (status, body) = notify(mapped("ev-1", "model_updated"), WEBHOOK_TOKEN).await?;
    assert_eq!(status, 202, "{body}");
    let answer: Value = serde_json::from_str(&body)?;
    assert_eq!(answer["status"], "fetching");
    stack
        .wait_user(&git, "ana.silva", |u| {
            u.is_some_and(|u| u["active"] != Value::Bool(false))
        })
        .await?;
    let timeline = stack.tenure(&["timeline", "E-1"]).output()?;
    let timeline = String::from_utf8_lossy(&timeline.stdout);
    assert!(timeline.contains("IdentitySynced"), "{timeline}");

    // Ana leaves the group; this time Authentik's default body arrives.
    *authentik.users.lock().unwrap_or_else(|e| e.into_inner()) = vec![asilva(&[])];
    let default_body = json!({
        "body": "model_updated: {'model': {'app': 'authentik_core', 'model_name': 'user', 'pk': 7, 'name': 'asilva'}, 'http_request': {'args': {}, 'path': '/api/v3/core/users/7/', 'method': 'PUT'}}",
        "severity": "notice",
        "user_email": "admin@example.com",
        "user_username": "akadmin",
        "event_user_email": "admin@example.com",
        "event_user_username": "akadmin",
    });
    let (status, body) = notify(default_body, WEBHOOK_TOKEN).await?;
    assert_eq!(status, 202, "{body}");
    stack.wait_user(&git, "ana.silva", |u| u.is_none()).await?;
    // HR still employs Ana: the wiki keeps her.
    assert!(stack
        .scim_user(&wiki, "ana.silva@example.com")
        .await?
        .is_some_and(|u| u["active"] != Value::Bool(false)));

    // A wrong token, another IdP's missing settings, garbage.
    let calls = *authentik.calls.lock().unwrap_or_else(|e| e.into_inner());
    let (status, _) = notify(mapped("ev-2", "model_updated"), "wrong").await?;
    assert_eq!(status, 401);
    let (status, body) = stack
        .post_raw(
            "/v1/idp/legacy/events",
            &[("authorization", format!("Bearer {WEBHOOK_TOKEN}"))],
            br#"{"username": "asilva"}"#,
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("webhook_token"), "{body}");
    let (status, _) = notify(json!({"hello": "world"}), WEBHOOK_TOKEN).await?;
    assert_eq!(status, 400);
    let (status, _) = stack.post_raw("/v1/idp/nope/events", &[], b"{}").await?;
    assert_eq!(status, 404);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        *authentik.calls.lock().unwrap_or_else(|e| e.into_inner()),
        calls,
        "refused notifications fetch nothing"
    );

    // Authentik no longer has Ana (its API answers 404): she is deleted
    // from the mirror, which unlinks her identity.
    authentik
        .users
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    // Some other user stays visible, so an empty answer is not a token
    // without permissions.
    authentik
        .users
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(json!({"pk": 8, "username": "bob", "email": "bob@example.com", "name": "Bob", "is_active": true, "type": "internal", "groups_obj": []}));
    let (status, body) = notify(mapped("ev-3", "model_deleted"), WEBHOOK_TOKEN).await?;
    assert_eq!(status, 202, "{body}");
    wait_for(Duration::from_secs(30), || async {
        let out = stack.tenure(&["timeline", "E-1"]).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).contains("IdentityUnlinked"))
    })
    .await?;
    Ok(())
}
