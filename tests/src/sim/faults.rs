//! Breaking the network and mending it, as the schedule says.
//!
//! A fault lasts its planned time *and* until the network has noticed it, so that every
//! fault really interrupts traffic however slow the machine is: a killed relay stays down
//! until a client homed on it has seen its session end; a partition stays until some relay
//! has tried the cut path and been refused. Each of those waits has a generous limit after
//! which the fault ends anyway (the report says so); nothing is asserted on time.

use super::client::Shared;
use super::plan::{Fault, FaultKind};
use super::setup::Network;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Longest wait for the network to notice a fault.
const NOTICE_WAIT: Duration = Duration::from_secs(30);

/// A fault in progress.
#[derive(Debug)]
pub struct Active {
    fault: Fault,
    started: Instant,
    /// Session drops at the killed relay, or refused connections on the cut paths, before
    /// the fault.
    baseline: u64,
}

fn refused(net: &Network, a: usize, b: usize) -> Vec<watch::Receiver<u64>> {
    [(a, b), (b, a)]
        .iter()
        .filter_map(|path| net.proxies.get(path))
        .map(|p| p.refused())
        .collect()
}

fn total(receivers: &[watch::Receiver<u64>]) -> u64 {
    receivers.iter().map(|r| *r.borrow()).sum()
}

/// Starts a fault.
pub async fn begin(net: &mut Network, shared: &Shared, fault: Fault) -> anyhow::Result<Active> {
    let baseline = match fault.kind {
        FaultKind::Kill { relay } => {
            let before = shared.session_drops[relay].load(Ordering::Relaxed);
            net.relays[relay].kill().await?;
            before
        }
        FaultKind::Partition { a, b } => {
            let before = total(&refused(net, a, b));
            for path in [(a, b), (b, a)] {
                if let Some(proxy) = net.proxies.get(&path) {
                    proxy.cut().await;
                }
            }
            before
        }
    };
    Ok(Active {
        fault,
        started: Instant::now(),
        baseline,
    })
}

/// Ends a fault once it has lasted and been noticed; returns what happened, for the report.
pub async fn end(
    net: &mut Network,
    shared: &Shared,
    homed: &[usize],
    active: Active,
) -> anyhow::Result<String> {
    tokio::time::sleep_until(active.started + active.fault.lasts).await;
    let noticed = match active.fault.kind {
        FaultKind::Kill { relay } => {
            let clients = homed.iter().filter(|&&h| h == relay).count();
            let mut changes = shared.changed.subscribe();
            let drops = || shared.session_drops[relay].load(Ordering::Relaxed) - active.baseline;
            let seen = clients == 0
                || tokio::time::timeout(NOTICE_WAIT, changes.wait_for(|_| drops() > 0))
                    .await
                    .is_ok();
            let restarted = Instant::now();
            net.relays[relay].restart().await?;
            format!(
                "{} session(s) of {clients} homed client(s) ended{}; restarted in {:.2} s",
                drops(),
                if seen { "" } else { " (not noticed in time)" },
                restarted.elapsed().as_secs_f64()
            )
        }
        FaultKind::Partition { a, b } => {
            let mut receivers = refused(net, a, b);
            let noticed = tokio::time::timeout(NOTICE_WAIT, async {
                while total(&receivers) <= active.baseline && !receivers.is_empty() {
                    let changes = receivers.iter_mut().map(|r| Box::pin(r.changed()));
                    let (result, _, _) = futures::future::select_all(changes).await;
                    if result.is_err() {
                        break;
                    }
                }
            })
            .await
            .is_ok();
            for path in [(a, b), (b, a)] {
                if let Some(proxy) = net.proxies.get(&path) {
                    proxy.restore();
                }
            }
            format!(
                "{} connection(s) refused{}",
                total(&receivers) - active.baseline,
                if noticed {
                    ""
                } else {
                    " (not noticed in time)"
                }
            )
        }
    };
    Ok(format!(
        "{}: lasted {:.1} s, {noticed}",
        active.fault,
        active.started.elapsed().as_secs_f64()
    ))
}
