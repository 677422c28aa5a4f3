//! Retries over real HTTP, against a scripted server that answers each
//! request in turn from a list of canned responses.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tenure_scim::{with_retry, Auth, RetryPolicy, ScimClient, ScimError, UserSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const USER: &str = r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"u1","userName":"ada","meta":{"version":"W/\"1\""}}"#;
const BUSY: &str =
    r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"503","detail":"busy"}"#;
const BAD: &str = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"400","scimType":"invalidValue","detail":"bad userName"}"#;

#[derive(Clone)]
struct Reply {
    status: &'static str,
    headers: &'static str,
    body: &'static str,
    /// Hold the connection this long before answering, to provoke timeouts.
    stall: Duration,
}

fn reply(status: &'static str, headers: &'static str, body: &'static str) -> Reply {
    Reply {
        status,
        headers,
        body,
        stall: Duration::ZERO,
    }
}

/// Serves `replies` in order (the last one repeats) and counts requests.
async fn scripted_server(replies: Vec<Reply>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let r = replies[n.min(replies.len() - 1)].clone();
            tokio::spawn(answer(stream, r));
        }
    });
    (format!("http://{addr}/tenant/v2"), hits)
}

async fn answer(mut stream: TcpStream, r: Reply) {
    // Read the head and as much body as Content-Length announces, so the
    // client never sees a reset while still sending.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
    }
    tokio::time::sleep(r.stall).await;
    let response = format!(
        "HTTP/1.1 {}\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n{}",
        r.status,
        r.body.len(),
        r.headers,
        r.body
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn spec() -> UserSpec {
    UserSpec {
        user_name: "ada".into(),
        external_id: "E-1".into(),
        given_name: "Ada".into(),
        family_name: "Lovelace".into(),
        display_name: "Ada Lovelace".into(),
        email: "ada@example.com".into(),
        active: true,
        title: None,
        department: None,
        employee_number: None,
        ..UserSpec::default()
    }
}

fn client(base: &str, timeout: Duration) -> ScimClient {
    ScimClient::new(base, Auth::Bearer("tok".into()), timeout).expect("client")
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn honours_retry_after_then_succeeds() {
    let busy = reply("503 Service Unavailable", "Retry-After: 1\r\n", BUSY);
    let (base, hits) =
        scripted_server(vec![busy.clone(), busy, reply("201 Created", "", USER)]).await;
    let client = client(&base, Duration::from_secs(5));
    let user = spec();
    let mut failures = 0;
    let started = Instant::now();
    let created = with_retry(
        &policy(),
        || client.create_user(&user),
        |e| {
            failures += 1;
            assert_eq!(e.status(), Some(503));
            assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
            let record = e.record().expect("audited");
            assert_eq!(record.status, Some(503));
            assert_eq!(record.path, "/Users");
        },
    )
    .await
    .expect("third attempt succeeds");
    let waited = started.elapsed();
    assert_eq!(created.value.id, "u1");
    assert_eq!(created.record.status, Some(201));
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert_eq!(failures, 2);
    // Two Retry-After: 1 waits.
    assert!(waited >= Duration::from_millis(1900), "waited {waited:?}");
}

#[tokio::test]
async fn bad_request_is_not_retried() {
    let (base, hits) = scripted_server(vec![reply("400 Bad Request", "", BAD)]).await;
    let client = client(&base, Duration::from_secs(5));
    let user = spec();
    let mut failures = 0;
    let err = with_retry(&policy(), || client.create_user(&user), |_| failures += 1)
        .await
        .expect_err("400");
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.scim_type(), Some("invalidValue"));
    assert!(err.to_string().contains("bad userName"), "{err}");
    assert_eq!(failures, 1);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn gives_up_after_max_attempts() {
    let (base, hits) =
        scripted_server(vec![reply("502 Bad Gateway", "", "<html>oops</html>")]).await;
    let client = client(&base, Duration::from_secs(5));
    let mut failures = 0;
    let p = RetryPolicy {
        max_attempts: 3,
        ..policy()
    };
    let err = with_retry(&p, || client.get_user("u1"), |_| failures += 1)
        .await
        .expect_err("always 502");
    assert_eq!(err.status(), Some(502));
    assert!(
        err.to_string().contains("oops"),
        "non-SCIM body kept as detail: {err}"
    );
    assert_eq!(failures, 3);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn timeout_is_a_retryable_transport_error() {
    let slow = Reply {
        stall: Duration::from_secs(5),
        ..reply("200 OK", "", USER)
    };
    let (base, _hits) = scripted_server(vec![slow]).await;
    let client = client(&base, Duration::from_millis(300));
    let started = Instant::now();
    let err = client.get_user("u1").await.expect_err("timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
    match &err {
        ScimError::Transport {
            timeout, record, ..
        } => {
            assert!(timeout);
            assert_eq!(record.status, None);
            assert!(record.latency_ms >= 250, "{record:?}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err.is_retryable());
}

#[tokio::test]
async fn patch_204_and_rate_limit_date() {
    let (base, _) = scripted_server(vec![
        reply(
            "429 Too Many Requests",
            "Retry-After: Sun, 06 Nov 1994 08:49:37 GMT\r\n",
            "",
        ),
        reply("204 No Content", "", ""),
    ])
    .await;
    let client = client(&base, Duration::from_secs(5));
    let ops = [tenure_scim::PatchOp::replace("active", false)];
    let mut failures = 0;
    let patched = with_retry(
        &policy(),
        || client.patch_user("u1", &ops),
        |e| {
            failures += 1;
            assert_eq!(
                e.retry_after(),
                Some(Duration::ZERO),
                "a past date means now"
            );
            assert!(e.is_retryable());
        },
    )
    .await
    .expect("204");
    assert_eq!(patched.value, None);
    assert_eq!(patched.record.status, Some(204));
    assert_eq!(patched.record.remote_id.as_deref(), Some("u1"));
    assert_eq!(failures, 1);
}

/// A proxy's 20 KB HTML error page reaches the error, the audit record and
/// the logs as its title only; a SCIM 400 that names the refused attribute
/// is reported with that attribute.
#[tokio::test]
async fn html_error_pages_are_cut_to_their_title_and_refused_attributes_named() {
    let page: &'static str = Box::leak(
        format!(
            "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>{}</body></html>",
            "<p>upstream trace line</p>".repeat(800)
        )
        .into_boxed_str(),
    );
    assert!(page.len() > 20_000);
    let (base, _) = scripted_server(vec![reply("502 Bad Gateway", "", page)]).await;
    let client = client(&base, Duration::from_secs(5));
    let err = client.get_user("u1").await.expect_err("502");
    let record = err.record().expect("record").error.clone().expect("error");
    assert_eq!(record, "HTTP 502: HTML error page: 502 Bad Gateway");
    assert!(err.to_string().len() < 200, "{err}");

    const REFUSED: &str = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"400","scimType":"invalidValue","detail":"Attribute 'name.formatted' is required"}"#;
    let (base, _) = scripted_server(vec![reply("400 Bad Request", "", REFUSED)]).await;
    let client = self::client(&base, Duration::from_secs(5));
    let err = client.create_user(&spec()).await.expect_err("400");
    assert_eq!(err.refused_attribute().as_deref(), Some("name.formatted"));
    // Not JSON at all: tolerated, nothing named.
    let (base, _) = scripted_server(vec![reply("400 Bad Request", "", "nope")]).await;
    let err = self::client(&base, Duration::from_secs(5))
        .create_user(&spec())
        .await
        .expect_err("400");
    assert_eq!(err.refused_attribute(), None);
    assert!(err.to_string().contains("nope"), "{err}");
}
