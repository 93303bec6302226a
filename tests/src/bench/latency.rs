//! Latency at a chosen load: open-loop paced phases on sessions a throughput run set up.
//!
//! Right after a path's peak rate is measured (closed loop, [`super::throughput`] for one
//! relay and [`super::forwarding`] for two), the same sessions send on a fixed schedule
//! ([`Load::Paced`]), whatever the answers: first at a low rate, then at 80 % of the peak
//! just measured. The schedule does not wait for deliveries, so a slow delivery cannot
//! hold back the sends behind it (no coordinated omission); the in-flight cap is only a
//! safety bound, and the share of sends that started more than 2 ms after their slot is
//! reported, so a client that could not keep pace shows in the table.
//!
//! Latency is from just before the sender signs a SEND (or seals it in a FORWARD) to the
//! delivery's arrival at the recipient's session: signing, sealing, both hops, the
//! forwarding relay's and the destination relay's work, the durable commit before the
//! delivery is pushed, and the recipient's read, all on the same two cores.

use super::plan::LatencyPlan;
use super::relay::RelayProcess;
use super::report::{Row, format_value};
use super::traffic::{Load, Phase, Traffic};

/// The latency target: p99 through two relays at 80 % load (issue 7).
pub const TARGET_P99_MS: f64 = 10.0;

/// Runs the low-load and the 80 %-load phases on `traffic` and appends their rows under
/// `latency.<path>.`.
pub async fn run(
    traffic: &mut Traffic,
    plan: &LatencyPlan,
    peak: f64,
    path: &str,
    label: &str,
    relays: &[&RelayProcess],
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let scenario = "latency";
    let loaded = plan.peak_share * peak;
    let phases = [
        (
            "low",
            plan.low_rate,
            format!("low load ({} msg/s)", format_value(plan.low_rate)),
        ),
        (
            "p80",
            loaded,
            format!(
                "{:.0} % of peak ({} msg/s)",
                plan.peak_share * 100.0,
                format_value(loaded)
            ),
        ),
    ];
    for (name, rate, load_text) in phases {
        let key = format!("latency.{path}.{name}");
        let phase = Phase {
            load: Load::Paced {
                rate,
                cap: plan.cap,
            },
            warmup: plan.warmup,
            measure: plan.measure,
            max_messages: None,
            drain_timeout: plan.drain_timeout,
        };
        let result = traffic
            .phase(&format!("latency {name}"), &phase, relays)
            .await?;
        let what = format!("{label}, {load_text}");
        let note = "Open loop: sends on a fixed schedule whatever the answers; from just before \
                    the SEND is signed (and sealed, through two relays) to the delivery's \
                    arrival at the recipient, every hop and durable commit included.";
        match result.latency {
            Some(s) => {
                for (p, v) in [("p50", s.p50), ("p99", s.p99), ("p999", s.p999)] {
                    let mut row = Row::info(
                        &format!("{key}.{p}"),
                        scenario,
                        &format!("send → deliver {p}, {what}"),
                        v / 1_000.0,
                        "ms",
                    )
                    .note(note);
                    if path == "forwarded" && name == "p80" && p == "p99" {
                        row = row.at_most(TARGET_P99_MS, "≤ 10 ms");
                    }
                    rows.push(row);
                }
                rows.push(Row::info(
                    &format!("{key}.samples"),
                    scenario,
                    &format!("deliveries measured, {what}"),
                    s.count as f64,
                    "msgs",
                ));
            }
            None => rows.push(
                Row::info(
                    &format!("{key}.p50"),
                    scenario,
                    &format!("send → deliver, {what}"),
                    f64::NAN,
                    "ms",
                )
                .sanity(false, "deliveries in the window"),
            ),
        }
        rows.push(Row::info(
            &format!("{key}.offered"),
            scenario,
            &format!("sent, {what}"),
            result.offered,
            "msg/s",
        ));
        rows.push(
            Row::info(
                &format!("{key}.acked"),
                scenario,
                &format!("delivered and ACKed, {what}"),
                result.rate,
                "msg/s",
            )
            .note(
                "ACK OKs per second in the same window: below the rate sent, the relays fell \
                 behind and a backlog grew during the window, which the latency includes.",
            ),
        );
        rows.push(
            Row::info(
                &format!("{key}.late"),
                scenario,
                &format!("sends > 2 ms behind their slot, {what}"),
                result.late_share * 100.0,
                "%",
            )
            .note(
                "Sends that started more than 2 ms after their scheduled slot (the timer ticks \
                 every millisecond): a client that falls behind its schedule sends less than \
                 the stated load, and its latency does not count the delay.",
            ),
        );
    }
    Ok(())
}
