//! End to end through the client engine: API send on one `petrel serve` → its relay A →
//! relay B → the other `petrel serve` → its API notification.
//!
//! Four child processes on loopback: two relays (each with `--forward-to-private`, since
//! the other's address is loopback) and two `petrel serve`s, Alice's pinned to A and Bob's
//! to B, each with its own home. The bench pairs them through the API (`invite.create` on
//! Bob, `connect` on Alice, both `event.contact_connected`), then measures two phases,
//! one direction (Alice → Bob), on Bob's notification socket:
//!
//! * **peak**: `window` `message.send` calls in flight (each a fresh HTTP request, as a
//!   script would make), `messages` in all; rate = messages ÷ (last notification − first
//!   call), latency = each message's call start → its `event.message` on Bob's socket;
//!   CPU of each serve and each relay per message over the phase;
//! * **one at a time**: the next message is sent when the previous one was shown, the
//!   latency of an idle path (the engine's store commit, both relays' durable writes,
//!   push delivery, decryption and the receiver's commit, and the two API hops).
//!
//! Each message must be shown exactly once (a sanity row). Both serves are stopped with
//! SIGTERM and must exit 0.

use super::plan::ServePlan;
use super::relay::{RelayProcess, RelaySpec};
use super::report::Row;
use super::stats::summarize;
use anyhow::{Context, bail};
use futures::StreamExt as _;
use petrel_client::api::{ApiClient, Subscription};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The passphrase of the bench's homes (cheap store keys: the KDF runs once per start).
const PASSPHRASE: &str = "petrel-bench";
/// How long a serve may take to print its API line, or to exit after SIGTERM.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);
/// How long pairing may take.
const PAIRING_TIMEOUT: Duration = Duration::from_secs(60);

/// Finds the `petrel` binary: `explicit` if given, else next to the relay binary.
pub fn locate_petrel(explicit: Option<&Path>, relay_bin: &Path) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("--petrel-bin {}: no such file", path.display());
    }
    let name = format!("petrel{}", std::env::consts::EXE_SUFFIX);
    let candidate = relay_bin
        .parent()
        .map(|d| d.join(&name))
        .context("the relay binary has no directory")?;
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "petrel not found at {}: run `cargo build --release -p petrel-client` first (same \
         profile as the relay), or pass --petrel-bin PATH",
        candidate.display()
    )
}

/// One `petrel serve` child.
struct ServeProcess {
    child: tokio::process::Child,
    pid: u32,
    api: ApiClient,
}

impl ServeProcess {
    async fn start(petrel: &Path, home: &Path) -> anyhow::Result<ServeProcess> {
        let log = std::fs::File::create(home.with_extension("log"))
            .with_context(|| format!("cannot create the log of {}", home.display()))?;
        let mut child = tokio::process::Command::new(petrel)
            .arg("--home")
            .arg(home)
            .arg("serve")
            .env("PETREL_PASSPHRASE", PASSPHRASE)
            .env("PETREL_DANGEROUS_TEST_KDF", "1")
            .env_remove("PETREL_HOME")
            .env_remove("PETREL_DANGEROUS_CLOCK_SKIP_SECS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", petrel.display()))?;
        let pid = child.id().context("petrel serve exited at once")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(PROCESS_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(_) => bail!("petrel serve exited before printing its API line"),
            Err(_) => bail!("petrel serve printed nothing within {PROCESS_TIMEOUT:?}"),
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        // "petrel serve: API at http://ADDR/api/v1, token in PATH"
        let (addr, token_file) = line
            .trim()
            .strip_prefix("petrel serve: API at http://")
            .and_then(|rest| rest.split_once("/api/v1, token in "))
            .with_context(|| format!("unexpected first line from petrel serve: {line:?}"))?;
        let token = std::fs::read_to_string(token_file)
            .with_context(|| format!("cannot read the token file {token_file}"))?;
        let addr = addr
            .parse()
            .with_context(|| format!("not an address: {addr}"))?;
        Ok(ServeProcess {
            child,
            pid,
            api: ApiClient::new(addr, token.trim().to_string()),
        })
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        match tokio::time::timeout(PROCESS_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => bail!("petrel serve exited with {status} after SIGTERM"),
            Ok(Err(e)) => Err(e).context("cannot wait for petrel serve"),
            Err(_) => bail!("petrel serve did not exit within {PROCESS_TIMEOUT:?} of SIGTERM"),
        }
    }
}

