//! One simulated client: a session with its home relay, its own queue there (recipient),
//! and an outbox towards its contact's queue on another relay (sender, through its home
//! relay with FORWARD).
//!
//! Setup is done step by step by [`super::setup`] (CREATE, RELAY_INFO, the unsigned Hello
//! and SECURE). Then [`Client::run`] is an event loop over one session:
//!
//! * a delivery is opened, booked in the [`Ledger`] and ACKed (signed, on this session);
//! * a pacing tick seals a new message into the [`Outbox`] and submits it, while the
//!   outbox holds fewer than `window` unconfirmed messages (the send rate is bounded);
//! * an answer is fed to the outbox, which says what to submit next;
//! * when the session ends (the home relay was killed), the client waits until the relay
//!   is back — following its address through [`RelayState`] — reconnects, SUBscribes again
//!   and resumes the outbox: accepted forwards are polled, the rest resubmitted;
//! * in the drain phase, once the outbox is empty, it sends its end marker.
//!
//! Nothing here sleeps to synchronise: waits are on the session, on answers (each with a
//! generous timeout that leads to asking again, never to a verdict) and on the phase.

use super::ledger::{Ledger, Seen};
use super::live::{Phase, Shared};
use super::message::{Kind, Message};
use super::outbox::{Action, Answer, Outbox, STATUS_WAIT_SECS};
use super::relays::RelayState;
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use petrel_federation::auth::Auth;
use petrel_federation::client::{Command, Delivery, RelayFrame, Response};
use petrel_federation::delivery::{DeliveryKey, DeliveryKind};
use petrel_federation::transport::connection::RelayConnection;
use petrel_federation::{MsgId, QueueId};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

/// Longest wait for the answer to a FORWARD, an ACK or a SUB on a live session before
/// asking again (a synchronous forward takes at most the relay's 5 s forward timeout, plus
/// its dial).
const REPLY_WAIT: Duration = Duration::from_secs(60);
/// Pause before retrying a transient refusal.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Longest wait for one connection attempt.
const CONNECT_WAIT: Duration = Duration::from_secs(20);

/// What a client reports when it stops.
#[derive(Debug)]
pub struct ClientReport {
    /// The client.
    pub index: usize,
    /// Its home relay.
    pub home: usize,
    /// Its outbox at the end.
    pub outbox: Outbox,
    /// Its record of its inbound stream.
    pub ledger: Ledger,
    /// Sessions it opened again after one ended.
    pub reconnects: u64,
    /// QuotaReached markers delivered.
    pub quota_markers: u64,
    /// Things that should not happen, described (the first few).
    pub anomalies: Vec<String>,
}

/// What the client is waiting for.
enum Waiting {
    Forward(u64),
    Status(u64),
    Retry(u64),
    Ack(MsgId),
    Sub,
}

struct Step {
    token: u64,
    waiting: Waiting,
    answer: Answer,
}

fn expect(
    token: u64,
    waiting: Waiting,
    rx: oneshot::Receiver<Response>,
    wait: Duration,
) -> BoxFuture<'static, Step> {
    Box::pin(async move {
        let answer = match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => Answer::Response(r),
            Ok(Err(_)) => Answer::Closed,
            Err(_) => Answer::TimedOut,
        };
        Step {
            token,
            waiting,
            answer,
        }
    })
}

