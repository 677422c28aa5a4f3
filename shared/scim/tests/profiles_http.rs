//! The exact requests each built-in profile produces, against a recording
//! SCIM server: discovery, lookup, a create, a title update and a
//! deactivation. The ServiceProviderConfig documents served here are test
//! inputs chosen to exercise each profile, not claims about the real apps.

mod recorder;

use std::time::Duration;

use recorder::{spc, GroupsMode, Listing, Recorded, Recorder};
use serde_json::{json, Value};
use tenure_scim::profile::FALLBACK_CAPS;
use tenure_scim::{
    builtin, diff_group, diff_with, group_if_match, if_match, Auth, Capabilities, CapabilityCache,
    Desired, GroupOp, GroupSpec, Op, PatchOp, Profile, RemoteUser, ScimClient, ScimError, UserSpec,
};

const CORE: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ALL: Capabilities = Capabilities {
    patch: true,
    filter: true,
    etag: true,
};

fn spec() -> UserSpec {
    UserSpec {
        user_name: "ada".into(),
        external_id: "E-1".into(),
        given_name: "Ada".into(),
        family_name: "Lovelace".into(),
        display_name: "Ada Lovelace".into(),
        email: "ada@example.com".into(),
        active: true,
        title: Some("Engineer".into()),
        department: None,
        employee_number: None,
        ..UserSpec::default()
    }
}

fn bearer() -> Auth {
    Auth::Bearer("tok".into())
}

fn basic() -> Auth {
    Auth::Basic {
        user: "admin".into(),
        password: "app-password".into(),
    }
}

fn client(server: &Recorder, auth: Auth) -> ScimClient {
    ScimClient::new(&server.base_url, auth, Duration::from_secs(5)).expect("client")
}

fn profile(name: &str) -> Profile {
    builtin(name).expect(name)
}

// ---- the expected requests ----

fn req(
    method: &str,
    path: &str,
    if_match: Option<&str>,
    auth: &str,
    body: Option<Value>,
) -> Recorded {
    Recorded {
        method: method.into(),
        path: path.into(),
        if_match: if_match.map(str::to_owned),
        auth: Some(auth.into()),
        body,
    }
}

fn get_spc(auth: &str) -> Recorded {
    req("GET", "/ServiceProviderConfig", None, auth, None)
}

fn lookup(attr: &str, value: &str, auth: &str) -> Recorded {
    let path = format!("/Users?filter={attr} eq \"{value}\"");
    req("GET", &path, None, auth, None)
}

fn user_body(external_id: bool, title: &str, active: bool) -> Value {
    let mut body = json!({
        "schemas": [CORE],
        "userName": "ada",
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "displayName": "Ada Lovelace",
        "emails": [{"value": "ada@example.com", "type": "work", "primary": true}],
        "active": active,
        "title": title,
    });
    if external_id {
        body["externalId"] = "E-1".into();
    }
    body
}

fn post(external_id: bool, auth: &str) -> Recorded {
    req(
        "POST",
        "/Users",
        None,
        auth,
        Some(user_body(external_id, "Engineer", true)),
    )
}

fn patch(op_path: &str, value: Value, if_match: Option<&str>, auth: &str) -> Recorded {
    let body = json!({
        "schemas": [PATCH_OP],
        "Operations": [{"op": "replace", "path": op_path, "value": value}],
    });
    req("PATCH", "/Users/u1", if_match, auth, Some(body))
}

fn patch_title(if_match: Option<&str>, auth: &str) -> Recorded {
    patch("title", "Staff Engineer".into(), if_match, auth)
}

fn patch_inactive(if_match: Option<&str>, auth: &str) -> Recorded {
    patch("active", false.into(), if_match, auth)
}

fn put(active: bool, if_match: Option<&str>, auth: &str) -> Recorded {
    let mut body = user_body(true, "Staff Engineer", active);
    body["id"] = "u1".into();
    req("PUT", "/Users/u1", if_match, auth, Some(body))
}

const V1: Option<&str> = Some("W/\"1\"");
const V2: Option<&str> = Some("W/\"2\"");

// ---- the scenario ----

