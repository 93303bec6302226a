//! The network simulator (issue 7, item 8): real `petrel-relay` processes on loopback, pairs
//! of clients on different relays writing to each other through their own relays, relays
//! killed and restarted and relay paths cut mid-run — and then a count of what arrived.
//!
//! Flow of [`run`]:
//!
//! 1. **Plan** ([`plan`]): from the seed, each client's home relay, the pairs (two streams
//!    each, one per direction, always across two relays) and the fault schedule.
//! 2. **Network** ([`setup::Network`], [`relays`], [`proxy`]): one process per relay, and
//!    one cuttable TCP proxy per (forwarding relay, destination relay) path; senders name
//!    the destination by its key at the proxy's port, so the forwarding relay reaches it
//!    only through that proxy.
//! 3. **Contact** ([`setup`]): each client creates its queue on its home relay; each sender
//!    fetches the destination's RelayInfo through its own relay and sends the unsigned
//!    Hello with FORWARD; the recipient SECUREs its queue with the key in it.
//! 4. **Send** ([`client`], [`outbox`]): every sender seals signed messages at its pace
//!    (bounded by a window of unconfirmed messages) while the schedule kills and restarts
//!    relays and cuts and restores paths ([`faults`]). Senders keep every message until
//!    the destination's sealed `Ok`, long-poll FORWARD_STATUS for accepted ones, reconnect
//!    after their relay restarts and resubmit the identical envelope whenever unsure.
//! 5. **Drain**: no new messages; once its outbox is empty each sender sends an end marker
//!    through the same path. By then every earlier submission has been answered, and a
//!    forwarding relay queues a forward behind any outbox backlog for the same destination,
//!    so a second copy of an earlier message would be stored before the end marker.
//! 6. **Count** ([`ledger`], [`report`]): every recipient books each delivery by the
//!    message number in the body and the relay's message ID, which tells a new message from
//!    an allowed redelivery (ACK not yet confirmed) from a message stored twice; the books
//!    add up to a [`SimReport`]. While the run goes on, [`live`] totals feed the progress
//!    lines and every wait.
//!
//! **What counts as duplicated.** `duplicated` is the number of *distinct* messages a relay
//! stored more than once (delivered under two or more relay message IDs). Senders only ever
//! resubmit the identical envelope, which the destination must recognise by its replay tag,
//! so a sender's resubmission is never a duplicate unless a relay stores it twice.
//! `duplicate_deliveries` counts every extra delivery, whatever its cause, including the
//! redeliveries §8 allows (a message pushed again to a new subscription before its ACK was
//! confirmed, counted in `redeliveries`); `redelivered_after_ack` counts the ones it
//! forbids. `lost` is messages sent and never delivered; `reordered` is messages delivered
//! for the first time after a higher-numbered message of the same sender (reported, not
//! judged). The run passes when every message is delivered, none is lost, none is
//! duplicated, none was redelivered after its ACK and none was refused.

pub mod client;
pub mod faults;
pub mod ledger;
pub mod live;
pub mod message;
pub mod outbox;
pub mod plan;
pub mod proxy;
pub mod relays;
pub mod report;
pub mod setup;

pub use report::SimReport;

use client::{Client, Pace};
use live::{Phase, Shared};
use rand::RngExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, Interval};

/// How big a run is and what breaks.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Relay processes.
    pub relays: usize,
    /// Clients (an even number: they come in pairs).
    pub clients: usize,
    /// How long senders send.
    pub send_for: Duration,
    /// Messages per second per sender.
    pub rate: f64,
    /// Unconfirmed messages per sender at most (a tick that finds the outbox full sends
    /// nothing, so the load stays bounded while a path is down).
    pub window: usize,
    /// Relays killed (SIGKILL) and restarted during the send phase.
    pub kills: usize,
    /// Relay pairs partitioned (both directions of their path cut) and restored.
    pub partitions: usize,
    /// How long each fault lasts (at least).
    pub fault_for: Duration,
    /// How long the drain may take before the run gives up and counts what is missing.
    pub drain_timeout: Duration,
    /// Seeds the plan, the clients' keys and their envelope keys.
    pub seed: u64,
    /// Keep the run's directory (relay data and logs) even when the run passes; it is
    /// always kept when it fails.
    pub keep: bool,
}

impl SimConfig {
    /// Issue 7's size: 20 relays, 200 clients (100 pairs, 200 streams), a minute of
    /// sending, four kills and four partitions.
    pub fn full() -> SimConfig {
        SimConfig {
            relays: 20,
            clients: 200,
            send_for: Duration::from_secs(60),
            rate: 2.0,
            window: 64,
            kills: 4,
            partitions: 4,
            fault_for: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(300),
            seed: 7,
            keep: false,
        }
    }

