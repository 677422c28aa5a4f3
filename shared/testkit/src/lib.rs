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

pub struct ScimServer {
    child: Child,
    pub port: u16,
    pub token: String,
}

impl ScimServer {
    /// Starts a server on a free port. A free port can be taken by another
    /// test's server between choosing it and binding it; then the port
    /// answers, but not to this server's token, and another port is tried.
    pub fn start() -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..5 {
            let mut server = Self::start_once()?;
            if server.answers_own_token() {
                return Ok(server);
            }
            let _ = server.child.kill();
            last = Some(server.port);
        }
        anyhow::bail!("scim2-server: ports kept being taken by other servers (last {last:?})")
    }

    /// Whether the server on `port` is this one: it accepts this token.
    fn answers_own_token(&mut self) -> bool {
        use std::io::{Read, Write};
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return false;
        }
        let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "GET /probe/v2/Users?count=0 HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n",
            self.token
        );
        if conn.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        conn.read_exact(&mut head).is_ok() && head.ends_with(b"200")
    }

    fn start_once() -> anyhow::Result<Self> {
        let port = free_port();
        let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
        let mut child = Command::new(scim2_server_bin())
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
                    "cannot start scim2-server ({}): {e}; run `just setup`",
                    scim2_server_bin()
                )
            })?;
        wait_for_port(port, "scim2-server", &mut child)?;
        Ok(Self { child, port, token })
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
