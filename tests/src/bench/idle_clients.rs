//! Resident memory per connected idle client.
//!
//! A fresh relay idles, its resident memory is read, then `N` clients connect (each its own
//! libp2p node, TCP connection, Noise and Yamux session and one `/petrel/client/1` stream,
//! as separate devices would) and each PINGs once; after a moment of idling the relay's
//! memory is read again. The figure is (RSS with − RSS without) / N. Every session is then
//! PINGed once more to show it is still open.
//!
//! The clients all live in the bench process, which needs about one file descriptor per
//! client (the relay inherits the same limit and needs one per client too), so the bench
//! checks the soft `ulimit -n` first.

use super::plan::ClientsPlan;
use super::relay::{RelayProcess, RelaySpec, connect_retrying};
use super::report::{Row, format_value};
use anyhow::bail;
use futures::{StreamExt, TryStreamExt};
use petrel_federation::client::{Command, Response};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Target per connected idle client (issues 3 and 7), KiB.
pub const TARGET_KIB_PER_CLIENT: f64 = 32.0;
const SETTLE: Duration = Duration::from_secs(2);

/// Runs the idle-clients scenario, appending rows.
pub async fn run(plan: &ClientsPlan, env: &super::Env, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let n = plan.clients.max(1);
    let needed = 2 * n as u64 + 256;
    if let Some(limit) = super::proc::open_files_soft_limit()
        && limit < needed
    {
        bail!(
            "{n} idle clients need about {needed} open files but the soft limit is {limit}: \
             run `ulimit -n {needed}` in this shell first (the relay inherits it)"
        );
    }
    let dir = env.work_dir.join("clients");
    let spec = RelaySpec::in_dir(&env.relay_bin, &dir)?;
    let relay = RelayProcess::start(&spec).await?;
    let result = measure(plan, n, &relay, rows).await;
    let stopped = relay.stop().await;
    result?;
    stopped?;
    env.discard(&dir);
    Ok(())
}

async fn measure(
    plan: &ClientsPlan,
    n: usize,
    relay: &RelayProcess,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    tokio::time::sleep(SETTLE).await;
    let without = relay.rss()?;
    let bench_without = super::proc::rss_bytes(None)?;
    eprintln!(
        "clients: relay idle at {:.1} MiB; connecting {n} clients",
        without as f64 / 1_048_576.0
    );
    let connected = AtomicU64::new(0);
    let retried = AtomicU64::new(0);
    let conns: Vec<_> = futures::stream::iter(0..n)
        .map(|_| async {
            let (conn, retries) = connect_retrying(relay.address()).await?;
            retried.fetch_add(u64::from(retries), Ordering::Relaxed);
            let c = connected.fetch_add(1, Ordering::Relaxed) + 1;
            if c.is_multiple_of(250) {
                eprintln!("clients: {c} connected");
            }
            anyhow::Ok(conn)
        })
        .buffer_unordered(plan.connect_parallelism.max(1))
        .try_collect()
        .await?;
    tokio::time::sleep(SETTLE).await;
    let with = relay.rss()?;
    let bench_with = super::proc::rss_bytes(None)?;
    let answering = futures::stream::iter(conns.iter())
        .map(|c| c.request(None, Command::Ping))
        .buffer_unordered(64)
        .filter(|r| futures::future::ready(matches!(r, Ok(Response::Pong))))
        .count()
        .await;
    eprintln!(
        "clients: relay at {:.1} MiB with {n} sessions; {answering} answer PING",
        with as f64 / 1_048_576.0
    );
    futures::future::join_all(conns.into_iter().map(|c| c.close())).await;

    let per_client = (with as f64 - without as f64) / n as f64 / 1024.0;
    let scenario = "memory, disk, start-up";
    let label = format!("{} connected idle clients", format_value(n as f64));
    rows.push(
        Row::info(
            "clients.rss_per_client",
            scenario,
            &format!("relay memory per client, {label}"),
            per_client,
            "KiB",
        )
        .at_most(TARGET_KIB_PER_CLIENT, "≤ 32 KiB")
        .note(format!(
            "(VmRSS with − without) / N: {:.1} MiB → {:.1} MiB. Each client is its own TCP \
             connection with Noise, Yamux and one session stream, PINGed once.",
            without as f64 / 1_048_576.0,
            with as f64 / 1_048_576.0
        )),
    );
    rows.push(Row::info(
        "clients.rss_with",
        scenario,
        &format!("relay resident memory, {label}"),
        with as f64 / 1_048_576.0,
        "MiB",
    ));
    rows.push(
        Row::info(
            "clients.bench_rss_per_client",
            scenario,
            "bench-side memory per simulated client",
            (bench_with as f64 - bench_without as f64) / n as f64 / 1024.0,
            "KiB",
        )
        .note(
            "Client side, for scale only: each simulated client runs a whole libp2p node (its \
             own swarm, transport and DNS resolver), which a real device has once.",
        ),
    );
    rows.push(
        Row::info(
            "clients.connect_retries",
            scenario,
            &format!("session opens retried while connecting {n} clients"),
            retried.load(Ordering::Relaxed) as f64,
            "tries",
        )
        .note(format!(
            "{} connecting at a time. libp2p-stream hands inbound streams over through a \
             channel with room for one: a stream arriving before the relay has taken the \
             previous one is dropped and the client must retry (the relay drains that channel \
             in a task of its own to make this rare). 0 means no session was dropped.",
            plan.connect_parallelism
        )),
    );
    rows.push(
        Row::info(
            "clients.answering",
            scenario,
            "idle sessions still answering PING",
            answering as f64,
            "sessions",
        )
        .sanity(answering == n, &format!("= {n}")),
    );
    Ok(())
}
