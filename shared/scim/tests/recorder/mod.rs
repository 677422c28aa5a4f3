//! A small in-memory SCIM server that records every request it gets: method,
//! path (query percent-decoded, base path stripped), `If-Match`, the
//! `Authorization` scheme and the JSON body. It answers plausibly: it keeps
//! users, versions them (`W/"n"`), enforces `If-Match`, applies simple PATCH
//! operations and pages lists, with switches to misbehave.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const BASE_PATH: &str = "/app/v2";
const CORE_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const CORE_GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub method: String,
    /// Relative to [`BASE_PATH`], query decoded: `/Users?filter=userName eq "ada"`.
    pub path: String,
    pub if_match: Option<String>,
    /// Only the scheme (`Bearer`, `Basic`), never the credential.
    pub auth: Option<String>,
    pub body: Option<Value>,
}

/// How `GET /Users?startIndex&count` pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    Honest,
    /// Returns every user whatever `count` says.
    IgnoresCount,
    /// Always returns the first `count` users.
    IgnoresStartIndex,
    /// Pages honestly but reports this `totalResults`.
    ReportsTotal(usize),
    /// Makes up `count` new users for every page and claims a huge total.
    Endless,
    /// Answers 500 to a list carrying `count`; without it, pages of 2.
    FailsOnCount,
    /// Pages honestly but sends no `totalResults`.
    NoTotal,
    /// Ignores `filter` and answers pages of at most 2 users.
    IgnoresFilter,
}

/// How `/Groups` behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupsMode {
    /// Ids `g1`, `g2`…; PATCH applies `add`/`remove`/`replace` of members.
    Plain,
    /// As Nextcloud's scimserviceprovider: the id is the URL-encoded
    /// displayName (`+` for a space), 409 for a taken name, no PATCH (405),
    /// PUT replaces the members, and `admin` cannot be deleted (403).
    Nextcloud,
}

struct State {
    spc: Option<Value>,
    users: Vec<Value>,
    next_id: u32,
    listing: Listing,
    log: Vec<Recorded>,
    minted: u32,
    groups: Vec<Value>,
    groups_mode: GroupsMode,
    /// The `Content-Type` of each logged request, in order.
    content_types: Vec<Option<String>>,
    /// The request target of the request being handled, not decoded.
    raw_target: String,
    /// Every request target as received (relative to [`BASE_PATH`]).
    raw_log: Vec<String>,
}

#[derive(Clone)]
pub struct Recorder {
    state: Arc<Mutex<State>>,
    pub base_url: String,
}

/// [`spc`] announcing bulk with these limits.
pub fn spc_bulk(max_operations: u64, max_payload_size: u64) -> Value {
    let mut doc = spc(true, true, true);
    doc["bulk"] = json!({
        "supported": true, "maxOperations": max_operations, "maxPayloadSize": max_payload_size
    });
    doc
}

/// A ServiceProviderConfig document announcing these features.
pub fn spc(patch: bool, filter: bool, etag: bool) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": patch},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": filter, "maxResults": 100},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": etag},
        "authenticationSchemes": []
    })
}

