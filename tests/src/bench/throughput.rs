//! Relay throughput and latency: send → deliver → ACK, durable, over real sockets.
//!
//! One relay process; `n` queues, each created and SECUREd by one of a few recipient
//! sessions, which are subscribed to them. Sender sessions sign every SEND with the
//! queue's sender key (so the relay verifies Ed25519 per message) and send 2,048-byte
//! bodies (the smallest size class) round-robin over the queues. A recipient opens each
//! delivery with the queue's delivery key and ACKs it at once; the relay answers OK to a
//! SEND and to an ACK only after their group commit is durable.
//!
//! The load is a closed loop: each sender session may have `window` messages between its
//! SEND and the recipient's ACK OK, so queues stay bounded (no QUOTA) and the relay runs
//! at its peak rate for that many messages in flight. The figure is ACK OKs per second over
//! a measuring window after a warm-up; latency is from just before a SEND is signed to the
//! delivery's arrival at the recipient, for deliveries inside the window, so it includes
//! queueing at peak load. Each body carries (sender, sequence, send time): the recipients
//! check that every OK'd message arrives exactly once.

use super::plan::ThroughputPlan;
use super::queues::{BenchQueue, create_many};
use super::relay::{RelayProcess, RelaySpec, connect};
use super::report::Row;
use super::stats::summarize;
use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use petrel_federation::auth::Auth;
use petrel_federation::client::{Command, RelayFrame, Response};
use petrel_federation::delivery::DeliveryKey;
use petrel_federation::padding;
use petrel_federation::transport::connection::RelayConnection;
use petrel_federation::{MsgId, QueueId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

/// Length of the text each message carries (a 100-character chat message).
pub const TEXT_LEN: usize = 100;
/// The size class every body is padded to.
pub const BODY_CLASS: usize = 2_048;
/// Queues created per session at once during setup.
const SETUP_WINDOW: usize = 64;
/// The throughput target (issues 3 and 7).
pub const TARGET_MSGS_PER_SEC: f64 = 10_000.0;

/// What a message's text starts with: who sent it, its number, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    /// The sender session.
    pub sender: u16,
    /// The sender's sequence number.
    pub seq: u64,
    /// Microseconds since the run's epoch, just before signing.
    pub sent_us: u64,
}

impl Tag {
    const LEN: usize = 18;

    /// A 100-byte text starting with the tag, padded to the 2,048-byte class.
    pub fn body(&self) -> anyhow::Result<Vec<u8>> {
        let mut text = Vec::with_capacity(TEXT_LEN);
        text.extend_from_slice(&self.sender.to_le_bytes());
        text.extend_from_slice(&self.seq.to_le_bytes());
        text.extend_from_slice(&self.sent_us.to_le_bytes());
        text.resize(TEXT_LEN, b'x');
        Ok(padding::pad(&text, BODY_CLASS)?)
    }

    /// Reads the tag back from a delivered body.
    pub fn parse(body: &[u8]) -> anyhow::Result<Tag> {
        let text = padding::unpad(body)?;
        let field = |range: std::ops::Range<usize>| -> anyhow::Result<&[u8]> {
            text.get(range).context("delivered text too short")
        };
        let sender = u16::from_le_bytes(field(0..2)?.try_into()?);
        let seq = u64::from_le_bytes(field(2..10)?.try_into()?);
        let sent_us = u64::from_le_bytes(field(10..Self::LEN)?.try_into()?);
        Ok(Tag {
            sender,
            seq,
            sent_us,
        })
    }
}