    /// The suite's size: 6 relays, 24 clients, one kill and one partition; well under a
    /// minute with debug relays on a busy 2-core machine.
    pub fn reduced() -> SimConfig {
        SimConfig {
            relays: 6,
            clients: 24,
            send_for: Duration::from_secs(10),
            rate: 4.0,
            window: 32,
            kills: 1,
            partitions: 1,
            fault_for: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(180),
            seed: 7,
            keep: false,
        }
    }
}

/// How often a progress line is printed while the run sends and drains.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Longest wait for the clients to close their sessions and report.
const STOP_WAIT: Duration = Duration::from_secs(60);

fn status_line(shared: &Shared, started: Instant) -> String {
    let get = Shared::get;
    format!(
        "sim: {:6.1} s  sent {}  confirmed {}  delivered {}  outboxed {}  duplicate deliveries {}  reconnects {}  ends {}/{}",
        started.elapsed().as_secs_f64(),
        get(&shared.sent),
        get(&shared.confirmed),
        get(&shared.delivered),
        get(&shared.outboxed),
        get(&shared.duplicate_deliveries),
        get(&shared.reconnects),
        get(&shared.ends_received),
        get(&shared.ends_confirmed),
    )
}

/// Waits until `deadline` or until `done()` holds (checked whenever a client reports
/// progress), printing a status line every [`PROGRESS_EVERY`]. Returns `done()`.
async fn wait(
    deadline: Instant,
    done: impl Fn() -> bool,
    shared: &Shared,
    ticker: &mut Interval,
    started: Instant,
    progress: &mut impl FnMut(&str),
) -> bool {
    let mut changes = shared.changed.subscribe();
    loop {
        if done() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return done(),
            _ = ticker.tick() => progress(&status_line(shared, started)),
            _ = changes.changed() => {}
        }
    }
}

