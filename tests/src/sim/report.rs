//! What a run reports, and how the clients' books add up to it. The module documentation
//! of [`super`] says what each count means.

use super::client::ClientReport;
use super::ledger;
use super::plan::Topology;
use serde::Serialize;

/// What a run counted. See the module documentation for what each count means.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SimReport {
    /// Relay processes.
    pub relays: usize,
    /// Clients.
    pub clients: usize,
    /// Client pairs.
    pub pairs: usize,
    /// Streams (two per pair).
    pub streams: usize,
    /// The seed.
    pub seed: u64,
    /// Seconds of sending.
    pub send_secs: f64,
    /// Messages sealed by senders (the Hellos included, the end markers not).
    pub sent: u64,
    /// Messages senders hold the destination's sealed `Ok` for.
    pub confirmed: u64,
    /// Distinct messages delivered.
    pub delivered: u64,
    /// Messages sent and never delivered.
    pub lost: u64,
    /// Distinct messages a relay stored more than once.
    pub duplicated: u64,
    /// Every delivery of a message already delivered, whatever the cause.
    pub duplicate_deliveries: u64,
    /// Redeliveries of a relay message whose ACK was not yet confirmed (allowed).
    pub redeliveries: u64,
    /// Redeliveries of a relay message whose ACK was confirmed (a relay fault).
    pub redelivered_after_ack: u64,
    /// Messages delivered first after a higher-numbered message of the same sender.
    pub reordered: u64,
    /// Deliveries that could not be opened or read.
    pub unreadable: u64,
    /// Messages finally refused.
    pub rejected: u64,
    /// Messages (end markers included) senders still held unconfirmed at the end.
    pub unconfirmed: u64,
    /// End markers that never arrived.
    pub ends_missing: u64,
    /// Forwards the forwarding relay answered `Accepted` (into its outbox).
    pub outboxed: u64,
    /// Envelopes submitted again.
    pub resubmitted: u64,
    /// FORWARD_STATUS polls.
    pub status_polls: u64,
    /// Sessions reopened after their relay went away.
    pub reconnects: u64,
    /// QuotaReached markers delivered.
    pub quota_markers: u64,
    /// Relays killed and restarted.
    pub kills: usize,
    /// Relay pairs partitioned and restored.
    pub partitions: usize,
    /// What each fault did.
    pub faults: Vec<String>,
    /// Whether every end marker arrived before the drain timeout.
    pub drained: bool,
    /// Seconds from the end of sending until the drain finished.
    pub drain_secs: f64,
    /// Seconds for the whole run, start-up and shutdown included.
    pub elapsed_secs: f64,
    /// Relays that did not stop cleanly on SIGTERM at the end.
    pub relay_stop_errors: Vec<String>,
    /// Examples of reordered deliveries, by stream.
    pub reorder_examples: Vec<String>,
    /// Unexpected events, described (the first few), and missing messages.
    pub anomalies: Vec<String>,
    /// The run's directory (relay data and logs), kept when the run failed.
    pub kept_dir: Option<String>,
}

impl SimReport {
    /// What is wrong with the outcome; empty when the run passed.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |bad: bool, what: String| {
            if bad {
                problems.push(what);
            }
        };
        check(
            self.delivered != self.sent,
            format!("{} of {} delivered", self.delivered, self.sent),
        );
        check(self.lost > 0, format!("{} lost", self.lost));
        check(
            self.duplicated > 0,
            format!("{} duplicated", self.duplicated),
        );
        check(
            self.redelivered_after_ack > 0,
            format!("{} redelivered after ACK", self.redelivered_after_ack),
        );
        check(self.rejected > 0, format!("{} refused", self.rejected));
        check(
            self.unreadable > 0,
            format!("{} unreadable", self.unreadable),
        );
        check(!self.drained, "the drain did not finish".to_string());
        check(
            !self.relay_stop_errors.is_empty(),
            format!("relays did not stop cleanly: {:?}", self.relay_stop_errors),
        );
        problems
    }

    /// True when every message was delivered exactly once.
    pub fn passed(&self) -> bool {
        self.problems().is_empty()
    }
}