impl Recorder {
    /// `spc` is served at `/ServiceProviderConfig`; `None` answers 404.
    pub async fn start(spc: Option<Value>) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            spc,
            users: Vec::new(),
            next_id: 1,
            listing: Listing::Honest,
            log: Vec::new(),
            minted: 0,
            groups: Vec::new(),
            groups_mode: GroupsMode::Plain,
            content_types: Vec::new(),
            raw_target: String::new(),
            raw_log: Vec::new(),
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Recorder {
            state,
            base_url: format!("http://{addr}{BASE_PATH}"),
        }
    }

    pub fn log(&self) -> Vec<Recorded> {
        self.state.lock().expect("lock").log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().expect("lock").log.clear();
    }

    pub fn set_groups_mode(&self, mode: GroupsMode) {
        self.state.lock().expect("lock").groups_mode = mode;
    }

    /// The `Content-Type` of every request logged, in order.
    pub fn content_types(&self) -> Vec<Option<String>> {
        self.state.lock().expect("lock").content_types.clone()
    }

    /// Every request target as sent, not decoded, relative to the base.
    pub fn raw_targets(&self) -> Vec<String> {
        self.state.lock().expect("lock").raw_log.clone()
    }

    /// A group as the server holds it.
    pub fn group(&self, id: &str) -> Option<Value> {
        let st = self.state.lock().expect("lock");
        st.groups.iter().find(|g| g["id"] == id).cloned()
    }

    /// Adds a group behind the client's back (ids per [`GroupsMode`]).
    pub fn seed_group(&self, display_name: &str, members: &[&str]) -> String {
        let mut st = self.state.lock().expect("lock");
        let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
        let id = new_group_id(&mut st, display_name);
        st.groups.push(json!({
            "schemas": [CORE_GROUP], "id": id, "displayName": display_name, "members": members,
            "meta": {"resourceType": "Group", "version": "W/\"1\""}
        }));
        id
    }

    pub fn set_listing(&self, listing: Listing) {
        self.state.lock().expect("lock").listing = listing;
    }

    pub fn user(&self, id: &str) -> Option<Value> {
        let st = self.state.lock().expect("lock");
        st.users.iter().find(|u| u["id"] == id).cloned()
    }

    /// Adds a user behind the client's back.
    pub fn seed(&self, user_name: &str) -> String {
        let mut st = self.state.lock().expect("lock");
        let id = format!("u{}", st.next_id);
        st.next_id += 1;
        st.users.push(json!({
            "schemas": [CORE_USER], "id": id, "userName": user_name,
            "meta": {"resourceType": "User", "version": "W/\"1\""}
        }));
        id
    }

    /// Changes a user behind the client's back, moving its version on.
    pub fn touch(&self, id: &str) {
        let mut st = self.state.lock().expect("lock");
        if let Some(u) = st.users.iter_mut().find(|u| u["id"] == id) {
            bump(u);
        }
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, body) = loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break (head, buf[end + 4..end + 4 + len].to_vec());
            }
        }
    };
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let method = request_line.next().unwrap_or_default().to_owned();
    let target = request_line.next().unwrap_or_default().to_owned();
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let rec = Recorded {
        method,
        path: decode(target.strip_prefix(BASE_PATH).unwrap_or(&target)),
        if_match: header("if-match"),
        auth: header("authorization").and_then(|a| a.split_whitespace().next().map(str::to_owned)),
        body: serde_json::from_slice(&body).ok(),
    };
    let (status, reply) = {
        let mut st = state.lock().expect("lock");
        st.log.push(rec.clone());
        st.content_types.push(header("content-type"));
        st.raw_target = target.strip_prefix(BASE_PATH).unwrap_or(&target).to_owned();
        let raw = st.raw_target.clone();
        st.raw_log.push(raw);
        handle(&mut st, &rec)
    };
    let body = reply.map(|v| v.to_string()).unwrap_or_default();
    let etag = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["meta"]["version"].as_str().map(str::to_owned))
        .map(|v| format!("ETag: {v}\r\n"))
        .unwrap_or_default();
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\n{etag}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn error(status: u16, detail: &str) -> Option<Value> {
    Some(json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.to_string(), "detail": detail
    }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "200 OK",
        201 => "201 Created",
        409 => "409 Conflict",
        403 => "403 Forbidden",
        405 => "405 Method Not Allowed",
        413 => "413 Payload Too Large",
        204 => "204 No Content",
        400 => "400 Bad Request",
        404 => "404 Not Found",
        412 => "412 Precondition Failed",
        _ => "500 Internal Server Error",
    }
}

fn bump(user: &mut Value) {
    let n: u32 = user["meta"]["version"]
        .as_str()
        .and_then(|v| v.trim_start_matches("W/").trim_matches('"').parse().ok())
        .unwrap_or(0);
    user["meta"]["version"] = format!("W/\"{}\"", n + 1).into();
}

fn handle(st: &mut State, rec: &Recorded) -> (&'static str, Option<Value>) {
    let (status, body) = route(st, rec);
    (reason(status), body)
}

