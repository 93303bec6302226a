//! Relay throughput: send → deliver → ACK, durable, over real sockets, one relay.
//!
//! One relay process per queue count; `n` queues, each created and SECUREd by one of a few
//! recipient sessions, which are subscribed to them; sender sessions SEND to them directly
//! (the [`traffic`](super::traffic) engine: signed SENDs, 2,048-byte bodies, every delivery
//! opened and ACKed). The relay answers OK to a SEND and to an ACK only after their group
//! commit is durable.
//!
//! The load is a closed loop ([`Load::Closed`]): a fixed number of messages between SEND
//! and ACK OK, so queues stay bounded and the relay runs at its peak rate for that many in
//! flight. The figure is ACK OKs per second over a measuring window after a warm-up;
//! latency is from just before a SEND is signed to the delivery's arrival at the
//! recipient, so at peak load it includes queueing. At the plan's latency queue count the
//! same sessions then run the open-loop latency phases ([`super::latency`]) at low load
//! and at 80 % of the peak just measured.

use super::latency;
use super::plan::{LatencyPlan, ThroughputPlan};
use super::relay::{RelayProcess, RelaySpec};
use super::report::{Row, format_value};
use super::traffic::{Load, Phase, PhaseResult, Totals, Traffic, total_window};

pub use super::traffic::{BODY_CLASS, TEXT_LEN};

/// The throughput target (issues 3 and 7).
pub const TARGET_MSGS_PER_SEC: f64 = 10_000.0;

/// Runs the throughput scenario for every queue count of the plan, appending rows.
pub async fn run(
    plan: &ThroughputPlan,
    latency: &LatencyPlan,
    env: &super::Env,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    for &queues in &plan.queue_counts {
        let dir = env.work_dir.join(format!("throughput-{queues}"));
        let spec = RelaySpec::in_dir(&env.relay_bin, &dir)?;
        let relay = RelayProcess::start(&spec).await?;
        let result = run_one(plan, latency, queues, &relay, rows).await;
        let stopped = relay.stop().await;
        result?;
        stopped?;
        // The data of a finished run is not needed; free the disk for the next one.
        env.discard(&dir);
    }
    Ok(())
}

/// `1 queue`, `100 queues`, `10,000 queues`.
pub fn queues_label(queues: usize) -> String {
    if queues == 1 {
        "1 queue".to_string()
    } else {
        format!("{} queues", format_value(queues as f64))
    }
}

/// The closed-loop phase of a plan.
pub fn peak_phase(plan: &ThroughputPlan, queues: usize) -> Phase {
    Phase {
        load: Load::Closed {
            in_flight: plan.in_flight.unwrap_or_else(|| total_window(queues)),
        },
        warmup: plan.warmup,
        measure: plan.measure,
        max_messages: plan.max_messages,
        drain_timeout: plan.drain_timeout,
    }
}

async fn run_one(
    plan: &ThroughputPlan,
    latency_plan: &LatencyPlan,
    queues: usize,
    relay: &RelayProcess,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let label = queues_label(queues);
    let mut traffic = Traffic::setup(
        &format!("throughput, {label}"),
        relay.address(),
        relay.address(),
        queues,
        plan.recipients,
        plan.senders,
    )
    .await?;
    let peak = traffic
        .phase("peak", &peak_phase(plan, queues), &[relay])
        .await?;
    let key = format!("throughput.q{queues}");
    let scenario = "throughput";
    let mut rate_row = Row::info(
        &format!("{key}.rate"),
        scenario,
        &format!("send → deliver → ACK, durable, {label}"),
        peak.rate,
        "msg/s",
    )
    .at_least(TARGET_MSGS_PER_SEC, "≥ 10,000");
    if queues == 1 {
        rate_row = rate_row.note(
            "One queue has one unacknowledged delivery at a time (protocol): each message waits \
             for the previous one's ACK to be committed, so one queue's rate is bounded by \
             1 / (delivery + ACK round trip + fsync), not by the relay's capacity.",
        );
    }
    rows.push(rate_row);
    peak_latency_rows(&key, scenario, &label, &peak, rows);
    cpu_rows(&key, scenario, &label, &peak, &["relay"], rows);

    if queues == latency_plan.queues {
        let measured = latency::run(
            &mut traffic,
            latency_plan,
            peak.rate,
            "direct",
            &format!("one relay, {label}"),
            &[relay],
            rows,
        )
        .await;
        let totals = traffic.finish().await?;
        delivered_row(&key, scenario, &label, &totals, rows);
        return measured;
    }
    let totals = traffic.finish().await?;
    delivered_row(&key, scenario, &label, &totals, rows);
    Ok(())
}

