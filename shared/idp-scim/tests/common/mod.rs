//! A real server for the tests: a fresh database with every migration
//! applied, the pool switched to the restricted `tenure_app` role as the
//! services run, and the router nested under `/scim/v2` on a loopback port.

#![allow(dead_code)]

use std::sync::Arc;

use reqwest::header::HeaderMap;
use serde_json::Value;
use tenure_idp_scim::{router, Provider};
use tenure_store::sqlx::PgPool;
use tenure_testkit::TestDb;

pub const PROVIDER: &str = "authentik";

pub struct Server {
    pub base: String,
    pub token: String,
    pub pool: PgPool,
    pub provider: Arc<Provider>,
    pub http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
    _db: TestDb,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    pub fn id(&self) -> String {
        self.body["id"].as_str().unwrap_or_default().to_string()
    }
    pub fn scim_type(&self) -> &str {
        self.body["scimType"].as_str().unwrap_or_default()
    }
}

pub async fn start() -> anyhow::Result<Server> {
    start_with(|p| p).await
}

pub async fn start_with(configure: impl FnOnce(Provider) -> Provider) -> anyhow::Result<Server> {
    let db = TestDb::create().await?;
    let owner = tenure_store::connect(&db.url(), None, 2).await?;
    tenure_store::migrate(&owner).await?;
    owner.close().await;
    let pool = tenure_store::connect(&db.url(), Some("tenure_app"), 8).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let base = format!("http://127.0.0.1:{port}/scim/v2");
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let provider = Arc::new(configure(Provider::new(
        pool.clone(),
        PROVIDER,
        token.clone(),
        base.clone(),
    )));
    let app = axum::Router::new().nest("/scim/v2", router(provider.clone()));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Server {
        base,
        token,
        pool,
        provider,
        http: reqwest::Client::new(),
        task,
        _db: db,
    })
}

impl Server {
    /// Sends a request with the provider's token; `body` as
    /// `application/scim+json`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Resp> {
        let auth = format!("Bearer {}", self.token);
        let mut all = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        self.raw(method, path, body.map(|b| b.to_string()), &all)
            .await
    }

    /// Sends a request with exactly these headers.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Resp> {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes())?, url);
        let has_ct = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !has_ct {
            req = req.header("content-type", "application/scim+json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Resp> {
        self.call("GET", path, None, &[]).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Resp> {
        self.call("POST", path, Some(body), &[]).await
    }
    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Resp> {
        self.call("PUT", path, Some(body), &[]).await
    }
    pub async fn patch(&self, path: &str, ops: Value) -> anyhow::Result<Resp> {
        let body = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": ops,
        });
        self.call("PATCH", path, Some(&body), &[]).await
    }
    pub async fn delete(&self, path: &str) -> anyhow::Result<Resp> {
        self.call("DELETE", path, None, &[]).await
    }

    /// Creates a user and returns its id.
    pub async fn user(&self, user_name: &str, extra: Value) -> anyhow::Result<String> {
        let mut body = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user_name,
        });
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        let r = self.post("/Users", &body).await?;
        anyhow::ensure!(
            r.status == 201,
            "creating {user_name}: {} {}",
            r.status,
            r.body
        );
        Ok(r.id())
    }

    /// Creates a group with these member ids and returns its id.
    pub async fn group(&self, name: &str, members: &[&str]) -> anyhow::Result<String> {
        let members: Vec<Value> = members
            .iter()
            .map(|m| serde_json::json!({"value": m}))
            .collect();
        let r = self
            .post(
                "/Groups",
                &serde_json::json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "displayName": name,
                    "members": members,
                }),
            )
            .await?;
        anyhow::ensure!(
            r.status == 201,
            "creating group {name}: {} {}",
            r.status,
            r.body
        );
        Ok(r.id())
    }

    /// Ids of the resources of a list response, in order.
    pub async fn ids(&self, path: &str) -> anyhow::Result<Vec<String>> {
        let r = self.get(path).await?;
        anyhow::ensure!(r.status == 200, "GET {path}: {} {}", r.status, r.body);
        Ok(r.body["Resources"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// `filter=…` URL-encoded.
pub fn filter(f: &str) -> String {
    let mut out = String::from("filter=");
    for b in f.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
