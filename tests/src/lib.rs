//! A whole Tenure stack per test: private peers plus `tenure` processes.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tenure_testkit::{free_port, workspace_root, NatsServer, ScimServer, TestDb};

pub const SECRET: &str = "e2e-hmac-secret";
/// The bearer token of the stack's operator API: an `admin` token named
/// `e2e` (the config holds only its hash).
pub const API_TOKEN: &str = "e2e-api-token-6b0f3c1e9a2d4f5b8c7e1a0d3f6b9c2e";

pub fn tenure_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("TENURE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"));
    let bin = target.join("debug/tenure");
    // Cargo serialises concurrent builds on its lock, and an up-to-date
    // build returns at once, so every test can ask for it.
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // The variables cargo and nextest set for a test process would make this
    // build's fingerprints differ from a plain `cargo build` and rebuild.
    for (key, _) in std::env::vars() {
        let keep = key == "CARGO_HOME" || key == "CARGO_TARGET_DIR";
        if !keep
            && (key.starts_with("CARGO_")
                || key.starts_with("NEXTEST")
                || key.starts_with("__CARGO")
                || key == "OUT_DIR")
        {
            build.env_remove(key);
        }
    }
    let status = build
        .args(["build", "-q", "-p", "tenure"])
        .current_dir(workspace_root())
        .status()
        .context("cargo build -p tenure")?;
    if !status.success() || !bin.exists() {
        bail!("could not build {}", bin.display());
    }
    Ok(bin)
}

pub struct Stack {
    pub nats: NatsServer,
    pub db: TestDb,
    /// The wiki app's SCIM server; the git app has its own, as real apps do.
    pub scim: ScimServer,
    pub scim_git: ScimServer,
    /// In front of the wiki app when `Options::proxy_wiki` is set.
    pub proxy: Option<tenure_testkit::fault::FaultProxy>,
    pub dir: tempfile::TempDir,
    pub ingest_port: u16,
    pub api_port: u16,
    pub wiki_tenant: String,
    pub git_tenant: String,
    core: Option<Child>,
    fanout: Option<Child>,
    http: reqwest::Client,
}

/// Fanout settings for tests: short ack wait and retries so crash tests
/// converge quickly.
pub const TEST_FANOUT: &str =
    "ack_wait_secs = 2\nconcurrency = 4\nbase_delay_ms = 50\nmax_delay_ms = 1000\n";

/// Extra configuration lines per section, for tests that need policies.
#[derive(Clone, Debug)]
pub struct Options {
    pub fanout: String,
    pub engine: String,
    pub wiki: String,
    pub git: String,
    /// Put a fault-injecting proxy between Tenure and the wiki app.
    pub proxy_wiki: bool,
    /// Fault modes of the wiki app's SCIM server (see
    /// `ScimServer::start_with_faults`); with any, its requests are logged.
    pub wiki_faults: Vec<&'static str>,
    /// Top-level blocks appended to the config (`[[source]]`, `[[idp]]`).
    pub extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            fanout: TEST_FANOUT.into(),
            engine: String::new(),
            wiki: String::new(),
            git: String::new(),
            proxy_wiki: false,
            wiki_faults: Vec::new(),
            extra: String::new(),
        }
    }
}

impl Stack {
    /// Peers, config and a migrated database; no Tenure process yet.
    pub async fn new() -> anyhow::Result<Self> {
        Self::new_with(TEST_FANOUT).await
    }

    /// As `new`, with the given body of the `[fanout]` section.
    pub async fn new_with(fanout: &str) -> anyhow::Result<Self> {
        Self::with_options(Options {
            fanout: fanout.into(),
            ..Options::default()
        })
        .await
    }