fn only(ops: Vec<Op>) -> Op {
    assert_eq!(ops.len(), 1, "{ops:?}");
    ops.into_iter().next().expect("one op")
}

/// Discovery, lookup by the profile's attributes (if filtering is on), then
/// create, retitle and deactivate, planned with `diff_with` and sent with
/// `execute_with` and `If-Match` where the capabilities allow it.
async fn lifecycle(
    profile: &Profile,
    spc: Option<Value>,
    auth: Auth,
) -> (Capabilities, Vec<Recorded>) {
    let server = Recorder::start(spc).await;
    let client = client(&server, auth);
    let (found, _) = client.discover(profile).await.expect("discover");
    let caps = found.caps;
    let want = spec();
    if caps.filter {
        for attr in profile.lookup_attributes() {
            let value = match *attr {
                "externalId" => &want.external_id,
                _ => &want.user_name,
            };
            let hit = client
                .find_user_with(attr, value, profile)
                .await
                .expect("lookup");
            assert_eq!(hit.value, None);
        }
    }
    let create = only(diff_with(
        &Desired::Present(want.clone()),
        None,
        caps,
        profile,
    ));
    assert!(matches!(create, Op::Create(_)), "{create:?}");
    let created = client
        .execute_with(&create, profile, None)
        .await
        .expect("create")
        .value
        .expect("created user");

    let moved = UserSpec {
        title: Some("Staff Engineer".into()),
        ..want
    };
    let update = only(diff_with(
        &Desired::Present(moved),
        Some(&created),
        caps,
        profile,
    ));
    let updated = client
        .execute_with(&update, profile, if_match(caps, Some(&created)))
        .await
        .expect("update")
        .value
        .expect("updated user");
    assert_eq!(updated.title.as_deref(), Some("Staff Engineer"));

    let deactivate = only(diff_with(
        &Desired::Deactivated,
        Some(&updated),
        caps,
        profile,
    ));
    let after = client
        .execute_with(&deactivate, profile, if_match(caps, Some(&updated)))
        .await
        .expect("deactivate")
        .value
        .expect("deactivated user");
    assert!(!after.active);
    assert_eq!(
        after.title.as_deref(),
        Some("Staff Engineer"),
        "deactivation keeps the profile"
    );
    (caps, server.log())
}

#[tokio::test]
async fn generic_discovers_looks_up_and_patches_with_if_match() {
    let (caps, log) = lifecycle(&profile("generic"), Some(spc(true, true, true)), bearer()).await;
    assert_eq!(caps, ALL);
    assert_eq!(
        log,
        vec![
            get_spc("Bearer"),
            lookup("externalId", "E-1", "Bearer"),
            lookup("userName", "ada", "Bearer"),
            post(true, "Bearer"),
            patch_title(V1, "Bearer"),
            patch_inactive(V2, "Bearer"),
        ]
    );
}

#[tokio::test]
async fn generic_uses_put_when_discovery_disables_patch() {
    let (caps, log) = lifecycle(&profile("generic"), Some(spc(false, true, true)), bearer()).await;
    assert!(!caps.patch);
    assert_eq!(
        log,
        vec![
            get_spc("Bearer"),
            lookup("externalId", "E-1", "Bearer"),
            lookup("userName", "ada", "Bearer"),
            post(true, "Bearer"),
            // PUT carries the whole account, the deactivating one included.
            put(true, V1, "Bearer"),
            put(false, V2, "Bearer"),
        ]
    );
}

#[tokio::test]
async fn gitlab_never_discovers_and_never_puts() {
    // This server would say "no PATCH, no filter"; GitLab has no such
    // endpoint, so the profile does not ask and PATCHes anyway.
    let (caps, log) = lifecycle(&profile("gitlab"), Some(spc(false, false, true)), bearer()).await;
    assert_eq!(caps, profile("gitlab").assumed);
    assert_eq!(
        log,
        vec![
            lookup("externalId", "E-1", "Bearer"),
            lookup("userName", "ada", "Bearer"),
            post(true, "Bearer"),
            patch_title(None, "Bearer"),
            patch_inactive(None, "Bearer"),
        ]
    );
}

