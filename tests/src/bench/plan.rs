//! What a run measures and how big each scenario is, per mode.
//!
//! Three modes share one code path and differ only in sizes: `full` (the figures for the
//! README), `quick` (under two minutes; checks that the bench runs and its numbers are
//! sane) and `smoke` (tiny sizes for the CI test, where the relay is a debug build). Every
//! size is bounded here, so every scenario stops by itself.

use std::time::Duration;

/// How big a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Tiny sizes for the CI smoke test.
    Smoke,
    /// Under two minutes on the 2-core machine.
    Quick,
    /// Every size issue 7 asks for.
    Full,
}

impl Mode {
    /// The mode's name as printed.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Smoke => "smoke",
            Mode::Quick => "quick",
            Mode::Full => "full",
        }
    }
}

/// The scenarios, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Relay throughput and latency, send → deliver → ACK, durable.
    Throughput,
    /// Idle queues: resident memory, bytes on disk, start-up time.
    Storage,
    /// Resident memory per connected idle client.
    Clients,
    /// Bytes per text message on the wire.
    Wire,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 4] = [
        Scenario::Throughput,
        Scenario::Storage,
        Scenario::Clients,
        Scenario::Wire,
    ];

    /// The scenario's name as printed and as given to `--only`.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Throughput => "throughput",
            Scenario::Storage => "storage",
            Scenario::Clients => "clients",
            Scenario::Wire => "wire",
        }
    }

    /// The scenario called `name`.
    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Sizes of the throughput scenario.
#[derive(Clone, Debug)]
pub struct ThroughputPlan {
    /// Active queue counts to measure, one run each.
    pub queue_counts: Vec<usize>,
    /// Sender sessions.
    pub senders: usize,
    /// Most recipient sessions (fewer when there are fewer queues).
    pub recipients: usize,
    /// Time before the measuring window opens.
    pub warmup: Duration,
    /// The measuring window.
    pub measure: Duration,
    /// Stop after this many messages instead of after the window (smoke mode).
    pub max_messages: Option<u64>,
    /// Messages in flight in total (between SEND and ACK OK); `None` for the default of
    /// [`total_window`](super::throughput::total_window).
    pub in_flight: Option<usize>,
    /// How long the final drain may take before missing messages count as lost.
    pub drain_timeout: Duration,
}

/// Sizes of the storage scenario.
#[derive(Clone, Debug)]
pub struct StoragePlan {
    /// Idle queue counts, ascending; the relay is restarted and measured at each.
    pub queue_steps: Vec<u64>,
    /// Sessions creating queues in parallel.
    pub creators: usize,
    /// Commands in flight per creating session.
    pub window: usize,
}

/// Sizes of the idle-clients scenario.
#[derive(Clone, Debug)]
pub struct ClientsPlan {
    /// Connected idle sessions.
    pub clients: usize,
    /// Sessions connecting at once.
    pub connect_parallelism: usize,
}

/// Sizes of the wire-cost scenario.
#[derive(Clone, Debug)]
pub struct WirePlan {
    /// Messages sent one at a time through the counting proxies.
    pub messages: usize,
}

/// Everything a run does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The mode the sizes come from.
    pub mode: Mode,
    /// Throughput sizes.
    pub throughput: ThroughputPlan,
    /// Storage sizes.
    pub storage: StoragePlan,
    /// Idle-client sizes.
    pub clients: ClientsPlan,
    /// Wire-cost sizes.
    pub wire: WirePlan,
}

impl Plan {
    /// The sizes of `mode`.
    pub fn for_mode(mode: Mode) -> Plan {
        match mode {
            Mode::Smoke => Plan {
                mode,
                throughput: ThroughputPlan {
                    queue_counts: vec![1],
                    senders: 2,
                    recipients: 1,
                    warmup: Duration::ZERO,
                    measure: Duration::from_secs(15),
                    max_messages: Some(200),
                    in_flight: None,
                    drain_timeout: Duration::from_secs(10),
                },
                storage: StoragePlan {
                    queue_steps: vec![0, 1_000],
                    creators: 1,
                    window: 64,
                },
                clients: ClientsPlan {
                    clients: 20,
                    connect_parallelism: 10,
                },
                wire: WirePlan { messages: 20 },
            },
            Mode::Quick => Plan {
                mode,
                throughput: ThroughputPlan {
                    queue_counts: vec![1, 100],
                    senders: 4,
                    recipients: 4,
                    warmup: Duration::from_secs(1),
                    measure: Duration::from_secs(4),
                    max_messages: None,
                    in_flight: None,
                    drain_timeout: Duration::from_secs(20),
                },
                storage: StoragePlan {
                    queue_steps: vec![0, 100_000],
                    creators: 2,
                    window: 256,
                },
                clients: ClientsPlan {
                    clients: 1_000,
                    connect_parallelism: 32,
                },
                wire: WirePlan { messages: 200 },
            },
            Mode::Full => Plan {
                mode,
                throughput: ThroughputPlan {
                    queue_counts: vec![1, 100, 10_000],
                    senders: 4,
                    recipients: 4,
                    warmup: Duration::from_secs(3),
                    measure: Duration::from_secs(10),
                    max_messages: None,
                    in_flight: None,
                    drain_timeout: Duration::from_secs(30),
                },
                storage: StoragePlan {
                    queue_steps: vec![0, 100_000, 1_000_000],
                    creators: 2,
                    window: 256,
                },
                clients: ClientsPlan {
                    clients: 1_000,
                    connect_parallelism: 32,
                },
                wire: WirePlan { messages: 1_000 },
            },
        }
    }
}