    pub async fn with_options(options: Options) -> anyhow::Result<Self> {
        let Options {
            fanout,
            engine,
            wiki: wiki_extra,
            git: git_extra,
            proxy_wiki,
            wiki_faults,
            extra,
        } = options;
        let nats = NatsServer::start()?;
        let db = TestDb::create().await?;
        let scim = if wiki_faults.is_empty() {
            ScimServer::start()?
        } else {
            ScimServer::start_with_faults(&wiki_faults)?
        };
        let scim_git = ScimServer::start()?;
        let proxy = match proxy_wiki {
            true => Some(tenure_testkit::fault::FaultProxy::start(scim.port).await?),
            false => None,
        };
        let dir = tempfile::tempdir()?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (wiki_tenant, git_tenant) = (format!("wiki{}", &id[..8]), format!("git{}", &id[..8]));
        let (ingest_port, api_port) = (free_port(), free_port());
        let config = format!(
            r#"
[ingest]
listen = "127.0.0.1:{ingest_port}"
[api]
listen = "127.0.0.1:{api_port}"
[[api.token]]
name = "e2e"
hash = "{api_token_hash}"
scopes = ["admin"]
[fanout]
{fanout}
[engine]
{engine}
[[app]]
name = "wiki"
base_url = "{wiki}"
token = {{ env = "TENURE_APP_TOKEN" }}
{wiki_extra}
[[app]]
name = "git"
base_url = "{git}"
token = {{ env = "TENURE_GIT_TOKEN" }}
scope = {{ attribute = "department", values = ["Engineering"] }}
on_termination = "delete"
user_name = "email_local_part"
{git_extra}
{extra}
"#,
            wiki = match &proxy {
                Some(p) => p.url(&format!("/{wiki_tenant}/v2")),
                None => scim.tenant_url(&wiki_tenant),
            },
            git = scim_git.tenant_url(&git_tenant),
            api_token_hash = tenure_api::auth::hash_token(API_TOKEN),
        );
        std::fs::write(dir.path().join("tenure.toml"), config)?;
        let stack = Self {
            nats,
            db,
            scim,
            scim_git,
            proxy,
            dir,
            ingest_port,
            api_port,
            wiki_tenant,
            git_tenant,
            core: None,
            fanout: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        let out = stack.tenure(&["migrate"]).output()?;
        if !out.status.success() {
            bail!(
                "tenure migrate failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stack)
    }

    /// Peers plus ingest/engine/api in one process and fanout in another.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(TEST_FANOUT).await
    }

    pub async fn start_with(fanout: &str) -> anyhow::Result<Self> {
        let mut s = Self::new_with(fanout).await?;
        s.start_core().await?;
        s.start_fanout()?;
        Ok(s)
    }

    pub fn tenure(&self, args: &[&str]) -> Command {
        let mut c = Command::new(tenure_bin().unwrap_or_else(|e| panic!("{e}")));
        c.args(args)
            .env("TENURE_CONFIG", self.dir.path().join("tenure.toml"))
            .env("TENURE_DATABASE_URL", self.db.url())
            .env("TENURE_NATS_URL", self.nats.url())
            .env("TENURE_GENERIC_SECRET", SECRET)
            .env("TENURE_APP_TOKEN", &self.scim.token)
            .env("TENURE_GIT_TOKEN", &self.scim_git.token)
            .env("TENURE_LOG", "info,sqlx=warn")
            .stdin(Stdio::null());
        c
    }

    fn spawn(&self, args: &[&str], log: &str) -> anyhow::Result<Child> {
        let file = std::fs::File::create(self.dir.path().join(log))?;
        Ok(self
            .tenure(args)
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?)
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    pub async fn start_core(&mut self) -> anyhow::Result<()> {
        self.start_services(&["run", "ingest", "engine", "api"])
            .await
    }

    /// Ingest and api as a process, for tests that run engines in-process
    /// with a clock they control.
    pub async fn start_without_engine(&mut self) -> anyhow::Result<()> {
        self.start_services(&["run", "ingest", "api"]).await?;
        self.start_fanout()
    }

    /// An engine in this process, on `clock`; stopped when the handle drops.
    pub async fn spawn_engine(
        &self,
        clock: tenure_engine::Clock,
    ) -> anyhow::Result<InProcessEngine> {
        let mut cfg = tenure_config::Config::load(&self.dir.path().join("tenure.toml"))?;
        cfg.database.url = self.db.url();
        cfg.nats.url = self.nats.url();
        let pool =
            tenure_store::connect(&cfg.database.url, cfg.database.role.as_deref(), 8).await?;
        let bus = tenure_bus::Bus::connect(&cfg.nats.url, Duration::from_secs(600)).await?;
        let token = tokio_util::sync::CancellationToken::new();
        let stop = token.clone();
        let handle =
            tokio::spawn(async move { tenure_engine::run(&cfg, pool, bus, stop, clock).await });
        Ok(InProcessEngine {
            token,
            handle: Some(handle),
        })
    }

    async fn start_services(&mut self, args: &[&str]) -> anyhow::Result<()> {
        self.core = Some(self.spawn(args, "core.log")?);
        let url = format!("http://127.0.0.1:{}/healthz", self.ingest_port);
        let http = self.http.clone();
        wait_for(Duration::from_secs(30), || {
            let http = http.clone();
            let url = url.clone();
            async move {
                Ok(http
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()))
            }
        })
        .await
        .with_context(|| format!("ingest did not come up:\n{}", self.log("core.log")))
    }

    pub fn start_fanout(&mut self) -> anyhow::Result<()> {
        let n = std::fs::read_dir(self.dir.path())?.count();
        self.fanout = Some(self.spawn(&["run", "fanout"], &format!("fanout-{n}.log"))?);
        Ok(())
    }

    /// Stops the ingest/engine/api process (SIGKILL), e.g. to start it
    /// again with another configuration.
    pub fn stop_core(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.core.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGKILL: no shutdown code runs, as in a crash or an OOM kill.
    pub fn kill_fanout(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.fanout.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// POSTs a generic webhook signed with `v2=` (it covers the delivery
    /// id). The deprecated v1 is tested explicitly in hostile_traffic.rs.
    pub async fn post_signed(
        &self,
        body: &[u8],
        delivery: &str,
        secret: &str,
    ) -> anyhow::Result<(u16, Value)> {
        let ts = chrono::Utc::now().timestamp();
        let resp = self
            .http
            .post(format!(
                "http://127.0.0.1:{}/v1/sources/generic/records",
                self.ingest_port
            ))
            .header("content-type", "application/json")
            .header("x-tenure-delivery", delivery)
            .header("x-tenure-timestamp", ts.to_string())
            .header(
                "x-tenure-signature",
                tenure_sources::signature::sign_generic_v2(secret.as_bytes(), ts, delivery, body),
            )
            .body(body.to_vec())
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// POSTs `body` to ingest at `path` with `headers`; status and body.
    pub async fn post_raw(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> anyhow::Result<(u16, String)> {
        let mut req = self
            .http
            .post(format!("http://127.0.0.1:{}{path}", self.ingest_port))
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }

    pub async fn send(&self, record: &Value, delivery: &str) -> anyhow::Result<Value> {
        let (status, body) = self
            .post_signed(&serde_json::to_vec(record)?, delivery, SECRET)
            .await?;
        if status != 202 {
            bail!("ingest answered {status}: {body}");
        }
        Ok(body)
    }

    pub async fn api(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(format!("http://127.0.0.1:{}{path}", self.api_port))
            .bearer_auth(API_TOKEN)
            .send()
            .await?;
        Ok(r.error_for_status()?.json().await?)
    }

    /// The SCIM server that serves `tenant`.
    pub fn server(&self, tenant: &str) -> &ScimServer {
        if tenant == self.git_tenant {
            &self.scim_git
        } else {
            &self.scim
        }
    }

    /// All users of a tenant, read straight from the SCIM server.
    pub async fn scim_users(&self, tenant: &str) -> anyhow::Result<Vec<Value>> {
        let server = self.server(tenant);
        let r = self
            .http
            .get(format!("{}/Users?count=1000", server.tenant_url(tenant)))
            .bearer_auth(&server.token)
            .send()
            .await?;
        let v: Value = r.error_for_status()?.json().await?;
        Ok(v["Resources"].as_array().cloned().unwrap_or_default())
    }

    pub async fn scim_user(&self, tenant: &str, user_name: &str) -> anyhow::Result<Option<Value>> {
        Ok(self.scim_users(tenant).await?.into_iter().find(|u| {
            u["userName"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(user_name))
        }))
    }

    /// Waits until the app's user `user_name` satisfies `pred` (None: absent).
    pub async fn wait_user<F>(
        &self,
        tenant: &str,
        user_name: &str,
        pred: F,
    ) -> anyhow::Result<Option<Value>>
    where
        F: Fn(Option<&Value>) -> bool,
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let u = self.scim_user(tenant, user_name).await?;
            if pred(u.as_ref()) {
                return Ok(u);
            }
            if Instant::now() > deadline {
                bail!("{user_name} in {tenant} is still {u:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a user directly in an app, as an admin would by hand.
    pub async fn create_in_app(&self, tenant: &str, user: Value) -> anyhow::Result<Value> {
        let server = self.server(tenant);
        let r = self
            .http
            .post(format!("{}/Users", server.tenant_url(tenant)))
            .bearer_auth(&server.token)
            .header("content-type", "application/scim+json")
            .body(serde_json::to_vec(&user)?)
            .send()
            .await?;
        Ok(r.error_for_status()?.json().await?)
    }

    pub async fn psql_count(&self, sql: &str) -> anyhow::Result<i64> {
        Ok(psql(&self.db.name, sql)?.parse()?)
    }

    /// The first row's first column of `sql` on the stack's database, as text.
    pub fn psql_text(&self, sql: &str) -> anyhow::Result<String> {
        psql(&self.db.name, sql)
    }

    /// The fault proxy in front of the wiki app (`Options::proxy_wiki`).
    pub fn wiki_proxy(&self) -> anyhow::Result<tenure_testkit::fault::FaultProxy> {
        self.proxy.clone().ok_or_else(|| anyhow::anyhow!("proxy"))
    }
}

/// The first row's first column of `sql` on database `db_name`, as text,
/// through `psql` as an operator would query it.
pub fn psql(db_name: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([
            "-tA",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            db_name,
            "-c",
            sql,
        ])
        .output()?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Drop for Stack {
    fn drop(&mut self) {
        for c in [self.core.as_mut(), self.fanout.as_mut()]
            .into_iter()
            .flatten()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct InProcessEngine {
    token: tokio_util::sync::CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl InProcessEngine {
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.token.cancel();
        if let Some(h) = self.handle.take() {
            h.await??;
        }
        Ok(())
    }
}

impl Drop for InProcessEngine {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Polls `check` until it says true or the time is up.
pub async fn wait_for<F, Fut>(limit: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("condition not met within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn person(
    id: &str,
    given: &str,
    family: &str,
    dept: &str,
    status: &str,
    effective: &str,
) -> Value {
    json!({
        "person_id": id,
        "given_name": given,
        "family_name": family,
        "work_email": format!("{}.{}@example.com", given.to_lowercase(), family.to_lowercase()),
        "employee_number": id.trim_start_matches("E-"),
        "department": dept,
        "title": "Engineer",
        "time_zone": "Europe/Berlin",
        "employment_status": status,
        "start_date": "2026-01-05",
        "effective_at": effective,
    })
}

/// Helpers shared by the `just bench` programs.
pub mod bench {
    /// Nearest-rank percentile of sorted samples.
    pub fn percentile(sorted: &[f64], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// One Markdown table row: count, p50, p90, p99 and max in ms.
    pub fn report(name: &str, mut ms: Vec<f64>) {
        ms.sort_by(f64::total_cmp);
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            ms.len(),
            percentile(&ms, 50.0),
            percentile(&ms, 90.0),
            percentile(&ms, 99.0),
            ms.last().copied().unwrap_or(f64::NAN)
        );
    }
}

impl Stack {
    /// The last sequence of a JetStream stream: it grows with every message
    /// stored (de-duplicated publishes store nothing), whatever is consumed.
    pub async fn stream_last_sequence(&self, stream: &str) -> anyhow::Result<u64> {
        let client = async_nats::connect(self.nats.url()).await?;
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(stream).await?;
        Ok(s.info().await?.state.last_sequence)
    }

    /// Runs the `tenure` binary to completion: (success, stdout, stderr).
    pub fn run_tenure(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<(bool, String, String)> {
        let mut c = self.tenure(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}