fn route(st: &mut State, rec: &Recorded) -> (u16, Option<Value>) {
    let (path, query) = rec.path.split_once('?').unwrap_or((&rec.path, ""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (rec.method.as_str(), segments.as_slice()) {
        ("GET", ["ServiceProviderConfig"]) => match &st.spc {
            Some(doc) => (200, Some(doc.clone())),
            None => (404, error(404, "no such endpoint")),
        },
        ("GET", ["Users"]) if st.listing == Listing::FailsOnCount && query.contains("count=") => {
            (500, error(500, "Internal Server Error"))
        }
        ("GET", ["Users"]) => (200, Some(list(st, query))),
        ("GET", ["Groups"]) => (200, Some(list_groups(st, query))),
        ("POST", ["Groups"]) => create_group(st, rec),
        (_, ["Groups", _]) => group(st, rec),
        ("POST", ["Bulk"]) => bulk(st, rec),
        ("POST", ["Users"]) => {
            let Some(Value::Object(body)) = &rec.body else {
                return (400, error(400, "no body"));
            };
            let taken = body
                .get("userName")
                .and_then(Value::as_str)
                .is_some_and(|n| {
                    st.users.iter().any(|u| {
                        u["userName"]
                            .as_str()
                            .is_some_and(|m| m.eq_ignore_ascii_case(n))
                    })
                });
            if taken {
                let mut e = error(409, "userName is taken");
                if let Some(e) = e.as_mut() {
                    e["scimType"] = "uniqueness".into();
                }
                return (409, e);
            }
            let mut user = body.clone();
            let id = format!("u{}", st.next_id);
            st.next_id += 1;
            user.insert("id".into(), id.into());
            user.insert(
                "meta".into(),
                json!({"resourceType": "User", "version": "W/\"1\""}),
            );
            let user = Value::Object(user);
            st.users.push(user.clone());
            (201, Some(user))
        }
        (method, ["Users", id]) => {
            let Some(pos) = st.users.iter().position(|u| u["id"] == *id) else {
                return (404, error(404, "no such user"));
            };
            if let Some(tag) = &rec.if_match {
                if st.users[pos]["meta"]["version"].as_str() != Some(tag.as_str()) {
                    return (412, error(412, "version mismatch"));
                }
            }
            match method {
                "GET" => (200, Some(st.users[pos].clone())),
                "DELETE" => {
                    st.users.remove(pos);
                    (204, None)
                }
                "PUT" => {
                    let Some(Value::Object(body)) = &rec.body else {
                        return (400, error(400, "no body"));
                    };
                    let mut user = body.clone();
                    user.insert("meta".into(), st.users[pos]["meta"].clone());
                    let mut user = Value::Object(user);
                    bump(&mut user);
                    st.users[pos] = user.clone();
                    (200, Some(user))
                }
                "PATCH" => {
                    let ops = rec
                        .body
                        .as_ref()
                        .and_then(|b| b["Operations"].as_array().cloned())
                        .unwrap_or_default();
                    let user = &mut st.users[pos];
                    for op in ops {
                        let Some(path) = op["path"].as_str() else {
                            return (400, error(400, "PATCH without path"));
                        };
                        let (parent, key) = match path.split_once('.') {
                            Some((a, b)) => (Some(a), b),
                            None => (None, path),
                        };
                        let target: &mut Map<String, Value> = match parent {
                            Some(p) => {
                                if !user[p].is_object() {
                                    user[p] = json!({});
                                }
                                user[p].as_object_mut().expect("object")
                            }
                            None => user.as_object_mut().expect("object"),
                        };
                        match op["op"].as_str() {
                            Some("replace") | Some("add") => {
                                target.insert(key.into(), op["value"].clone());
                            }
                            Some("remove") => {
                                target.remove(key);
                            }
                            _ => return (400, error(400, "bad op")),
                        }
                    }
                    bump(user);
                    (200, Some(user.clone()))
                }
                _ => (400, error(400, "unsupported method")),
            }
        }
        _ => (404, error(404, "no such endpoint")),
    }
}

fn new_group_id(st: &mut State, display_name: &str) -> String {
    match st.groups_mode {
        GroupsMode::Nextcloud => php_urlencode(display_name),
        GroupsMode::Plain => {
            let id = format!("g{}", st.next_id);
            st.next_id += 1;
            id
        }
    }
}

/// PHP's `urlencode`: letters, digits and `-_.` stay, space is `+`, the
/// rest `%XX`.
fn php_urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-decoding of one path segment (`+` stays `+`).
fn decode_segment(s: &str) -> String {
    decode(&s.replace('+', "%2B"))
}

fn list_groups(st: &State, query: &str) -> Value {
    let filter = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("filter="))
        .map(str::to_owned);
    let groups: Vec<Value> = match filter {
        Some(f) => {
            let value: String = f
                .strip_prefix("displayName eq ")
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default();
            st.groups
                .iter()
                .filter(|g| g["displayName"] == value.as_str())
                .cloned()
                .collect()
        }
        None => st.groups.clone(),
    };
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": groups.len(), "startIndex": 1, "itemsPerPage": groups.len(),
        "Resources": groups,
    })
}

