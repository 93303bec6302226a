//! The traffic engine behind the throughput, forwarding and latency figures.
//!
//! Recipient sessions on the queues' relay create, SECURE and subscribe the queues, then
//! open every delivery with the queue's delivery key and ACK it at once — unsigned, as the
//! client does on the session that proved the queue with its signed CREATE (protocol §11;
//! the relay checks the proven key in the deleting write). Sender sessions
//! sign every SEND with the queue's sender key and send 2,048-byte bodies (the smallest
//! size class) round-robin over the queues, either directly to the queues' relay
//! ([`Route::Direct`]) or sealed to it in a FORWARD through their own relay
//! ([`Route::Forward`], 2-hop routing: the forwarding relay never sees the queue).
//!
//! A [`Traffic`] keeps the sessions and runs [`Phase`]s one after another on them:
//!
//! * [`Load::Closed`]: each sender session may have `window` messages between its SEND and
//!   the recipient's ACK OK; the relays run at their peak rate for that many in flight.
//! * [`Load::Paced`]: open loop, each sender sends on a fixed schedule whatever the
//!   answers (the window is only a safety cap), so latency is measured at a chosen load.
//!
//! A phase warms up, measures (ACK OKs per second, and send → deliver latency of the
//! deliveries that arrive inside the window), stops its senders and waits until every
//! stored message has been delivered and ACKed, so the next phase starts from empty
//! queues. Each body carries (sender, sequence, send time): the recipients check that every
//! stored message arrives exactly once, across all phases.

use super::queues::{BenchQueue, create_many, seed};
use super::relay::{RelayProcess, connect};
use super::report::format_value;
use super::stats::{Summary, summarize};
use anyhow::{Context, anyhow, bail};
use ed25519_dalek::SigningKey;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use petrel_federation::auth::Auth;
use petrel_federation::client::{Command, RelayFrame, Response};
use petrel_federation::delivery::DeliveryKey;
use petrel_federation::padding;
use petrel_federation::seal::{EnvelopeKey, ForwardedRequest, ResponseOpener};
use petrel_federation::transport::connection::RelayConnection;
use petrel_federation::{MsgId, QueueId, RelayAddress};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;
use x25519_dalek::StaticSecret;

/// Length of the text each message carries (a 100-character chat message).
pub const TEXT_LEN: usize = 100;
/// The size class every body is padded to.
pub const BODY_CLASS: usize = 2_048;
/// Queues created per session at once during setup.
const SETUP_WINDOW: usize = 64;
/// A paced send that starts later than this after its slot counts as late (tokio's timer
/// has a resolution of 1 ms, so a send on time can start up to about 1 ms after its slot).
const LATE: Duration = Duration::from_millis(2);

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

    fn id(&self) -> u64 {
        (u64::from(self.sender) << 48) | self.seq
    }
}

/// Unix seconds now.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How the senders reach the queues' relay.
#[derive(Clone, Debug)]
pub enum Route {
    /// The senders' relay holds the queues: a plain SEND.
    Direct,
    /// FORWARD through the senders' relay, sealed to the destination's sealing key.
    Forward {
        /// The queues' relay.
        destination: RelayAddress,
        /// Its sealing key, from a verified RELAY_INFO.
        sealing: [u8; 32],
    },
}

impl Route {
    /// Direct when `own` is `destination`; else fetches the destination's sealing key
    /// through `own` with RELAY_INFO and checks its signature, as a client does.
    pub async fn resolve(
        conn: &RelayConnection,
        own: &RelayAddress,
        destination: &RelayAddress,
    ) -> anyhow::Result<Route> {
        if own.key() == destination.key() {
            return Ok(Route::Direct);
        }
        let command = Command::RelayInfo {
            relay: destination.clone(),
        };
        let info = match conn.request(None, command).await? {
            Response::RelayInfo(info) => info,
            other => bail!("RELAY_INFO answered {other:?}"),
        };
        let sealing = info
            .verify(destination.key(), unix_now())
            .map_err(|e| anyhow!("the destination's RELAY_INFO does not verify: {e:?}"))?
            .sealing_key;
        Ok(Route::Forward {
            destination: destination.clone(),
            sealing,
        })
    }

