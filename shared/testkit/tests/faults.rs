//! Each fault mode of the test SCIM server, checked over HTTP with a plain
//! client: the mode misbehaves as documented in tests/peers/README.md, and
//! the same request succeeds on a server without the mode.

use reqwest::Method;
use serde_json::{json, Value};
use tenure_testkit::{ScimServer, SCIM_FAULTS};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

struct Reply {
    status: u16,
    content_type: String,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// A client of one tenant of a server.
struct Tenant {
    server: ScimServer,
    base: String,
    http: reqwest::Client,
}

impl Tenant {
    fn start(faults: &[&str]) -> Self {
        let server = ScimServer::start_with_faults(faults).expect("fault server starts");
        let base = server.tenant_url("t");
        Self {
            server,
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.send_as(method, path, body, "application/scim+json")
            .await
    }

    async fn send_as(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        content_type: &str,
    ) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.server.token);
        if let Some(body) = body {
            request = request
                .header("Content-Type", content_type)
                .body(body.to_string());
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = response.text().await.expect("a body");
        Reply {
            status,
            content_type,
            text,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PUT, path, Some(body)).await
    }

    async fn patch(&self, path: &str, operations: Value) -> Reply {
        let body = json!({"schemas": [PATCH], "Operations": operations});
        self.send(Method::PATCH, path, Some(body)).await
    }

    /// Creates a user with a formatted name and a bare email, which every
    /// mode accepts, and returns its id.
    async fn user(&self, user_name: &str) -> String {
        let reply = self.post("/Users", user(user_name)).await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply.json()["id"].as_str().expect("an id").to_string()
    }

