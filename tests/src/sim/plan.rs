//! Who talks to whom, and when what breaks: everything random about a run, drawn from its
//! seed before any process starts, so a failing run replays with the same network and the
//! same faults.
//!
//! Clients come in pairs. Each client has a home relay, where its own queue lives and
//! through which it forwards; the two clients of a pair live on different relays, so each
//! of a pair's two *streams* (one sender writing to its contact's queue) crosses from the
//! sender's relay (the forwarding relay) to the recipient's (the destination).

use super::proxy::PathMode;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use std::time::Duration;

/// One sender writing to one recipient's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    /// The sending client.
    pub sender: usize,
    /// The client whose queue it writes to.
    pub recipient: usize,
}

/// Clients, their home relays and their streams.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Client index → relay index.
    pub homes: Vec<usize>,
    /// Stream index → sender and recipient; streams `2p` and `2p + 1` are pair `p`'s two
    /// directions.
    pub streams: Vec<Stream>,
}

impl Topology {
    /// `clients / 2` pairs over `relays` relays. Pair `p`'s first client lives on relay
    /// `p mod relays` (so every relay has clients once there are as many pairs as relays),
    /// its second on a different relay drawn from `rng`.
    pub fn new(relays: usize, clients: usize, rng: &mut ChaCha8Rng) -> anyhow::Result<Topology> {
        anyhow::ensure!(relays >= 2, "the simulator needs at least two relays");
        anyhow::ensure!(
            clients >= 2 && clients.is_multiple_of(2),
            "the simulator needs an even number of clients (they come in pairs)"
        );
        let mut homes = vec![0; clients];
        let mut streams = Vec::with_capacity(clients);
        for p in 0..clients / 2 {
            let (a, b) = (2 * p, 2 * p + 1);
            homes[a] = p % relays;
            homes[b] = (homes[a] + 1 + rng.random_range(0..relays - 1)) % relays;
            streams.push(Stream {
                sender: a,
                recipient: b,
            });
            streams.push(Stream {
                sender: b,
                recipient: a,
            });
        }
        Ok(Topology { homes, streams })
    }

    /// The relay a stream's sender forwards through.
    pub fn forwarder(&self, stream: usize) -> usize {
        self.homes[self.streams[stream].sender]
    }

    /// The relay that holds a stream's queue.
    pub fn destination(&self, stream: usize) -> usize {
        self.homes[self.streams[stream].recipient]
    }

    /// Every (forwarding relay, destination relay) path some stream takes.
    pub fn paths(&self) -> BTreeSet<(usize, usize)> {
        (0..self.streams.len())
            .map(|s| (self.forwarder(s), self.destination(s)))
            .collect()
    }

    /// The stream whose sender is `client`.
    pub fn outbound(&self, client: usize) -> Option<usize> {
        self.streams.iter().position(|s| s.sender == client)
    }

    /// The stream whose queue belongs to `client`.
    pub fn inbound(&self, client: usize) -> Option<usize> {
        self.streams.iter().position(|s| s.recipient == client)
    }
}

/// What breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL the relay, restart it on the same data directory when the fault ends.
    Kill {
        /// The relay.
        relay: usize,
        /// When the kill falls inside a partition of the path from this relay to `amid`:
        /// the kill waits until a FORWARD on that path is in flight, so that its sender
        /// must find out for itself what became of it.
        amid: Option<usize>,
    },
    /// Cut the TCP paths between two relays (both directions), restore them when the
    /// fault ends.
    Partition {
        /// One relay.
        a: usize,
        /// The other.
        b: usize,
        /// How the paths fail: refusing connections or silently dropping bytes.
        mode: PathMode,
    },
}

/// One fault, timed from the start of the send phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// When it starts.
    pub at: Duration,
    /// How long it lasts (at least; it also lasts until the network has noticed it).
    pub lasts: Duration,
    /// What it is.
    pub kind: FaultKind,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            FaultKind::Kill { relay, amid: None } => write!(f, "kill R{relay}")?,
            FaultKind::Kill {
                relay,
                amid: Some(peer),
            } => write!(f, "kill R{relay} (forwards to R{peer} in flight)")?,
            FaultKind::Partition { a, b, mode } => {
                let how = match mode {
                    PathMode::Blackhole => "blackhole",
                    PathMode::Refuse | PathMode::Open => "refuse",
                };
                write!(f, "partition R{a} | R{b} ({how})")?
            }
        }
        write!(
            f,
            " at {:.1} s for {:.1} s",
            self.at.as_secs_f64(),
            self.lasts.as_secs_f64()
        )
    }
}