/// Runs the simulation: starts `cfg.relays` relay processes from `relay_bin` in a fresh
/// directory under `work_dir`, runs the clients in this process, and reports. `progress`
/// gets one line at a time.
pub async fn run(
    relay_bin: &Path,
    work_dir: &Path,
    cfg: &SimConfig,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<SimReport> {
    anyhow::ensure!(
        cfg.rate > 0.0 && cfg.window > 0,
        "rate and window must be positive"
    );
    anyhow::ensure!(cfg.kills <= cfg.relays, "no relay is killed twice");
    let started = Instant::now();
    let mut rng = plan::rng(cfg.seed);
    let topology = plan::Topology::new(cfg.relays, cfg.clients, &mut rng)?;
    let schedule = plan::schedule(
        &topology,
        cfg.relays,
        cfg.kills,
        cfg.partitions,
        cfg.send_for,
        cfg.fault_for,
        &mut rng,
    );
    let paths = topology.paths();
    progress(&format!(
        "sim: {} relays, {} clients ({} pairs, {} streams over {} relay paths), seed {}",
        cfg.relays,
        cfg.clients,
        cfg.clients / 2,
        topology.streams.len(),
        paths.len(),
        cfg.seed
    ));
    for fault in &schedule {
        progress(&format!("sim: planned {fault}"));
    }
    let dir = tempfile::Builder::new()
        .prefix("petrel-sim-")
        .tempdir_in(work_dir)?;
    let planned = Planned {
        topology,
        schedule,
        rng,
        started,
    };
    match simulate(relay_bin, dir.path(), cfg, planned, &mut progress).await {
        Ok(mut report) => {
            if cfg.keep || !report.passed() {
                report.kept_dir = Some(dir.keep().display().to_string());
            }
            progress(&format!("{report}"));
            Ok(report)
        }
        Err(e) => {
            let kept = dir.keep();
            Err(e.context(format!(
                "the simulation failed; its relays' data and logs are kept in {}",
                kept.display()
            )))
        }
    }
}

/// What [`run`] drew from the seed before starting anything.
struct Planned {
    topology: plan::Topology,
    schedule: Vec<plan::Fault>,
    rng: rand_chacha::ChaCha8Rng,
    started: Instant,
}

/// Everything after planning, in `dir`.
async fn simulate(
    relay_bin: &Path,
    dir: &Path,
    cfg: &SimConfig,
    planned: Planned,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<SimReport> {
    let Planned {
        topology,
        schedule,
        mut rng,
        started,
    } = planned;
    let paths = topology.paths();
    let mut net = setup::Network::start(relay_bin, dir, cfg.relays, &paths).await?;
    progress(&format!(
        "sim: {} relays and {} path proxies up after {:.1} s; making contact",
        cfg.relays,
        paths.len(),
        started.elapsed().as_secs_f64()
    ));
    let shared = Arc::new(Shared::new(cfg.relays, &paths));
    let parts = match setup::clients(&net, &topology, cfg.seed, &shared).await {
        Ok(parts) => parts,
        Err(e) => {
            net.stop().await;
            return Err(e);
        }
    };
    progress(&format!(
        "sim: {} clients in contact after {:.1} s; sending for {:.0} s at {} msg/s each",
        parts.len(),
        started.elapsed().as_secs_f64(),
        cfg.send_for.as_secs_f64(),
        cfg.rate
    ));

    let (phase, phase_rx) = watch::channel(Phase::Send);
    let period = 1.0 / cfg.rate;
    let mut tasks = Vec::new();
    for p in parts {
        let pace = Pace {
            rate: cfg.rate,
            window: cfg.window,
            offset: Duration::from_secs_f64(rng.random_range(0.0..period)),
        };
        let client = Client::new(p);
        tasks.push(tokio::spawn(client.run(
            phase_rx.clone(),
            shared.clone(),
            pace,
        )));
    }

    let mut report = SimReport {
        relays: cfg.relays,
        clients: cfg.clients,
        pairs: cfg.clients / 2,
        streams: topology.streams.len(),
        seed: cfg.seed,
        send_secs: cfg.send_for.as_secs_f64(),
        ..SimReport::default()
    };
    let driven = drive(
        &mut net,
        &shared,
        &topology,
        &schedule,
        cfg,
        &phase,
        &mut report,
        progress,
    )
    .await;

    phase.send_replace(Phase::Stop);
    let mut clients = Vec::new();
    for task in tasks {
        match tokio::time::timeout(STOP_WAIT, task).await {
            Ok(Ok(r)) => clients.push(r),
            Ok(Err(e)) => report.anomalies.push(format!("a client task failed: {e}")),
            Err(_) => report
                .anomalies
                .push("a client did not stop in time".to_string()),
        }
    }
    report.relay_stop_errors = net.stop().await;
    driven?;
    report::tally(&mut report, &topology, clients);
    report.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The send phase with its faults, then the drain.
#[allow(clippy::too_many_arguments)]
async fn drive(
    net: &mut setup::Network,
    shared: &Shared,
    topology: &plan::Topology,
    schedule: &[plan::Fault],
    cfg: &SimConfig,
    phase: &watch::Sender<Phase>,
    report: &mut SimReport,
    progress: &mut impl FnMut(&str),
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut ticker = tokio::time::interval_at(started + PROGRESS_EVERY, PROGRESS_EVERY);
    let never = || false;
    // Fault starts and ends, in time order (an end before a start at the same moment).
    let mut timeline: Vec<(Duration, bool, usize)> = Vec::new();
    for (i, fault) in schedule.iter().enumerate() {
        timeline.push((fault.at, true, i));
        timeline.push((fault.at + fault.lasts, false, i));
    }
    timeline.sort_by_key(|&(at, starts, i)| (at, starts, i));
    let mut active: Vec<Option<faults::Active>> = schedule.iter().map(|_| None).collect();
    for (at, starts, i) in timeline {
        wait(started + at, never, shared, &mut ticker, started, progress).await;
        if starts {
            progress(&format!("sim: {}", schedule[i]));
            active[i] = Some(faults::begin(net, shared, schedule[i]).await?);
            match schedule[i].kind {
                plan::FaultKind::Kill { .. } => report.kills += 1,
                plan::FaultKind::Partition { .. } => report.partitions += 1,
            }
        } else if let Some(a) = active[i].take() {
            let what = faults::end(net, shared, &topology.homes, a).await?;
            progress(&format!("sim: ended {what}"));
            report.faults.push(what);
        }
    }
    let send_end = started + cfg.send_for;
    wait(send_end, never, shared, &mut ticker, started, progress).await;

    phase.send_replace(Phase::Drain);
    let drain_started = Instant::now();
    progress(&format!(
        "sim: sending stopped after {:.1} s; draining",
        started.elapsed().as_secs_f64()
    ));
    let streams = topology.streams.len() as u64;
    let done = || {
        Shared::get(&shared.ends_confirmed) >= streams
            && Shared::get(&shared.ends_received) >= streams
    };
    report.drained = wait(
        drain_started + cfg.drain_timeout,
        done,
        shared,
        &mut ticker,
        started,
        progress,
    )
    .await;
    report.drain_secs = drain_started.elapsed().as_secs_f64();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `run` can be spawned (the bench runs scenarios on a multi-threaded runtime).
    #[test]
    fn run_is_send() {
        fn send<T: Send>(_: &T) {}
        let cfg = SimConfig::reduced();
        let future = run(Path::new("petrel-relay"), Path::new("."), &cfg, |_| {});
        send(&future);
    }
}
