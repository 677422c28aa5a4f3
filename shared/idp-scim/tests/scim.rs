//! The SCIM service provider over real HTTP against a real PostgreSQL:
//! every verb on Users and Groups, pagination, filters, PATCH forms, ETags,
//! errors and discovery.

mod common;

use common::{filter, start, start_with};
use serde_json::{json, Value};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn error_body(r: &common::Resp, status: u16) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:Error"]),
        "{}",
        r.body
    );
    assert_eq!(r.body["status"], json!(status.to_string()), "{}", r.body);
    assert!(r.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/scim+json")
    );
}

#[tokio::test]
async fn user_lifecycle_every_verb() -> anyhow::Result<()> {
    let s = start().await?;
    let created = s
        .post(
            "/Users",
            &json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
                "userName": "ana.silva",
                "externalId": "ak-1",
                "name": {"givenName": "Ana", "familyName": "Silva", "formatted": "Ana Silva"},
                "emails": [{"value": "ana@example.com", "type": "work", "primary": true}],
                "active": true,
                "password": "never-stored",
                "photos": [{"value": "https://avatars.test/ana.png", "type": "photo"}],
                "locale": "pt-PT",
                ENTERPRISE: {"employeeNumber": "E-1001", "department": "Engineering"},
                "urn:example:custom:1.0:User": {"shoeSize": 38},
            }),
        )
        .await?;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.id();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    let location = format!("{}/Users/{id}", s.base);
    assert_eq!(created.header("location"), Some(location.clone()));
    assert_eq!(created.header("etag").as_deref(), Some("W/\"1\""));
    assert_eq!(
        created.header("content-type").as_deref(),
        Some("application/scim+json")
    );
    let b = &created.body;
    assert_eq!(b["meta"]["location"], json!(location));
    assert_eq!(b["meta"]["resourceType"], "User");
    assert_eq!(b["meta"]["version"], "W/\"1\"");
    assert!(b["meta"]["created"].is_string() && b["meta"]["lastModified"].is_string());
    assert!(
        b.get("password").is_none(),
        "password must never be returned"
    );
    assert_eq!(b[ENTERPRISE]["employeeNumber"], "E-1001");
    assert_eq!(b["urn:example:custom:1.0:User"]["shoeSize"], 38);
    let schemas = b["schemas"].as_array().cloned().unwrap_or_default();
    assert!(schemas.contains(&json!(ENTERPRISE)));
    assert!(schemas.contains(&json!("urn:example:custom:1.0:User")));

    let got = s.get(&format!("/Users/{id}")).await?;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, created.body);
    assert_eq!(got.header("etag").as_deref(), Some("W/\"1\""));

    // PUT replaces everything: attributes left out are gone.
    let put = s
        .put(
            &format!("/Users/{id}"),
            &json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": id,
                "userName": "ana.silva",
                "externalId": "ak-1",
                "displayName": "Ana S.",
                "active": false,
            }),
        )
        .await?;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.body["displayName"], "Ana S.");
    assert_eq!(put.body["active"], false);
    assert!(put.body.get("emails").is_none());
    assert!(put.body.get(ENTERPRISE).is_none());
    assert_eq!(put.header("etag").as_deref(), Some("W/\"2\""));
    assert_eq!(put.body["meta"]["created"], created.body["meta"]["created"]);
    assert_eq!(s.get(&format!("/Users/{id}")).await?.body, put.body);

    // PUT never creates.
    let missing = uuid::Uuid::new_v4();
    let r = s
        .put(&format!("/Users/{missing}"), &json!({"userName": "ghost"}))
        .await?;
    error_body(&r, 404);
    assert_eq!(
        s.ids(&format!("/Users?{}", filter("userName eq \"ghost\"")))
            .await?
            .len(),
        0
    );

    let del = s.delete(&format!("/Users/{id}")).await?;
    assert_eq!(del.status, 204);
    assert_eq!(del.body, Value::Null);
    error_body(&s.get(&format!("/Users/{id}")).await?, 404);
    error_body(&s.delete(&format!("/Users/{id}")).await?, 404);
    error_body(&s.get("/Users/not-a-uuid").await?, 404);
    Ok(())
}