/// Opens a session with the relay whenever it runs, retrying (with a growing pause) while
/// it is down or not yet answering.
pub async fn connect_home(mut home: watch::Receiver<RelayState>) -> RelayConnection {
    let mut pause = Duration::from_millis(50);
    loop {
        let address = match home.wait_for(|s| s.address.is_some()).await {
            Ok(state) => state.address.clone(),
            // The orchestrator is gone: nothing will ever come back.
            Err(_) => None,
        };
        let Some(address) = address else {
            std::future::pending::<()>().await;
            continue;
        };
        if let Ok(Ok(conn)) =
            tokio::time::timeout(CONNECT_WAIT, RelayConnection::connect(&address)).await
        {
            return conn;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// A client ready to run.
pub struct Client {
    /// The client's number.
    pub index: usize,
    /// Its home relay.
    pub home: usize,
    /// (home relay, the relay of its contact's queue): the path its forwards take.
    pub path: (usize, usize),
    home_state: watch::Receiver<RelayState>,
    conn: Option<RelayConnection>,
    recipient_key: SigningKey,
    recipient_id: QueueId,
    delivery: DeliveryKey,
    ledger: Ledger,
    outbox: Outbox,
    rng: ChaCha8Rng,
    reconnects: u64,
    quota_markers: u64,
    anomalies: Vec<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("index", &self.index)
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

/// How a client paces itself.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Messages per second.
    pub rate: f64,
    /// Unconfirmed messages at most; a tick that finds the outbox this full sends nothing.
    pub window: usize,
    /// Delay before the first tick, so that clients do not tick in step.
    pub offset: Duration,
}

/// The parts of a client [`super::setup`] assembles.
#[derive(Debug)]
pub struct Parts {
    /// The client's number.
    pub index: usize,
    /// Its home relay.
    pub home: usize,
    /// (home relay, the relay of its contact's queue).
    pub path: (usize, usize),
    /// Follows the home relay's address.
    pub home_state: watch::Receiver<RelayState>,
    /// The open session.
    pub conn: RelayConnection,
    /// Signs the client's commands on its own queue.
    pub recipient_key: SigningKey,
    /// Its queue.
    pub recipient_id: QueueId,
    /// Opens its deliveries.
    pub delivery: DeliveryKey,
    /// Its inbound stream's ledger (the Hello already booked).
    pub ledger: Ledger,
    /// Its outbox (the Hello already confirmed).
    pub outbox: Outbox,
    /// Its envelope keys come from here.
    pub rng: ChaCha8Rng,
    /// What went wrong during setup (it recovered).
    pub notes: Vec<String>,
}

impl Client {
    /// A client from its parts.
    pub fn new(parts: Parts) -> Client {
        Client {
            index: parts.index,
            home: parts.home,
            path: parts.path,
            home_state: parts.home_state,
            conn: Some(parts.conn),
            recipient_key: parts.recipient_key,
            recipient_id: parts.recipient_id,
            delivery: parts.delivery,
            ledger: parts.ledger,
            outbox: parts.outbox,
            rng: parts.rng,
            reconnects: 0,
            quota_markers: 0,
            anomalies: parts.notes,
        }
    }

    fn anomaly(&mut self, what: String) {
        if self.anomalies.len() < 5 {
            self.anomalies
                .push(format!("client {}: {what}", self.index));
        }
    }

    /// Runs until the phase is [`Phase::Stop`], then closes the session and reports.
    pub async fn run(
        mut self,
        mut phase: watch::Receiver<Phase>,
        shared: Arc<Shared>,
        pace: Pace,
    ) -> ClientReport {
        let period = Duration::from_secs_f64(1.0 / pace.rate.max(0.001));
        let mut ticker = tokio::time::interval_at(Instant::now() + pace.offset, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut steps: FuturesUnordered<BoxFuture<'static, Step>> = FuturesUnordered::new();
        let mut connecting: Option<BoxFuture<'static, RelayConnection>> = None;
        loop {
            let now = *phase.borrow_and_update();
            if now == Phase::Stop {
                break;
            }
            if self.conn.is_none() && connecting.is_none() {
                connecting = Some(Box::pin(connect_home(self.home_state.clone())));
            }
            if now == Phase::Drain && self.outbox.unconfirmed() == 0 && !self.outbox.end_created() {
                match self.outbox.create(Kind::End, &mut self.rng) {
                    Ok(seq) => self.act(Action::Forward(seq), &shared, &mut steps).await,
                    Err(e) => self.anomaly(format!("cannot seal the end marker: {e:#}")),
                }
            }
            let sending = now == Phase::Send && self.outbox.unconfirmed() < pace.window;
            let conn = self.conn.as_mut();
            tokio::select! {
                changed = phase.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                event = next_event(conn) => self.on_event(event, &shared, &mut steps).await,
                conn = maybe(connecting.as_mut()) => {
                    connecting = None;
                    self.resume(conn, &shared, &mut steps).await;
                }
                Some(step) = steps.next(), if !steps.is_empty() => {
                    self.on_step(step, &shared, &mut steps).await;
                }
                _ = ticker.tick(), if sending => {
                    match self.outbox.create(Kind::Data, &mut self.rng) {
                        Ok(seq) => {
                            shared.add(&shared.sent, 1);
                            self.act(Action::Forward(seq), &shared, &mut steps).await;
                        }
                        Err(e) => self.anomaly(format!("cannot seal a message: {e:#}")),
                    }
                }
            }
        }
        if let Some(conn) = self.conn.take() {
            conn.close().await;
        }
        ClientReport {
            index: self.index,
            home: self.home,
            outbox: self.outbox,
            ledger: self.ledger,
            reconnects: self.reconnects,
            quota_markers: self.quota_markers,
            anomalies: self.anomalies,
        }
    }

    /// Submits a command on the session; `None` (and the session dropped) if it is gone.
    async fn submit(
        &mut self,
        auth: Option<Auth>,
        command: Command,
    ) -> Option<oneshot::Receiver<Response>> {
        let conn = self.conn.as_ref()?;
        match conn.submit(auth, command).await {
            Ok(rx) => Some(rx),
            Err(_) => {
                self.conn = None;
                None
            }
        }
    }

    /// Carries out what the outbox asked for.
    async fn act(
        &mut self,
        action: Action,
        shared: &Shared,
        steps: &mut FuturesUnordered<BoxFuture<'static, Step>>,
    ) {
        match action {
            Action::Nothing => {}
            // Without a session the message waits; `resume` submits it after reconnecting.
            _ if self.conn.is_none() => {}
            Action::Forward(seq) => {
                if let Some((token, command)) = self.outbox.forward(seq)
                    && let Some(rx) = self.submit(None, command).await
                {
                    if let Some(path) = shared.paths.get(&self.path) {
                        shared.add(&path.in_flight, 1);
                    }
                    steps.push(expect(token, Waiting::Forward(seq), rx, REPLY_WAIT));
                }
            }
            Action::Status(seq) => {
                if let Some((token, command)) = self.outbox.status(seq)
                    && let Some(rx) = self.submit(None, command).await
                {
                    let wait = REPLY_WAIT + Duration::from_secs(u64::from(STATUS_WAIT_SECS));
                    steps.push(expect(token, Waiting::Status(seq), rx, wait));
                }
            }
            Action::RetryLater(seq) => {
                if let Some(token) = self.outbox.retry_token(seq) {
                    steps.push(Box::pin(async move {
                        tokio::time::sleep(RETRY_PAUSE).await;
                        Step {
                            token,
                            waiting: Waiting::Retry(seq),
                            answer: Answer::Timer,
                        }
                    }));
                }
            }
        }
    }

    /// A new session after the old one ended: subscribe again, then resume the outbox.
    async fn resume(
        &mut self,
        conn: RelayConnection,
        shared: &Shared,
        steps: &mut FuturesUnordered<BoxFuture<'static, Step>>,
    ) {
        self.conn = Some(conn);
        self.reconnects += 1;
        shared.add(&shared.reconnects, 1);
        self.subscribe(steps).await;
        for action in self.outbox.resume() {
            self.act(action, shared, steps).await;
        }
    }

    async fn subscribe(&mut self, steps: &mut FuturesUnordered<BoxFuture<'static, Step>>) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let command = Command::Subscribe {
            recipient_id: self.recipient_id,
        };
        let Ok(auth) = Auth::sign(&self.recipient_key, &conn.session_id().0, &command) else {
            return;
        };
        if let Some(rx) = self.submit(Some(auth), command).await {
            steps.push(expect(0, Waiting::Sub, rx, REPLY_WAIT));
        }
    }

    async fn on_event(
        &mut self,
        event: Option<RelayFrame>,
        shared: &Shared,
        steps: &mut FuturesUnordered<BoxFuture<'static, Step>>,
    ) {
        match event {
            None => {
                // The session ended; answers still owed on it resolve as `Closed`.
                self.conn = None;
                shared.add(&shared.session_drops[self.home], 1);
            }
            Some(RelayFrame::Deliver(d)) => self.on_delivery(d, shared, steps).await,
            Some(RelayFrame::SubscriptionEnded { .. }) => {
                self.anomaly("the relay ended the subscription".into());
                self.subscribe(steps).await;
            }
            Some(RelayFrame::Reply { corr, response }) => {
                self.anomaly(format!("unsolicited reply (corr {corr}): {response:?}"));
            }
        }
    }

    async fn on_delivery(
        &mut self,
        d: Delivery,
        shared: &Shared,
        steps: &mut FuturesUnordered<BoxFuture<'static, Step>>,
    ) {
        if d.recipient_id != self.recipient_id {
            self.ledger.unreadable();
            self.anomaly("a delivery for another queue".into());
            return;
        }
        match self
            .delivery
            .open(&d.recipient_id, &d.msg_id, &d.ciphertext)
        {
            Ok(body) if body.kind == DeliveryKind::QuotaReached => self.quota_markers += 1,
            Ok(body) => match Message::parse(&body.body) {
                Ok(message) => match self.ledger.record(d.msg_id, message) {
                    Seen::New(Message {
                        kind: Kind::End, ..
                    }) => shared.add(&shared.ends_received, 1),
                    Seen::New(_) => shared.add(&shared.delivered, 1),
                    Seen::Again => shared.add(&shared.duplicate_deliveries, 1),
                    Seen::Foreign => self.anomaly("another stream's message".into()),
                },
                Err(e) => {
                    self.ledger.unreadable();
                    self.anomaly(format!("an unreadable body: {e:#}"));
                }
            },
            Err(e) => {
                // Undecryptable: acknowledged like any delivery (§12.3), and counted.
                self.ledger.unreadable();
                self.anomaly(format!("an undecryptable delivery: {e}"));
            }
        }
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let command = Command::Ack {
            recipient_id: self.recipient_id,
            msg_id: d.msg_id,
        };
        let Ok(auth) = Auth::sign(&self.recipient_key, &conn.session_id().0, &command) else {
            return;
        };
        if let Some(rx) = self.submit(Some(auth), command).await {
            steps.push(expect(0, Waiting::Ack(d.msg_id), rx, REPLY_WAIT));
        }
    }

    async fn on_step(
        &mut self,
        step: Step,
        shared: &Shared,
        steps: &mut FuturesUnordered<BoxFuture<'static, Step>>,
    ) {
        let path = shared.paths.get(&self.path);
        let (seq, status) = match step.waiting {
            Waiting::Forward(seq) => {
                if let Some(path) = path {
                    shared.sub(&path.in_flight, 1);
                }
                (seq, false)
            }
            Waiting::Retry(seq) => (seq, false),
            Waiting::Status(seq) => (seq, true),
            Waiting::Ack(msg_id) => {
                // An `OK` is a confirmation whichever session it came on.
                if step.answer == Answer::Response(Response::Ok) {
                    self.ledger.acked(msg_id);
                }
                return;
            }
            Waiting::Sub => {
                match step.answer {
                    Answer::Response(Response::Ok) | Answer::Closed => {}
                    Answer::TimedOut => self.subscribe(steps).await,
                    other => self.anomaly(format!("SUB answered {other:?}")),
                }
                return;
            }
        };
        let before = (self.outbox.counts(), self.outbox.end_confirmed());
        let action = self.outbox.answer(seq, step.token, status, step.answer);
        let after = self.outbox.counts();
        shared.add(&shared.confirmed, after.confirmed - before.0.confirmed);
        shared.add(&shared.outboxed, after.outboxed - before.0.outboxed);
        if let Some(path) = path {
            shared.add(&path.outboxed, after.outboxed - before.0.outboxed);
        }
        if self.outbox.end_confirmed() && !before.1 {
            shared.add(&shared.ends_confirmed, 1);
        }
        if after.rejected > before.0.rejected {
            // A final refusal: the orchestrator must not wait for it.
            shared.changed.send_modify(|c| *c = c.wrapping_add(1));
        }
        self.act(action, shared, steps).await;
    }
}

async fn next_event(conn: Option<&mut RelayConnection>) -> Option<RelayFrame> {
    match conn {
        Some(conn) => conn.next_event().await,
        None => std::future::pending().await,
    }
}

async fn maybe<F: std::future::Future + Unpin>(f: Option<&mut F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}
