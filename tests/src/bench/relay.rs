//! A real `petrel-relay` child process on 127.0.0.1, started and stopped like an operator
//! would: `--data-dir`, a TOML `--config`, then SIGTERM.
//!
//! The binary is found next to the bench's own executable (`cargo build --release` puts
//! both in `target/release/`), or given with `--relay-bin`. Its stderr goes to a log file in
//! the scenario's directory, so the bench's progress output stays readable; the tail of that
//! log is quoted when the relay fails to start.

use anyhow::{Context, bail};
use petrel_federation::client::{Command, Response};
use petrel_federation::transport::connection::{ConnectionError, RelayConnection};
use petrel_federation::{RelayAddress, TransportKind};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The relay's limits for benchmarking. The defaults protect a public relay from abuse
/// (2,000 commands/s per session, 1,000 queues per session, 64 connections per IP, a quota
/// of 128 messages, 5,000 forwards/s from one peer relay); a bench drives a few sessions much harder from one address, so they
/// are raised. Nothing here changes the work a command costs.
pub const BENCH_LIMITS: &str = "\
[limits]
queue_quota = 100000
max_queues_per_session = 2000000
max_subscriptions_per_session = 2000000
commands_per_sec = 100000000
command_burst = 100000000
max_connections = 20000
max_connections_per_ip = 20000
max_sessions = 40000
idle_timeout_secs = 900
peer_forwards_per_sec = 100000000
peer_forward_burst = 100000000
";

/// How long a relay may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a relay may take to drain and exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Finds the `petrel-relay` binary: `explicit` if given, else next to this executable (or
/// one directory up, where test executables in `deps/` find it).
pub fn locate_relay(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("--relay-bin {}: no such file", path.display());
    }
    let exe = std::env::current_exe().context("cannot find the bench's own executable")?;
    let name = format!("petrel-relay{}", std::env::consts::EXE_SUFFIX);
    let dir = exe
        .parent()
        .context("the bench's executable has no directory")?;
    let mut candidates = vec![dir.join(&name)];
    if dir.file_name().is_some_and(|n| n == "deps")
        && let Some(up) = dir.parent()
    {
        candidates.push(up.join(&name));
    }
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    bail!(
        "petrel-relay not found at {}: run `cargo build --release -p petrel-relay` first \
         (same profile as the bench), or pass --relay-bin PATH",
        candidates[0].display()
    )
}

