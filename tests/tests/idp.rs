//! Authentik as a source, end to end with the real binary: its SCIM
//! provider's traffic (create, 409 then a filter look-up, full PUT, group
//! membership PATCHes in Authentik's value-list form) on Tenure's inbound
//! SCIM endpoint becomes IdP groups on the HR person, which an app's rule
//! and its mirrored groups use.

use serde_json::{json, Value};
use std::time::Duration;
use tenure_e2e::{person, wait_for, Options, Stack};

const IDP_TOKEN: &str = "authentik-pushes-with-this";

struct Idp {
    http: reqwest::Client,
    base: String,
}

impl Idp {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(IDP_TOKEN)
            .header("content-type", "application/scim+json");
        if let Some(b) = body {
            req = req.body(serde_json::to_vec(&b)?);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

fn authentik_user(user_name: &str, email: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "name": {"formatted": "Ana Silva", "givenName": "Ana", "familyName": "Silva"},
        "displayName": "Ana Silva",
        "active": true,
        "emails": [{"value": email, "type": "other", "primary": true}],
        "externalId": "7c5bcd02c7fa1a7f2c3e8c3f0d1b2a99"
    })
}

async fn groups_in(stack: &Stack, tenant: &str) -> anyhow::Result<Vec<Value>> {
    let server = stack.server(tenant);
    let v: Value = reqwest::Client::new()
        .get(format!("{}/Groups", server.tenant_url(tenant)))
        .bearer_auth(&server.token)
        .send()
        .await?
        .json()
        .await?;
    Ok(v["Resources"].as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn authentik_groups_grant_app_access_and_mirror_into_app_groups() -> anyhow::Result<()> {
    std::env::set_var("TENURE_IDP_TOKEN", IDP_TOKEN);
    let mut stack = Stack::with_options(Options {
        git: "rule = '\"developers\" in person.groups'\n[[app.group]]\nname = \"{idp_group}\"\nidp_groups = \"dev*\"\n".into(),
        // The wiki account exists before any IdP group does: the group
        // arrives without any change to the account itself.
        wiki: "[[app.group]]\nname = \"dept-{department}\"\n[[app.group]]\nname = \"{idp_group}\"\nidp_groups = \"dev*\"\n".into(),
        extra: "[[idp]]\nname = \"authentik\"\ntoken = { env = \"TENURE_IDP_TOKEN\" }\ncorrelate = \"email\"\n".into(),
        ..Options::default()
    })
    .await?;
    stack.start_core().await?;
    stack.start_fanout()?;
    let idp = Idp {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        base: format!("http://127.0.0.1:{}/scim/v2", stack.ingest_port),
    };

    // HR hires Ana; the wiki has no rule, git wants the "developers" group.
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
    // The wiki's groups are in sync (its department group exists) before
    // Authentik says anything: what follows changes no wiki account.
    wait_for(Duration::from_secs(30), || async {
        let groups = groups_in(&stack, &wiki).await?;
        Ok(groups
            .iter()
            .any(|g| g["displayName"] == "dept-Engineering"))
    })
    .await?;
    assert!(
        stack.scim_user(&git, "ana.silva").await?.is_none(),
        "no group, no git account"
    );

    // Authentik's SCIM provider pushes the user; a retry gets 409 and looks
    // the user up by userName, as Authentik does.
    let (status, user) = idp
        .call(
            reqwest::Method::POST,
            "/Users",
            Some(authentik_user("asilva", "Ana.Silva@example.com")),
        )
        .await?;
    assert_eq!(status, 201, "{user}");
    let user_id = user["id"].as_str().unwrap_or_default().to_string();
    let (status, conflict) = idp
        .call(
            reqwest::Method::POST,
            "/Users",
            Some(authentik_user("ASILVA", "ana.silva@example.com")),
        )
        .await?;
    assert_eq!(status, 409);
    assert_eq!(conflict["scimType"], "uniqueness");
    let (status, found) = idp
        .call(
            reqwest::Method::GET,
            "/Users?filter=userName%20eq%20%22asilva%22",
            None,
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(found["totalResults"], 1);
    // Full PUT on every save, unchanged.
    let (status, _) = idp
        .call(
            reqwest::Method::PUT,
            &format!("/Users/{user_id}"),
            Some(authentik_user("asilva", "Ana.Silva@example.com")),
        )
        .await?;
    assert_eq!(status, 200);

    // The group arrives with Ana in it: git account and a mirrored group.
    let (status, group) = idp
        .call(
            reqwest::Method::POST,
            "/Groups",
            Some(json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "developers",
                "members": [{"value": user_id}]
            })),
        )
        .await?;
    assert_eq!(status, 201, "{group}");
    let group_id = group["id"].as_str().unwrap_or_default().to_string();
    let account = stack
        .wait_user(&git, "ana.silva", |u| {
            u.is_some_and(|u| u["active"] != Value::Bool(false))
        })
        .await?;
    let remote = account
        .as_ref()
        .and_then(|u| u["id"].as_str())
        .unwrap_or_default()
        .to_string();
    wait_for(Duration::from_secs(30), || async {
        let groups = groups_in(&stack, &stack.git_tenant).await?;
        Ok(groups.iter().any(|g| {
            g["displayName"] == "developers"
                && g["members"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|x| x["value"] == remote.as_str()))
        }))
    })
    .await?;
    let wiki_remote = stack
        .scim_user(&wiki, "ana.silva@example.com")
        .await?
        .and_then(|u| u["id"].as_str().map(str::to_string))
        .unwrap_or_default();
    wait_for(Duration::from_secs(30), || async {
        let groups = groups_in(&stack, &wiki).await?;
        Ok(groups.iter().any(|g| {
            g["displayName"] == "developers"
                && g["members"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|x| x["value"] == wiki_remote.as_str()))
        }))
    })
    .await?;
    let timeline = stack.tenure(&["timeline", "E-1"]).output()?;
    let timeline = String::from_utf8_lossy(&timeline.stdout);
    assert!(timeline.contains("IdentitySynced"), "{timeline}");

    // Authentik removes members with a value list, not a path filter.
    let (status, _) = idp
        .call(
            reqwest::Method::PATCH,
            &format!("/Groups/{group_id}"),
            Some(json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "remove", "path": "members", "value": [{"value": user_id}]}]
            })),
        )
        .await?;
    assert!(status == 200 || status == 204, "{status}");
    // Out of the rule's scope: git deprovisions per its policy (delete).
    stack.wait_user(&git, "ana.silva", |u| u.is_none()).await?;
    // HR still employs Ana: the wiki keeps her.
    let wiki_user = stack.scim_user(&wiki, "ana.silva@example.com").await?;
    assert!(wiki_user.is_some_and(|u| u["active"] != Value::Bool(false)));

    // A wrong token is refused in SCIM's error format.
    let resp = reqwest::Client::new()
        .get(format!("{}/Users", idp.base))
        .bearer_auth("wrong")
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await?;
    assert_eq!(body["status"], "401");
    Ok(())
}
