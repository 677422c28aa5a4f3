//! A real `scim2-server` (Python, in-memory) per test, killed on drop.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tenure_scim::{Auth, ScimClient, UserSpec};

pub const TOKEN: &str = "test-token-9f2c";
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// `TENURE_SCIM2_SERVER`, then the workspace's `.venv`, then `PATH`.
fn server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TENURE_SCIM2_SERVER") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/scim2-server");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("scim2-server")
}

fn free_port() -> u16 {
    // The port is released before the server binds it; a collision in that
    // window only fails the readiness wait, with a clear message.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free local port")
}

pub struct ScimServer {
    child: Child,
    pub port: u16,
    log: PathBuf,
    /// Removed on drop.
    files: Vec<PathBuf>,
}

impl ScimServer {
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Announces `config` as its ServiceProviderConfig (and behaves
    /// accordingly: an unsupported PATCH is a 501).
    pub fn start_with_config(config: &serde_json::Value) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "tenure-scim2-spc-{}-{}.json",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, config.to_string()).expect("write config");
        let mut server =
            Self::start_with_args(&["--service-provider-config", &path.to_string_lossy()]);
        // Kept until the server stops, in case a tenant reads it lazily.
        server.files.push(path);
        server
    }

    pub fn start_with_args(extra: &[&str]) -> Self {
        let port = free_port();
        let bin = server_binary();
        let log = std::env::temp_dir().join(format!("tenure-scim2-server-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("create server log");
        let child = Command::new(&bin)
            .args([
                "--port",
                &port.to_string(),
                "--bearer-token",
                TOKEN,
                "--dynamic-tenants",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); install scim2-server or set TENURE_SCIM2_SERVER",
                    bin.display()
                )
            });
        let mut server = ScimServer {
            child,
            port,
            log,
            files: Vec::new(),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "scim2-server exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "scim2-server did not listen on {addr} within 30 s: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// A base URL on a tenant no other test uses.
    pub fn tenant_url(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!(
            "http://127.0.0.1:{}/t{}x{n}/v2",
            self.port,
            std::process::id()
        )
    }

    pub fn client(&self) -> ScimClient {
        ScimClient::new(&self.tenant_url(), Auth::Bearer(TOKEN.into()), TIMEOUT)
            .expect("valid client")
    }
}

impl Drop for ScimServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

pub fn spec(user_name: &str, external_id: &str) -> UserSpec {
    UserSpec {
        user_name: user_name.into(),
        external_id: external_id.into(),
        given_name: "Ada".into(),
        family_name: "Lovelace".into(),
        display_name: "Ada Lovelace".into(),
        email: format!("{}@example.com", user_name.to_lowercase()),
        active: true,
        title: Some("Engineer".into()),
        department: Some("R&D".into()),
        employee_number: Some("1815".into()),
        cost_center: Some("CC-1815".into()),
        organization: Some("Analytical Engines".into()),
        division: Some("Computing".into()),
        manager: Some("babbage-id".into()),
        ..UserSpec::default()
    }
}