/// Where a relay lives: its binary, data directory, config file and log file.
#[derive(Clone, Debug)]
pub struct RelaySpec {
    /// The `petrel-relay` binary.
    pub bin: PathBuf,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--config`.
    pub config: PathBuf,
    /// Where the relay's stderr goes.
    pub log: PathBuf,
    /// More flags (like `--forward-to-private`).
    pub extra_args: Vec<String>,
}

impl RelaySpec {
    /// A relay in `dir` (data in `dir/data`), with [`BENCH_LIMITS`] written to its config.
    pub fn in_dir(bin: &Path, dir: &Path) -> anyhow::Result<RelaySpec> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let config = dir.join("relay.toml");
        std::fs::write(&config, BENCH_LIMITS)
            .with_context(|| format!("cannot write {}", config.display()))?;
        Ok(RelaySpec {
            bin: bin.to_path_buf(),
            data_dir: dir.join("data"),
            config,
            log: dir.join("relay.log"),
            extra_args: Vec::new(),
        })
    }

    /// The store file.
    pub fn store_file(&self) -> PathBuf {
        self.data_dir.join("relay.redb")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// A running relay, killed if dropped without [`RelayProcess::stop`].
#[derive(Debug)]
pub struct RelayProcess {
    child: tokio::process::Child,
    pid: u32,
    address: RelayAddress,
    spawn_to_address: Duration,
    spawned_at: Instant,
}

impl RelayProcess {
    /// Spawns the relay and waits for its `relay address:` line.
    pub async fn start(spec: &RelaySpec) -> anyhow::Result<RelayProcess> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .with_context(|| format!("cannot open {}", spec.log.display()))?;
        let spawned_at = Instant::now();
        let mut child = tokio::process::Command::new(&spec.bin)
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .arg("--config")
            .arg(&spec.config)
            .args(["--listen", "127.0.0.1:0", "--http", "off", "--log"])
            .arg(std::env::var("PETREL_BENCH_RELAY_LOG").unwrap_or_else(|_| "warn".into()))
            .args(&spec.extra_args)
            .env_remove("PORT")
            .env_remove("PETREL_RELAY_CREATE_PASSWORD")
            .env_remove("PETREL_RELAY_ANNOUNCE")
            .env_remove("PETREL_RELAY_FORWARDING")
            .env_remove("PETREL_RELAY_FORWARD_PEERS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", spec.bin.display()))?;
        let pid = child.id().context("the relay exited at once")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(START_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => bail!(
                "the relay exited before printing its address; its log:\n{}",
                spec.log_tail()
            ),
            Err(_) => bail!(
                "the relay printed no address within {START_TIMEOUT:?}; its log:\n{}",
                spec.log_tail()
            ),
        };
        let spawn_to_address = spawned_at.elapsed();
        let address: RelayAddress = line
            .trim()
            .strip_prefix("relay address: ")
            .with_context(|| format!("unexpected first line from the relay: {line:?}"))?
            .parse()
            .with_context(|| format!("cannot parse the relay's address: {line:?}"))?;
        // Keep reading stdout so the relay never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(RelayProcess {
            child,
            pid,
            address,
            spawn_to_address,
            spawned_at,
        })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The address it printed.
    pub fn address(&self) -> &RelayAddress {
        &self.address
    }

    /// Time from spawn to the address line.
    pub fn spawn_to_address(&self) -> Duration {
        self.spawn_to_address
    }

    /// When the process was spawned.
    pub fn spawned_at(&self) -> Instant {
        self.spawned_at
    }

    /// The plain TCP socket address the relay listens on.
    pub fn tcp_addr(&self) -> anyhow::Result<SocketAddr> {
        self.address
            .endpoints()
            .iter()
            .find(|e| e.transport == TransportKind::Tcp)
            .and_then(|e| match &e.host {
                petrel_federation::Host::Ipv4(b) => Some(SocketAddr::new(IpAddr::from(*b), e.port)),
                petrel_federation::Host::Ipv6(b) => Some(SocketAddr::new(IpAddr::from(*b), e.port)),
                petrel_federation::Host::Name(_) => None,
            })
            .context("the relay address has no TCP endpoint")
    }

    /// Resident memory, in bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        super::proc::rss_bytes(Some(self.pid))
    }

    /// Bytes read through system calls so far.
    pub fn read_chars(&self) -> anyhow::Result<u64> {
        super::proc::read_chars(Some(self.pid))
    }

    /// CPU seconds used so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        super::proc::cpu_seconds(Some(self.pid))
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after a timeout). The relay installs
    /// its signal handlers before it prints its address, so this is safe at any time.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => bail!("the relay exited with {status} after SIGTERM"),
            Ok(Err(e)) => Err(e).context("cannot wait for the relay"),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("the relay did not exit within {STOP_TIMEOUT:?} of SIGTERM")
            }
        }
    }
}

/// How long [`connect`] retries a session the relay did not take.
const ACCEPT_GRACE: Duration = Duration::from_secs(10);

/// Opens a session and checks it with a PING.
pub async fn connect(address: &RelayAddress) -> anyhow::Result<RelayConnection> {
    Ok(connect_retrying(address).await?.0)
}

/// Opens a session and checks it with a PING; also returns how many tries failed first.
///
/// Two refusals are retried for a few seconds, as a client would: a relay that has
/// printed its address but not yet registered its session protocol answers "unsupported
/// protocol" (relays before the fix that registers it first), and libp2p-stream drops an
/// inbound stream when the relay has not yet taken the previous one (its hand-over channel
/// holds one), which the client sees as a failed hello. Start-up times therefore measure
/// when the relay really answers a command.
pub async fn connect_retrying(address: &RelayAddress) -> anyhow::Result<(RelayConnection, u32)> {
    let started = Instant::now();
    let mut retries = 0;
    let conn = loop {
        match RelayConnection::connect(address).await {
            Ok(conn) => break conn,
            Err(ConnectionError::Open(_) | ConnectionError::Hello(_))
                if started.elapsed() < ACCEPT_GRACE =>
            {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => return Err(e).context("cannot open a session with the relay"),
        }
    };
    match conn.request(None, Command::Ping).await? {
        Response::Pong => Ok((conn, retries)),
        other => bail!("PING answered {other:?}"),
    }
}
