//! Forwarding throughput and two-relay latency: client → relay A (FORWARD) → relay B.
//!
//! Two relay processes on loopback. The recipients' queues live on B; the senders are
//! connected to A only. Each sender fetches B's sealing key through A (RELAY_INFO, signature
//! checked against B's address key), then for every message signs the SEND with the
//! queue's sender key bound to a fresh ephemeral key, seals it to B and sends A a FORWARD.
//! A passes the envelope to B over its peer session; B stores it, and A returns B's sealed
//! OK, which the sender opens. A never sees the queue ID or the body. A runs with
//! `--forward-to-private` (B's address is loopback) and both with the bench limits, which
//! also lift the per-peer forward rate limit.
//!
//! The closed-loop peak and the open-loop latency phases run on the same sessions, as for
//! one relay ([`super::throughput`]); a FORWARD that A cannot pass on in time goes to A's
//! outbox (answer ACCEPTED) and is still expected to be delivered exactly once.

use super::latency;
use super::plan::{LatencyPlan, ThroughputPlan};
use super::relay::{RelayProcess, RelaySpec};
use super::report::Row;
use super::throughput::{
    TARGET_MSGS_PER_SEC, cpu_rows, delivered_row, peak_latency_rows, peak_phase, queues_label,
};
use super::traffic::Traffic;

/// Runs the forwarding scenario at the plan's first queue count, appending rows.
pub async fn run(
    plan: &ThroughputPlan,
    latency_plan: &LatencyPlan,
    env: &super::Env,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let queues = plan.queue_counts.first().copied().unwrap_or(100);
    let dir = env.work_dir.join(format!("forwarding-{queues}"));
    let spec_b = RelaySpec::in_dir(&env.relay_bin, &dir.join("destination"))?;
    let mut spec_a = RelaySpec::in_dir(&env.relay_bin, &dir.join("forwarder"))?;
    spec_a.extra_args = vec!["--forward-to-private".to_string()];
    let relay_b = RelayProcess::start(&spec_b).await?;
    let relay_a = match RelayProcess::start(&spec_a).await {
        Ok(relay) => relay,
        Err(e) => {
            let _ = relay_b.stop().await;
            return Err(e);
        }
    };
    let result = run_one(plan, latency_plan, queues, &relay_a, &relay_b, rows).await;
    let stopped_a = relay_a.stop().await;
    let stopped_b = relay_b.stop().await;
    result?;
    stopped_a?;
    stopped_b?;
    env.discard(&dir);
    Ok(())
}

async fn run_one(
    plan: &ThroughputPlan,
    latency_plan: &LatencyPlan,
    queues: usize,
    relay_a: &RelayProcess,
    relay_b: &RelayProcess,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let label = format!("two relays, {}", queues_label(queues));
    let mut traffic = Traffic::setup(
        &format!("forwarding, {}", queues_label(queues)),
        relay_b.address(),
        relay_a.address(),
        queues,
        plan.recipients,
        plan.senders,
    )
    .await?;
    let relays = [relay_a, relay_b];
    let peak = traffic
        .phase("peak", &peak_phase(plan, queues), &relays)
        .await?;
    let key = format!("forwarding.q{queues}");
    let scenario = "forwarding";
    rows.push(
        Row::info(
            &format!("{key}.rate"),
            scenario,
            &format!("send → forward → deliver → ACK, durable, {label}"),
            peak.rate,
            "msg/s",
        )
        .at_least(TARGET_MSGS_PER_SEC, "≥ 10,000")
        .note(
            "Client → relay A (FORWARD, sealed to B) → relay B (stores, durable) → recipient \
             on B, who ACKs to B; the sender's answer is B's sealed OK relayed by A. Three \
             processes (two relays and the clients) share the two cores.",
        ),
    );
    peak_latency_rows(&key, scenario, &label, &peak, rows);
    cpu_rows(
        &key,
        scenario,
        &label,
        &peak,
        &["forwarding relay", "destination relay"],
        rows,
    );
    let measured = latency::run(
        &mut traffic,
        latency_plan,
        peak.rate,
        "forwarded",
        &label,
        &relays,
        rows,
    )
    .await;
    let totals = traffic.finish().await?;
    delivered_row(&key, scenario, &label, &totals, rows);
    measured
}