#[tokio::test]
async fn gitlab_refuses_a_replace_without_sending_it() {
    let server = Recorder::start(None).await;
    let client = client(&server, bearer());
    let op = Op::Replace {
        id: "u1".into(),
        spec: spec(),
    };
    let err = client
        .execute_with(&op, &profile("gitlab"), None)
        .await
        .expect_err("PUT not allowed");
    assert!(matches!(err, ScimError::Config(_)), "{err}");
    assert!(server.log().is_empty());
}

#[tokio::test]
async fn zulip_falls_back_when_discovery_is_missing() {
    let (caps, log) = lifecycle(&profile("zulip"), None, bearer()).await;
    assert_eq!(caps, FALLBACK_CAPS);
    assert_eq!(
        log,
        vec![
            get_spc("Bearer"),
            lookup("externalId", "E-1", "Bearer"),
            lookup("userName", "ada", "Bearer"),
            post(true, "Bearer"),
            patch_title(None, "Bearer"),
            patch_inactive(None, "Bearer"),
        ]
    );
}

#[tokio::test]
async fn nextcloud_never_sends_or_filters_on_external_id() {
    let nextcloud = profile("nextcloud");
    let (caps, log) = lifecycle(&nextcloud, Some(spc(true, true, true)), basic()).await;
    assert_eq!(caps, ALL);
    assert_eq!(
        log,
        vec![
            get_spc("Basic"),
            lookup("userName", "ada", "Basic"),
            post(false, "Basic"),
            patch_title(V1, "Basic"),
            patch_inactive(V2, "Basic"),
        ]
    );
    for r in &log {
        assert!(!r.path.contains("externalId"), "{r:?}");
        let body = r.body.as_ref().map(Value::to_string).unwrap_or_default();
        assert!(!body.contains("externalId"), "{r:?}");
    }

    // Bodies go as application/json (older releases take nothing else).
    let server = Recorder::start(None).await;
    let json_client = ScimClient::for_profile(
        &server.base_url,
        basic(),
        Duration::from_secs(5),
        &nextcloud,
    )
    .expect("client");
    json_client
        .create_user_with(&spec(), &nextcloud)
        .await
        .expect("create");
    assert_eq!(server.log(), vec![post(false, "Basic")]);
    assert_eq!(
        server.content_types(),
        vec![Some("application/json".to_string())]
    );

    // Asking for it anyway is refused before anything is sent.
    let server = Recorder::start(None).await;
    let client = client(&server, basic());
    let err = client
        .find_user_with("externalId", "E-1", &nextcloud)
        .await
        .expect_err("no externalId lookups");
    assert!(matches!(err, ScimError::Config(_)));
    let patch = Op::Patch {
        id: "u1".into(),
        ops: vec![PatchOp::replace("externalId", "E-1")],
    };
    let err = client
        .execute_with(&patch, &nextcloud, None)
        .await
        .expect_err("no externalId patches");
    assert!(matches!(err, ScimError::Config(_)));
    assert!(server.log().is_empty());
}

const CORE_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

fn group_spec(name: &str, members: &[&str]) -> GroupSpec {
    GroupSpec {
        display_name: name.into(),
        external_id: Some("G-1".into()),
        members: members.iter().map(|m| (*m).to_owned()).collect(),
    }
}