#[tokio::test]
async fn user_name_is_unique_case_insensitively() -> anyhow::Result<()> {
    let s = start().await?;
    let a = s.user("Ana", json!({})).await?;
    let dup = s.post("/Users", &json!({"userName": "aNA"})).await?;
    error_body(&dup, 409);
    assert_eq!(dup.scim_type(), "uniqueness");
    let b = s.user("bo", json!({})).await?;
    let r = s
        .put(&format!("/Users/{b}"), &json!({"userName": "ANA"}))
        .await?;
    error_body(&r, 409);
    assert_eq!(r.scim_type(), "uniqueness");
    let r = s
        .patch(
            &format!("/Users/{b}"),
            json!([{"op": "replace", "path": "userName", "value": "ana"}]),
        )
        .await?;
    error_body(&r, 409);
    // The failed writes changed nothing.
    assert_eq!(s.get(&format!("/Users/{b}")).await?.body["userName"], "bo");
    assert_eq!(s.get(&format!("/Users/{a}")).await?.body["userName"], "Ana");
    // Changing only the case of one's own userName is fine.
    let r = s
        .patch(
            &format!("/Users/{a}"),
            json!([{"op": "replace", "path": "userName", "value": "ANA"}]),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    Ok(())
}

#[tokio::test]
async fn concurrent_creates_of_one_user_name_yield_one_201() -> anyhow::Result<()> {
    let s = std::sync::Arc::new(start().await?);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let name = if i % 2 == 0 {
                "race@example.com"
            } else {
                "RACE@example.com"
            };
            s.post("/Users", &json!({"userName": name})).await
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let r = t.await??;
        if r.status == 409 {
            assert_eq!(r.scim_type(), "uniqueness");
        }
        statuses.push(r.status);
    }
    statuses.sort();
    assert_eq!(statuses, vec![201, 409, 409, 409, 409, 409, 409, 409]);
    let listed = s.get("/Users").await?;
    assert_eq!(listed.body["totalResults"], 1);
    Ok(())
}

#[tokio::test]
async fn pagination_is_one_based_stable_and_capped() -> anyhow::Result<()> {
    let s = start_with(|p| p.with_max_results(5)).await?;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(s.user(&format!("user{i}"), json!({})).await?);
    }
    let r = s.get("/Users?startIndex=1&count=3").await?;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:ListResponse"])
    );
    assert_eq!(r.body["totalResults"], 7);
    assert_eq!(r.body["startIndex"], 1);
    assert_eq!(r.body["itemsPerPage"], 3);
    let mut seen = Vec::new();
    for start in [1, 4, 7] {
        seen.extend(s.ids(&format!("/Users?startIndex={start}&count=3")).await?);
    }
    assert_eq!(seen, created, "pages in creation order, no gaps or repeats");
    assert_eq!(s.ids("/Users?startIndex=7&count=3").await?.len(), 1);
    let past = s.get("/Users?startIndex=50").await?;
    assert_eq!(past.body["totalResults"], 7);
    assert_eq!(past.body["Resources"], json!([]));
    let zero = s.get("/Users?count=0").await?;
    assert_eq!(zero.body["totalResults"], 7);
    assert_eq!(zero.body["itemsPerPage"], 0);
    // count above maxResults is capped; startIndex below 1 means 1.
    let capped = s.get("/Users?count=100&startIndex=0").await?;
    assert_eq!(capped.body["itemsPerPage"], 5);
    assert_eq!(capped.body["startIndex"], 1);
    assert_eq!(s.ids("/Users").await?.len(), 5);
    // Filtered lists page the same way.
    let f = filter("userName sw \"user\"");
    let p2 = s.get(&format!("/Users?{f}&startIndex=3&count=2")).await?;
    assert_eq!(p2.body["totalResults"], 7);
    assert_eq!(
        p2.body["Resources"]
            .as_array()
            .map(|a| a.iter().map(|x| x["id"].clone()).collect::<Vec<_>>()),
        Some(vec![json!(created[2]), json!(created[3])])
    );
    error_body(&s.get("/Users?count=many").await?, 400);
    Ok(())
}

