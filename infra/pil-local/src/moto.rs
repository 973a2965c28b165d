//! The AWS emulator: moto server from the project's own venv, on loopback, owned by this
//! process (stopped when dropped).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

#[derive(Debug)]
pub struct Moto {
    child: Child,
    pub url: String,
    pub port: u16,
}

/// The moto_server binary: `PIL_MOTO_SERVER`, else the workspace's `.venv/bin/moto_server`.
pub fn moto_binary(workspace: &Path) -> PathBuf {
    std::env::var_os("PIL_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join(".venv/bin/moto_server"))
}

/// A free loopback port (for tests that run several stacks at once).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// How many ports [`Moto::start`] tries when asked for any free one.
const ANY_PORT_ATTEMPTS: usize = 5;

impl Moto {
    /// Starts moto on `port`, or with `port` 0 on a free port: moto binds it itself, seconds
    /// after a free one was found, so another process (a parallel test's stack) may take it in
    /// between; then moto exits at start and another port is tried.
    pub async fn start(workspace: &Path, port: u16) -> Result<Self> {
        if port != 0 {
            return Self::start_on(workspace, port).await;
        }
        let mut last = None;
        for _ in 0..ANY_PORT_ATTEMPTS {
            match Self::start_on(workspace, free_port()?).await {
                Ok(m) => return Ok(m),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no free port for moto")))
    }

    async fn start_on(workspace: &Path, port: u16) -> Result<Self> {
        let bin = moto_binary(workspace);
        if !bin.exists() {
            bail!(
                "moto server not found at {} (run `make setup`, or set PIL_MOTO_SERVER)",
                bin.display()
            );
        }
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            bail!("port {port} is taken: set PIL_EMULATOR_PORT to a free port");
        }
        // Unless PIL_MOTO_SERVER names another server: the project's moto through
        // infra/pil-local/moto_server.py, which makes DynamoDB's conditional writes atomic as they
        // are in AWS (moto's own threaded server does not).
        let mut cmd = if std::env::var_os("PIL_MOTO_SERVER").is_some() {
            Command::new(&bin)
        } else {
            let mut c = Command::new(workspace.join(".venv/bin/python"));
            c.arg(workspace.join("infra/pil-local/moto_server.py"));
            c
        };
        let child = cmd
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let mut moto = Self { child, url, port };
        moto.wait_ready().await?;
        Ok(moto)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("moto server exited at start ({status})");
            }
            // moto's own page, not whatever else may answer on the port.
            if client
                .get(format!("{}/moto-api/", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
                && self.child.try_wait()?.is_none()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("moto server did not answer on {} within 30 s", self.url)
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// E-mails moto's SES received, newest last: (to, subject, html body).
    pub async fn sent_emails(&self) -> Result<Vec<SentEmail>> {
        let data: serde_json::Value = reqwest::get(format!("{}/moto-api/data.json", self.url))
            .await?
            .json()
            .await?;
        let msgs = data["ses"]["Message"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(msgs
            .into_iter()
            .map(|m| SentEmail {
                to: m["destinations"]["ToAddresses"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                subject: m["subject"].as_str().unwrap_or_default().to_owned(),
                body: m["body"].as_str().unwrap_or_default().to_owned(),
            })
            .collect())
    }
}

#[derive(Debug, Clone)]
pub struct SentEmail {
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
}

impl SentEmail {
    /// The approval links in the e-mail, in order.
    pub fn links(&self) -> Vec<String> {
        self.body
            .split("href=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .map(|s| s.replace("&amp;", "&"))
            .filter(|s| s.contains("/v1/approvals/"))
            .collect()
    }
}