/// Latency rows of a closed-loop phase (latency at peak load, queueing included).
pub fn peak_latency_rows(
    key: &str,
    scenario: &str,
    label: &str,
    peak: &PhaseResult,
    rows: &mut Vec<Row>,
) {
    let note = format!(
        "Closed loop at peak load: {} messages in flight between SEND and ACK OK, so latency \
         includes queueing behind them; the latency rows (open loop, low and 80 % load) are \
         the ones read against the latency target.",
        peak.in_flight
    );
    match peak.latency {
        Some(s) => {
            for (name, v) in [("p50", s.p50), ("p99", s.p99), ("p999", s.p999)] {
                rows.push(
                    Row::info(
                        &format!("{key}.latency_{name}"),
                        scenario,
                        &format!("send → deliver latency {name} at peak, {label}"),
                        v / 1_000.0,
                        "ms",
                    )
                    .note(note.clone()),
                );
            }
        }
        None => rows.push(Row::info(
            &format!("{key}.latency_p50"),
            scenario,
            &format!("send → deliver latency at peak, {label}"),
            f64::NAN,
            "ms",
        )),
    }
}

/// CPU rows of a closed-loop phase: per relay (named by `relays`, in the order the phase
/// measured them) CPU per message, ceiling and cores; then the simulated clients' cores.
pub fn cpu_rows(
    key: &str,
    scenario: &str,
    label: &str,
    peak: &PhaseResult,
    relays: &[&str],
    rows: &mut Vec<Row>,
) {
    let cpu_note = "CPU seconds from /proc/PID/stat over the measuring window divided by the \
                    messages ACKed in it; the simulated clients run on the same 2 cores.";
    let measured = peak.measured;
    let total_cpu: f64 = peak.relay_cpu.iter().sum();
    for (name, &cpu) in relays.iter().zip(&peak.relay_cpu) {
        // The single relay keeps the keys it always had.
        let prefix = if relays.len() == 1 {
            format!("{key}.relay")
        } else {
            format!("{key}.{}", name.replace(' ', "_"))
        };
        rows.push(
            Row::info(
                &format!("{prefix}_cpu_per_msg"),
                scenario,
                &format!("{name} CPU per message, {label}"),
                if measured > 0 {
                    cpu * 1e6 / measured as f64
                } else {
                    f64::NAN
                },
                "µs",
            )
            .note(cpu_note),
        );
        rows.push(
            Row::info(
                &format!("{prefix}_cores"),
                scenario,
                &format!("{name} CPU use, {label}"),
                cpu / peak.elapsed,
                "cores",
            )
            .note(cpu_note),
        );
    }
    // Too short a window can show no CPU tick at all; then there is nothing to derive.
    if measured > 0 && total_cpu > 0.0 {
        let whom = if relays.len() == 1 {
            "relay alone"
        } else {
            "relays alone"
        };
        rows.push(
            Row::info(
                &format!("{key}.relay_ceiling"),
                scenario,
                &format!("{whom}, CPU-bound ceiling, {label}"),
                super::proc::cpus() as f64 * measured as f64 / total_cpu,
                "msg/s",
            )
            .note(
                "Derived, not measured: this machine's CPUs / relay CPU per message (all relays \
                 on the path), i.e. the rate if the relays had every core to themselves and \
                 nothing but CPU limited them.",
            ),
        );
    }
    rows.push(
        Row::info(
            &format!("{key}.bench_cores"),
            scenario,
            &format!("simulated clients' CPU use, {label}"),
            peak.bench_cpu / peak.elapsed,
            "cores",
        )
        .note(cpu_note),
    );
}

/// The sanity row: every stored message delivered exactly once.
pub fn delivered_row(key: &str, scenario: &str, label: &str, totals: &Totals, rows: &mut Vec<Row>) {
    let stored = totals.sent_ok + totals.accepted;
    rows.push(
        Row::info(
            &format!("{key}.delivered"),
            scenario,
            &format!("delivered exactly once, {label}"),
            totals.delivered as f64,
            "msgs",
        )
        .sanity(totals.sane(), &format!("= {stored} stored, 0 dup, 0 err"))
        .note(totals.describe()),
    );
}
