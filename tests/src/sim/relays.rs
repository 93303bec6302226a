//! The simulator's relays: real `petrel-relay` child processes on 127.0.0.1, each with its
//! own data directory, killed with SIGKILL and restarted on the same directory (so with the
//! same keys, queues and outbox) when the schedule says so.
//!
//! Every start binds 127.0.0.1:0, so a restart gets a fresh port and can never collide with
//! a port some other process took in the meantime. Whoever needs the current address —
//! clients homed on the relay, the proxies in front of it — follows it through the relay's
//! [`RelayState`] channel and [`Upstream`] cell; senders keep naming the relay by its
//! (unchanging) key at the proxy's (unchanging) port.

use super::proxy::Upstream;
use anyhow::{Context, bail};
use petrel_federation::{Host, RelayAddress, RelayKey, TransportKind};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

/// The relays' configuration. All clients and relays share 127.0.0.1, so the per-address
/// connection cap and the per-session command rate (abuse limits for a public relay) are
/// raised; forwarding to loopback is allowed (the destinations are private addresses); and
/// the outbox retries after 50 ms, backing off to at most one second, so that a healed
/// partition or a restarted destination is retried promptly instead of after the default
/// back-off of up to a minute. The quota is raised so that a recipient catching up after an
/// outage never sees QUOTA (senders would retry it, but it would only slow the drain).
pub const SIM_RELAY_CONFIG: &str = "\
forward_to_private = true

[limits]
queue_quota = 10000
max_connections = 10000
max_connections_per_ip = 10000
max_sessions = 20000
commands_per_sec = 100000
command_burst = 100000
idle_timeout_secs = 900
forward_retry_min_ms = 50
forward_retry_max_secs = 1
";

/// How long a relay may take to print its address (a debug build on a busy machine, or a
/// store that was not closed cleanly and is being repaired).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a relay may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a relay can be reached now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayState {
    /// Starts so far (1 after the first start, 2 after the first restart, …).
    pub generation: u64,
    /// The address it printed, while it runs; `None` while it is down.
    pub address: Option<RelayAddress>,
}

/// One relay of the simulated network.
#[derive(Debug)]
pub struct SimRelay {
    index: usize,
    bin: PathBuf,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
    key: Option<RelayKey>,
    state: watch::Sender<RelayState>,
    upstream: Upstream,
}

impl SimRelay {
    /// Prepares relay `index` in `dir/r<index>` and starts it.
    pub async fn start(index: usize, bin: &Path, dir: &Path) -> anyhow::Result<SimRelay> {
        let dir = dir.join(format!("r{index}"));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(dir.join("relay.toml"), SIM_RELAY_CONFIG)
            .with_context(|| format!("cannot write the config in {}", dir.display()))?;
        let mut relay = SimRelay {
            index,
            bin: bin.to_path_buf(),
            dir,
            child: None,
            key: None,
            state: watch::channel(RelayState {
                generation: 0,
                address: None,
            })
            .0,
            upstream: Arc::new(AtomicU16::new(0)),
        };
        relay.spawn().await?;
        Ok(relay)
    }

    /// The relay's current address, while it runs.
    pub fn address(&self) -> Option<RelayAddress> {
        self.state.borrow().address.clone()
    }

    /// The relay's key (the same across restarts).
    pub fn key(&self) -> anyhow::Result<RelayKey> {
        self.key.context("the relay has not started")
    }

    /// Follows the relay's address across restarts.
    pub fn watch(&self) -> watch::Receiver<RelayState> {
        self.state.subscribe()
    }

    /// The port cell the proxies in front of this relay read.
    pub fn upstream(&self) -> Upstream {
        self.upstream.clone()
    }

    /// The relay's log (its stderr), for diagnostics.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("relay.log")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("cannot open {}", self.log_path().display()))?;
        let mut child = tokio::process::Command::new(&self.bin)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--config")
            .arg(self.dir.join("relay.toml"))
            .args(["--listen", "127.0.0.1:0", "--http", "off", "--log"])
            .arg(std::env::var("PETREL_SIM_RELAY_LOG").unwrap_or_else(|_| "warn".into()))
            .env_remove("PORT")
            .env_remove("PETREL_RELAY_CREATE_PASSWORD")
            .env_remove("PETREL_RELAY_ANNOUNCE")
            .env_remove("PETREL_RELAY_LISTEN")
            .env_remove("PETREL_RELAY_FORWARDING")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(START_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(_) => bail!(
                "relay R{} exited before printing its address; its log:\n{}",
                self.index,
                self.log_tail()
            ),
            Err(_) => bail!(
                "relay R{} printed no address within {START_TIMEOUT:?}; its log:\n{}",
                self.index,
                self.log_tail()
            ),
        };
        let address: RelayAddress = line
            .trim()
            .strip_prefix("relay address: ")
            .with_context(|| format!("unexpected first line from R{}: {line:?}", self.index))?
            .parse()
            .with_context(|| format!("cannot parse R{}'s address: {line:?}", self.index))?;
        if let Some(key) = self.key
            && key != *address.key()
        {
            bail!("R{} came back with another key", self.index);
        }
        self.key = Some(*address.key());
        let port = address
            .endpoints()
            .iter()
            .find(|e| e.transport == TransportKind::Tcp && e.host == Host::Ipv4([127, 0, 0, 1]))
            .map(|e| e.port)
            .with_context(|| format!("R{}'s address has no 127.0.0.1 TCP endpoint", self.index))?;
        // Keep reading stdout so the relay never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
        self.upstream.store(port, Ordering::SeqCst);
        self.state.send_modify(|s| {
            s.generation += 1;
            s.address = Some(address);
        });
        Ok(())
    }

    /// SIGKILL, and wait until the process is gone (its store lock released). Clients and
    /// proxies see the relay down before the signal is sent.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.upstream.store(0, Ordering::SeqCst);
        self.state.send_modify(|s| s.address = None);
        let mut child = self.child.take().context("the relay is not running")?;
        child.kill().await.context("cannot SIGKILL the relay")?;
        Ok(())
    }

    /// Starts the relay again on its data directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("R{} is already running", self.index);
        }
        self.spawn().await
    }

    /// SIGTERM and wait for a clean exit (the relay drains its sessions and closes its
    /// store). An error says how it exited.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.upstream.store(0, Ordering::SeqCst);
        self.state.send_modify(|s| s.address = None);
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id().context("the relay already exited")?;
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => bail!("R{} exited with {status} after SIGTERM", self.index),
            Ok(Err(e)) => Err(e).context("cannot wait for the relay"),
            Err(_) => {
                let _ = child.kill().await;
                bail!(
                    "R{} did not exit within {STOP_TIMEOUT:?} of SIGTERM",
                    self.index
                )
            }
        }
    }
}