    /// Short text for progress lines.
    pub fn name(&self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Forward { .. } => "forwarded",
        }
    }
}

/// Where a sender session sends: a queue's sender ID and key.
struct Target {
    sender_id: QueueId,
    key: SigningKey,
}

/// What a recipient session needs to open a queue's deliveries.
struct Inbox {
    delivery: DeliveryKey,
}

/// How a phase loads the relays.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// Closed loop: `in_flight` messages in total between SEND and ACK OK.
    Closed {
        /// Messages in flight, in total.
        in_flight: usize,
    },
    /// Open loop at `rate` messages per second in total; at most `cap` in flight in total
    /// (a safety bound; a send that waits for it is late).
    Paced {
        /// Messages per second, all senders together.
        rate: f64,
        /// Most messages in flight in total.
        cap: usize,
    },
}

/// One phase of traffic.
#[derive(Clone, Debug)]
pub struct Phase {
    /// How it loads the relays.
    pub load: Load,
    /// Time before the measuring window opens.
    pub warmup: Duration,
    /// The measuring window.
    pub measure: Duration,
    /// Stop after this many ACKs instead of after the window (smoke mode).
    pub max_messages: Option<u64>,
    /// How long the final drain may take.
    pub drain_timeout: Duration,
}

/// What a phase measured.
#[derive(Clone, Debug)]
pub struct PhaseResult {
    /// ACK OKs per second in the measuring window.
    pub rate: f64,
    /// SENDs started per second in the window.
    pub offered: f64,
    /// Messages ACKed in the window.
    pub measured: u64,
    /// The window's length, seconds.
    pub elapsed: f64,
    /// Send → deliver latency of the window's deliveries, microseconds.
    pub latency: Option<Summary>,
    /// CPU seconds of each relay given to [`Traffic::phase`] during the window.
    pub relay_cpu: Vec<f64>,
    /// CPU seconds of this process (the simulated clients) during the window.
    pub bench_cpu: f64,
    /// Share of paced sends that started more than 2 ms after their slot (0 when closed).
    pub late_share: f64,
    /// Messages in flight (closed loop), or the pacing cap.
    pub in_flight: usize,
}

/// Counts over every phase of a [`Traffic`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    /// SENDs the destination stored and answered OK (for a forward: its sealed OK).
    pub sent_ok: u64,
    /// FORWARDs the forwarding relay accepted into its outbox instead.
    pub accepted: u64,
    /// Deliveries of a message not seen before.
    pub delivered: u64,
    /// Deliveries of a message already seen.
    pub duplicates: u64,
    /// SENDs or ACKs answered with anything but success.
    pub errors: u64,
}

impl Totals {
    /// Every stored message delivered exactly once, none refused, and something sent.
    pub fn sane(&self) -> bool {
        let stored = self.sent_ok + self.accepted;
        stored > 0 && self.delivered == stored && self.duplicates == 0 && self.errors == 0
    }

    /// The note of the sanity row.
    pub fn describe(&self) -> String {
        format!(
            "stored {} (OK {}, into the outbox {}), delivered {}, duplicates {}, command errors {}",
            self.sent_ok + self.accepted,
            self.sent_ok,
            self.accepted,
            self.delivered,
            self.duplicates,
            self.errors
        )
    }
}

/// State shared by the senders, the recipients and the orchestrator.
struct Shared {
    epoch: Instant,
    /// Per sender session: messages it may still put in flight (returned on ACK OK).
    windows: Vec<Semaphore>,
    /// Messages still to send in this phase (count mode); `i64::MAX` in time mode.
    budget: AtomicI64,
    sends: AtomicU64,
    late: AtomicU64,
    sent_ok: AtomicU64,
    accepted: AtomicU64,
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