fn create_group(st: &mut State, rec: &Recorded) -> (u16, Option<Value>) {
    let Some(Value::Object(body)) = &rec.body else {
        return (400, error(400, "no body"));
    };
    let name = body
        .get("displayName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if st.groups.iter().any(|g| g["displayName"] == name.as_str()) {
        return (409, error(409, "Group exists"));
    }
    let id = new_group_id(st, &name);
    let mut group = body.clone();
    group.insert("id".into(), id.into());
    group.insert(
        "meta".into(),
        json!({"resourceType": "Group", "version": "W/\"1\""}),
    );
    let group = Value::Object(group);
    st.groups.push(group.clone());
    (201, Some(group))
}

fn group(st: &mut State, rec: &Recorded) -> (u16, Option<Value>) {
    let raw_path = st
        .raw_target
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let id = decode_segment(
        raw_path
            .trim_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default(),
    );
    let Some(pos) = st.groups.iter().position(|g| g["id"] == id.as_str()) else {
        return (404, error(404, "Group not found"));
    };
    let nextcloud = st.groups_mode == GroupsMode::Nextcloud;
    match rec.method.as_str() {
        "GET" => (200, Some(st.groups[pos].clone())),
        "DELETE" if nextcloud && id == "admin" => (403, error(403, "Can't delete admin group")),
        "DELETE" => {
            st.groups.remove(pos);
            (204, None)
        }
        "PUT" => {
            let Some(Value::Object(body)) = &rec.body else {
                return (400, error(400, "no body"));
            };
            let g = &mut st.groups[pos];
            g["members"] = body.get("members").cloned().unwrap_or(json!([]));
            if let Some(name) = body.get("displayName") {
                g["displayName"] = name.clone();
            }
            bump(g);
            (200, Some(g.clone()))
        }
        "PATCH" if nextcloud => (405, error(405, "Method Not Allowed")),
        "PATCH" => {
            let ops = rec
                .body
                .as_ref()
                .and_then(|b| b["Operations"].as_array().cloned())
                .unwrap_or_default();
            let g = &mut st.groups[pos];
            for op in ops {
                let path = op["path"].as_str().unwrap_or_default();
                let mut members = g["members"].as_array().cloned().unwrap_or_default();
                match (op["op"].as_str(), path) {
                    (Some("add"), "members") => {
                        members.extend(op["value"].as_array().cloned().unwrap_or_default())
                    }
                    (Some("replace"), "members") => {
                        members = op["value"].as_array().cloned().unwrap_or_default()
                    }
                    (Some("replace"), "displayName") => g["displayName"] = op["value"].clone(),
                    (Some("remove"), p) if p.starts_with("members[value eq ") => {
                        let v: String = serde_json::from_str(
                            p.trim_start_matches("members[value eq ")
                                .trim_end_matches(']'),
                        )
                        .unwrap_or_default();
                        members.retain(|m| m["value"] != v.as_str());
                    }
                    _ => return (400, error(400, "unsupported PATCH")),
                }
                g["members"] = Value::Array(members);
            }
            bump(g);
            (200, Some(g.clone()))
        }
        _ => (400, error(400, "unsupported method")),
    }
}

