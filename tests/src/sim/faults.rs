//! Breaking the network and mending it, as the schedule says.
//!
//! A fault lasts its planned time *and* until the network has noticed it, so that every
//! fault really interrupts traffic however slow the machine is:
//!
//! * a killed relay stays down until a client homed on it has seen its session end and
//!   some other relay has taken a forward to it into its outbox;
//! * a partition stays until some traffic has tried to cross it (a refused connection or
//!   swallowed bytes);
//! * a kill that falls inside a blackholed path waits, before the SIGKILL, until a FORWARD
//!   on that path is in flight, so that its sender is left without an answer.
//!
//! Each of those waits has a generous limit after which the fault goes ahead anyway (the
//! report then says it was not noticed); nothing is asserted on time.

use super::live::Shared;
use super::plan::{Fault, FaultKind};
use super::proxy::{Activity, PathMode};
use super::setup::Network;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Longest wait for the network to notice a fault.
const NOTICE_WAIT: Duration = Duration::from_secs(30);

/// A fault in progress, with the counters it is judged against.
#[derive(Debug)]
pub struct Active {
    fault: Fault,
    started: Instant,
    drops: u64,
    outboxed: u64,
    activity: Activity,
    in_flight: u64,
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Forwards to `relay` taken into outboxes so far.
fn outboxed_to(shared: &Shared, relay: usize) -> u64 {
    shared
        .paths
        .iter()
        .filter(|((_, d), _)| *d == relay)
        .map(|(_, p)| get(&p.outboxed))
        .sum()
}

fn activity(net: &Network, a: usize, b: usize) -> Vec<watch::Receiver<Activity>> {
    [(a, b), (b, a)]
        .iter()
        .filter_map(|path| net.proxies.get(path))
        .map(|p| p.activity())
        .collect()
}

fn sum(receivers: &[watch::Receiver<Activity>]) -> Activity {
    receivers.iter().fold(Activity::default(), |acc, r| {
        let a = *r.borrow();
        Activity {
            refused: acc.refused + a.refused,
            swallowed: acc.swallowed + a.swallowed,
        }
    })
}

/// Waits (at most [`NOTICE_WAIT`]) until `done()` holds, re-checking whenever a client
/// reports progress. Returns whether it did.
async fn notice(shared: &Shared, done: impl Fn() -> bool) -> bool {
    let mut changes = shared.changed.subscribe();
    tokio::time::timeout(NOTICE_WAIT, changes.wait_for(|_| done()))
        .await
        .is_ok_and(|r| r.is_ok())
}

async fn set_paths(net: &Network, a: usize, b: usize, mode: PathMode) {
    for path in [(a, b), (b, a)] {
        if let Some(proxy) = net.proxies.get(&path) {
            proxy.set(mode).await;
        }
    }
}

/// Starts a fault.
pub async fn begin(net: &mut Network, shared: &Shared, fault: Fault) -> anyhow::Result<Active> {
    let mut active = Active {
        fault,
        started: Instant::now(),
        drops: 0,
        outboxed: 0,
        activity: Activity::default(),
        in_flight: 0,
    };
    match fault.kind {
        FaultKind::Kill { relay, amid } => {
            if let Some(path) = amid.and_then(|peer| shared.paths.get(&(relay, peer))) {
                notice(shared, || get(&path.in_flight) > 0).await;
                active.in_flight = get(&path.in_flight);
            }
            active.drops = get(&shared.session_drops[relay]);
            active.outboxed = outboxed_to(shared, relay);
            net.relays[relay].kill().await?;
        }
        FaultKind::Partition { a, b, mode } => {
            active.activity = sum(&activity(net, a, b));
            set_paths(net, a, b, mode).await;
        }
    }
    active.started = Instant::now();
    Ok(active)
}

/// Ends a fault once it has lasted and been noticed; returns what happened, for the report.
pub async fn end(
    net: &mut Network,
    shared: &Shared,
    homed: &[usize],
    active: Active,
) -> anyhow::Result<String> {
    tokio::time::sleep_until(active.started + active.fault.lasts).await;
    let what = match active.fault.kind {
        FaultKind::Kill { relay, amid } => {
            let clients = homed.iter().filter(|&&h| h == relay).count();
            let senders_to = shared.paths.keys().filter(|(_, d)| *d == relay).count();
            let drops = || get(&shared.session_drops[relay]) - active.drops;
            let outboxed = || outboxed_to(shared, relay) - active.outboxed;
            let noticed = notice(shared, || {
                (clients == 0 || drops() > 0) && (senders_to == 0 || outboxed() > 0)
            })
            .await;
            let restarted = Instant::now();
            net.relays[relay].restart().await?;
            let in_flight = match amid {
                Some(peer) => format!(
                    "{} forward(s) to R{peer} in flight at the kill, ",
                    active.in_flight
                ),
                None => String::new(),
            };
            format!(
                "{in_flight}{} session(s) of {clients} homed client(s) ended, {} forward(s) \
                 to it outboxed{}; restarted in {:.2} s",
                drops(),
                outboxed(),
                if noticed {
                    ""
                } else {
                    " (not noticed in time)"
                },
                restarted.elapsed().as_secs_f64()
            )
        }
        FaultKind::Partition { a, b, .. } => {
            let receivers = activity(net, a, b);
            let base = active.activity;
            let turned_away = || {
                let now = sum(&receivers);
                Activity {
                    refused: now.refused - base.refused,
                    swallowed: now.swallowed - base.swallowed,
                }
            };
            // Proxy activity is not a client event: wait on the proxies' own changes.
            let noticed = tokio::time::timeout(NOTICE_WAIT, async {
                let mut receivers = activity(net, a, b);
                while turned_away().total() == 0 && !receivers.is_empty() {
                    let changes = receivers.iter_mut().map(|r| Box::pin(r.changed()));
                    if futures::future::select_all(changes).await.0.is_err() {
                        break;
                    }
                }
            })
            .await
            .is_ok();
            set_paths(net, a, b, PathMode::Open).await;
            let seen = turned_away();
            format!(
                "{} connection(s) refused, {} byte(s) swallowed{}",
                seen.refused,
                seen.swallowed,
                if noticed {
                    ""
                } else {
                    " (not noticed in time)"
                }
            )
        }
    };
    Ok(format!(
        "{}: lasted {:.1} s, {what}",
        active.fault,
        active.started.elapsed().as_secs_f64()
    ))
}