    async fn group(&self, name: &str, member_ids: &[&str]) -> Value {
        let members: Vec<Value> = member_ids.iter().map(|id| json!({"value": id})).collect();
        let reply = self
            .post(
                "/Groups",
                json!({"schemas": [GROUP], "displayName": name, "members": members}),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
        reply.json()
    }
}

fn user(user_name: &str) -> Value {
    json!({
        "schemas": [USER],
        "userName": user_name,
        "name": {"formatted": "Ada Lovelace", "givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"value": format!("{user_name}@example.org")}],
    })
}

fn member_values(group: &Value) -> Vec<String> {
    let mut values: Vec<String> = group["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["value"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    values.sort();
    values
}

fn has_ref(group: &Value) -> bool {
    group["members"]
        .as_array()
        .is_some_and(|ms| ms.iter().any(|m| m.get("$ref").is_some()))
}

#[tokio::test]
async fn members_by_username_shows_user_names_everywhere_and_accepts_them_back() {
    let scim = Tenant::start(&["members-by-username"]);
    let ada = scim.user("ada").await;
    let bob = scim.user("bob").await;

    let created = scim.group("staff", &[&ada]).await;
    assert_eq!(member_values(&created), ["ada"]);
    assert!(!has_ref(&created), "{created}");
    let id = created["id"].as_str().expect("an id").to_string();

    let one = scim.get(&format!("/Groups/{id}")).await.json();
    assert_eq!(member_values(&one), ["ada"]);
    let listed = scim.get("/Groups").await.json();
    assert_eq!(member_values(&listed["Resources"][0]), ["ada"]);

    // Adding by the server's own key (userName) works, so does by id.
    let added = scim
        .patch(
            &format!("/Groups/{id}"),
            json!([{"op": "add", "path": "members", "value": [{"value": "bob"}]}]),
        )
        .await;
    assert!(added.status < 300, "{} {}", added.status, added.text);
    assert_eq!(
        member_values(&scim.get(&format!("/Groups/{id}")).await.json()),
        ["ada", "bob"]
    );
    let removed = scim
        .patch(
            &format!("/Groups/{id}"),
            json!([{"op": "remove", "path": format!("members[value eq \"{bob}\"]")}]),
        )
        .await;
    assert!(removed.status < 300, "{} {}", removed.status, removed.text);
    let replaced = scim
        .put(
            &format!("/Groups/{id}"),
            json!({"schemas": [GROUP], "displayName": "staff",
                   "members": [{"value": "BOB"}, {"value": ada}]}),
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.text);
    assert_eq!(member_values(&replaced.json()), ["ada", "bob"]);

    // What is stored is still the ids: a filter on member ids finds the group.
    let by_id = scim
        .get(&format!("/Groups?filter=members.value%20eq%20%22{bob}%22"))
        .await
        .json();
    assert_eq!(by_id["totalResults"], 1, "{by_id}");
    let by_name = scim
        .get("/Groups?filter=members.value%20eq%20%22bob%22")
        .await
        .json();
    assert_eq!(by_name["totalResults"], 1, "{by_name}");
    let removed = scim
        .patch(
            &format!("/Groups/{id}"),
            json!([{"op": "remove", "path": "members[value eq \"ada\"]"}]),
        )
        .await;
    assert!(removed.status < 300, "{} {}", removed.status, removed.text);
    assert_eq!(
        member_values(&scim.get(&format!("/Groups/{id}")).await.json()),
        ["bob"]
    );

    let plain = Tenant::start(&[]);
    let ada = plain.user("ada").await;
    let created = plain.group("staff", &[&ada]).await;
    assert_eq!(member_values(&created), [ada]);
}

#[tokio::test]
async fn count_500_fails_lists_with_a_count_only() {
    let scim = Tenant::start(&["count-500"]);
    scim.user("ada").await;
    assert_eq!(scim.get("/Users?count=10").await.status, 500);
    assert_eq!(scim.get("/Groups?startIndex=1&count=0").await.status, 500);
    let all = scim.get("/Users?startIndex=1").await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert_eq!(all.json()["totalResults"], 1);

    let plain = Tenant::start(&[]);
    assert_eq!(plain.get("/Users?count=10").await.status, 200);
}

#[tokio::test]
async fn require_name_formatted_refuses_users_without_it() {
    let scim = Tenant::start(&["require-name-formatted"]);
    let mut bare = user("ada");
    bare["name"] = json!({"givenName": "Ada", "familyName": "Lovelace"});
    let refused = scim.post("/Users", bare.clone()).await;
    assert_eq!(refused.status, 400);
    assert_eq!(
        refused.json(),
        json!({"schemas": [ERROR], "status": "400", "scimType": "invalidValue",
               "detail": "Attribute 'name.formatted' is required"})
    );
    let id = scim.user("ada").await;
    assert_eq!(
        scim.put(&format!("/Users/{id}"), bare.clone()).await.status,
        400
    );
    assert_eq!(
        scim.put(&format!("/Users/{id}"), user("ada")).await.status,
        200
    );

    let plain = Tenant::start(&[]);
    assert_eq!(plain.post("/Users", bare).await.status, 201);
}

#[tokio::test]
async fn reject_email_type_primary_refuses_emails_with_type_or_primary() {
    let scim = Tenant::start(&["reject-email-type-primary"]);
    let mut typed = user("ada");
    typed["emails"] = json!([{"value": "ada@example.org", "type": "work"}]);
    let refused = scim.post("/Users", typed.clone()).await;
    assert_eq!(refused.status, 400);
    let error = refused.json();
    assert_eq!(error["scimType"], "invalidValue");
    assert!(
        error["detail"]
            .as_str()
            .is_some_and(|d| d.contains("emails.type")),
        "{error}"
    );

    let mut primary = user("ada");
    primary["emails"] = json!([{"value": "ada@example.org", "primary": true}]);
    let refused = scim.post("/Users", primary).await.json();
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("emails.primary")),
        "{refused}"
    );

    let id = scim.user("ada").await;
    let patched = scim
        .patch(
            &format!("/Users/{id}"),
            json!([{"op": "replace", "path": "emails",
                    "value": [{"value": "a@example.org", "type": "work"}]}]),
        )
        .await;
    assert_eq!(patched.status, 400, "{}", patched.text);
    let bare = scim
        .patch(
            &format!("/Users/{id}"),
            json!([{"op": "replace", "path": "emails", "value": [{"value": "a@example.org"}]}]),
        )
        .await;
    assert!(bare.status < 300, "{} {}", bare.status, bare.text);

    let plain = Tenant::start(&[]);
    assert_eq!(plain.post("/Users", typed).await.status, 201);
}

#[tokio::test]
async fn duplicate_500_answers_an_html_page_instead_of_409() {
    let scim = Tenant::start(&["duplicate-500"]);
    scim.user("ada").await;
    let again = scim.post("/Users", user("ADA")).await;
    assert_eq!(again.status, 500);
    assert!(
        again.content_type.starts_with("text/html"),
        "{}",
        again.content_type
    );
    assert!(again.text.contains("<html"));
    assert!(
        (2_000..10_000).contains(&again.text.len()),
        "{}",
        again.text.len()
    );
    scim.user("bob").await;

    let plain = Tenant::start(&[]);
    plain.user("ada").await;
    let again = plain.post("/Users", user("ADA")).await;
    assert_eq!(again.status, 409, "{}", again.text);
}

#[tokio::test]
async fn no_filter_lists_everything_whatever_the_filter() {
    let filter = "/Users?filter=userName%20eq%20%22ada%22";
    let scim = Tenant::start(&["no-filter"]);
    scim.user("ada").await;
    scim.user("bob").await;
    let listed = scim.get(filter).await.json();
    assert_eq!(listed["totalResults"], 2, "{listed}");

    let plain = Tenant::start(&[]);
    plain.user("ada").await;
    plain.user("bob").await;
    assert_eq!(plain.get(filter).await.json()["totalResults"], 1);
}

#[tokio::test]
async fn reject_member_path_filter_refuses_filtered_member_paths() {
    async fn remove_by_path_filter(scim: &Tenant) -> Reply {
        let ada = scim.user("ada").await;
        let group = scim.group("staff", &[&ada]).await;
        let id = group["id"].as_str().expect("an id");
        scim.patch(
            &format!("/Groups/{id}"),
            json!([{"op": "remove", "path": format!("members[value eq \"{ada}\"]")}]),
        )
        .await
    }

    let scim = Tenant::start(&["reject-member-path-filter"]);
    let refused = remove_by_path_filter(&scim).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["scimType"], "invalidPath");
    let bob = scim.user("bob").await;
    let group = scim.group("others", &[]).await;
    let id = group["id"].as_str().expect("an id");
    let added = scim
        .patch(
            &format!("/Groups/{id}"),
            json!([{"op": "add", "path": "members", "value": [{"value": bob}]}]),
        )
        .await;
    assert!(added.status < 300, "{} {}", added.status, added.text);