/// `POST /Bulk`: each operation runs as the single request it stands for
/// (without being logged again); the answer carries what RFC 7644 §3.7.3
/// shows: bulkId, method, location, version and status, and the error as
/// `response` for a failure.
fn bulk(st: &mut State, rec: &Recorded) -> (u16, Option<Value>) {
    let ops = rec
        .body
        .as_ref()
        .and_then(|b| b["Operations"].as_array().cloned())
        .unwrap_or_default();
    let fail_on_errors = rec.body.as_ref().and_then(|b| b["failOnErrors"].as_u64());
    let mut results = Vec::new();
    let mut errors = 0;
    for op in ops {
        if fail_on_errors.is_some_and(|n| errors >= n) {
            break;
        }
        let single = Recorded {
            method: op["method"].as_str().unwrap_or_default().to_owned(),
            path: op["path"].as_str().unwrap_or_default().to_owned(),
            if_match: op["version"].as_str().map(str::to_owned),
            auth: rec.auth.clone(),
            body: op.get("data").cloned(),
        };
        let (status, body) = route(st, &single);
        let mut result = json!({
            "method": single.method, "bulkId": op["bulkId"], "status": status.to_string(),
        });
        if status >= 400 {
            errors += 1;
            result["response"] = body.unwrap_or(Value::Null);
        } else if let Some(user) = body {
            result["location"] = format!(
                "https://app.example{BASE_PATH}/Users/{}",
                user["id"].as_str().unwrap_or_default()
            )
            .into();
            result["version"] = user["meta"]["version"].clone();
        }
        results.push(result);
    }
    (
        200,
        Some(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"],
            "Operations": results,
        })),
    )
}

fn list(st: &mut State, query: &str) -> Value {
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    let resources: Vec<Value>;
    let total: usize;
    let mut start = 1usize;
    if let Some(filter) = param("filter").filter(|_| st.listing != Listing::IgnoresFilter) {
        // Only `attr eq "value"`, which is all the client sends.
        let mut parts = filter.splitn(3, ' ');
        let attr = parts.next().unwrap_or_default().to_owned();
        let _eq = parts.next();
        let value: String =
            serde_json::from_str(parts.next().unwrap_or("\"\"")).unwrap_or_default();
        resources = st
            .users
            .iter()
            .filter(|u| match attr.as_str() {
                "userName" => u["userName"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&value)),
                _ => u[attr.as_str()].as_str() == Some(value.as_str()),
            })
            .cloned()
            .collect();
        total = resources.len();
    } else {
        start = param("startIndex")
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let server_page = if matches!(st.listing, Listing::FailsOnCount | Listing::IgnoresFilter) {
            2
        } else {
            usize::MAX
        };
        let mut count: usize = param("count")
            .and_then(|s| s.parse().ok())
            .unwrap_or(server_page);
        if st.listing == Listing::IgnoresFilter {
            count = count.min(2);
        }
        let from = start.max(1) - 1;
        if st.listing == Listing::Endless {
            let mut made = Vec::new();
            for _ in 0..count.min(10) {
                st.minted += 1;
                let n = st.minted;
                made.push(json!({"id": format!("m{n}"), "userName": format!("made{n}")}));
            }
            resources = made;
            total = 1_000_000;
        } else {
            let all = &st.users;
            let honest = || all.iter().skip(from).take(count).cloned().collect();
            (resources, total) = match st.listing {
                Listing::IgnoresCount => (all.iter().skip(from).cloned().collect(), all.len()),
                Listing::IgnoresStartIndex => {
                    (all.iter().take(count).cloned().collect(), all.len())
                }
                Listing::ReportsTotal(t) => (honest(), t),
                Listing::Honest
                | Listing::Endless
                | Listing::FailsOnCount
                | Listing::NoTotal
                | Listing::IgnoresFilter => (honest(), all.len()),
            };
        }
    }
    let mut doc = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": total,
        "itemsPerPage": resources.len(),
        "startIndex": start,
        "Resources": resources,
    });
    if st.listing == Listing::NoTotal {
        if let Some(o) = doc.as_object_mut() {
            o.remove("totalResults");
            o.remove("itemsPerPage");
        }
    }
    doc
}

/// Percent-decoding of a request target, `+` as space, for readable logs.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