    fn load(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Stored messages not yet ACKed (or given up on).
    fn outstanding(&self) -> u64 {
        let stored = Self::load(&self.sent_ok) + Self::load(&self.accepted);
        stored.saturating_sub(Self::load(&self.acked) + Self::load(&self.ack_errors))
    }
}

/// Sets a sender's window to `size` permits; call only when nothing is in flight.
fn set_window(window: &Semaphore, size: usize) {
    let now = window.available_permits();
    if size > now {
        window.add_permits(size - now);
    } else if let Ok(permits) = window.try_acquire_many((now - size) as u32) {
        permits.forget();
    }
}

/// What a SEND or FORWARD came to.
enum Outcome {
    Stored,
    Outbox,
    Refused,
}

fn outcome(
    answer: Result<Response, oneshot::error::RecvError>,
    opener: Option<ResponseOpener>,
) -> Outcome {
    match (answer, opener) {
        (Ok(Response::Ok), None) => Outcome::Stored,
        (Ok(Response::Forwarded(sealed)), Some(opener)) => match opener.open(&sealed) {
            Ok(Response::Ok) => Outcome::Stored,
            _ => Outcome::Refused,
        },
        (Ok(Response::Accepted { .. }), Some(_)) => Outcome::Outbox,
        _ => Outcome::Refused,
    }
}

/// Builds one message's command: a signed SEND, or that SEND sealed in a FORWARD.
fn command(
    route: &Route,
    conn: &RelayConnection,
    target: &Target,
    tag: &Tag,
) -> anyhow::Result<(Command, Option<Auth>, Option<ResponseOpener>)> {
    let send = Command::Send {
        sender_id: target.sender_id,
        body: tag.body()?,
    };
    match route {
        Route::Direct => {
            let auth = Auth::sign(&target.key, &conn.session_id().0, &send)
                .map_err(|_| anyhow!("cannot sign a SEND"))?;
            Ok((send, Some(auth), None))
        }
        Route::Forward {
            destination,
            sealing,
        } => {
            // A fresh ephemeral key per envelope, derived (not drawn) so runs repeat.
            let eph = EnvelopeKey::from_secret(StaticSecret::from(seed("envelope", tag.id())));
            let auth = Auth::sign(&target.key, &eph.public(), &send)
                .map_err(|_| anyhow!("cannot sign a SEND"))?;
            let request = ForwardedRequest {
                sent_at: unix_now(),
                auth: Some(auth),
                command: send,
            };
            let (envelope, opener) = eph
                .seal(sealing, &request)
                .map_err(|e| anyhow!("cannot seal a SEND: {e:?}"))?;
            let forward = Command::Forward {
                destination: destination.clone(),
                envelope,
            };
            Ok((forward, None, Some(opener)))
        }
    }
}

/// Waits for a paced sender's next slot (not at all for a closed loop). A slot already
/// past is taken at once: a sleep with an expired deadline would still wait for the timer
/// driver's next turn, and a sender catching up would fall further behind.
async fn slot(due: Option<tokio::time::Instant>) {
    if let Some(due) = due
        && due > tokio::time::Instant::now()
    {
        tokio::time::sleep_until(due).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn sender(
    index: usize,
    conn: RelayConnection,
    route: Route,
    targets: Arc<Vec<Target>>,
    shared: Arc<Shared>,
    interval: Option<Duration>,
    mut seq: u64,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(RelayConnection, u64)> {
    let senders = shared.windows.len();
    let window = shared
        .windows
        .get(index)
        .context("sender index out of range")?;
    let mut inflight = FuturesUnordered::new();
    let mut stopping = false;
    let mut next = index.wrapping_add(seq as usize * senders);
    // Senders start their schedules spread over one interval, not all at once.
    let mut due = interval
        .map(|i| tokio::time::Instant::now() + i.mul_f64(index as f64 / senders.max(1) as f64));
    loop {
        if stopping && inflight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some(answer) = inflight.next(), if !inflight.is_empty() => {
                match answer {
                    Outcome::Stored => {
                        shared.sent_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Outbox => {
                        // Stored by the forwarding relay; it will be delivered later.
                        shared.accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Refused => {
                        // Never stored: it will not be delivered, so its window slot is free.
                        shared.send_errors.fetch_add(1, Ordering::Relaxed);
                        window.add_permits(1);
                    }
                }
            }
            _ = stop.changed(), if !stopping => stopping = true,
            permit = slot(due).then(|()| window.acquire()), if !stopping => {
                let Ok(permit) = permit else { break };
                permit.forget();
                if shared.budget.fetch_sub(1, Ordering::Relaxed) <= 0 {
                    window.add_permits(1);
                    stopping = true;
                    continue;
                }
                if let (Some(slot), Some(interval)) = (due.as_mut(), interval) {
                    if slot.elapsed() > LATE {
                        shared.late.fetch_add(1, Ordering::Relaxed);
                    }
                    *slot += interval;
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
                let (command, auth, opener) = command(&route, &conn, target, &tag)?;
                shared.sends.fetch_add(1, Ordering::Relaxed);
                let rx = conn.submit(auth, command).await?;
                inflight.push(rx.map(move |answer| outcome(answer, opener)));
            }
        }
    }
    Ok((conn, seq))
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
                        .map(|mut s| s.insert(tag.id()))
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
                    let rx = ack(&conn, delivery.recipient_id, delivery.msg_id).await?;
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

/// An unsigned ACK: this session created (proved) the queue.
async fn ack(
    conn: &RelayConnection,
    recipient_id: QueueId,
    msg_id: MsgId,
) -> anyhow::Result<oneshot::Receiver<Response>> {
    let command = Command::Ack {
        recipient_id,
        msg_id,
    };
    Ok(conn.submit(None, command).await?)
}

/// Messages in flight in total for `queues` queues in a closed loop: enough that a queue
/// has a successor stored while one is being delivered, capped at 1,024 — already more
/// than the relay needs to reach its peak (100 queues with 400 in flight reach the same
/// rate), and more would only add queueing to the latency. With 10,000 queues every queue
/// still receives messages during the window, in rotation.
pub fn total_window(queues: usize) -> usize {
    (4 * queues).clamp(16, 1_024)
}

/// Sender and recipient sessions around a set of queues, ready to run phases.
pub struct Traffic {
    label: String,
    route: Route,
    targets: Arc<Vec<Target>>,
    shared: Arc<Shared>,
    /// Idle sender sessions between phases, with each one's next sequence number.
    senders: Vec<(RelayConnection, u64)>,
    recipients: Vec<JoinHandle<anyhow::Result<RelayConnection>>>,
    stop_recipients: watch::Sender<bool>,
}

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traffic")
            .field("label", &self.label)
            .field("route", &self.route.name())
            .field("queues", &self.targets.len())
            .finish_non_exhaustive()
    }
}

impl Traffic {
    /// Connects `recipients` sessions to `queues_relay` and creates, secures and subscribes
    /// `queues` queues there, then connects `senders` sessions to `senders_relay` (the same
    /// relay for direct SENDs, another one to FORWARD through it).
    pub async fn setup(
        label: &str,
        queues_relay: &RelayAddress,
        senders_relay: &RelayAddress,
        queues: usize,
        recipients: usize,
        senders: usize,
    ) -> anyhow::Result<Traffic> {
        let n_recipients = recipients.clamp(1, queues.max(1));
        let n_senders = senders.max(1);
        eprintln!("{label}: connecting {n_recipients} recipient and {n_senders} sender sessions");
        let mut recipient_conns = Vec::with_capacity(n_recipients);
        for _ in 0..n_recipients {
            recipient_conns.push(connect(queues_relay).await?);
        }
        let mut sender_conns = Vec::with_capacity(n_senders);
        for _ in 0..n_senders {
            sender_conns.push((connect(senders_relay).await?, 0));
        }
        let first = sender_conns
            .first()
            .map(|(c, _)| c)
            .context("no sender session")?;
        let route = Route::resolve(first, senders_relay, queues_relay).await?;

        eprintln!("{label}: creating, securing and subscribing {queues} queues");
        let setup_started = Instant::now();
        let created: Vec<Vec<BenchQueue>> =
            futures::future::try_join_all(recipient_conns.iter().enumerate().map(|(r, conn)| {
                let indices = (r..queues).step_by(n_recipients).map(|i| i as u64);
                create_many(conn, indices, true, SETUP_WINDOW)
            }))
            .await?;
        eprintln!(
            "{label}: {queues} queues ready in {:.1} s",
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
                    },
                );
            }
        }
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            windows: (0..n_senders).map(|_| Semaphore::new(0)).collect(),
            budget: AtomicI64::new(0),
            sends: AtomicU64::new(0),
            late: AtomicU64::new(0),
            sent_ok: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            ack_errors: AtomicU64::new(0),
            measuring: AtomicBool::new(false),
            latencies_us: Mutex::new(Vec::new()),
            seen: Mutex::new(HashSet::new()),
        });
        let (stop_recipients, recipients_stop) = watch::channel(false);
        let recipients = recipient_conns
            .into_iter()
            .zip(inboxes)
            .map(|(conn, inbox)| {
                tokio::spawn(recipient(
                    conn,
                    inbox,
                    shared.clone(),
                    recipients_stop.clone(),
                ))
            })
            .collect();
        Ok(Traffic {
            label: label.to_string(),
            route,
            targets: Arc::new(targets),
            shared,
            senders: sender_conns,
            recipients,
            stop_recipients,
        })
    }

