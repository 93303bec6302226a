//! The relay's Prometheus metrics.
//!
//! The flow: the relay's connection and command code calls the small methods on a shared
//! [`Metrics`] handle (`command("SEND")`, `error(ErrorCode::Auth)`, `delivery()`, ...); each
//! one is an atomic add on a counter or gauge kept in a `prometheus-client` registry. A
//! scrape of `/metrics` (see [`crate::http`]) calls [`Metrics::encode`], which renders the
//! registry as text.
//!
//! Only aggregates are recorded: command names, error kinds and counts. No queue ID, key,
//! address or message size ever becomes a label, so a scrape tells an operator how busy the
//! relay is and nothing about who uses it.
//!
//! Two text formats come out of the same registry. `prometheus-client` writes OpenMetrics
//! 1.0 ([`Metrics::encode_openmetrics`]); [`Metrics::encode`] turns that into the classic
//! Prometheus text format 0.0.4 (`text/plain; version=0.0.4`), which every scraper and a
//! person with `curl` understands. The two differ in exactly two places, both handled by
//! `openmetrics_to_prometheus`: OpenMetrics names a counter family without its `_total`
//! suffix in `# HELP`/`# TYPE` lines and ends with `# EOF`.

use petrel_federation::ErrorCode;
use prometheus_client::encoding::text::encode as encode_openmetrics_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

/// Label set of `petrel_commands_total`: the command's wire name.
type CommandLabels = [(&'static str, &'static str); 1];
/// Label set of `petrel_errors_total`: the error kind in snake case.
type ErrorLabels = [(&'static str, String); 1];

/// Shared handle to the relay's metrics. Cloning is cheap (one `Arc`); every clone updates
/// the same counters.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    commands: Family<CommandLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    /// The counter of every known error code, created up front: an error is then one hash
    /// lookup and an atomic add, and every kind is exported as 0 before its first use, so
    /// `rate()` over it works from the start.
    errors_by_code: HashMap<u8, Counter>,
    deliveries: Counter,
    messages_accepted: Counter,
    connections: Gauge,
    queues: Gauge,
    messages_stored: Gauge,
}

impl Metrics {
    /// A fresh registry with every relay metric registered at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let commands = Family::<CommandLabels, Counter>::default();
        registry.register(
            "petrel_commands",
            "Commands handled, by command name",
            commands.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "petrel_errors",
            "Error responses sent, by error kind",
            errors.clone(),
        );
        let deliveries = Counter::default();
        registry.register(
            "petrel_deliveries",
            "Messages delivered to recipients",
            deliveries.clone(),
        );
        let messages_accepted = Counter::default();
        registry.register(
            "petrel_messages_accepted",
            "Messages accepted for storage (SEND answered OK)",
            messages_accepted.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "petrel_connections",
            "Connections currently open",
            connections.clone(),
        );
        let queues = Gauge::default();
        registry.register("petrel_queues", "Queues in the store", queues.clone());
        let messages_stored = Gauge::default();
        registry.register(
            "petrel_messages_stored",
            "Messages in the store awaiting delivery or acknowledgement",
            messages_stored.clone(),
        );

        let errors_by_code = ErrorCode::ALL
            .iter()
            .map(|&code| {
                let counter = errors.get_or_create(&[("kind", error_label(code))]).clone();
                (code.code(), counter)
            })
            .collect();

        Self {
            inner: Arc::new(Inner {
                registry,
                commands,
                errors,
                errors_by_code,
                deliveries,
                messages_accepted,
                connections,
                queues,
                messages_stored,
            }),
        }
    }

    /// Counts one command, by its wire name (`"CREATE"`, `"SEND"`, ...).
    pub fn command(&self, name: &'static str) {
        self.inner
            .commands
            .get_or_create(&[("command", name)])
            .inc();
    }

    /// Counts one error response, labelled with the code's name in snake case
    /// (`auth`, `too_large`, `rate_limited`; `unknown` for a code this build does not know).
    pub fn error(&self, code: ErrorCode) {
        match self.inner.errors_by_code.get(&code.code()) {
            Some(counter) if !matches!(code, ErrorCode::Unknown(_)) => {
                counter.inc();
            }
            _ => {
                self.inner
                    .errors
                    .get_or_create(&[("kind", error_label(code))])
                    .inc();
            }
        }
    }

    /// Counts one message delivered to a recipient.
    pub fn delivery(&self) {
        self.inner.deliveries.inc();
    }

    /// Counts one message accepted for storage (a SEND answered OK).
    pub fn message_stored(&self) {
        self.inner.messages_accepted.inc();
    }

    /// A connection was opened: `petrel_connections` goes up by one.
    pub fn connection_opened(&self) {
        self.inner.connections.inc();
    }

    /// A connection was closed: `petrel_connections` goes down by one.
    pub fn connection_closed(&self) {
        self.inner.connections.dec();
    }

    /// Sets `petrel_queues`, the number of queues in the store.
    pub fn set_queues(&self, n: u64) {
        self.inner.queues.set(saturating_i64(n));
    }

    /// Sets `petrel_messages_stored`, the number of messages in the store.
    pub fn set_messages(&self, n: u64) {
        self.inner.messages_stored.set(saturating_i64(n));
    }

    /// The metrics in the Prometheus text exposition format 0.0.4, served as
    /// `text/plain; version=0.0.4`.
    pub fn encode(&self) -> String {
        openmetrics_to_prometheus(&self.encode_openmetrics())
    }

    /// The metrics in the OpenMetrics 1.0 text format, served as
    /// `application/openmetrics-text; version=1.0.0` to scrapers that ask for it.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error could only come from a metric's own
        // encoder, and then a partial scrape is more useful than none.
        if encode_openmetrics_text(&mut out, &self.inner.registry).is_err() {
            tracing::debug!("metrics encoding stopped early");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The label value for an error code: its variant name in snake case (`TooLarge` ->
/// `too_large`). Taken from `Debug` so that a code added to the federation crate gets a
/// sensible label without touching this file.
fn error_label(code: ErrorCode) -> String {
    if matches!(code, ErrorCode::Unknown(_)) {
        return "unknown".to_owned();
    }
    let name = format!("{code:?}");
    let mut label = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                label.push('_');
            }
            label.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            label.push(c);
        }
    }
    label
}