/// The fault schedule: `max(kills, partitions)` slots spread over the first two thirds of
/// the send phase, so that every fault ends well before sending stops.
///
/// Slot `i` partitions a pair of relays that some stream crosses (from a seeded shuffle,
/// all different while there are pairs left), alternately blackholing (even slots) and
/// refusing (odd slots), and kills a relay halfway through: in even slots the forwarding
/// end of the blackholed path, while forwards on it hang — the hardest case for a sender,
/// which gets no answer and must resubmit after its relay comes back — and in odd slots a
/// relay drawn from a seeded shuffle, away from the partition. No relay is killed twice
/// (so there are at most as many kills as relays).
pub fn schedule(
    topology: &Topology,
    relays: usize,
    kills: usize,
    partitions: usize,
    send_for: Duration,
    lasts: Duration,
    rng: &mut ChaCha8Rng,
) -> Vec<Fault> {
    let mut kill_order: Vec<usize> = (0..relays).collect();
    kill_order.shuffle(rng);
    let paths = topology.paths();
    let mut cut_order: Vec<(usize, usize)> = paths
        .iter()
        .map(|&(f, d)| (f.min(d), f.max(d)))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    cut_order.shuffle(rng);
    let slots = kills.max(partitions);
    let secs = send_for.as_secs_f64();
    let latest_end = secs * 0.85;
    let mut faults: Vec<Fault> = Vec::new();
    for i in 0..slots {
        let at = secs * (0.1 + 0.55 * i as f64 / slots as f64);
        let timed = |at: f64, kind| Fault {
            at: Duration::from_secs_f64(at),
            lasts: lasts.min(Duration::from_secs_f64((latest_end - at).max(0.5))),
            kind,
        };
        let cut = (i < partitions && !cut_order.is_empty()).then(|| {
            let (a, b) = cut_order[i % cut_order.len()];
            let mode = if i % 2 == 0 {
                PathMode::Blackhole
            } else {
                PathMode::Refuse
            };
            faults.push(timed(at, FaultKind::Partition { a, b, mode }));
            (a, b, mode)
        });
        if i >= kills {
            continue;
        }
        let kill_at = at + lasts.as_secs_f64() / 2.0;
        let killed = |relay: usize, faults: &[Fault]| {
            faults
                .iter()
                .any(|f| matches!(f.kind, FaultKind::Kill { relay: r, .. } if r == relay))
        };
        let amid = match cut {
            Some((a, b, PathMode::Blackhole)) => [(a, b), (b, a)]
                .into_iter()
                .find(|&(f, d)| paths.contains(&(f, d)) && !killed(f, &faults)),
            _ => None,
        };
        let kind = match amid {
            Some((relay, peer)) => FaultKind::Kill {
                relay,
                amid: Some(peer),
            },
            None => {
                let away = |r: usize| cut.is_none_or(|(a, b, _)| r != a && r != b);
                let fresh: Vec<usize> = kill_order
                    .iter()
                    .copied()
                    .filter(|&r| !killed(r, &faults))
                    .collect();
                let Some(relay) = fresh
                    .iter()
                    .copied()
                    .find(|&r| away(r))
                    .or(fresh.first().copied())
                else {
                    // Every relay has been killed once already.
                    continue;
                };
                FaultKind::Kill { relay, amid: None }
            }
        };
        faults.push(timed(kill_at, kind));
    }
    faults
}

/// The run's random source for planning, from its seed.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn pairs_cross_relays_in_both_directions() {
        let t = Topology::new(20, 200, &mut rng(7)).unwrap();
        assert_eq!(t.streams.len(), 200);
        for s in 0..t.streams.len() {
            assert_ne!(t.forwarder(s), t.destination(s), "stream {s}");
        }
        for c in 0..200 {
            let (out, inb) = (t.outbound(c).unwrap(), t.inbound(c).unwrap());
            // The client's partner writes back to it.
            assert_eq!(t.streams[out].recipient, t.streams[inb].sender);
        }
        // Every relay has clients.
        let homes: BTreeSet<usize> = t.homes.iter().copied().collect();
        assert_eq!(homes.len(), 20);
    }

    #[test]
    fn schedule_is_seeded_bounded_and_varied() {
        let t = Topology::new(20, 200, &mut rng(1)).unwrap();
        let send = Duration::from_secs(60);
        let lasts = Duration::from_secs(5);
        let plan = |seed| schedule(&t, 20, 4, 4, send, lasts, &mut rng(seed));
        assert_eq!(plan(9), plan(9));
        let faults = plan(9);
        assert_eq!(faults.len(), 8);
        let mut killed = BTreeSet::new();
        let mut cut = BTreeSet::new();
        for f in &faults {
            assert!(f.at + f.lasts <= send.mul_f64(0.85), "{f}");
            match f.kind {
                FaultKind::Kill { relay, amid } => {
                    assert!(killed.insert(relay), "{relay} killed twice");
                    if let Some(peer) = amid {
                        assert!(t.paths().contains(&(relay, peer)), "{f}");
                    }
                }
                FaultKind::Partition { a, b, .. } => {
                    assert!(t.paths().contains(&(a, b)) || t.paths().contains(&(b, a)));
                    assert!(cut.insert((a, b)));
                }
            }
        }
        let amid = faults
            .iter()
            .filter(|f| matches!(f.kind, FaultKind::Kill { amid: Some(_), .. }))
            .count();
        assert_eq!(amid, 2);
    }

    #[test]
    fn reduced_schedule_kills_a_forwarder_inside_a_blackhole() {
        let t = Topology::new(6, 24, &mut rng(7)).unwrap();
        let faults = schedule(
            &t,
            6,
            1,
            1,
            Duration::from_secs(10),
            Duration::from_secs(2),
            &mut rng(7),
        );
        let [cut, kill] = faults.as_slice() else {
            panic!("{faults:?}");
        };
        let FaultKind::Partition { a, b, mode } = cut.kind else {
            panic!("{cut}");
        };
        assert_eq!(mode, PathMode::Blackhole);
        let FaultKind::Kill {
            relay,
            amid: Some(peer),
        } = kill.kind
        else {
            panic!("{kill}");
        };
        assert!((relay, peer) == (a, b) || (relay, peer) == (b, a));
        assert!(cut.at < kill.at && kill.at < cut.at + cut.lasts);
    }

    #[test]
    fn too_few_relays_or_odd_clients_are_refused() {
        assert!(Topology::new(1, 4, &mut rng(0)).is_err());
        assert!(Topology::new(3, 5, &mut rng(0)).is_err());
    }
}