    let plain = Tenant::start(&[]);
    let removed = remove_by_path_filter(&plain).await;
    assert!(removed.status < 300, "{} {}", removed.status, removed.text);
}

#[tokio::test]
async fn html_errors_replaces_every_error_body_with_a_large_page() {
    let scim = Tenant::start(&["html-errors"]);
    let missing = scim.get("/Users/nobody").await;
    assert_eq!(missing.status, 404);
    assert!(missing.content_type.starts_with("text/html"));
    assert!(missing.text.contains("<title>404 Not Found</title>"));
    assert!(
        (15_000..30_000).contains(&missing.text.len()),
        "{}",
        missing.text.len()
    );
    let unauthenticated = reqwest::get(format!("{}/Users", scim.base))
        .await
        .expect("an answer");
    assert_eq!(unauthenticated.status(), 401);
    assert!(unauthenticated
        .text()
        .await
        .is_ok_and(|t| t.contains("<title>401 Unauthorized</title>")));
    let ok = scim.get("/Users").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["totalResults"], 0);

    let plain = Tenant::start(&[]);
    let missing = plain.get("/Users/nobody").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["status"], "404");
}

#[tokio::test]
async fn no_patch_groups_answers_405_to_group_patches_only() {
    async fn rename_by_patch(scim: &Tenant) -> Reply {
        let group = scim.group("staff", &[]).await;
        let id = group["id"].as_str().expect("an id");
        scim.patch(
            &format!("/Groups/{id}"),
            json!([{"op": "replace", "path": "displayName", "value": "crew"}]),
        )
        .await
    }

    let scim = Tenant::start(&["no-patch-groups"]);
    assert_eq!(rename_by_patch(&scim).await.status, 405);
    let id = scim.user("ada").await;
    let user_patch = scim
        .patch(
            &format!("/Users/{id}"),
            json!([{"op": "replace", "path": "displayName", "value": "Ada"}]),
        )
        .await;
    assert!(user_patch.status < 300, "{}", user_patch.text);

    let plain = Tenant::start(&[]);
    let renamed = rename_by_patch(&plain).await;
    assert!(renamed.status < 300, "{} {}", renamed.status, renamed.text);
}

#[tokio::test]
async fn content_type_json_only_refuses_the_scim_media_type() {
    let scim = Tenant::start(&["content-type-json-only"]);
    let refused = scim.post("/Users", user("ada")).await;
    assert_eq!(refused.status, 415);
    let accepted = scim
        .send_as(
            Method::POST,
            "/Users",
            Some(user("ada")),
            "application/json",
        )
        .await;
    assert_eq!(accepted.status, 201, "{}", accepted.text);
    assert_eq!(scim.get("/Users").await.status, 200);

    let plain = Tenant::start(&[]);
    assert_eq!(plain.post("/Users", user("ada")).await.status, 201);
}

#[tokio::test]
async fn the_request_log_shows_what_the_server_received() {
    let scim = Tenant::start(&["require-name-formatted"]);
    let mut bare = user("ada");
    bare["name"] = json!({"givenName": "Ada"});
    scim.post("/Users", bare.clone()).await;
    scim.get("/Users?count=1").await;

    let log = scim.server.requests().expect("the log");
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0].method, "POST");
    assert_eq!(log[0].path, "/t/v2/Users");
    assert_eq!(log[0].body, bare);
    assert_eq!(
        log[0].content_type.as_deref(),
        Some("application/scim+json")
    );
    assert_eq!(log[0].status, 400);
    assert_eq!((log[1].query.as_str(), log[1].status), ("count=1", 200));
    assert_eq!(log[1].body, Value::Null);

    scim.server.clear_requests().expect("cleared");
    assert!(scim.server.requests().expect("the log").is_empty());
}

#[tokio::test]
async fn faults_combine_and_unknown_ones_are_refused() {
    let scim = Tenant::start(&["count-500", "html-errors"]);
    let failed = scim.get("/Users?count=5").await;
    assert_eq!(failed.status, 500);
    assert!(failed.content_type.starts_with("text/html"));

    let unknown = ScimServer::start_with_faults(&["slow"]);
    assert!(unknown.is_err());
    assert_eq!(SCIM_FAULTS.len(), 10);
}

#[tokio::test]
async fn plain_start_is_scim2_server_without_a_request_log() {
    let server = ScimServer::start().expect("scim2-server starts");
    let listed = reqwest::Client::new()
        .get(format!("{}/Users?count=0", server.tenant_url("t")))
        .bearer_auth(&server.token)
        .send()
        .await
        .expect("an answer");
    assert_eq!(listed.status(), 200);
    assert!(server.requests().is_err());
}