/// Nextcloud's scimserviceprovider: groups are created with POST, changed
/// only with PUT and the full member list (its routes have no PATCH), the
/// id is the URL-encoded displayName, bodies go as `application/json`, and
/// the `admin` group is never updated or deleted.
#[tokio::test]
async fn nextcloud_creates_groups_and_changes_them_by_put_as_json() {
    let nextcloud = profile("nextcloud");
    let server = Recorder::start(Some(spc(true, true, true))).await;
    server.set_groups_mode(GroupsMode::Nextcloud);
    let admin = server.seed_group("admin", &["root"]);
    let client = ScimClient::for_profile(
        &server.base_url,
        basic(),
        Duration::from_secs(5),
        &nextcloud,
    )
    .expect("client");
    let (found, _) = client.discover(&nextcloud).await.expect("discover");
    let caps = found.caps;
    assert!(
        caps.patch,
        "discovery says PATCH; the profile still PUTs groups"
    );

    let want = group_spec("Sales Team", &["ada"]);
    let missing = client.find_group("Sales Team").await.expect("lookup").value;
    let create = diff_group(&want, missing.as_ref(), caps, &nextcloud, 10);
    assert!(
        matches!(create.as_slice(), [GroupOp::Create(_)]),
        "{create:?}"
    );
    let created = client
        .execute_group(&create[0], &nextcloud, None)
        .await
        .expect("create")
        .value
        .expect("created group");
    assert_eq!(created.id, "Sales+Team", "the id is the URL-encoded name");

    // Bob joins, Ada leaves: one PUT with the whole member list.
    let moved = group_spec("Sales Team", &["bob"]);
    let update = diff_group(&moved, Some(&created), caps, &nextcloud, 10);
    assert!(
        matches!(update.as_slice(), [GroupOp::Replace { .. }]),
        "{update:?}"
    );
    let updated = client
        .execute_group(&update[0], &nextcloud, group_if_match(caps, Some(&created)))
        .await
        .expect("put")
        .value
        .expect("group");
    assert_eq!(updated.members, ["bob".to_string()].into_iter().collect());

    assert_eq!(
        server.log(),
        vec![
            get_spc("Basic"),
            req(
                "GET",
                "/Groups?filter=displayName eq \"Sales Team\"",
                None,
                "Basic",
                None
            ),
            req(
                "POST",
                "/Groups",
                None,
                "Basic",
                Some(json!({
                    "schemas": [CORE_GROUP], "displayName": "Sales Team",
                    "members": [{"value": "ada"}],
                })),
            ),
            req(
                // The recorder decodes `+` as a space; the raw target below
                // shows the id went as sent.
                "PUT",
                "/Groups/Sales Team",
                V1,
                "Basic",
                Some(json!({
                    "schemas": [CORE_GROUP], "id": "Sales+Team", "displayName": "Sales Team",
                    "members": [{"value": "bob"}],
                })),
            ),
        ]
    );
    assert_eq!(server.raw_targets()[3], "/Groups/Sales+Team");
    // Every body went as application/json, which older releases require.
    let types = server.content_types();
    assert_eq!(types[2].as_deref(), Some("application/json"));
    assert_eq!(types[3].as_deref(), Some("application/json"));

    // A PATCH of a group is refused before it is sent, and so is any change
    // to `admin`, by id or by name.
    let patch = GroupOp::AddMembers {
        id: created.id.clone(),
        members: vec!["cy".into()],
    };
    for op in [
        patch,
        GroupOp::Delete { id: admin.clone() },
        GroupOp::Replace {
            id: admin.clone(),
            spec: group_spec("admin", &[]),
        },
        GroupOp::Rename {
            id: "x".into(),
            display_name: "admin".into(),
        },
    ] {
        let err = client
            .execute_group(&op, &nextcloud, None)
            .await
            .expect_err("refused");
        assert!(matches!(err, ScimError::Config(_)), "{op:?}: {err}");
    }
    assert_eq!(server.log().len(), 4, "nothing more was sent");
    assert_eq!(
        server.group(&admin).expect("admin")["members"],
        json!([{"value": "root"}])
    );

    // An id with reserved characters is percent-encoded once more as a path
    // segment and reaches the same group.
    let odd = server.seed_group("R&D / Ops", &[]);
    assert_eq!(odd, "R%26D+%2F+Ops");
    let got = client
        .get_group(&odd)
        .await
        .expect("get")
        .value
        .expect("found");
    assert_eq!(got.display_name, "R&D / Ops");
    assert_eq!(
        server.raw_targets().last().map(String::as_str),
        Some("/Groups/R%2526D+%252F+Ops")
    );
}

#[tokio::test]
async fn keycloak_follows_discovery_without_filter() {
    let (caps, log) = lifecycle(&profile("keycloak"), Some(spc(true, false, true)), bearer()).await;
    assert!(!caps.filter);
    assert_eq!(
        log,
        vec![
            get_spc("Bearer"),
            post(true, "Bearer"),
            patch_title(V1, "Bearer"),
            patch_inactive(V2, "Bearer"),
        ]
    );
}

