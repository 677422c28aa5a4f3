//! A fault-injecting HTTP proxy to put in front of a real server: each
//! request is passed through, delayed, answered with an error status, or
//! dropped, following a script and then a default mode.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    Pass,
    /// Answer with this status (and `Retry-After` seconds when given).
    Status(u16, Option<u32>),
    /// Close the connection without answering.
    Drop,
    /// Pass through after a delay.
    Delay(Duration),
    /// Answer this status to requests of this method, pass the others.
    StatusFor(String, u16),
    /// Pass the request to the server, then close the connection without
    /// the answer: the change is applied, the client never learns it.
    LoseResponse,
}

#[derive(Default)]
struct Script {
    next: VecDeque<Fault>,
    default: Option<Fault>,
    seen: Vec<(String, String, Option<u16>)>,
}

#[derive(Clone)]
pub struct FaultProxy {
    pub port: u16,
    script: Arc<Mutex<Script>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

impl FaultProxy {
    /// Starts on a free loopback port, forwarding to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let script = Arc::new(Mutex::new(Script::default()));
        let s = script.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, upstream, s).await;
                });
            }
        });
        Ok(Self {
            port,
            script,
            task: Arc::new(task),
        })
    }

    /// Faults for the next requests, in order.
    pub fn push(&self, faults: impl IntoIterator<Item = Fault>) {
        if let Ok(mut s) = self.script.lock() {
            s.next.extend(faults);
        }
    }

    /// What every request gets once the script is used up.
    pub fn set_default(&self, fault: Fault) {
        if let Ok(mut s) = self.script.lock() {
            s.default = Some(fault);
        }
    }

    /// (method, path, status answered or None when dropped) of each request.
    pub fn seen(&self) -> Vec<(String, String, Option<u16>)> {
        self.script
            .lock()
            .map(|s| s.seen.clone())
            .unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

async fn read_request(conn: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            anyhow::bail!("connection closed before a full request");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = conn.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(buf);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn serve(
    mut conn: TcpStream,
    upstream: u16,
    script: Arc<Mutex<Script>>,
) -> anyhow::Result<()> {
    let request = read_request(&mut conn).await?;
    let line =
        String::from_utf8_lossy(&request[..find(&request, b"\r\n").unwrap_or(0)]).to_string();
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let fault = {
        let mut s = script.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        s.next
            .pop_front()
            .or_else(|| s.default.clone())
            .unwrap_or(Fault::Pass)
    };
    let fault = match fault {
        Fault::StatusFor(m, code) if m.eq_ignore_ascii_case(&method) => Fault::Status(code, None),
        Fault::StatusFor(..) => Fault::Pass,
        other => other,
    };
    let record = |status: Option<u16>| {
        if let Ok(mut s) = script.lock() {
            s.seen.push((method.clone(), path.clone(), status));
        }
    };
    match fault {
        Fault::Drop => {
            record(None);
            return Ok(());
        }
        Fault::Status(code, retry_after) => {
            record(Some(code));
            let body = format!(
                "{{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:Error\"],\"status\":\"{code}\",\"detail\":\"injected fault\"}}"
            );
            let retry = retry_after
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            let resp = format!(
                "HTTP/1.1 {code} Injected\r\nContent-Type: application/scim+json\r\n{retry}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(resp.as_bytes()).await?;
            return Ok(());
        }
        Fault::Delay(d) => tokio::time::sleep(d).await,
        Fault::Pass | Fault::StatusFor(..) | Fault::LoseResponse => {}
    }
    let lose = fault == Fault::LoseResponse;
    let mut up = TcpStream::connect(("127.0.0.1", upstream)).await?;
    up.write_all(&request).await?;
    let mut response = Vec::new();
    up.read_to_end(&mut response).await?;
    let status = String::from_utf8_lossy(&response[..response.len().min(16)])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok());
    if lose {
        record(None);
        return Ok(());
    }
    record(status);
    conn.write_all(&response).await?;
    Ok(())
}