impl std::fmt::Display for SimReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} relays, {} clients ({} pairs, {} streams), seed {}, {:.0} s of sending, \
             {} kills, {} partitions:",
            self.relays,
            self.clients,
            self.pairs,
            self.streams,
            self.seed,
            self.send_secs,
            self.kills,
            self.partitions
        )?;
        writeln!(
            f,
            "  sent {}, delivered {}, lost {}, duplicated {} (duplicate deliveries {}: \
             {} allowed redeliveries, {} after ACK), reordered {}",
            self.sent,
            self.delivered,
            self.lost,
            self.duplicated,
            self.duplicate_deliveries,
            self.redeliveries,
            self.redelivered_after_ack,
            self.reordered
        )?;
        writeln!(
            f,
            "  confirmed {}, outboxed {}, resubmitted {}, status polls {}, reconnects {}, \
             refused {}, drain {:.1} s, total {:.1} s",
            self.confirmed,
            self.outboxed,
            self.resubmitted,
            self.status_polls,
            self.reconnects,
            self.rejected,
            self.drain_secs,
            self.elapsed_secs
        )?;
        for fault in &self.faults {
            writeln!(f, "  fault: {fault}")?;
        }
        for example in &self.reorder_examples {
            writeln!(f, "  reordered: {example}")?;
        }
        for anomaly in &self.anomalies {
            writeln!(f, "  anomaly: {anomaly}")?;
        }
        match self.problems().as_slice() {
            [] => write!(f, "  PASS: all delivered, none lost, none duplicated"),
            problems => write!(f, "  FAIL: {}", problems.join("; ")),
        }
    }
}

/// Adds up the clients' reports.
pub(super) fn tally(report: &mut SimReport, topology: &Topology, clients: Vec<ClientReport>) {
    let mut sent_by_stream = vec![0u64; topology.streams.len()];
    for c in &clients {
        if let Some(s) = topology.outbound(c.index) {
            sent_by_stream[s] = c.outbox.counts().sent;
        }
    }
    let mut ledgers = ledger::Counts::default();
    let mut missing_notes = Vec::new();
    for c in &clients {
        let counts = c.outbox.counts();
        report.sent += counts.sent;
        report.confirmed += counts.confirmed;
        report.outboxed += counts.outboxed;
        report.resubmitted += counts.resubmitted;
        report.status_polls += counts.status_polls;
        report.rejected += counts.rejected;
        report.unconfirmed += c.outbox.unconfirmed() as u64;
        report.reconnects += c.reconnects;
        report.quota_markers += c.quota_markers;
        ledgers.add(&c.ledger.counts());
        if !c.ledger.has_end() {
            report.ends_missing += 1;
        }
        if let Some(inbound) = topology.inbound(c.index) {
            if !c.ledger.reorders().is_empty() && report.reorder_examples.len() < 10 {
                let shown: Vec<String> = c
                    .ledger
                    .reorders()
                    .iter()
                    .map(|(seq, after)| format!("{seq} after {after}"))
                    .collect();
                report.reorder_examples.push(format!(
                    "stream {inbound} (R{} → R{}): {}",
                    topology.forwarder(inbound),
                    topology.destination(inbound),
                    shown.join(", ")
                ));
            }
            let missing = c.ledger.missing(sent_by_stream[inbound]);
            report.lost += missing.len() as u64;
            if !missing.is_empty() && missing_notes.len() < 10 {
                let shown: Vec<String> = missing.iter().take(10).map(u64::to_string).collect();
                missing_notes.push(format!(
                    "stream {inbound} (R{} → R{}): {} missing: {}",
                    topology.forwarder(inbound),
                    topology.destination(inbound),
                    missing.len(),
                    shown.join(", ")
                ));
            }
        }
        for note in c.outbox.refusals.iter().chain(&c.anomalies) {
            if report.anomalies.len() < 20 {
                report.anomalies.push(note.clone());
            }
        }
    }
    report.anomalies.extend(missing_notes);
    report.delivered = ledgers.distinct;
    report.duplicated = ledgers.stored_twice;
    report.duplicate_deliveries = ledgers.duplicate_deliveries;
    report.redeliveries = ledgers.redeliveries;
    report.redelivered_after_ack = ledgers.redelivered_after_ack;
    report.reordered = ledgers.reordered;
    report.unreadable = ledgers.foreign;
}