#[tokio::test]
async fn openwebui_without_etag_support_sends_no_if_match() {
    let (caps, log) = lifecycle(
        &profile("openwebui"),
        Some(spc(true, true, false)),
        bearer(),
    )
    .await;
    assert!(!caps.etag);
    assert_eq!(
        log,
        vec![
            get_spc("Bearer"),
            lookup("externalId", "E-1", "Bearer"),
            lookup("userName", "ada", "Bearer"),
            post(true, "Bearer"),
            patch_title(None, "Bearer"),
            patch_inactive(None, "Bearer"),
        ]
    );
}

#[tokio::test]
async fn grafana_behaves_like_generic() {
    let (caps, log) = lifecycle(&profile("grafana"), Some(spc(true, true, true)), bearer()).await;
    assert_eq!(caps, ALL);
    assert_eq!(
        log,
        vec![
            get_spc("Bearer"),
            lookup("externalId", "E-1", "Bearer"),
            lookup("userName", "ada", "Bearer"),
            post(true, "Bearer"),
            patch_title(V1, "Bearer"),
            patch_inactive(V2, "Bearer"),
        ]
    );
}

// ---- ETags ----

#[tokio::test]
async fn stale_if_match_is_a_412_then_reread_succeeds() {
    let server = Recorder::start(Some(spc(true, true, true))).await;
    let client = client(&server, bearer());
    let created = client.create_user(&spec()).await.expect("create").value;
    assert_eq!(created.etag.as_deref(), V1);
    server.touch(&created.id); // someone else changed it: now W/"2"

    let op = Op::Patch {
        id: created.id.clone(),
        ops: vec![PatchOp::replace("active", false)],
    };
    let err = client
        .execute_if_match(&op, if_match(ALL, Some(&created)))
        .await
        .expect_err("stale");
    assert!(err.is_precondition_failed(), "{err}");
    assert_eq!(err.status(), Some(412));
    assert!(
        !err.is_retryable(),
        "repeating the same request cannot help"
    );
    assert_eq!(err.record().and_then(|r| r.status), Some(412));
    assert_eq!(
        server.user(&created.id).expect("kept")["active"],
        true,
        "nothing was written"
    );

    // Re-read, re-plan, resend with the new version.
    let fresh: RemoteUser = client
        .get_user(&created.id)
        .await
        .expect("get")
        .value
        .expect("exists");
    assert_eq!(fresh.etag.as_deref(), V2);
    let op = only(diff_with(
        &Desired::Deactivated,
        Some(&fresh),
        ALL,
        &Profile::generic(),
    ));
    let done = client
        .execute_if_match(&op, if_match(ALL, Some(&fresh)))
        .await
        .expect("fresh version");
    assert_eq!(done.value.map(|u| u.active), Some(false));

    // DELETE is conditional too.
    let del = Op::Delete {
        id: created.id.clone(),
    };
    let err = client
        .execute_if_match(&del, V1)
        .await
        .expect_err("stale delete");
    assert!(err.is_precondition_failed());
    assert!(server.user(&created.id).is_some());
    client
        .execute_if_match(&del, Some("W/\"3\""))
        .await
        .expect("delete");
    assert!(server.user(&created.id).is_none());

    let log = server.log();
    let sent: Vec<(&str, Option<&str>)> = log
        .iter()
        .map(|r| (r.method.as_str(), r.if_match.as_deref()))
        .collect();
    assert_eq!(
        sent,
        vec![
            ("POST", None),
            ("PATCH", V1),
            ("GET", None),
            ("PATCH", V2),
            ("DELETE", V1),
            ("DELETE", Some("W/\"3\"")),
        ]
    );
}