    /// Runs one phase; `relays` are the processes whose CPU time is reported.
    pub async fn phase(
        &mut self,
        name: &str,
        phase: &Phase,
        relays: &[&RelayProcess],
    ) -> anyhow::Result<PhaseResult> {
        let label = format!("{}, {name}", self.label);
        let n_senders = self.senders.len().max(1);
        let (per_sender, interval) = match phase.load {
            Load::Closed { in_flight } => ((in_flight / n_senders).max(1), None),
            Load::Paced { rate, cap } => {
                if !(rate.is_finite() && rate > 0.0) {
                    bail!("{label}: no rate to pace at ({rate})");
                }
                let per_sender_rate = rate / n_senders as f64;
                (
                    (cap / n_senders).max(1),
                    Some(Duration::from_secs_f64(1.0 / per_sender_rate)),
                )
            }
        };
        let shared = &self.shared;
        for window in &shared.windows {
            set_window(window, per_sender);
        }
        let budget = phase
            .max_messages
            .map_or(i64::MAX, |m| i64::try_from(m).unwrap_or(i64::MAX));
        shared.budget.store(budget, Ordering::Relaxed);
        if let Ok(mut l) = shared.latencies_us.lock() {
            l.clear();
        }
        let (stop_senders, senders_stop) = watch::channel(false);
        let mut tasks = Vec::with_capacity(n_senders);
        for (i, (conn, seq)) in std::mem::take(&mut self.senders).into_iter().enumerate() {
            tasks.push(tokio::spawn(sender(
                i,
                conn,
                self.route.clone(),
                self.targets.clone(),
                shared.clone(),
                interval,
                seq,
                senders_stop.clone(),
            )));
        }
        let count_mode = phase.max_messages.is_some();
        eprintln!(
            "{label}: {}, {}; {}",
            self.route.name(),
            match phase.load {
                Load::Closed { .. } => format!("closed loop, {} in flight", per_sender * n_senders),
                Load::Paced { rate, .. } => format!("paced at {} msg/s", format_value(rate)),
            },
            if count_mode {
                format!(
                    "until {} messages are ACKed",
                    phase.max_messages.unwrap_or_default()
                )
            } else {
                format!(
                    "{:.0} s warm-up, {:.0} s measured",
                    phase.warmup.as_secs_f64(),
                    phase.measure.as_secs_f64()
                )
            }
        );
        let failed = |tasks: &[JoinHandle<_>], recipients: &[JoinHandle<_>]| {
            tasks.iter().any(|t: &JoinHandle<_>| t.is_finished())
                || recipients.iter().any(|t: &JoinHandle<_>| t.is_finished())
        };
        tokio::time::sleep(phase.warmup).await;
        let t0 = Instant::now();
        let acked0 = Shared::load(&shared.acked);
        let sends0 = Shared::load(&shared.sends);
        let late0 = Shared::load(&shared.late);
        let cpu0 = relays
            .iter()
            .map(|r| r.cpu_seconds())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bench_cpu0 = super::proc::cpu_seconds(None)?;
        shared.measuring.store(true, Ordering::Relaxed);
        let mut last_print = Instant::now();
        let mut last_acked = acked0;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let acked = Shared::load(&shared.acked);
            if count_mode && acked.saturating_sub(acked0) >= phase.max_messages.unwrap_or(0) {
                break;
            }
            if t0.elapsed() >= phase.measure || failed(&tasks, &self.recipients) {
                break;
            }
            if last_print.elapsed() >= Duration::from_secs(1) {
                let rate = (acked - last_acked) as f64 / last_print.elapsed().as_secs_f64();
                eprintln!(
                    "{label}: {:.0} s, {} msg/s",
                    t0.elapsed().as_secs_f64(),
                    format_value(rate)
                );
                last_print = Instant::now();
                last_acked = acked;
            }
        }
        shared.measuring.store(false, Ordering::Relaxed);
        let elapsed = t0.elapsed().as_secs_f64();
        let measured = Shared::load(&shared.acked) - acked0;
        let sends = Shared::load(&shared.sends) - sends0;
        let late = Shared::load(&shared.late) - late0;
        let relay_cpu = relays
            .iter()
            .zip(cpu0)
            .map(|(r, c0)| Ok(r.cpu_seconds()? - c0))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let bench_cpu = super::proc::cpu_seconds(None)? - bench_cpu0;

