//! What the orchestrator and the clients share while a run goes on: the phase (set by the
//! orchestrator, followed by every client) and live totals (added to by the clients, read
//! for progress lines and for the orchestrator's waits). Every change to a total also bumps
//! [`Shared::changed`], so that waits are on events, never on a clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// Where the run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Senders send at their pace.
    Send,
    /// No new messages; senders finish their outboxes and send their end markers.
    Drain,
    /// Clients close their sessions and report.
    Stop,
}

/// Live totals across all clients, for progress lines and for the orchestrator's waits.
#[derive(Debug)]
pub struct Shared {
    /// Messages sealed.
    pub sent: AtomicU64,
    /// Messages confirmed by the destination.
    pub confirmed: AtomicU64,
    /// Distinct messages delivered.
    pub delivered: AtomicU64,
    /// Deliveries of a message already delivered.
    pub duplicate_deliveries: AtomicU64,
    /// Forwards answered `Accepted`.
    pub outboxed: AtomicU64,
    /// Reconnections after a session ended.
    pub reconnects: AtomicU64,
    /// End markers confirmed to their senders.
    pub ends_confirmed: AtomicU64,
    /// End markers delivered to their recipients.
    pub ends_received: AtomicU64,
    /// Sessions that ended, per home relay.
    pub session_drops: Vec<AtomicU64>,
    /// Per (forwarding relay, destination relay) path.
    pub paths: BTreeMap<(usize, usize), PathCounters>,
    /// Bumped on every change the orchestrator may wait for.
    pub changed: watch::Sender<u64>,
}

/// Live totals of one relay path.
#[derive(Debug, Default)]
pub struct PathCounters {
    /// Forwards on this path answered `Accepted`.
    pub outboxed: AtomicU64,
    /// FORWARDs on this path submitted and not yet answered.
    pub in_flight: AtomicU64,
}

impl Shared {
    /// Zeroed totals for `relays` relays and these paths.
    pub fn new(relays: usize, paths: &BTreeSet<(usize, usize)>) -> Shared {
        Shared {
            sent: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            duplicate_deliveries: AtomicU64::new(0),
            outboxed: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            ends_confirmed: AtomicU64::new(0),
            ends_received: AtomicU64::new(0),
            session_drops: (0..relays).map(|_| AtomicU64::new(0)).collect(),
            paths: paths
                .iter()
                .map(|&p| (p, PathCounters::default()))
                .collect(),
            changed: watch::channel(0).0,
        }
    }

    pub(super) fn add(&self, counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
            self.changed.send_modify(|c| *c = c.wrapping_add(1));
        }
    }

    pub(super) fn sub(&self, counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_sub(n, Ordering::Relaxed);
            self.changed.send_modify(|c| *c = c.wrapping_add(1));
        }
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