#[tokio::test]
async fn without_etag_capability_or_with_plain_execute_no_if_match() {
    let server = Recorder::start(None).await;
    let client = client(&server, bearer());
    let created = client.create_user(&spec()).await.expect("create").value;
    let no_etag = Capabilities { etag: false, ..ALL };
    assert_eq!(if_match(no_etag, Some(&created)), None);
    assert_eq!(if_match(ALL, None), None);
    let op = Op::Patch {
        id: created.id.clone(),
        ops: vec![PatchOp::replace("title", "x")],
    };
    client.execute(&op).await.expect("plain execute");
    client
        .execute_if_match(&op, if_match(no_etag, Some(&created)))
        .await
        .expect("no etag capability");
    assert!(server.log().iter().all(|r| r.if_match.is_none()));
    // A version that cannot be a header value is refused, not sent.
    let err = client
        .execute_if_match(&op, Some("W/\"1\"\r\nX-Evil: 1"))
        .await
        .expect_err("bad etag");
    assert!(matches!(err, ScimError::Config(_)));
    assert_eq!(server.log().len(), 3);
}

// ---- paging guards ----

async fn seeded(n: usize) -> (Recorder, ScimClient) {
    let server = Recorder::start(None).await;
    for i in 0..n {
        server.seed(&format!("user{i}"));
    }
    let client = client(&server, bearer());
    (server, client)
}

fn paths(records: &[tenure_scim::CallRecord]) -> Vec<String> {
    records.iter().map(|r| r.path.clone()).collect()
}

#[tokio::test]
async fn list_pages_honest_server() {
    let (_server, client) = seeded(5).await;
    let page = client.list_users(3, 2).await.expect("page").value;
    assert_eq!(page.total_results, Some(5));
    assert_eq!(page.start_index, 3);
    let names: Vec<&str> = page.items.iter().map(|u| u.user_name.as_str()).collect();
    assert_eq!(names, ["user2", "user3"]);
    let (users, records) = client.list_all_users(2).await.expect("all");
    assert_eq!(users.len(), 5);
    assert_eq!(
        paths(&records),
        [
            "/Users?startIndex=1&count=2",
            "/Users?startIndex=3&count=2",
            "/Users?startIndex=5&count=2"
        ]
    );
    assert!(matches!(
        client.list_users(0, 2).await,
        Err(ScimError::Config(_))
    ));
    assert!(matches!(
        client.list_all_users(0).await,
        Err(ScimError::Config(_))
    ));
}

#[tokio::test]
async fn list_survives_a_server_that_ignores_count() {
    let (server, client) = seeded(5).await;
    server.set_listing(Listing::IgnoresCount);
    let (users, records) = client.list_all_users(2).await.expect("all");
    assert_eq!(users.len(), 5);
    assert_eq!(records.len(), 1, "5 received, start 6 > total 5");
}

#[tokio::test]
async fn list_stops_on_an_empty_page_when_the_total_is_too_high() {
    let (server, client) = seeded(5).await;
    server.set_listing(Listing::ReportsTotal(100));
    let (users, records) = client.list_all_users(2).await.expect("all");
    assert_eq!(users.len(), 5);
    assert_eq!(records.len(), 4, "the fourth page is empty");
}

#[tokio::test]
async fn list_trusts_a_total_that_is_too_low() {
    // Documented limitation: totalResults is the only end marker besides an
    // empty page, so an understated total ends the listing early.
    let (server, client) = seeded(5).await;
    server.set_listing(Listing::ReportsTotal(3));
    let (users, records) = client.list_all_users(2).await.expect("all");
    assert_eq!(users.len(), 4);
    assert_eq!(records.len(), 2);
}

#[tokio::test]
async fn list_refuses_a_server_that_ignores_start_index() {
    let (server, client) = seeded(5).await;
    server.set_listing(Listing::IgnoresStartIndex);
    let err = client.list_all_users(2).await.expect_err("loops");
    assert!(matches!(err, ScimError::InvalidResponse { .. }), "{err}");
    assert!(err.to_string().contains("ignore startIndex"), "{err}");
    assert_eq!(server.log().len(), 2);
}

#[tokio::test]
async fn list_caps_the_number_of_pages() {
    let (server, client) = seeded(0).await;
    server.set_listing(Listing::Endless);
    let err = client
        .list_all_users_capped(2, 3)
        .await
        .expect_err("endless");
    assert!(matches!(err, ScimError::InvalidResponse { .. }), "{err}");
    assert!(err.to_string().contains("more than 3 pages"), "{err}");
    assert_eq!(server.log().len(), 3);
}