/// Rewrites `prometheus-client`'s OpenMetrics text as Prometheus text format 0.0.4: counter
/// families are named with their `_total` suffix in `# HELP` and `# TYPE` lines (as their
/// samples are), and the OpenMetrics-only `# EOF` and `# UNIT` lines are dropped. Sample
/// lines are the same in both formats and pass through untouched.
fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match descriptor.and_then(|(prefix, rest)| Some((prefix, rest.split_once(' ')?))) {
            Some((prefix, (name, tail))) if counters.contains(name) => {
                let _ = writeln!(out, "{prefix}{name}_total {tail}");
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_labels_are_snake_case() {
        assert_eq!(error_label(ErrorCode::Auth), "auth");
        assert_eq!(error_label(ErrorCode::TooLarge), "too_large");
        assert_eq!(error_label(ErrorCode::RateLimited), "rate_limited");
        assert_eq!(error_label(ErrorCode::NoSession), "no_session");
        assert_eq!(error_label(ErrorCode::Unknown(200)), "unknown");
        for &code in ErrorCode::ALL {
            let label = error_label(code);
            assert!(!label.is_empty());
            assert!(
                label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{label}"
            );
        }
    }

    #[test]
    fn prometheus_text_names_counters_with_total_and_has_no_eof() {
        let metrics = Metrics::new();
        metrics.command("SEND");
        metrics.command("SEND");
        metrics.error(ErrorCode::Quota);
        metrics.error(ErrorCode::Unknown(250));
        metrics.delivery();
        metrics.connection_opened();
        metrics.set_queues(u64::MAX);

        let open = metrics.encode_openmetrics();
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(open.contains("# TYPE petrel_commands counter\n"), "{open}");

        let text = metrics.encode();
        assert!(!text.contains("# EOF"), "{text}");
        assert!(text.contains("# HELP petrel_commands_total "), "{text}");
        assert!(
            text.contains("# TYPE petrel_commands_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("petrel_commands_total{command=\"SEND\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("petrel_errors_total{kind=\"quota\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("petrel_errors_total{kind=\"unknown\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("petrel_errors_total{kind=\"auth\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE petrel_connections gauge\n"), "{text}");
        assert!(text.contains("petrel_connections 1\n"), "{text}");
        assert!(
            text.contains(&format!("petrel_queues {}\n", i64::MAX)),
            "{text}"
        );
        // Every TYPE line names a family whose samples follow it.
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(
                    text.lines()
                        .any(|l| !l.starts_with('#') && l.starts_with(name)),
                    "no samples for {name}"
                );
            }
        }
    }

    #[test]
    fn clones_share_state() {
        let a = Metrics::new();
        let b = a.clone();
        b.message_stored();
        b.connection_opened();
        b.connection_closed();
        assert!(a.encode().contains("petrel_messages_accepted_total 1\n"));
        assert!(a.encode().contains("petrel_connections 0\n"));
    }
}