/// `petrel --home HOME profile create NAME --relay ADDRESS`.
async fn create_profile(
    petrel: &Path,
    home: &Path,
    name: &str,
    relay: &RelayProcess,
) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(petrel)
        .arg("--home")
        .arg(home)
        .args(["profile", "create", name, "--relay"])
        .arg(relay.address().to_string())
        .env("PETREL_PASSPHRASE", PASSPHRASE)
        .env("PETREL_DANGEROUS_TEST_KDF", "1")
        .env_remove("PETREL_HOME")
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {}", petrel.display()))?;
    if !out.status.success() {
        bail!(
            "petrel profile create {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Reads `sub` until `done` says so, within `limit`.
async fn until(
    sub: &mut Subscription,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&str, &Value) -> bool,
) -> anyhow::Result<()> {
    tokio::time::timeout(limit, async {
        while let Some(n) = sub.next_notification().await {
            if done(&n.method, &n.params) {
                return Ok(());
            }
        }
        bail!("the notification socket closed while waiting for {what}")
    })
    .await
    .with_context(|| format!("no {what} within {limit:?}"))?
}

/// The index of a bench text `m{i}`.
fn index_of(params: &Value) -> Option<usize> {
    params["text"].as_str()?.strip_prefix('m')?.parse().ok()
}

/// CPU seconds of each process, in the order given.
fn cpu(pids: &[u32]) -> anyhow::Result<Vec<f64>> {
    pids.iter()
        .map(|&pid| super::proc::cpu_seconds(Some(pid)))
        .collect()
}

/// What the peak phase saw.
struct Peak {
    rate: f64,
    latencies_us: Vec<u32>,
    shown_once: bool,
    cpu_us_per_message: Vec<f64>,
}

async fn peak(
    plan: &ServePlan,
    alice: &ApiClient,
    bob_sub: &mut Subscription,
    pids: &[u32],
) -> anyhow::Result<Peak> {
    let n = plan.messages;
    let mut started: Vec<Option<Instant>> = vec![None; n];
    let mut shown: Vec<Option<Instant>> = vec![None; n];
    let mut duplicates = 0usize;
    let cpu_before = cpu(pids)?;
    let first = Instant::now();
    let sending = async {
        let mut calls = futures::stream::iter(0..n)
            .map(|i| async move {
                let at = Instant::now();
                let sent = alice
                    .call(
                        "message.send",
                        json!({"contact": "bob", "text": format!("m{i}")}),
                    )
                    .await;
                (i, at, sent)
            })
            .buffer_unordered(plan.window.max(1));
        let mut starts = Vec::with_capacity(n);
        while let Some((i, at, sent)) = calls.next().await {
            sent.with_context(|| format!("message.send m{i}"))?;
            starts.push((i, at));
        }
        anyhow::Ok(starts)
    };
    let receiving = async {
        let mut count = 0;
        until(
            bob_sub,
            plan.timeout,
            "every message on Bob's side",
            |m, p| {
                if m == "event.message"
                    && let Some(i) = index_of(p)
                    && let Some(slot) = shown.get_mut(i)
                {
                    if slot.is_some() {
                        duplicates += 1;
                    } else {
                        *slot = Some(Instant::now());
                        count += 1;
                    }
                }
                count == n
            },
        )
        .await
    };
    let (starts, received) = tokio::join!(sending, receiving);
    for (i, at) in starts? {
        if let Some(slot) = started.get_mut(i) {
            *slot = Some(at);
        }
    }
    received?;
    let cpu_after = cpu(pids)?;
    let last = shown.iter().flatten().max().copied().unwrap_or(first);
    let mut latencies_us: Vec<u32> = started
        .iter()
        .zip(&shown)
        .filter_map(|(s, r)| Some(r.as_ref()?.saturating_duration_since(*s.as_ref()?)))
        .map(|d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
        .collect();
    latencies_us.shrink_to_fit();
    Ok(Peak {
        rate: n as f64 / last.duration_since(first).as_secs_f64().max(1e-9),
        shown_once: duplicates == 0 && shown.iter().all(Option::is_some),
        latencies_us,
        cpu_us_per_message: cpu_after
            .iter()
            .zip(&cpu_before)
            .map(|(a, b)| (a - b) * 1e6 / n as f64)
            .collect(),
    })
}

/// One message at a time: each latency is call start → shown.
async fn one_at_a_time(
    plan: &ServePlan,
    alice: &ApiClient,
    bob_sub: &mut Subscription,
) -> anyhow::Result<Vec<u32>> {
    let mut out = Vec::with_capacity(plan.latency_messages);
    for k in 0..plan.latency_messages {
        let i = plan.messages + k;
        let at = Instant::now();
        alice
            .call(
                "message.send",
                json!({"contact": "bob", "text": format!("m{i}")}),
            )
            .await
            .with_context(|| format!("message.send m{i}"))?;
        until(
            bob_sub,
            plan.timeout,
            "the message on Bob's side",
            |m, p| m == "event.message" && index_of(p) == Some(i),
        )
        .await?;
        out.push(u32::try_from(at.elapsed().as_micros()).unwrap_or(u32::MAX));
    }
    Ok(out)
}

/// Runs the scenario, appending rows.
pub async fn run(
    plan: &ServePlan,
    petrel: &Path,
    env: &super::Env,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let dir = env.work_dir.join("serve");
    let mut spec_a = RelaySpec::in_dir(&env.relay_bin, &dir.join("relay-a"))?;
    let mut spec_b = RelaySpec::in_dir(&env.relay_bin, &dir.join("relay-b"))?;
    spec_a.extra_args = vec!["--forward-to-private".to_string()];
    spec_b.extra_args = vec!["--forward-to-private".to_string()];
    let relay_a = RelayProcess::start(&spec_a).await?;
    let relay_b = match RelayProcess::start(&spec_b).await {
        Ok(relay) => relay,
        Err(e) => {
            let _ = relay_a.stop().await;
            return Err(e);
        }
    };
    let result = run_with_relays(plan, petrel, &dir, &relay_a, &relay_b, rows).await;
    let stopped_a = relay_a.stop().await;
    let stopped_b = relay_b.stop().await;
    result?;
    stopped_a?;
    stopped_b?;
    env.discard(&dir);
    Ok(())
}

async fn run_with_relays(
    plan: &ServePlan,
    petrel: &Path,
    dir: &Path,
    relay_a: &RelayProcess,
    relay_b: &RelayProcess,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let (a_home, b_home) = (dir.join("alice"), dir.join("bob"));
    create_profile(petrel, &a_home, "alice", relay_a).await?;
    create_profile(petrel, &b_home, "bob", relay_b).await?;
    let alice = ServeProcess::start(petrel, &a_home).await?;
    let bob = ServeProcess::start(petrel, &b_home).await?;
    let pids = [alice.pid, bob.pid, relay_a.pid(), relay_b.pid()];
    let measured = measure(plan, &alice.api, &bob.api, &pids, rows).await;
    let stopped_a = alice.stop().await;
    let stopped_b = bob.stop().await;
    measured?;
    stopped_a?;
    stopped_b
}

async fn measure(
    plan: &ServePlan,
    alice: &ApiClient,
    bob: &ApiClient,
    pids: &[u32],
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let mut a_sub = alice.subscribe().await?;
    let mut b_sub = bob.subscribe().await?;
    let paired = Instant::now();
    let invitation = bob
        .call("invite.create", json!({"alias": "alice"}))
        .await
        .context("invite.create")?;
    let link = invitation["link"]
        .as_str()
        .context("invite.create gave no link")?;
    alice
        .call("connect", json!({"link": link, "alias": "bob"}))
        .await
        .context("connect")?;
    for sub in [&mut a_sub, &mut b_sub] {
        until(sub, PAIRING_TIMEOUT, "contact_connected", |m, _| {
            m == "event.contact_connected"
        })
        .await?;
    }
    let pairing = paired.elapsed();
    drop(a_sub);
    eprintln!(
        "   paired in {:.0} ms; peak: {} messages, {} in flight",
        pairing.as_secs_f64() * 1e3,
        plan.messages,
        plan.window
    );

    let scenario = "serve";
    let label = "two petrel serves, two relays, API to API";
    rows.push(
        Row::info(
            "serve.pairing",
            scenario,
            "pairing through the API (invite.create → both contact_connected)",
            pairing.as_secs_f64() * 1e3,
            "ms",
        )
        .note("Includes the ML-KEM hybrid handshake, four relay round trips and the stores."),
    );
    let peak = peak(plan, alice, &mut b_sub, pids).await?;
    rows.push(
        Row::info(
            "serve.rate",
            scenario,
            &format!("messages per second, {label}"),
            peak.rate,
            "msg/s",
        )
        .note(format!(
            "One direction, {} message.send calls in flight (each its own HTTP request); a \
             message counts when Bob's event.message arrives. Five processes (two relays, \
             two serves, the bench) share the two cores.",
            plan.window
        )),
    );
    let mut latencies = peak.latencies_us;
    if let Some(s) = summarize(&mut latencies) {
        for (name, value) in [("p50", s.p50), ("p99", s.p99)] {
            rows.push(Row::info(
                &format!("serve.peak.{name}"),
                scenario,
                &format!("{name} API send → API notification at the peak, {label}"),
                value / 1e3,
                "ms",
            ));
        }
    }
    for (name, cpu) in ["sender's serve", "receiver's serve", "relay A", "relay B"]
        .iter()
        .zip(&peak.cpu_us_per_message)
    {
        rows.push(Row::info(
            &format!("serve.cpu.{}", name.replace(['\'', ' '], "_")),
            scenario,
            &format!("CPU per message at the peak, {name}"),
            *cpu,
            "µs",
        ));
    }
    rows.push(
        Row::info(
            "serve.shown_once",
            scenario,
            "every message shown exactly once on the receiving side",
            if peak.shown_once { 1.0 } else { 0.0 },
            "",
        )
        .sanity(peak.shown_once, "1"),
    );
    let mut idle = one_at_a_time(plan, alice, &mut b_sub).await?;
    if let Some(s) = summarize(&mut idle) {
        for (name, value) in [("p50", s.p50), ("p99", s.p99)] {
            rows.push(Row::info(
                &format!("serve.idle.{name}"),
                scenario,
                &format!("{name} API send → API notification, one message at a time, {label}"),
                value / 1e3,
                "ms",
            ));
        }
    }
    Ok(())
}