#[tokio::test]
async fn list_drops_count_for_good_when_the_server_fails_on_it() {
    let (server, client) = seeded(5).await;
    server.set_listing(Listing::FailsOnCount);
    let (users, records) = client.list_all_users(100).await.expect("all");
    assert_eq!(users.len(), 5);
    assert_eq!(
        paths(&records),
        [
            "/Users?startIndex=1",
            "/Users?startIndex=3",
            "/Users?startIndex=5"
        ]
    );
    let sent: Vec<String> = server.log().into_iter().map(|r| r.path).collect();
    assert_eq!(
        sent[0], "/Users?startIndex=1&count=100",
        "tried once with count"
    );
    assert_eq!(sent.iter().filter(|p| p.contains("count=")).count(), 1);
    assert_eq!(client.learned().paging, tenure_scim::Paging::StartIndexOnly);
    let lessons = client.take_lessons();
    assert_eq!(lessons.len(), 1);
    assert!(lessons[0].reason.contains("HTTP 500"), "{lessons:?}");
    // Learned once: the next listing never sends count.
    server.clear_log();
    client.list_all_users(100).await.expect("again");
    assert!(server.log().iter().all(|r| !r.path.contains("count=")));
    assert!(client.take_lessons().is_empty());
}

#[tokio::test]
async fn list_without_total_results_ends_on_an_empty_page() {
    let (server, client) = seeded(5).await;
    server.set_listing(Listing::NoTotal);
    let page = client.list_users(1, 2).await.expect("page").value;
    assert_eq!(page.total_results, None);
    let (users, records) = client.list_all_users(2).await.expect("all");
    assert_eq!(users.len(), 5);
    assert_eq!(records.len(), 4, "the fourth page is empty");
    // A server that ignores startIndex and says no total answers the same
    // page again: that ends the listing instead of failing it.
    server.set_listing(Listing::IgnoresCount);
    let (users, _) = client.list_all_users(2).await.expect("all");
    assert_eq!(users.len(), 5);
}

#[tokio::test]
async fn a_lookup_the_server_does_not_filter_matches_here_and_scans_past_the_first_page() {
    let (server, client) = seeded(0).await;
    for i in 0..3 {
        server.seed(&format!("other{i}"));
    }
    let ada = server.seed("ada");
    // Every list holds everyone, two at a time: Ada is on the second page.
    server.set_listing(Listing::IgnoresFilter);
    let found = client
        .find_user("userName", "ADA")
        .await
        .expect("lookup")
        .value
        .expect("found beyond the first page");
    assert_eq!(found.id, ada);
    assert!(client.learned().filter_ignored);
    let none = client
        .find_user("userName", "nobody")
        .await
        .expect("lookup")
        .value;
    assert_eq!(none, None, "no stranger is taken for a match");
}

// ---- discovery cache ----

#[tokio::test]
async fn capabilities_are_cached_for_the_ttl() {
    let server = Recorder::start(Some(spc(false, true, true))).await;
    let client = client(&server, bearer());
    let generic = Profile::generic();
    let hour = CapabilityCache::new(Duration::from_secs(3600));

    let (first, record) = client
        .capabilities(&generic, &hour, None)
        .await
        .expect("first");
    assert_eq!(
        record.map(|r| r.path),
        Some("/ServiceProviderConfig".into())
    );
    assert_eq!(first.discovered, Some(first.caps));
    assert!(!first.caps.patch);
    let (again, record) = client
        .capabilities(&generic, &hour, Some(&first))
        .await
        .expect("cached");
    assert_eq!(again, first);
    assert!(record.is_none());
    assert_eq!(server.log().len(), 1);

    let stale = CapabilityCache::new(Duration::ZERO);
    client
        .capabilities(&generic, &stale, Some(&first))
        .await
        .expect("refetch");
    assert_eq!(server.log().len(), 2);

    // A profile without discovery never asks, and its restrictions apply.
    let gitlab = profile("gitlab");
    let (caps, record) = client
        .capabilities(&gitlab, &stale, None)
        .await
        .expect("assumed");
    assert!(record.is_none());
    assert_eq!(caps.discovered, None);
    assert_eq!(caps.caps, gitlab.assumed);
    assert_eq!(server.log().len(), 2);
}

