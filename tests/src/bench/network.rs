//! The network scenario: the simulator of [`crate::sim`] as one of the bench's rows.
//!
//! It starts its own relay processes (with the bench's relay binary), pairs clients across
//! them, sends for a fixed time while relays are killed and restarted and relay paths are
//! cut, drains, and counts. The only acceptable outcome is every message delivered, none
//! lost and none duplicated; the rows say how big the network was and what it counted. The
//! size comes from the plan: issue 7's 20 relays and 200 clients in a full run, the suite's
//! reduced network with a shorter send phase in `--quick`, nothing in `--smoke` (the suite
//! runs the simulator in its own test).

use super::report::Row;
use crate::sim::{SimConfig, run as simulate};

/// Runs the simulator at `config` (or says it is skipped), appending rows.
pub async fn run(
    config: Option<&SimConfig>,
    env: &super::Env,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let Some(config) = config else {
        eprintln!("network: not run in this mode (the suite runs the simulator on its own)");
        return Ok(());
    };
    let dir = env.work_dir.join("network");
    std::fs::create_dir_all(&dir)?;
    let report = simulate(&env.relay_bin, &dir, config, |line| eprintln!("{line}")).await?;
    let scenario = "network";
    let problems = report.problems();
    let shape = format!(
        "{} relays, {} clients ({} pairs), {:.0} s of sending, {} kills, {} partitions",
        report.relays,
        report.clients,
        report.pairs,
        report.send_secs,
        report.kills,
        report.partitions
    );
    for (key, figure, value, unit) in [
        (
            "network.relays",
            "relay processes",
            report.relays as f64,
            "relays",
        ),
        (
            "network.clients",
            "clients",
            report.clients as f64,
            "clients",
        ),
        ("network.sent", "messages sent", report.sent as f64, "msgs"),
        (
            "network.outboxed",
            "forwards that waited in an outbox",
            report.outboxed as f64,
            "msgs",
        ),
        (
            "network.drain",
            "drain after sending stopped",
            report.drain_secs,
            "s",
        ),
    ] {
        rows.push(Row::info(key, scenario, figure, value, unit));
    }
    rows.push(
        Row::info(
            "network.delivered",
            scenario,
            "delivered",
            report.delivered as f64,
            "msgs",
        )
        .sanity(
            report.sent > 0 && report.delivered == report.sent,
            &format!("= {} sent", report.sent),
        )
        .note(format!(
            "{shape}; seed {}. Faults: {}.",
            report.seed,
            if report.faults.is_empty() {
                "none".to_string()
            } else {
                report.faults.join("; ")
            }
        )),
    );
    rows.push(
        Row::info("network.lost", scenario, "lost", report.lost as f64, "msgs")
            .sanity(report.lost == 0, "0"),
    );
    rows.push(
        Row::info(
            "network.duplicated",
            scenario,
            "duplicated (stored twice by a relay)",
            report.duplicated as f64,
            "msgs",
        )
        .sanity(report.duplicated == 0, "0"),
    );
    rows.push(
        Row::info(
            "network.problems",
            scenario,
            "other problems (refused, unreadable, redelivered after ACK, undrained)",
            problems.len() as f64,
            "",
        )
        .sanity(problems.is_empty(), "none")
        .note(if problems.is_empty() {
            "The simulator's own verdict: every message delivered exactly once.".to_string()
        } else {
            problems.join("; ")
        }),
    );
    if problems.is_empty() {
        env.discard(&dir);
    }
    Ok(())
}