/// State shared by the senders, the recipients and the orchestrator.
struct Shared {
    epoch: Instant,
    /// Per sender session: messages it may still put in flight (returned on ACK OK).
    windows: Vec<Semaphore>,
    /// Messages still to send (count mode); `i64::MAX` in time mode.
    budget: AtomicI64,
    sent_ok: AtomicU64,
    send_errors: AtomicU64,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    acked: AtomicU64,
    ack_errors: AtomicU64,
    measuring: AtomicBool,
    latencies_us: Mutex<Vec<u32>>,
    seen: Mutex<HashSet<u64>>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

/// Where a sender session sends: a queue's sender ID and key.
struct Target {
    sender_id: QueueId,
    key: SigningKey,
}

/// What a recipient session needs to open and ACK a queue's deliveries.
struct Inbox {
    delivery: DeliveryKey,
    key: SigningKey,
}

async fn sender(
    index: usize,
    conn: RelayConnection,
    targets: Arc<Vec<Target>>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<RelayConnection> {
    let senders = shared.windows.len();
    let window = shared
        .windows
        .get(index)
        .context("sender index out of range")?;
    let mut inflight = FuturesUnordered::new();
    let mut stopping = false;
    let mut seq: u64 = 0;
    let mut next = index;
    loop {
        if stopping && inflight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some(answer) = inflight.next(), if !inflight.is_empty() => {
                match answer {
                    Ok(Response::Ok) => {
                        shared.sent_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        // Never stored: it will not be delivered, so its window slot is free.
                        shared.send_errors.fetch_add(1, Ordering::Relaxed);
                        window.add_permits(1);
                    }
                }
            }
            _ = stop.changed(), if !stopping => stopping = true,
            permit = window.acquire(), if !stopping => {
                let Ok(permit) = permit else { break };
                permit.forget();
                if shared.budget.fetch_sub(1, Ordering::Relaxed) <= 0 {
                    window.add_permits(1);
                    stopping = true;
                    continue;
                }
                let target = targets
                    .get(next % targets.len())
                    .context("no queue to send to")?;
                next = next.wrapping_add(senders);
                let tag = Tag {
                    sender: index as u16,
                    seq,
                    sent_us: shared.now_us(),
                };
                seq += 1;
                let command = Command::Send {
                    sender_id: target.sender_id,
                    body: tag.body()?,
                };
                let auth = Auth::sign(&target.key, &conn.session_id().0, &command)
                    .map_err(|_| anyhow::anyhow!("cannot sign a SEND"))?;
                inflight.push(conn.submit(Some(auth), command).await?);
            }
        }
    }
    Ok(conn)
}

async fn recipient(
    mut conn: RelayConnection,
    inboxes: HashMap<QueueId, Inbox>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<RelayConnection> {
    let mut acks = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some((sender, answer)) = acks.next(), if !acks.is_empty() => {
                let answer: Result<Response, _> = answer;
                if matches!(answer, Ok(Response::Ok)) {
                    shared.acked.fetch_add(1, Ordering::Relaxed);
                    if let Some(window) = shared.windows.get(usize::from(sender)) {
                        window.add_permits(1);
                    }
                } else {
                    shared.ack_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ = stop.changed() => break,
            event = conn.next_event() => match event {
                Some(RelayFrame::Deliver(delivery)) => {
                    let arrived = shared.now_us();
                    let inbox = inboxes
                        .get(&delivery.recipient_id)
                        .context("a delivery for a queue this session did not subscribe")?;
                    let body = inbox
                        .delivery
                        .open(&delivery.recipient_id, &delivery.msg_id, &delivery.ciphertext)
                        .context("a delivery did not open with its queue's key")?;
                    let tag = Tag::parse(&body.body)?;
                    let fresh = shared
                        .seen
                        .lock()
                        .map(|mut s| s.insert((u64::from(tag.sender) << 48) | tag.seq))
                        .unwrap_or(true);
                    if fresh {
                        shared.delivered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    if shared.measuring.load(Ordering::Relaxed)
                        && let Ok(mut l) = shared.latencies_us.lock()
                    {
                        let us = arrived.saturating_sub(tag.sent_us);
                        l.push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    let rx = ack(&conn, &inbox.key, delivery.recipient_id, delivery.msg_id).await?;
                    acks.push(async move { (tag.sender, rx.await) });
                }
                Some(RelayFrame::SubscriptionEnded { .. }) => {
                    bail!("the relay ended a subscription during the run")
                }
                Some(RelayFrame::Reply { response, .. }) => {
                    bail!("the relay reported a session error: {response:?}")
                }
                None => bail!("the relay closed a recipient session"),
            },
        }
    }
    Ok(conn)
}

async fn ack(
    conn: &RelayConnection,
    key: &SigningKey,
    recipient_id: QueueId,
    msg_id: MsgId,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<Response>> {
    let command = Command::Ack {
        recipient_id,
        msg_id,
    };
    let auth = Auth::sign(key, &conn.session_id().0, &command)
        .map_err(|_| anyhow::anyhow!("cannot sign an ACK"))?;
    Ok(conn.submit(Some(auth), command).await?)
}

/// Messages in flight in total for `queues` queues: enough that a queue has a successor
/// stored while one is being delivered, capped at 1,024 — already more than the relay
/// needs to reach its peak (100 queues with 400 in flight reach the same rate), and more
/// would only add queueing to the latency. With 10,000 queues every queue still receives
/// messages during the window, in rotation.
pub fn total_window(queues: usize) -> usize {
    (4 * queues).clamp(16, 1_024)
}

/// Runs the throughput scenario for every queue count of the plan, appending rows.
pub async fn run(
    plan: &ThroughputPlan,
    env: &super::Env,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    for &queues in &plan.queue_counts {
        let dir = env.work_dir.join(format!("throughput-{queues}"));
        let spec = RelaySpec::in_dir(&env.relay_bin, &dir)?;
        let relay = RelayProcess::start(&spec).await?;
        let result = run_one(plan, queues, &relay, rows).await;
        let stopped = relay.stop().await;
        result?;
        stopped?;
        // The data of a finished run is not needed; free the disk for the next one.
        env.discard(&dir);
    }
    Ok(())
}

async fn run_one(
    plan: &ThroughputPlan,
    queues: usize,
    relay: &RelayProcess,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let label = if queues == 1 {
        "1 queue".to_string()
    } else {
        format!("{} queues", super::report::format_value(queues as f64))
    };
    let n_recipients = plan.recipients.clamp(1, queues.max(1));
    let n_senders = plan.senders.max(1);
    eprintln!(
        "throughput, {label}: connecting {n_recipients} recipient and {n_senders} sender sessions"
    );
    let mut recipients = Vec::with_capacity(n_recipients);
    for _ in 0..n_recipients {
        recipients.push(connect(relay.address()).await?);
    }
    let mut senders = Vec::with_capacity(n_senders);
    for _ in 0..n_senders {
        senders.push(connect(relay.address()).await?);
    }

    eprintln!("throughput, {label}: creating, securing and subscribing the queues");
    let setup_started = Instant::now();
    let created: Vec<Vec<BenchQueue>> =
        futures::future::try_join_all(recipients.iter().enumerate().map(|(r, conn)| {
            let indices = (r..queues).step_by(n_recipients).map(|i| i as u64);
            create_many(conn, indices, true, SETUP_WINDOW)
        }))
        .await?;
    eprintln!(
        "throughput, {label}: {queues} queues ready in {:.1} s",
        setup_started.elapsed().as_secs_f64()
    );
    // Queue i was made by recipient i % R as its (i / R)-th queue.
    let mut targets = Vec::with_capacity(queues);
    let mut inboxes: Vec<HashMap<QueueId, Inbox>> =
        (0..n_recipients).map(|_| HashMap::new()).collect();
    let mut iters: Vec<_> = created.into_iter().map(|v| v.into_iter()).collect();
    for i in 0..queues {
        let r = i % n_recipients;
        let q = iters
            .get_mut(r)
            .and_then(|it| it.next())
            .context("missing queue")?;
        targets.push(Target {
            sender_id: q.sender_id,
            key: q.sender,
        });
        if let Some(map) = inboxes.get_mut(r) {
            map.insert(
                q.recipient_id,
                Inbox {
                    delivery: q.delivery,
                    key: q.recipient,
                },
            );
        }
    }
    let targets = Arc::new(targets);

    let in_flight = plan.in_flight.unwrap_or_else(|| total_window(queues));
    let per_sender = (in_flight / n_senders).max(1);
    let budget = plan
        .max_messages
        .map_or(i64::MAX, |m| i64::try_from(m).unwrap_or(i64::MAX));
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        windows: (0..n_senders).map(|_| Semaphore::new(per_sender)).collect(),
        budget: AtomicI64::new(budget),
        sent_ok: AtomicU64::new(0),
        send_errors: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        ack_errors: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
        latencies_us: Mutex::new(Vec::new()),
        seen: Mutex::new(HashSet::new()),
    });
    let (stop_senders, senders_stop) = watch::channel(false);
    let (stop_recipients, recipients_stop) = watch::channel(false);
    let mut recipient_tasks = Vec::new();
    for (conn, inbox) in recipients.into_iter().zip(inboxes) {
        recipient_tasks.push(tokio::spawn(recipient(
            conn,
            inbox,
            shared.clone(),
            recipients_stop.clone(),
        )));
    }
    let mut sender_tasks = Vec::new();
    for (i, conn) in senders.into_iter().enumerate() {
        sender_tasks.push(tokio::spawn(sender(
            i,
            conn,
            targets.clone(),
            shared.clone(),
            senders_stop.clone(),
        )));
    }

    let count_mode = plan.max_messages.is_some();
    eprintln!(
        "throughput, {label}: sending, {} in flight; {}",
        per_sender * n_senders,
        if count_mode {
            format!(
                "until {} messages are ACKed",
                plan.max_messages.unwrap_or_default()
            )
        } else {
            format!(
                "{:.0} s warm-up, {:.0} s measured",
                plan.warmup.as_secs_f64(),
                plan.measure.as_secs_f64()
            )
        }
    );
    let health = |tasks: &[tokio::task::JoinHandle<anyhow::Result<RelayConnection>>]| {
        tasks.iter().any(|t| t.is_finished())
    };
    tokio::time::sleep(plan.warmup).await;
    let t0 = Instant::now();
    let acked0 = shared.acked.load(Ordering::Relaxed);
    let relay_cpu0 = relay.cpu_seconds()?;
    let bench_cpu0 = super::proc::cpu_seconds(None)?;
    shared.measuring.store(true, Ordering::Relaxed);
    let mut last_print = Instant::now();
    let mut last_acked = acked0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let acked = shared.acked.load(Ordering::Relaxed);
        if count_mode && acked >= plan.max_messages.unwrap_or(0) {
            break;
        }
        if t0.elapsed() >= plan.measure {
            break;
        }
        if health(&recipient_tasks) || health(&sender_tasks) {
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            let rate = (acked - last_acked) as f64 / last_print.elapsed().as_secs_f64();
            eprintln!(
                "throughput, {label}: {:.0} s, {} msg/s",
                t0.elapsed().as_secs_f64(),
                super::report::format_value(rate)
            );
            last_print = Instant::now();
            last_acked = acked;
        }
    }
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let acked1 = shared.acked.load(Ordering::Relaxed);
    let relay_cpu = relay.cpu_seconds()? - relay_cpu0;
    let bench_cpu = super::proc::cpu_seconds(None)? - bench_cpu0;

    // Stop sending, then let every OK'd message reach its recipient and be ACKed.
    let _ = stop_senders.send(true);
    let mut sender_conns = Vec::new();
    for task in sender_tasks {
        sender_conns.push(task.await.context("a sender task panicked")??);
    }
    let drain_started = Instant::now();
    while shared.acked.load(Ordering::Relaxed) + shared.ack_errors.load(Ordering::Relaxed)
        < shared.sent_ok.load(Ordering::Relaxed)
        && drain_started.elapsed() < plan.drain_timeout
        && !health(&recipient_tasks)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_recipients.send(true);
    let mut recipient_conns = Vec::new();
    for task in recipient_tasks {
        recipient_conns.push(task.await.context("a recipient task panicked")??);
    }
    for conn in sender_conns.into_iter().chain(recipient_conns) {
        conn.close().await;
    }

    let sent = shared.sent_ok.load(Ordering::Relaxed);
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let duplicates = shared.duplicates.load(Ordering::Relaxed);
    let errors =
        shared.send_errors.load(Ordering::Relaxed) + shared.ack_errors.load(Ordering::Relaxed);
    let measured = acked1 - acked0;
    let rate = measured as f64 / elapsed;
    eprintln!(
        "throughput, {label}: {} msg/s; sent {sent}, delivered {delivered}, duplicates {duplicates}, errors {errors}",
        super::report::format_value(rate)
    );

    let key = format!("throughput.q{queues}");
    let scenario = "throughput";
    let mut rate_row = Row::info(
        &format!("{key}.rate"),
        scenario,
        &format!("send → deliver → ACK, durable, {label}"),
        rate,
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
    let latency_note = format!(
        "Closed loop at peak load: {} messages in flight between SEND and ACK OK, so latency \
         includes queueing behind them; the issue's latency target (two relays, 80% load) is a \
         later scenario.",
        per_sender * n_senders
    );
    let mut samples = shared
        .latencies_us
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    match summarize(&mut samples) {
        Some(s) => {
            for (name, v) in [("p50", s.p50), ("p99", s.p99), ("p999", s.p999)] {
                rows.push(
                    Row::info(
                        &format!("{key}.latency_{name}"),
                        scenario,
                        &format!("send → deliver latency {name}, {label}"),
                        v / 1_000.0,
                        "ms",
                    )
                    .note(latency_note.clone()),
                );
            }
        }
        None => rows.push(Row::info(
            &format!("{key}.latency_p50"),
            scenario,
            &format!("send → deliver latency, {label}"),
            f64::NAN,
            "ms",
        )),
    }
    let cpu_note = "CPU seconds from /proc/PID/stat over the measuring window divided by the \
                    messages ACKed in it; the simulated clients run on the same 2 cores.";
    rows.push(
        Row::info(
            &format!("{key}.relay_cpu_per_msg"),
            scenario,
            &format!("relay CPU per message, {label}"),
            if measured > 0 {
                relay_cpu * 1e6 / measured as f64
            } else {
                f64::NAN
            },
            "µs",
        )
        .note(cpu_note),
    );
    // Too short a window can show no CPU tick at all; then there is nothing to derive.
    if measured > 0 && relay_cpu > 0.0 {
        rows.push(
            Row::info(
                &format!("{key}.relay_ceiling"),
                scenario,
                &format!("relay alone, CPU-bound ceiling, {label}"),
                super::proc::cpus() as f64 * measured as f64 / relay_cpu,
                "msg/s",
            )
            .note(
                "Derived, not measured: this machine's CPUs / relay CPU per message, i.e. the \
                 rate if the relay had every core to itself and nothing but CPU limited it.",
            ),
        );
    }
    rows.push(
        Row::info(
            &format!("{key}.relay_cores"),
            scenario,
            &format!("relay CPU use, {label}"),
            relay_cpu / elapsed,
            "cores",
        )
        .note(cpu_note),
    );
    rows.push(
        Row::info(
            &format!("{key}.bench_cores"),
            scenario,
            &format!("simulated clients' CPU use, {label}"),
            bench_cpu / elapsed,
            "cores",
        )
        .note(cpu_note),
    );
    rows.push(
        Row::info(
            &format!("{key}.delivered"),
            scenario,
            &format!("delivered exactly once, {label}"),
            delivered as f64,
            "msgs",
        )
        .sanity(
            sent > 0 && delivered == sent && duplicates == 0 && errors == 0,
            &format!("= {sent} OK'd, 0 dup, 0 err"),
        )
        .note(format!(
            "sent (OK'd) {sent}, delivered {delivered}, duplicates {duplicates}, command errors {errors}"
        )),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tag_round_trip() {
        let tag = Tag {
            sender: 3,
            seq: 1 << 40,
            sent_us: 123_456_789,
        };
        let body = tag.body().unwrap();
        assert_eq!(body.len(), BODY_CLASS);
        assert_eq!(padding::unpad(&body).unwrap().len(), TEXT_LEN);
        assert_eq!(Tag::parse(&body).unwrap(), tag);
    }
}