/// A generic profile shaped for a server that requires `name.formatted`,
/// refuses `emails[].type`/`primary` and wants a constant `userType` and an
/// extension attribute: the create carries exactly the shaped body (the one
/// `planned_request` shows), and because only what is sent is compared, the
/// next diff against the stored account is empty and a retitle patches only
/// the title.
#[tokio::test]
async fn a_shaped_profile_sends_exactly_the_shaped_body_and_then_nothing_more() {
    const EXT: &str = "urn:acme:params:scim:schemas:extension:acme:1.0:User";
    let shape: tenure_scim::ShapeOverride = serde_json::from_value(json!({
        "name_formatted": true,
        "omit": ["emails.type", "emails.primary"],
        "constant": {"userType": "Employee", (format!("{EXT}:plan")): {"tier": "gold"}},
    }))
    .expect("shape");
    let profile = Profile {
        shape: Profile::generic().shape.overridden(&shape).expect("valid"),
        ..Profile::generic()
    };
    let server = Recorder::start(Some(spc(true, true, true))).await;
    let client = client(&server, bearer());
    let want = spec();
    let create = only(diff_with(
        &Desired::Present(want.clone()),
        None,
        ALL,
        &profile,
    ));
    let created = client
        .execute_with(&create, &profile, None)
        .await
        .expect("create")
        .value
        .expect("created user");
    let expected_body = json!({
        "schemas": [CORE, EXT],
        "userName": "ada",
        "externalId": "E-1",
        "name": {"givenName": "Ada", "familyName": "Lovelace", "formatted": "Ada Lovelace"},
        "displayName": "Ada Lovelace",
        "emails": [{"value": "ada@example.com"}],
        "active": true,
        "title": "Engineer",
        "userType": "Employee",
        EXT: {"plan": {"tier": "gold"}},
    });
    assert_eq!(
        tenure_scim::planned_request(&create, &profile),
        ("POST", "/Users".to_owned(), Some(expected_body.clone())),
        "the plan shows the body that is sent"
    );
    assert!(
        diff_with(
            &Desired::Present(want.clone()),
            Some(&created),
            ALL,
            &profile
        )
        .is_empty(),
        "the shaped account reads back in sync"
    );
    let moved = UserSpec {
        title: Some("Staff Engineer".into()),
        ..want
    };
    let update = only(diff_with(
        &Desired::Present(moved),
        Some(&created),
        ALL,
        &profile,
    ));
    client
        .execute_with(&update, &profile, if_match(ALL, Some(&created)))
        .await
        .expect("update");
    assert_eq!(
        server.log(),
        vec![
            req("POST", "/Users", None, "Bearer", Some(expected_body)),
            patch_title(V1, "Bearer"),
        ]
    );
}

/// Group constants of the shape go into a group's create, and nothing of the
/// User shape does.
#[tokio::test]
async fn group_constants_reach_the_group_create() {
    const EXT: &str = "urn:acme:params:scim:schemas:extension:acme:1.0:Group";
    let shape: tenure_scim::ShapeOverride = serde_json::from_value(json!({
        "omit": ["emails.type"],
        "constant": {"userType": "Employee"},
        "group": {"constant": {(format!("{EXT}:kind")): "department"}},
    }))
    .expect("shape");
    let profile = Profile {
        shape: Profile::generic().shape.overridden(&shape).expect("valid"),
        ..Profile::generic()
    };
    let server = Recorder::start(Some(spc(true, true, true))).await;
    let client = client(&server, bearer());
    let spec = tenure_scim::GroupSpec {
        display_name: "Engineering".into(),
        external_id: None,
        members: Default::default(),
    };
    client
        .create_group(&spec, &profile)
        .await
        .expect("create group");
    let log = server.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        log[0].body,
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group", EXT],
            "displayName": "Engineering",
            "members": [],
            EXT: {"kind": "department"},
        }))
    );
}