#[tokio::test]
async fn filters_with_logic_case_rules_and_errors() -> anyhow::Result<()> {
    let s = start().await?;
    let ana = s
        .user(
            "Ana.Silva@Example.com",
            json!({
                "externalId": "EXT-ana",
                "displayName": "Ana Silva",
                "active": true,
                "emails": [
                    {"value": "ana@example.com", "type": "work", "primary": true},
                    {"value": "ana@home.org", "type": "home"}
                ],
                ENTERPRISE: {"employeeNumber": "1001", "department": "Engineering"},
            }),
        )
        .await?;
    let bo = s
        .user(
            "bo.berg@example.com",
            json!({
                "externalId": "EXT-bo",
                "displayName": "Bo Berg",
                "active": false,
                "emails": [{"value": "bo@home.org", "type": "home"}],
                ENTERPRISE: {"employeeNumber": "1002", "department": "Sales"},
            }),
        )
        .await?;
    let chen = s
        .user(
            "chen",
            json!({"displayName": "Chen Wu", "title": "CFO", "active": true}),
        )
        .await?;
    let f_emp = format!("{ENTERPRISE}:employeeNumber eq \"1002\"");
    let f_dep = format!("{ENTERPRISE}:department ne \"Sales\"");
    let f_id = format!("id eq \"{chen}\"");
    let f_id_upper = format!("id eq \"{}\"", chen.to_uppercase());
    let cases: Vec<(&str, Vec<&String>)> = vec![
        (r#"userName eq "ana.silva@example.com""#, vec![&ana]),
        (r#"USERNAME EQ "ANA.SILVA@EXAMPLE.COM""#, vec![&ana]),
        (r#"externalId eq "EXT-ana""#, vec![&ana]),
        (r#"externalId eq "ext-ana""#, vec![]),
        (r#"externalId sw "EXT""#, vec![&ana, &bo]),
        (r#"displayName co "berg""#, vec![&bo]),
        (r#"displayName ew "WU""#, vec![&chen]),
        (r#"title pr"#, vec![&chen]),
        (r#"not(title pr)"#, vec![&ana, &bo]),
        (r#"active eq false"#, vec![&bo]),
        (r#"active eq true and displayName sw "a""#, vec![&ana]),
        (
            r#"userName eq "chen" or externalId eq "EXT-bo""#,
            vec![&bo, &chen],
        ),
        (
            r#"(userName eq "chen" or externalId eq "EXT-bo") and active eq true"#,
            vec![&chen],
        ),
        (
            r#"userName eq "chen" or externalId eq "EXT-bo" and active eq true"#,
            vec![&chen],
        ),
        (
            r#"not (active eq true) or title eq "cfo""#,
            vec![&bo, &chen],
        ),
        (r#"emails.value eq "ANA@HOME.ORG""#, vec![&ana]),
        (r#"emails[type eq "work"]"#, vec![&ana]),
        (
            r#"emails[type eq "home" and value ew "home.org"]"#,
            vec![&ana, &bo],
        ),
        (
            r#"emails[type eq "work"].value eq "ana@example.com""#,
            vec![&ana],
        ),
        (
            r#"emails[type eq "home"].value eq "ana@example.com""#,
            vec![],
        ),
        (f_emp.as_str(), vec![&bo]),
        (f_dep.as_str(), vec![&ana, &chen]),
        (f_id.as_str(), vec![&chen]),
        (f_id_upper.as_str(), vec![]),
        (
            r#"meta.created gt "2000-01-01T00:00:00Z""#,
            vec![&ana, &bo, &chen],
        ),
        (r#"meta.lastModified lt "2000-01-01T00:00:00Z""#, vec![]),
        (r#"userName eq "nobody""#, vec![]),
    ];
    for (f, want) in cases {
        let r = s.get(&format!("/Users?{}", filter(f))).await?;
        assert_eq!(r.status, 200, "{f}: {}", r.body);
        let got: Vec<String> = r.body["Resources"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let want: Vec<String> = want.into_iter().cloned().collect();
        assert_eq!(got, want, "{f}");
        assert_eq!(r.body["totalResults"], json!(want.len()), "{f}");
    }
    for bad in [
        r#"userName eq"#,
        r#"nosuch eq "x""#,
        r#"userName zz "x""#,
        r#"(userName eq "x""#,
        r#"active eq "perhaps""#,
        r#"userName eq "unterminated"#,
        r#"emails[type eq "work""#,
        r#"members.value eq "x""#,
    ] {
        let r = s.get(&format!("/Users?{}", filter(bad))).await?;
        error_body(&r, 400);
        assert_eq!(r.scim_type(), "invalidFilter", "{bad}");
    }
    Ok(())
}

#[tokio::test]
async fn search_endpoint_and_attribute_selection() -> anyhow::Result<()> {
    let s = start().await?;
    let ana = s
        .user(
            "ana",
            json!({"displayName": "Ana", "name": {"givenName": "Ana", "familyName": "Silva"},
                   "emails": [{"value": "ana@example.com", "type": "work"}]}),
        )
        .await?;
    s.user("bo", json!({})).await?;
    let r = s
        .post(
            "/Users/.search",
            &json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter": "userName eq \"ANA\"",
                "attributes": ["userName", "name.familyName", "emails.value"],
                "startIndex": 1,
                "count": 10,
            }),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["totalResults"], 1);
    let res = &r.body["Resources"][0];
    assert_eq!(res["id"], json!(ana));
    assert_eq!(res["userName"], "ana");
    assert_eq!(res["name"], json!({"familyName": "Silva"}));
    assert_eq!(res["emails"], json!([{"value": "ana@example.com"}]));
    assert!(res.get("displayName").is_none() && res.get("meta").is_none());
    let r = s
        .get(&format!(
            "/Users/{ana}?excludedAttributes=emails,name.givenName,id"
        ))
        .await?;
    assert_eq!(r.body["id"], json!(ana), "id is always returned");
    assert!(r.body.get("emails").is_none());
    assert_eq!(r.body["name"], json!({"familyName": "Silva"}));
    assert_eq!(r.body["displayName"], "Ana");
    error_body(&s.post("/.search", &json!({})).await?, 501);
    Ok(())
}

#[tokio::test]
async fn user_patch_forms_and_atomicity() -> anyhow::Result<()> {
    let s = start().await?;
    let id = s
        .user(
            "bjensen",
            json!({
                "displayName": "Babs",
                "active": true,
                "emails": [
                    {"value": "b@work.com", "type": "work", "primary": true},
                    {"value": "b@home.org", "type": "home"}
                ],
                "phoneNumbers": [{"value": "555-1", "type": "work"}],
                ENTERPRISE: {"employeeNumber": "1"},
            }),
        )
        .await?;
    let path = format!("/Users/{id}");
    let r = s
        .patch(
            &path,
            json!([
                {"op": "Replace", "path": "ACTIVE", "value": "False"},
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "babs@work.com"},
                {"op": "add", "path": "emails[type eq \"other\"].value", "value": "babs@other.net"},
                {"op": "remove", "path": "phoneNumbers[type eq \"work\"]"},
                {"op": "add", "path": "name.givenName", "value": "Barbara"},
                {"op": "replace", "path": format!("{ENTERPRISE}:employeeNumber"), "value": "2"},
                {"op": "add", "path": format!("{ENTERPRISE}:manager"), "value": "boss-id"},
                {"op": "add", "value": {"nickName": "B", "name.familyName": "Jensen"}},
                {"op": "replace", "value": {"id": "ignored", "displayName": "Barbara Jensen"}},
                {"op": "remove", "path": "emails", "value": [{"value": "b@home.org"}]},
            ]),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    let b = &r.body;
    assert_eq!(b["id"], json!(id));
    assert_eq!(b["active"], false);
    assert_eq!(b["displayName"], "Barbara Jensen");
    assert_eq!(b["nickName"], "B");
    assert_eq!(
        b["name"],
        json!({"givenName": "Barbara", "familyName": "Jensen"})
    );
    assert_eq!(
        b["emails"],
        json!([
            {"value": "babs@work.com", "type": "work", "primary": true},
            {"value": "babs@other.net", "type": "other"}
        ])
    );
    assert!(b.get("phoneNumbers").is_none());
    assert_eq!(
        b[ENTERPRISE],
        json!({"employeeNumber": "2", "manager": {"value": "boss-id"}})
    );
    assert_eq!(r.header("etag").as_deref(), Some("W/\"2\""));
    assert_eq!(s.get(&path).await?.body, r.body);

    // A PATCH whose last operation fails changes nothing.
    let before = s.get(&path).await?.body;
    for (ops, scim_type) in [
        (
            json!([{"op": "replace", "path": "displayName", "value": "X"},
                   {"op": "add", "path": "nosuch", "value": 1}]),
            "invalidPath",
        ),
        (
            json!([{"op": "replace", "path": "displayName", "value": "X"},
                   {"op": "replace", "path": "emails[type eq \"fax\"].value", "value": "f"}]),
            "noTarget",
        ),
        (
            json!([{"op": "replace", "path": "displayName", "value": "X"},
                   {"op": "replace", "path": "active", "value": "perhaps"}]),
            "invalidValue",
        ),
        (
            json!([{"op": "replace", "path": "displayName", "value": "X"},
                   {"op": "remove", "path": "userName"}]),
            "invalidValue",
        ),
        (
            json!([{"op": "replace", "path": "displayName", "value": "X"},
                   {"op": "replace", "path": "emails[type eq ]", "value": "x"}]),
            "invalidFilter",
        ),
        (json!([{"op": "remove"}]), "noTarget"),
        (
            json!([{"op": "replace", "path": "id", "value": "x"}]),
            "mutability",
        ),
        (
            json!([{"op": "replace", "path": "groups", "value": []}]),
            "mutability",
        ),
        (json!([{"op": "shuffle", "path": "title"}]), "invalidSyntax"),
    ] {
        let r = s.patch(&path, ops.clone()).await?;
        error_body(&r, 400);
        assert_eq!(r.scim_type(), scim_type, "{ops}: {}", r.body);
        assert_eq!(
            s.get(&path).await?.body,
            before,
            "{ops} must change nothing"
        );
    }
    let r = s
        .call("PATCH", &path, Some(&json!({"Operations": "nope"})), &[])
        .await?;
    error_body(&r, 400);
    error_body(
        &s.patch(
            &format!("/Users/{}", uuid::Uuid::new_v4()),
            json!([{"op": "add", "path": "title", "value": "x"}]),
        )
        .await?,
        404,
    );
    Ok(())
}

#[tokio::test]
async fn groups_members_in_every_form() -> anyhow::Result<()> {
    let s = start().await?;
    let u1 = s.user("u1", json!({"displayName": "User One"})).await?;
    let u2 = s.user("u2", json!({})).await?;
    let u3 = s.user("u3", json!({})).await?;

    let created = s
        .post(
            "/Groups",
            &json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Engineering",
                "externalId": "ak-group-1",
                "members": [{"value": u1, "display": "User One"}],
            }),
        )
        .await?;
    assert_eq!(created.status, 201, "{}", created.body);
    let g = created.id();
    let gpath = format!("/Groups/{g}");
    assert_eq!(
        created.header("location"),
        Some(format!("{}{gpath}", s.base))
    );
    assert_eq!(
        created.body["members"],
        json!([{"value": u1, "display": "User One", "$ref": format!("{}/Users/{u1}", s.base)}])
    );
    assert_eq!(created.body["meta"]["resourceType"], "Group");
    assert_eq!(s.get(&gpath).await?.body, created.body);

    let members = |r: &common::Resp| -> Vec<String> {
        r.body["members"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["value"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };

    // Authentik adds one member per operation, value-list form.
    let r = s
        .patch(
            &gpath,
            json!([
                {"op": "add", "path": "members", "value": [{"value": u2}]},
                {"op": "add", "path": "members", "value": [{"value": u3}]},
                {"op": "add", "path": "members", "value": [{"value": u2}]},
            ]),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(members(&r), vec![u1.clone(), u2.clone(), u3.clone()]);

    // The RFC's path-filter removal.
    let r = s
        .patch(
            &gpath,
            json!([{"op": "remove", "path": format!("members[value eq \"{u1}\"]")}]),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(members(&r), vec![u2.clone(), u3.clone()]);

    // Authentik's and Entra's value-list removal (operation name in any case).
    let r = s
        .patch(
            &gpath,
            json!([{"op": "Remove", "path": "members", "value": [{"value": u2}]}]),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(members(&r), vec![u3.clone()]);

    // Removing someone who is not a member is a no-op, not an error.
    let r = s
        .patch(
            &gpath,
            json!([{"op": "remove", "path": "members", "value": [{"value": u1}]}]),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(members(&r), vec![u3.clone()]);

    // Replace the member list; rename like Authentik does (path-less replace
    // carrying id and schemas).
    let r = s
        .patch(
            &gpath,
            json!([
                {"op": "replace", "path": "members", "value": [{"value": u1}, {"value": u2}]},
                {"op": "replace", "value": {
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "id": g, "displayName": "Engineers", "externalId": "ak-group-1"
                }},
            ]),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(members(&r), vec![u1.clone(), u2.clone()]);
    assert_eq!(r.body["displayName"], "Engineers");
    let r = s
        .patch(
            &gpath,
            json!([{"op": "replace", "path": "displayName", "value": "Eng"}]),
        )
        .await?;
    assert_eq!(r.body["displayName"], "Eng");

    // Users can be found by the groups they are in.
    assert_eq!(
        s.ids(&format!("/Users?{}", filter("groups.display eq \"eng\"")))
            .await?,
        vec![u1.clone(), u2.clone()]
    );
    assert_eq!(
        s.ids(&format!(
            "/Users?{}",
            filter(&format!("groups.value eq \"{g}\" and userName eq \"u2\""))
        ))
        .await?,
        vec![u2.clone()]
    );

    // A user shows the groups they are in.
    let user = s.get(&format!("/Users/{u1}")).await?;
    assert_eq!(
        user.body["groups"],
        json!([{"value": g, "display": "Eng", "$ref": format!("{}{gpath}", s.base), "type": "direct"}])
    );

    // Unknown members are refused, naming the id, and nothing changes.
    let ghost = uuid::Uuid::new_v4().to_string();
    let before = s.get(&gpath).await?.body;
    for ops in [
        json!([{"op": "remove", "path": "members", "value": [{"value": u1}]},
               {"op": "add", "path": "members", "value": [{"value": ghost}]}]),
        json!([{"op": "add", "path": "members", "value": [{"value": "not-a-uuid"}]}]),
        json!([{"op": "add", "path": "members", "value": [{"value": g, "type": "Group"}]}]),
    ] {
        let r = s.patch(&gpath, ops.clone()).await?;
        error_body(&r, 400);
        assert_eq!(r.scim_type(), "invalidValue", "{ops}");
        assert_eq!(s.get(&gpath).await?.body, before, "{ops}");
    }
    let r = s
        .patch(
            &gpath,
            json!([{"op": "add", "path": "members", "value": [{"value": ghost}]}]),
        )
        .await?;
    assert!(
        r.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&ghost)),
        "{}",
        r.body
    );
    let r = s
        .post(
            "/Groups",
            &json!({"displayName": "Ghosts", "members": [{"value": ghost}]}),
        )
        .await?;
    error_body(&r, 400);
    assert_eq!(
        s.ids(&format!("/Groups?{}", filter("displayName eq \"Ghosts\"")))
            .await?
            .len(),
        0
    );

    // displayName is unique per provider.
    let dup = s.post("/Groups", &json!({"displayName": "Eng"})).await?;
    error_body(&dup, 409);
    assert_eq!(dup.scim_type(), "uniqueness");

    // Listing: excludedAttributes=members and attributes=displayName, as
    // Authentik and Entra ask; filters on members and displayName.
    let other = s.group("Sales", &[&u3]).await?;
    let r = s.get("/Groups?excludedAttributes=members").await?;
    assert_eq!(r.body["totalResults"], 2);
    for res in r.body["Resources"].as_array().into_iter().flatten() {
        assert!(res.get("members").is_none(), "{res}");
        assert!(res["displayName"].is_string());
    }
    let r = s.get(&format!("{gpath}?attributes=displayName")).await?;
    let keys: Vec<&String> = r
        .body
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys.len(), 3, "{}", r.body);
    assert_eq!(r.body["displayName"], "Eng");
    assert_eq!(
        s.ids(&format!(
            "/Groups?{}",
            filter(&format!("members.value eq \"{u3}\""))
        ))
        .await?,
        vec![other.clone()]
    );
    assert_eq!(
        s.ids(&format!(
            "/Groups?{}",
            filter(&format!("members[value eq \"{u1}\"]"))
        ))
        .await?,
        vec![g.clone()]
    );
    assert_eq!(
        s.ids(&format!("/Groups?{}", filter("displayName eq \"eng\"")))
            .await?,
        vec![g.clone()]
    );
    assert_eq!(
        s.ids(&format!(
            "/Groups?{}",
            filter("externalId eq \"ak-group-1\"")
        ))
        .await?,
        vec![g.clone()]
    );
    assert_eq!(
        s.ids(&format!("/Groups?{}", filter("not(members pr)")))
            .await?
            .len(),
        0
    );

    // PUT replaces the group, members included.
    let r = s
        .put(
            &gpath,
            &json!({"displayName": "Eng", "members": [{"value": u3}]}),
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(members(&r), vec![u3.clone()]);
    assert!(r.body.get("externalId").is_none());
    error_body(
        &s.put(
            &format!("/Groups/{}", uuid::Uuid::new_v4()),
            &json!({"displayName": "X"}),
        )
        .await?,
        404,
    );

    // Deleting a user takes them out of their groups.
    assert_eq!(s.delete(&format!("/Users/{u3}")).await?.status, 204);
    assert!(s.get(&gpath).await?.body.get("members").is_none());
    assert_eq!(s.delete(&gpath).await?.status, 204);
    error_body(&s.get(&gpath).await?, 404);
    error_body(&s.delete(&gpath).await?, 404);
    assert!(s
        .get(&format!("/Users/{u1}"))
        .await?
        .body
        .get("groups")
        .is_none());
    Ok(())
}

#[tokio::test]
async fn etags_and_conditional_requests() -> anyhow::Result<()> {
    let s = start().await?;
    let id = s.user("etag", json!({})).await?;
    let path = format!("/Users/{id}");
    let r = s.get(&path).await?;
    let tag = r.header("etag").unwrap_or_default();
    assert_eq!(tag, "W/\"1\"");
    assert_eq!(r.body["meta"]["version"], json!(tag));

    let r = s
        .call("GET", &path, None, &[("if-none-match", &tag)])
        .await?;
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(tag.clone()));
    let r = s
        .call("GET", &path, None, &[("if-none-match", "W/\"9\"")])
        .await?;
    assert_eq!(r.status, 200);

    let body = json!({"userName": "etag", "title": "Dr"});
    let r = s
        .call("PUT", &path, Some(&body), &[("if-match", "W/\"7\"")])
        .await?;
    error_body(&r, 412);
    let r = s
        .call("PUT", &path, Some(&body), &[("if-match", &tag)])
        .await?;
    assert_eq!(r.status, 200, "{}", r.body);
    let tag2 = r.header("etag").unwrap_or_default();
    assert_eq!(tag2, "W/\"2\"");

    let ops = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                     "Operations": [{"op": "replace", "path": "title", "value": "Prof"}]});
    let r = s
        .call("PATCH", &path, Some(&ops), &[("if-match", &tag)])
        .await?;
    error_body(&r, 412);
    assert_eq!(s.get(&path).await?.body["title"], "Dr");
    let r = s
        .call("PATCH", &path, Some(&ops), &[("if-match", "\"2\"")])
        .await?;
    assert_eq!(
        r.status, 200,
        "a strong tag with the same value matches: {}",
        r.body
    );

    // Writes that change nothing keep the version.
    let r = s.call("PATCH", &path, Some(&ops), &[]).await?;
    assert_eq!(r.header("etag").as_deref(), Some("W/\"3\""));

    error_body(
        &s.call("DELETE", &path, None, &[("if-match", &tag2)])
            .await?,
        412,
    );
    assert_eq!(s.get(&path).await?.status, 200);
    assert_eq!(
        s.call("DELETE", &path, None, &[("if-match", "*")])
            .await?
            .status,
        204
    );

    // Groups carry ETags too, and membership changes bump them.
    let u = s.user("member", json!({})).await?;
    let g = s.group("G", &[]).await?;
    let gpath = format!("/Groups/{g}");
    let r = s
        .patch(
            &gpath,
            json!([{"op": "add", "path": "members", "value": [{"value": u}]}]),
        )
        .await?;
    assert_eq!(r.header("etag").as_deref(), Some("W/\"2\""));
    let before = s.get(&format!("/Users/{u}")).await?.header("etag");
    assert_eq!(
        before.as_deref(),
        Some("W/\"2\""),
        "the user's groups changed"
    );
    assert_eq!(s.delete(&format!("/Users/{u}")).await?.status, 204);
    assert_eq!(
        s.get(&gpath).await?.header("etag").as_deref(),
        Some("W/\"3\"")
    );
    Ok(())
}

#[tokio::test]
async fn authentication_limits_and_error_format() -> anyhow::Result<()> {
    let s = start_with(|p| p.with_max_body_bytes(2048)).await?;
    for headers in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "Basic Zm9vOmJhcg==")],
    ] {
        for path in ["/Users", "/ServiceProviderConfig", "/nowhere"] {
            let r = s.raw("GET", path, None, &headers).await?;
            error_body(&r, 401);
            assert!(r.header("www-authenticate").is_some());
        }
    }
    let auth = format!("Bearer {}", s.token);
    let lower = format!("bearer {}", s.token);
    assert_eq!(
        s.raw("GET", "/Users", None, &[("authorization", &lower)])
            .await?
            .status,
        200
    );
    let r = s
        .raw(
            "POST",
            "/Users",
            Some(json!({"userName": "u"}).to_string()),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
        )
        .await?;
    assert_eq!(
        r.status, 201,
        "plain application/json is accepted: {}",
        r.body
    );
    let r = s
        .raw(
            "POST",
            "/Users",
            Some(json!({"userName": "v"}).to_string()),
            &[("authorization", &auth), ("content-type", "text/plain")],
        )
        .await?;
    error_body(&r, 415);

    let big = json!({"userName": "big", "displayName": "x".repeat(4096)});
    error_body(&s.post("/Users", &big).await?, 413);
    // Without a Content-Length (chunked), the limit holds while reading.
    let status = chunked_post(&s, &format!("{{\"userName\":\"{}\"}}", "y".repeat(4096))).await?;
    assert!(status.contains(" 413 "), "{status}");
    let status = chunked_post(&s, r#"{"userName":"small"}"#).await?;
    assert!(status.contains(" 201 "), "{status}");
    let r = s
        .raw(
            "POST",
            "/Users",
            Some("{not json".into()),
            &[("authorization", &auth)],
        )
        .await?;
    error_body(&r, 400);
    assert_eq!(r.scim_type(), "invalidSyntax");
    let r = s.post("/Users", &json!(["array"])).await?;
    error_body(&r, 400);
    let r = s
        .post("/Users", &json!({"displayName": "no userName"}))
        .await?;
    error_body(&r, 400);
    assert_eq!(r.scim_type(), "invalidValue");
    let r = s
        .post(
            "/Users",
            &json!({"userName": "x", "emails": "not-a-list-of-objects", "active": 3}),
        )
        .await?;
    error_body(&r, 400);

    error_body(&s.get("/nowhere").await?, 404);
    error_body(&s.get("/Users/a/b").await?, 404);
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        for path in ["/ServiceProviderConfig", "/Schemas", "/ResourceTypes"] {
            error_body(&s.call(method, path, None, &[]).await?, 405);
        }
    }
    error_body(&s.call("DELETE", "/Users", None, &[]).await?, 405);
    Ok(())
}

/// POSTs `body` to /Users with chunked transfer encoding over a plain TCP
/// connection and returns the response's status line.
async fn chunked_post(s: &common::Server, body: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = reqwest::Url::parse(&s.base)?;
    let port = url.port().unwrap_or(80);
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut req = format!(
        "POST {}/Users HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        url.path(),
        s.token
    );
    for chunk in body.as_bytes().chunks(512) {
        req.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            String::from_utf8_lossy(chunk)
        ));
    }
    req.push_str("0\r\n\r\n");
    conn.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        conn.read_to_end(&mut resp),
    )
    .await;
    let text = String::from_utf8_lossy(&resp);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

#[tokio::test]
async fn discovery_endpoints() -> anyhow::Result<()> {
    let s = start().await?;
    let spc = s.get("/ServiceProviderConfig").await?;
    assert_eq!(spc.status, 200);
    let b = &spc.body;
    assert_eq!(
        b["schemas"],
        json!(["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"])
    );
    assert_eq!(b["patch"]["supported"], true);
    assert_eq!(b["bulk"]["supported"], false);
    assert_eq!(b["filter"], json!({"supported": true, "maxResults": 100}));
    assert_eq!(b["changePassword"]["supported"], false);
    assert_eq!(b["sort"]["supported"], false);
    assert_eq!(b["etag"]["supported"], true);
    assert_eq!(b["authenticationSchemes"][0]["type"], "oauthbearertoken");

    let rts = s.get("/ResourceTypes").await?;
    assert_eq!(rts.body["totalResults"], 2);
    let user = s.get("/ResourceTypes/User").await?;
    assert_eq!(user.body["endpoint"], "/Users");
    assert_eq!(
        user.body["schema"],
        "urn:ietf:params:scim:schemas:core:2.0:User"
    );
    assert_eq!(
        user.body["schemaExtensions"],
        json!([{"schema": ENTERPRISE, "required": false}])
    );
    assert_eq!(
        s.get("/ResourceTypes/Group").await?.body["endpoint"],
        "/Groups"
    );
    error_body(&s.get("/ResourceTypes/Printer").await?, 404);

    let schemas = s.get("/Schemas").await?;
    let ids: Vec<&str> = schemas.body["Resources"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["id"].as_str()).collect())
        .unwrap_or_default();
    for want in [
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:core:2.0:Group",
        ENTERPRISE,
    ] {
        assert!(ids.contains(&want), "{want} in {ids:?}");
    }
    let one = s.get(&format!("/Schemas/{ENTERPRISE}")).await?;
    assert_eq!(one.status, 200);
    let attrs: Vec<&str> = one.body["attributes"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(attrs.contains(&"employeeNumber") && attrs.contains(&"manager"));
    error_body(&s.get("/Schemas/urn:nope").await?, 404);
    Ok(())
}