        // Stop sending, then let every stored message reach its recipient and be ACKed.
        let _ = stop_senders.send(true);
        for task in tasks {
            self.senders
                .push(task.await.context("a sender task panicked")??);
        }
        let drain_started = Instant::now();
        while shared.outstanding() > 0
            && drain_started.elapsed() < phase.drain_timeout
            && !self.recipients.iter().any(|t| t.is_finished())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(i) = self.recipients.iter().position(|t| t.is_finished()) {
            let task = self.recipients.swap_remove(i);
            task.await.context("a recipient task panicked")??;
            bail!("{label}: a recipient session ended early");
        }
        let mut samples = shared
            .latencies_us
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        let result = PhaseResult {
            rate: measured as f64 / elapsed,
            offered: sends as f64 / elapsed,
            measured,
            elapsed,
            latency: summarize(&mut samples),
            relay_cpu,
            bench_cpu,
            late_share: if interval.is_some() && sends > 0 {
                late as f64 / sends as f64
            } else {
                0.0
            },
            in_flight: per_sender * n_senders,
        };
        eprintln!(
            "{label}: {} msg/s ACKed, {} msg/s sent{}",
            format_value(result.rate),
            format_value(result.offered),
            result.latency.map_or(String::new(), |s| format!(
                ", latency p50 {:.2} / p99 {:.2} / p999 {:.2} ms",
                s.p50 / 1e3,
                s.p99 / 1e3,
                s.p999 / 1e3
            ))
        );
        Ok(result)
    }

    /// Stops the recipients, closes every session and returns the counts of all phases.
    pub async fn finish(self) -> anyhow::Result<Totals> {
        let _ = self.stop_recipients.send(true);
        let mut conns = Vec::new();
        for task in self.recipients {
            conns.push(task.await.context("a recipient task panicked")??);
        }
        for conn in self.senders.into_iter().map(|(c, _)| c).chain(conns) {
            conn.close().await;
        }
        let s = &self.shared;
        Ok(Totals {
            sent_ok: Shared::load(&s.sent_ok),
            accepted: Shared::load(&s.accepted),
            delivered: Shared::load(&s.delivered),
            duplicates: Shared::load(&s.duplicates),
            errors: Shared::load(&s.send_errors) + Shared::load(&s.ack_errors),
        })
    }
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

    #[test]
    fn windows_resize_both_ways() {
        let window = Semaphore::new(0);
        set_window(&window, 100);
        assert_eq!(window.available_permits(), 100);
        set_window(&window, 25);
        assert_eq!(window.available_permits(), 25);
        set_window(&window, 25);
        assert_eq!(window.available_permits(), 25);
    }

    #[test]
    fn totals_sanity() {
        let mut t = Totals {
            sent_ok: 10,
            accepted: 2,
            delivered: 12,
            ..Totals::default()
        };
        assert!(t.sane());
        t.duplicates = 1;
        assert!(!t.sane());
        assert!(!Totals::default().sane());
    }
}
