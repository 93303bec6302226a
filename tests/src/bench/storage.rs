//! Idle queues: the relay's resident memory, bytes on disk and start-up time as the number
//! of queues grows.
//!
//! One relay and one data directory for the whole scenario. For each step (0, 100,000 and
//! in full mode 1,000,000 queues) the missing queues are created and SECUREd through the
//! protocol, the relay is stopped with SIGTERM and started again on the same directory, and
//! then: start-up is the time from spawn to the first PONG on a fresh session (the
//! bench's client start and Noise handshake included), and resident memory (`VmRSS`) is read
//! once the relay has been idle for a moment with no session open. Queue records live in
//! redb, so a restarted relay should hold none of them in memory beyond redb's page cache.

use super::plan::StoragePlan;
use super::queues::create_idle;
use super::relay::{RelayProcess, RelaySpec, connect};
use super::report::{Row, format_value};
use anyhow::Context;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Resident memory target at 100,000 idle queues (issues 3 and 7).
pub const TARGET_RSS_100K: f64 = 64.0;
/// Start-up target (issue 7), milliseconds.
pub const TARGET_STARTUP_MS: f64 = 1_000.0;
/// How long the restarted relay idles before its memory is read.
const SETTLE: Duration = Duration::from_secs(2);

const MIB: f64 = 1024.0 * 1024.0;

/// Creates `count` more idle queues on `relay`, printing progress.
async fn populate(relay: &RelayProcess, count: u64, plan: &StoragePlan) -> anyhow::Result<f64> {
    let creators = plan.creators.max(1) as u64;
    let mut conns = Vec::new();
    for _ in 0..creators {
        conns.push(connect(relay.address()).await?);
    }
    let done = AtomicU64::new(0);
    let started = Instant::now();
    {
        let work = futures::future::try_join_all(conns.iter().enumerate().map(|(i, conn)| {
            let share = count / creators + u64::from((i as u64) < count % creators);
            create_idle(conn, share, plan.window, &done)
        }));
        tokio::pin!(work);
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        ticker.tick().await;
        loop {
            tokio::select! {
                result = &mut work => { result?; break; }
                _ = ticker.tick() => {
                    let n = done.load(Ordering::Relaxed);
                    eprintln!(
                        "storage: {} of {} queues created ({} /s)",
                        format_value(n as f64),
                        format_value(count as f64),
                        format_value(n as f64 / started.elapsed().as_secs_f64())
                    );
                }
            }
        }
    }
    for conn in conns {
        conn.close().await;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Runs the storage scenario, appending rows.
pub async fn run(plan: &StoragePlan, env: &super::Env, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let dir = env.work_dir.join("storage");
    let spec = RelaySpec::in_dir(&env.relay_bin, &dir)?;
    let mut relay = RelayProcess::start(&spec).await?;
    let mut created: u64 = 0;
    let mut empty_size: Option<u64> = None;
    let scenario = "memory, disk, start-up";
    for &step in &plan.queue_steps {
        let label = format!("{} idle queues", format_value(step as f64));
        let key = format!("storage.q{step}");
        if step > created {
            eprintln!(
                "storage: creating {} queues",
                format_value((step - created) as f64)
            );
            let rate = populate(&relay, step - created, plan).await?;
            rows.push(
                Row::info(
                    &format!("{key}.create_rate"),
                    scenario,
                    &format!("CREATE + SECURE rate while filling to {label}"),
                    rate,
                    "queues/s",
                )
                .note(format!(
                    "{} session(s), {} commands in flight each; every CREATE and SECURE is \
                     signed and committed durably.",
                    plan.creators, plan.window
                )),
            );
            created = step;
        }
        eprintln!("storage: restarting the relay with {label}");
        relay.stop().await?;
        relay = RelayProcess::start(&spec).await?;
        let conn = connect(relay.address()).await?;
        let to_pong = relay.spawned_at().elapsed();
        let to_address = relay.spawn_to_address();
        let read_at_start = relay.read_chars()?;
        conn.close().await;
        tokio::time::sleep(SETTLE).await;
        let rss = relay.rss()? as f64 / MIB;
        let size = std::fs::metadata(spec.store_file())
            .with_context(|| format!("cannot stat {}", spec.store_file().display()))?
            .len();
        if step == 0 {
            empty_size = Some(size);
        }
        eprintln!(
            "storage: {label}: first PONG after {:.0} ms, RSS {rss:.1} MiB, store {:.1} MiB, \
             {:.1} MiB read at start",
            to_pong.as_secs_f64() * 1e3,
            size as f64 / MIB,
            read_at_start as f64 / MIB
        );

        let mut rss_row = Row::info(
            &format!("{key}.rss"),
            scenario,
            &format!("relay resident memory, {label}"),
            rss,
            "MiB",
        );
        if step == 100_000 {
            rss_row = rss_row.at_most(TARGET_RSS_100K, "≤ 64 MiB");
        }
        rows.push(rss_row.note(
            "VmRSS from /proc/PID/status, after a restart on the same data directory and 2 s idle \
             with no session open (redb's page cache is capped at 16 MiB by the relay).",
        ));
        rows.push(
            Row::info(
                &format!("{key}.startup"),
                scenario,
                &format!("start-up: spawn → first PONG, {label}"),
                to_pong.as_secs_f64() * 1e3,
                "ms",
            )
            .at_most(TARGET_STARTUP_MS, "< 1,000 ms")
            .note(
                "From spawning the process to the PONG of a fresh session: includes the bench \
                 client's libp2p start, TCP connect, Noise and Yamux handshakes and the hello.",
            ),
        );
        rows.push(
            Row::info(
                &format!("{key}.startup_read"),
                scenario,
                &format!("start-up: bytes read until the first PONG, {label}"),
                read_at_start as f64 / MIB,
                "MiB",
            )
            .note(
                "rchar of /proc/PID/io (page-cache hits included). redb opens a cleanly closed \
                 store by loading its recorded allocator state; a store the previous process did \
                 not close (its Database was never dropped) is repaired by reading every page, \
                 which costs time and memory in proportion to the store.",
            ),
        );
        rows.push(Row::info(
            &format!("{key}.spawn_to_address"),
            scenario,
            &format!("start-up: spawn → address printed, {label}"),
            to_address.as_secs_f64() * 1e3,
            "ms",
        ));
        if step > 0 {
            let marginal = empty_size
                .filter(|&e| size > e)
                .map(|e| (size - e) as f64 / step as f64);
            rows.push(
                Row::info(
                    &format!("{key}.disk_per_queue"),
                    scenario,
                    &format!("bytes on disk per idle queue, {label}"),
                    size as f64 / step as f64,
                    "B",
                )
                .note(format!(
                    "relay.redb size / queues ({:.1} MiB file{}); records hold hashes of the \
                     recipient and sender keys, the delivery key and counters, plus the sender-ID \
                     index.",
                    size as f64 / MIB,
                    marginal.map_or(String::new(), |m| format!(
                        "; {m:.0} B/queue above the empty store"
                    ))
                )),
            );
        }
    }
    relay.stop().await?;
    env.discard(&dir);
    Ok(())
}
