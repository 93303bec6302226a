//! `petrel-bench`: real relay processes, simulated clients on loopback, one table.
//!
//! Flow: [`plan::Plan`] fixes every size for a mode (smoke, quick, full). Each relay scenario
//! starts its own `petrel-relay` child processes ([`relay::RelayProcess`]) on 127.0.0.1 with
//! a data directory under one temporary directory, drives it with
//! [`RelayConnection`](petrel_federation::transport::connection::RelayConnection)s in this
//! process, stops it with SIGTERM and appends [`report::Row`]s:
//!
//! * [`crypto`]: the ratchet and the pairing handshake's crypto, the primitives alone and
//!   vodozemac's Olm as baselines (in this process, no relay);
//! * [`throughput`]: send → deliver → ACK, durable, at 1, 100 and 10,000 queues, with the
//!   [`latency`] phases (low and 80 % load) at 100 queues;
//! * [`forwarding`]: the same through a forwarding relay (two relays), with its latency
//!   phases;
//! * [`broker`]: the plaintext broker baseline, mosquitto with QoS 1 and persistence, when
//!   it is installed;
//! * [`storage`]: resident memory, bytes on disk and start-up time with idle queues;
//! * [`idle_clients`]: resident memory per connected idle client;
//! * [`wire`]: bytes per text message per hop, computed and measured;
//! * [`network`]: the network simulator ([`crate::sim`]): relays killed and partitioned
//!   mid-run, every message counted;
//! * [`serve`]: end to end through two `petrel serve`s and two relays, API send → API
//!   notification: rate, latency at the peak and one at a time, CPU per process.
//!
//! A scenario that fails becomes a failed row and the others still run; the binary exits
//! non-zero when any sanity check failed. Target misses never fail a run.

pub mod broker;
pub mod crypto;
pub mod forwarding;
pub mod idle_clients;
pub mod latency;
pub mod network;
pub mod plan;
pub mod proc;
pub mod proxy;
pub mod queues;
pub mod relay;
pub mod report;
pub mod serve;
pub mod stats;
pub mod storage;
pub mod throughput;
pub mod traffic;
pub mod wire;

use plan::{Mode, Plan, Scenario};
use report::{Report, Row, RunInfo};
use std::path::PathBuf;
use std::time::Instant;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Sizes.
    pub mode: Mode,
    /// The `petrel-relay` binary.
    pub relay_bin: PathBuf,
    /// The `petrel` binary given with `--petrel-bin` (default: next to the relay's).
    pub petrel_bin: Option<PathBuf>,
    /// Where the temporary directory goes (default: the system's).
    pub work_dir: Option<PathBuf>,
    /// Scenarios to run; empty for all.
    pub only: Vec<Scenario>,
    /// Keep the temporary directory (relay data and logs) instead of deleting it.
    pub keep: bool,
    /// Throughput queue counts instead of the mode's.
    pub queues: Vec<usize>,
    /// Throughput messages in flight instead of the default.
    pub in_flight: Option<usize>,
}

/// Where scenarios put their relays.
#[derive(Clone, Debug)]
pub struct Env {
    /// The `petrel-relay` binary.
    pub relay_bin: PathBuf,
    /// The run's temporary directory; each scenario makes its own directory in it.
    pub work_dir: PathBuf,
    /// Keep scenario directories after use.
    pub keep: bool,
}

impl Env {
    /// Deletes a finished scenario's directory (a million queues take space) unless kept.
    pub fn discard(&self, dir: &std::path::Path) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs the scenarios and returns the report.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let mut plan = Plan::for_mode(options.mode);
    if !options.queues.is_empty() {
        plan.throughput.queue_counts = options.queues.clone();
    }
    plan.throughput.in_flight = options.in_flight.or(plan.throughput.in_flight);
    let started = Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let load_before = proc::load_average();
    let mut builder = tempfile::Builder::new();
    builder.prefix("petrel-bench-");
    let tmp = match &options.work_dir {
        Some(dir) => builder.tempdir_in(dir)?,
        None => builder.tempdir()?,
    };
    eprintln!(
        "petrel-bench --{}: relay {}, work dir {}",
        options.mode.name(),
        options.relay_bin.display(),
        tmp.path().display()
    );
    let mut rows: Vec<Row> = Vec::new();
    for scenario in Scenario::ALL {
        if !options.only.is_empty() && !options.only.contains(&scenario) {
            continue;
        }
        eprintln!("== {}", scenario.name());
        let scenario_started = Instant::now();
        let env = Env {
            relay_bin: options.relay_bin.clone(),
            work_dir: tmp.path().to_path_buf(),
            keep: options.keep,
        };
        let result = match scenario {
            Scenario::Crypto => crypto::run(&plan.crypto, &mut rows).await,
            Scenario::Throughput => {
                throughput::run(&plan.throughput, &plan.latency, &env, &mut rows).await
            }
            Scenario::Forwarding => {
                forwarding::run(&plan.forwarding, &plan.latency, &env, &mut rows).await
            }
            Scenario::Broker => broker::run(&plan.broker, &env, &mut rows).await,
            Scenario::Storage => storage::run(&plan.storage, &env, &mut rows).await,
            Scenario::Clients => idle_clients::run(&plan.clients, &env, &mut rows).await,
            Scenario::Wire => wire::run(plan.wire.messages, &env, &mut rows).await,
            Scenario::Network => network::run(plan.network.as_ref(), &env, &mut rows).await,
            Scenario::Serve => {
                match serve::locate_petrel(options.petrel_bin.as_deref(), &options.relay_bin) {
                    Ok(petrel) => serve::run(&plan.serve, &petrel, &env, &mut rows).await,
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(()) => eprintln!(
                "== {} done in {:.1} s",
                scenario.name(),
                scenario_started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!("== {} FAILED: {e:#}", scenario.name());
                rows.push(
                    Row::info(
                        &format!("{}.error", scenario.name()),
                        scenario.name(),
                        "scenario ran to the end",
                        f64::NAN,
                        "",
                    )
                    .sanity(false, "no error")
                    .note(format!("{e:#}")),
                );
            }
        }
    }
    if options.keep {
        let kept = tmp.keep();
        eprintln!("petrel-bench: kept {}", kept.display());
    }
    let load_after = proc::load_average();
    let mut caveats = vec![
        "The relays and the simulated clients share this machine's CPUs; the clients sign every \
         SEND (and seal it, through two relays), open every delivery, ACK it (unsigned, on the \
         session that proved the queue, as the client does) and run their own Noise sessions, \
         so the relays get only part of the machine."
            .to_string(),
        format!(
            "The relay runs with raised limits for benchmarking (relay.toml): {}.",
            relay::BENCH_LIMITS
                .lines()
                .skip(1)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    if load_before.is_some_and(|l| l > 1.0) {
        caveats.push(format!(
            "Other work was running when the bench started (load average {:.2}): figures can be \
             lower and noisier than on an idle machine.",
            load_before.unwrap_or_default()
        ));
    }
    if cfg!(debug_assertions)
        || options
            .relay_bin
            .components()
            .any(|c| c.as_os_str() == "debug")
    {
        caveats.push(
            "A debug build was measured: the figures say nothing about speed (use --release)."
                .to_string(),
        );
    }
    Ok(Report {
        run: RunInfo {
            mode: options.mode.name().to_string(),
            started: report::utc_text(started_unix),
            cpus: proc::cpus(),
            load_before,
            load_after,
            seconds: started.elapsed().as_secs_f64(),
            relay_bin: options.relay_bin.display().to_string(),
        },
        rows,
        caveats,
    })
}
