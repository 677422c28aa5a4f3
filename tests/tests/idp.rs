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
    // The link and the groups, as operators read them.
    let persons = stack.api("/v1/persons").await?;
    let ana = persons
        .as_array()
        .and_then(|a| a.iter().find(|p| p["source_person_id"] == "E-1"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(ana["groups"], json!(["developers"]), "{persons}");
    let out = stack
        .tenure(&["identities", "--idp", "authentik"])
        .output()?;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("asilva")
            && listed.contains("ana.silva@example.com")
            && listed.contains("developers")
            && !listed.contains("unlinked"),
        "{listed}"
    );
    let identities = stack.api("/v1/identities?unlinked=true").await?;
    assert_eq!(identities, json!([]), "Ana's identity is linked");

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

/// Issue 9, items 10-12 and 14: what an IdP sends that cannot be stored,
/// indexed or published is refused at the endpoint with a SCIM 4xx naming
/// the attribute; a snapshot that still cannot be published (one written
/// before these limits) is dead-lettered by the relay, which moves on, so a
/// later small change still reaches the engine; `tenure identities` lists
/// the result and `tenure dlq` the dead letter.
#[tokio::test]
async fn an_oversized_or_poison_identity_never_blocks_the_identity_pipeline() -> anyhow::Result<()>
{
    std::env::set_var("TENURE_IDP_TOKEN", IDP_TOKEN);
    let mut stack = Stack::with_options(Options {
        extra: "[[idp]]\nname = \"authentik\"\ntoken = { env = \"TENURE_IDP_TOKEN\" }\ncorrelate = \"email\"\n".into(),
        ..Options::default()
    })
    .await?;
    stack.start_core().await?;
    let idp = Idp {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        base: format!("http://127.0.0.1:{}/scim/v2", stack.ingest_port),
    };
    let invalid = |status: u16, body: &Value, attribute: &str| {
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["scimType"], "invalidValue", "{body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(attribute), "names {attribute}: {detail}");
    };

    // A ~1 MB user, under the 1 MiB body limit, whose bulk would be in every
    // snapshot: 400 naming the attribute, not a stalled pipeline.
    let mut big = authentik_user("big.user", "big.user@example.com");
    big["displayName"] = json!("x".repeat(1_000_000));
    let (status, body) = idp.call(reqwest::Method::POST, "/Users", Some(big)).await?;
    invalid(status, &body, "'displayName'");
    // A 9,000-character e-mail (over the engine's index limit) and a NUL.
    let long = format!("{}@example.com", "a".repeat(9000));
    let (status, body) = idp
        .call(
            reqwest::Method::POST,
            "/Users",
            Some(authentik_user("long.mail", &long)),
        )
        .await?;
    invalid(status, &body, "'emails.value'");
    let (status, body) = idp
        .call(
            reqwest::Method::POST,
            "/Users",
            Some(authentik_user("nul\u{0}user", "nul@example.com")),
        )
        .await?;
    invalid(status, &body, "'userName'");
    // ~1 MB in an attribute no snapshot carries is stored, and its small
    // snapshot is published.
    let mut bulky = authentik_user("bulky", "bulky@example.com");
    bulky["externalId"] = json!("bulky-1");
    bulky["urn:example:custom:1.0:User"] = json!({"notes": "n".repeat(1_000_000)});
    let (status, body) = idp
        .call(reqwest::Method::POST, "/Users", Some(bulky))
        .await?;
    assert_eq!(status, 201, "{body}");

    // A snapshot larger than NATS's max_payload already in the outbox, as an
    // earlier release could leave it: it used to block every later change.
    let stuck = stack
        .psql_count(
            "WITH x AS (INSERT INTO idp_scim_outbox (provider, user_id, snapshot) \
             SELECT 'authentik', u, jsonb_build_object('provider', 'authentik', 'idp_id', u::text, \
               'user_name', 'legacy.big', 'emails', '[]'::jsonb, 'display_name', repeat('x', 2000000), \
               'active', true, 'groups', '[]'::jsonb) FROM gen_random_uuid() AS u RETURNING 1) \
             SELECT count(*) FROM x",
        )
        .await?;
    assert_eq!(stuck, 1);
    // A later small change still reaches the engine.
    let mut small = authentik_user("small.user", "small.user@example.com");
    small["externalId"] = json!("small-1");
    let (status, body) = idp
        .call(reqwest::Method::POST, "/Users", Some(small))
        .await?;
    assert_eq!(status, 201, "{body}");
    wait_for(Duration::from_secs(30), || async {
        Ok(stack
            .psql_count(
                "SELECT count(*) FROM idp_identities WHERE user_name IN ('small.user', 'bulky')",
            )
            .await?
            == 2)
    })
    .await?;
    assert_eq!(
        stack
            .psql_count("SELECT count(*) FROM idp_scim_outbox")
            .await?,
        0,
        "the outbox drained past the oversized row"
    );
    assert_eq!(
        stack
            .psql_count("SELECT count(*) FROM idp_identities WHERE user_name = 'legacy.big'")
            .await?,
        0
    );

    // The dead letter says what happened, labelled as a message.
    let out = stack.tenure(&["dlq", "list"]).output()?;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listed}");
    assert!(
        listed.contains("message")
            && listed.contains("idp-relay-authentik")
            && listed.contains("tenure.identity.authentik")
            && listed.contains("legacy.big")
            && listed.contains("at most"),
        "{listed}"
    );
    let dead: Value = stack.api("/v1/dlq?consumer=idp-relay-authentik").await?;
    assert_eq!(dead[0]["kind"], "message", "{dead}");
    assert_eq!(dead[0]["payload_truncated"], true, "{dead}");

    // Identities and their links: none of these users is an HR person.
    let out = stack
        .tenure(&["identities", "--idp", "authentik", "--unlinked"])
        .output()?;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listed}");
    assert!(
        listed.contains("small.user") && listed.contains("unlinked"),
        "{listed}"
    );
    let identities: Value = stack.api("/v1/identities?idp=authentik").await?;
    let names: Vec<&str> = identities
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["user_name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec!["bulky", "small.user"], "{identities}");
    Ok(())
}
