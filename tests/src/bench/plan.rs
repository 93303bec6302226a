//! What a run measures and how big each scenario is, per mode.
//!
//! Three modes share one code path and differ only in sizes: `full` (the figures for the
//! README), `quick` (under two minutes; checks that the bench runs and its numbers are
//! sane) and `smoke` (tiny sizes for the CI test, where the relay is a debug build). Every
//! size is bounded here, so every scenario stops by itself.

use crate::sim::SimConfig;
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
    /// Client crypto (ratchet, pairing) and the baselines: primitives alone, vodozemac.
    Crypto,
    /// Relay throughput, send → deliver → ACK, durable; latency at low and 80 % load.
    Throughput,
    /// The same through a forwarding relay (two relays); two-relay latency.
    Forwarding,
    /// The plaintext broker baseline (mosquitto, when installed).
    Broker,
    /// Idle queues: resident memory, bytes on disk, start-up time.
    Storage,
    /// Resident memory per connected idle client.
    Clients,
    /// Bytes per text message on the wire.
    Wire,
    /// The network simulator: relays killed and partitioned, every message counted.
    Network,
    /// End to end through two `petrel serve`s and two relays, API to API.
    Serve,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 9] = [
        Scenario::Crypto,
        Scenario::Throughput,
        Scenario::Forwarding,
        Scenario::Broker,
        Scenario::Storage,
        Scenario::Clients,
        Scenario::Wire,
        Scenario::Network,
        Scenario::Serve,
    ];

    /// The scenario's name as printed and as given to `--only`.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Crypto => "crypto",
            Scenario::Throughput => "throughput",
            Scenario::Forwarding => "forwarding",
            Scenario::Broker => "broker",
            Scenario::Storage => "storage",
            Scenario::Clients => "clients",
            Scenario::Wire => "wire",
            Scenario::Network => "network",
            Scenario::Serve => "serve",
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

/// Sizes of the open-loop latency phases (run after the peak of one relay at this queue
/// count, and after the peak of the forwarding scenario).
#[derive(Clone, Debug)]
pub struct LatencyPlan {
    /// The throughput queue count whose sessions also run the latency phases.
    pub queues: usize,
    /// The low load, messages per second.
    pub low_rate: f64,
    /// The loaded phase's rate as a share of the peak just measured.
    pub peak_share: f64,
    /// Time before the measuring window opens.
    pub warmup: Duration,
    /// The measuring window.
    pub measure: Duration,
    /// Most messages in flight (a safety bound of the open loop).
    pub cap: usize,
    /// How long the final drain may take.
    pub drain_timeout: Duration,
}

/// Sizes of the crypto scenario.
#[derive(Clone, Debug)]
pub struct CryptoPlan {
    /// How long each figure is measured (after one untimed batch).
    pub per_figure: Duration,
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

/// Sizes of the `petrel serve` scenario.
#[derive(Clone, Debug)]
pub struct ServePlan {
    /// Messages of the peak phase.
    pub messages: usize,
    /// `message.send` calls in flight during the peak phase.
    pub window: usize,
    /// Messages sent one at a time after the peak.
    pub latency_messages: usize,
    /// How long any one wait (every message shown, one message shown) may take.
    pub timeout: Duration,
}

/// Everything a run does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The mode the sizes come from.
    pub mode: Mode,
    /// Throughput sizes.
    pub throughput: ThroughputPlan,
    /// Forwarding sizes (the first queue count only).
    pub forwarding: ThroughputPlan,
    /// Latency phases.
    pub latency: LatencyPlan,
    /// Crypto sizes.
    pub crypto: CryptoPlan,
    /// Broker sizes: the first queue count is the number of topics.
    pub broker: ThroughputPlan,
    /// Storage sizes.
    pub storage: StoragePlan,
    /// Idle-client sizes.
    pub clients: ClientsPlan,
    /// Wire-cost sizes.
    pub wire: WirePlan,
    /// The network simulator's size; `None` skips it.
    pub network: Option<SimConfig>,
    /// The `petrel serve` scenario's sizes.
    pub serve: ServePlan,
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
                forwarding: ThroughputPlan {
                    queue_counts: vec![2],
                    senders: 2,
                    recipients: 1,
                    warmup: Duration::ZERO,
                    measure: Duration::from_secs(15),
                    max_messages: Some(100),
                    in_flight: None,
                    drain_timeout: Duration::from_secs(10),
                },
                latency: LatencyPlan {
                    queues: 1,
                    low_rate: 50.0,
                    peak_share: 0.8,
                    warmup: Duration::ZERO,
                    measure: Duration::from_millis(600),
                    cap: 64,
                    drain_timeout: Duration::from_secs(10),
                },
                crypto: CryptoPlan {
                    per_figure: Duration::from_millis(20),
                },
                broker: ThroughputPlan {
                    queue_counts: vec![10],
                    senders: 2,
                    recipients: 2,
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
                network: None,
                serve: ServePlan {
                    messages: 40,
                    window: 8,
                    latency_messages: 10,
                    timeout: Duration::from_secs(30),
                },
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
                forwarding: ThroughputPlan {
                    queue_counts: vec![100],
                    senders: 4,
                    recipients: 4,
                    warmup: Duration::from_secs(1),
                    measure: Duration::from_secs(4),
                    max_messages: None,
                    in_flight: None,
                    drain_timeout: Duration::from_secs(20),
                },
                latency: LatencyPlan {
                    queues: 100,
                    low_rate: 200.0,
                    peak_share: 0.8,
                    warmup: Duration::from_millis(500),
                    measure: Duration::from_secs(3),
                    cap: 4_096,
                    drain_timeout: Duration::from_secs(20),
                },
                crypto: CryptoPlan {
                    per_figure: Duration::from_millis(300),
                },
                broker: ThroughputPlan {
                    queue_counts: vec![100],
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
                network: Some(SimConfig {
                    send_for: Duration::from_secs(5),
                    ..SimConfig::reduced()
                }),
                serve: ServePlan {
                    messages: 2000,
                    window: 32,
                    latency_messages: 200,
                    timeout: Duration::from_secs(120),
                },
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
                forwarding: ThroughputPlan {
                    queue_counts: vec![100],
                    senders: 4,
                    recipients: 4,
                    warmup: Duration::from_secs(3),
                    measure: Duration::from_secs(10),
                    max_messages: None,
                    in_flight: None,
                    drain_timeout: Duration::from_secs(30),
                },
                latency: LatencyPlan {
                    queues: 100,
                    low_rate: 200.0,
                    peak_share: 0.8,
                    warmup: Duration::from_secs(1),
                    measure: Duration::from_secs(10),
                    cap: 4_096,
                    drain_timeout: Duration::from_secs(30),
                },
                crypto: CryptoPlan {
                    per_figure: Duration::from_secs(1),
                },
                broker: ThroughputPlan {
                    queue_counts: vec![100],
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
                network: Some(SimConfig::full()),
                serve: ServePlan {
                    messages: 10000,
                    window: 64,
                    latency_messages: 1000,
                    timeout: Duration::from_secs(300),
                },
            },
        }
    }
}
