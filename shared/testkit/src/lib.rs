//! Real peers for tests, one private instance per test: a `nats-server -js`
//! on a free port, a fresh PostgreSQL database, a `scim2-server` process.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("{what} exited early with {status}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    anyhow::bail!("{what} did not listen on port {port} within 20 s")
}

/// The workspace root, for finding `.venv` and the built binaries.
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|p| p.join("justfile").exists() || p.join("Cargo.lock").exists())
        .map(PathBuf::from)
        .unwrap_or(here)
}

pub struct NatsServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> anyhow::Result<Self> {
        let bin = std::env::var("TENURE_NATS_SERVER").unwrap_or_else(|_| {
            if std::path::Path::new("/usr/sbin/nats-server").exists() {
                "/usr/sbin/nats-server".into()
            } else {
                "nats-server".into()
            }
        });
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let mut child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        wait_for_port(port, "nats-server", &mut child)?;
        Ok(Self {
            child,
            port,
            _dir: dir,
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh, migrated-by-the-caller database on the shared PostgreSQL server.
pub struct TestDb {
    pub name: String,
    admin_url: String,
}

impl TestDb {
    pub async fn create() -> anyhow::Result<Self> {
        let admin_url = std::env::var("TENURE_TEST_PG_ADMIN_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("tenure_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url).await?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
        Ok(Self { name, admin_url })
    }

    pub fn url(&self) -> String {
        match self.admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{}", self.name),
            None => format!("{}/{}", self.admin_url, self.name),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Best effort from a plain thread: the test's runtime may be gone.
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut c) = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut c)
                            .await;
                }
            });
        })
        .join();
    }
}

pub fn scim2_server_bin() -> String {
    if let Ok(p) = std::env::var("TENURE_SCIM2_SERVER") {
        return p;
    }
    let venv = workspace_root().join(".venv/bin/scim2-server");
    if venv.exists() {
        return venv.display().to_string();
    }
    "scim2-server".into()
}

/// The fault modes of `tests/peers/scim_faults.py`, for
/// [`ScimServer::start_with_faults`]; tests/peers/README.md describes them.
pub const SCIM_FAULTS: &[&str] = &[
    "members-by-username",
    "count-500",
    "require-name-formatted",
    "reject-email-type-primary",
    "duplicate-500",
    "no-filter",
    "reject-member-path-filter",
    "html-errors",
    "no-patch-groups",
    "content-type-json-only",
];

/// The Python of the virtualenv holding scim2-server, which runs the fault
/// server on top of scim2-server's own code.
fn scim_python() -> PathBuf {
    let bin = PathBuf::from(scim2_server_bin());
    if let Some(python) = bin.parent().map(|d| d.join("python")) {
        if python.exists() {
            return python;
        }
    }
    let venv = workspace_root().join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// One request as the fault server received it (`GET /_faults/requests`).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct ReceivedRequest {
    pub method: String,
    /// The path with its tenant: `/<tenant>/v2/Users/<id>`.
    pub path: String,
    pub query: String,
    /// Only for a request with a body.
    pub content_type: Option<String>,
    /// The body as JSON, as a JSON string when it is not JSON, null when empty.
    pub body: serde_json::Value,
    /// The status the server answered, faults included.
    pub status: u16,
}

pub struct ScimServer {
    child: Child,
    pub port: u16,
    pub token: String,
    /// `None` for the plain scim2-server command.
    faults: Option<Vec<String>>,
}

impl ScimServer {
    /// Starts a plain scim2-server on a free port.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_checked(None)
    }

    /// Starts a scim2-server that misbehaves in the given ways, named as in
    /// [`SCIM_FAULTS`]: `tests/peers/scim_faults.py` around scim2-server.
    /// With no fault it behaves as scim2-server, and still keeps the log of
    /// [`Self::requests`].
    ///
    /// A free port can be taken by another test's server between choosing it
    /// and binding it; then the port answers, but not to this server's token,
    /// and another port is tried.
    pub fn start_with_faults(faults: &[&str]) -> anyhow::Result<Self> {
        if let Some(unknown) = faults.iter().find(|f| !SCIM_FAULTS.contains(f)) {
            anyhow::bail!("unknown SCIM fault {unknown:?}; known: {SCIM_FAULTS:?}");
        }
        Self::start_checked(Some(faults.iter().map(|f| f.to_string()).collect()))
    }

    fn start_checked(faults: Option<Vec<String>>) -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..5 {
            let mut server = Self::start_once(faults.clone())?;
            if server.answers_own_token() {
                return Ok(server);
            }
            let _ = server.child.kill();
            let _ = server.child.wait();
            last = Some(server.port);
        }
        anyhow::bail!("scim2-server: ports kept being taken by other servers (last {last:?})")
    }

    /// Whether the server on `port` is this one: it accepts this token. The
    /// probe is a plain list, which every fault mode answers with 200.
    fn answers_own_token(&mut self) -> bool {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return false;
        }
        matches!(self.get("/probe/v2/Users"), Ok((200, _)))
    }

    /// A GET with this server's token over HTTP/1.0, blocking: the status and
    /// the body.
    fn get(&self, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        self.send("GET", path)
    }

    fn send(&self, method: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n",
            self.token
        );
        conn.write_all(request.as_bytes())?;
        let mut response = Vec::new();
        conn.read_to_end(&mut response)?;
        let head_end = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("no end of headers in the answer to {path}"))?;
        let status = std::str::from_utf8(&response[..head_end])?
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no status in the answer to {path}"))?;
        Ok((status, response[head_end + 4..].to_vec()))
    }

    fn start_once(faults: Option<Vec<String>>) -> anyhow::Result<Self> {
        let port = free_port();
        let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
        let mut command = match &faults {
            None => Command::new(scim2_server_bin()),
            Some(faults) => {
                let mut c = Command::new(scim_python());
                c.arg(workspace_root().join("tests/peers/scim_faults.py"));
                for fault in faults {
                    c.args(["--fault", fault]);
                }
                c
            }
        };
        let mut child = command
            .args([
                "--port",
                &port.to_string(),
                "--bearer-token",
                &token,
                "--dynamic-tenants",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start scim2-server ({:?}): {e}; run `just setup`",
                    command.get_program()
                )
            })?;
        wait_for_port(port, "scim2-server", &mut child)?;
        Ok(Self {
            child,
            port,
            token,
            faults,
        })
    }

    /// The requests the server received, oldest first, without the start-up
    /// probes. Only for a server started by [`Self::start_with_faults`]
    /// (with or without faults): the plain scim2-server keeps no log.
    /// Blocking, but local and quick.
    pub fn requests(&self) -> anyhow::Result<Vec<ReceivedRequest>> {
        anyhow::ensure!(
            self.faults.is_some(),
            "only a server started with start_with_faults logs its requests"
        );
        let (status, body) = self.get("/_faults/requests")?;
        anyhow::ensure!(status == 200, "GET /_faults/requests answered {status}");
        let all: Vec<ReceivedRequest> = serde_json::from_slice(&body)?;
        Ok(all
            .into_iter()
            .filter(|r| !r.path.starts_with("/probe/"))
            .collect())
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) -> anyhow::Result<()> {
        let (status, _) = self.send("DELETE", "/_faults/requests")?;
        anyhow::ensure!(status == 204, "DELETE /_faults/requests answered {status}");
        Ok(())
    }

    /// Base URL of a tenant of its own: `http://127.0.0.1:P/<tenant>/v2`.
    pub fn tenant_url(&self, tenant: &str) -> String {
        format!("http://127.0.0.1:{}/{tenant}/v2", self.port)
    }
}

impl Drop for ScimServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
pub mod fault;
