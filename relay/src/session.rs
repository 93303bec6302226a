//! One client session: an actor per stream.
//!
//! The actor is generic over the stream (a libp2p stream in production, a
//! `tokio::io::duplex` pipe in unit tests). A reader task turns bytes into frame bodies; the
//! actor decodes each frame, lets the [`Relay`] check it, and keeps the pending store writes
//! in a `FuturesUnordered`, so a session can have many SENDs and ACKs in flight while the
//! store batches them into one commit. Replies go out as the commits finish, matched by
//! `corr`.
//!
//! Deliveries: for each subscribed queue the actor pushes the oldest message and waits for
//! its ACK before pushing the next, so at most one message per queue is unacknowledged.
//! A SEND in any session wakes the subscriber through [`SessionEvent::Wake`].
//!
//! Errors: a frame that cannot be decoded is answered with `corr = 0` and an error code
//! (`MALFORMED`, `VERSION`) and the session goes on; an oversized length prefix answers
//! `TOO_LARGE` and an empty frame `MALFORMED`, both with `corr = 0`, and close the session,
//! because the stream can no longer be trusted to be in step. A stream that ends inside a
//! frame is closed with no notice.

use crate::service::{Effect, Outcome, Prepared, Relay, SessionEvent, SessionLimits};
use futures::stream::FuturesUnordered;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, StreamExt};
use petrel_federation::client::{ClientFrame, RelayFrame, Response};
use petrel_federation::frame::{self, FrameError};
use petrel_federation::limits::MAX_FRAME_LEN;
use petrel_federation::transport::io::{read_body, write_message};
use petrel_federation::transport::session::accept_client_hello;
use petrel_federation::{ErrorCode, MsgId, QueueId, SessionId};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

/// A token bucket: `burst` commands at once, refilled at `rate` per second.
#[derive(Debug)]
pub(crate) struct Bucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new(burst: u32, rate: u32) -> Self {
        Self {
            tokens: burst as f64,
            burst: burst as f64,
            rate: rate as f64,
            last: Instant::now(),
        }
    }
    pub(crate) fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

enum Inbound {
    Frame(Vec<u8>),
    Fatal(FrameError),
}

/// Runs one session to its end. `shutdown` turning true ends it after in-flight commands
/// are answered.
pub async fn run<S>(relay: Arc<Relay>, stream: S, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stream = stream;
    let session_id = SessionId::random(&mut rand::rng());
    let limits = relay.config.limits.clone();
    if relay.is_draining() {
        let reject = petrel_federation::client::RelayHello::Reject(ErrorCode::Busy);
        let _ = write_message(&mut stream, 1, &reject).await;
        return;
    }
    let hello = tokio::time::timeout(
        limits.handshake_timeout(),
        accept_client_hello(&mut stream, session_id, relay.clock().now()),
    )
    .await;
    let version = match hello {
        Ok(Ok(v)) => v as u8,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "session hello failed");
            return;
        }
        Err(_) => {
            tracing::debug!("session hello timed out");
            return;
        }
    };
    relay.metrics.connection_opened();

    let (mut reader, mut writer) = stream.split();
    let (in_tx, mut inbound) = mpsc::channel::<Inbound>(64);
    let reader_task = tokio::spawn(async move {
        loop {
            match read_body(&mut reader, MAX_FRAME_LEN).await {
                Ok(Some(body)) => {
                    if in_tx.send(Inbound::Frame(body)).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = in_tx.send(Inbound::Fatal(e)).await;
                    break;
                }
            }
        }
    });
    let (out_tx, mut outbound) = mpsc::channel::<RelayFrame>(256);
    let writer_task = tokio::spawn(async move {
        while let Some(frame) = outbound.recv().await {
            if write_message(&mut writer, version, &frame).await.is_err() {
                break;
            }
        }
        let _ = futures::AsyncWriteExt::close(&mut writer).await;
    });

    let mut actor = Actor {
        number: relay.session_number(),
        relay: relay.clone(),
        session_id,
        version,
        out: out_tx,
        limits: SessionLimits::default(),
        subscriptions: HashMap::new(),
        bucket: Bucket::new(limits.command_burst, limits.commands_per_sec),
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut pending = FuturesUnordered::new();
    let idle = limits.idle_timeout();
    let mut deadline = Instant::now() + idle;
    let mut closing = false;

    loop {
        if closing && pending.is_empty() {
            break;
        }
        tokio::select! {
            Some(done) = pending.next(), if !pending.is_empty() => {
                let (corr, outcome): (u32, Outcome) = done;
                actor.finish(corr, outcome, &events_tx).await;
            }
            Some(event) = events.recv() => actor.event(event).await,
            message = inbound.recv(), if !closing => match message {
                Some(Inbound::Frame(body)) => {
                    deadline = Instant::now() + idle;
                    if let Some(p) = actor.frame(&body, &events_tx).await {
                        pending.push(p);
                    }
                }
                Some(Inbound::Fatal(e)) => {
                    if let Some(code) = e.notice_code() {
                        actor.error(0, code).await;
                    }
                    closing = true;
                }
                None => closing = true,
            },
            _ = sleep_until(deadline), if !closing => {
                tracing::debug!("session idle timeout");
                closing = true;
            }
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    closing = true;
                }
            }
        }
    }

    for rid in actor.subscriptions.keys() {
        relay.unsubscribe(rid, actor.number);
    }
    drop(actor);
    reader_task.abort();
    let _ = writer_task.await;
    relay.metrics.connection_closed();
}

type PendingReply = std::pin::Pin<Box<dyn std::future::Future<Output = (u32, Outcome)> + Send>>;

struct Actor {
    number: u64,
    relay: Arc<Relay>,
    session_id: SessionId,
    version: u8,
    out: mpsc::Sender<RelayFrame>,
    limits: SessionLimits,
    /// Subscribed queues and the message pushed but not yet acknowledged.
    subscriptions: HashMap<QueueId, Option<MsgId>>,
    bucket: Bucket,
}

impl Actor {
    async fn send(&self, frame: RelayFrame) {
        let _ = self.out.send(frame).await;
    }

    async fn reply(&self, corr: u32, response: Response) {
        if let Response::Error(code) = &response {
            self.relay.metrics.error(*code);
        }
        self.send(RelayFrame::Reply { corr, response }).await;
    }

    async fn error(&self, corr: u32, code: ErrorCode) {
        self.reply(corr, Response::Error(code)).await;
    }

    async fn frame(
        &mut self,
        body: &[u8],
        events: &mpsc::UnboundedSender<SessionEvent>,
    ) -> Option<PendingReply> {
        let frame: ClientFrame = match frame::decode_body(self.version, body) {
            Ok(f) => f,
            Err(e) => {
                self.error(0, e.code()).await;
                return None;
            }
        };
        let corr = frame.corr;
        self.relay.metrics.command(frame.command.name());
        if !self.bucket.take() {
            self.error(corr, ErrorCode::RateLimited).await;
            return None;
        }
        let origin = self.relay.direct_origin();
        match self.relay.prepare(
            &mut self.limits,
            &self.session_id,
            frame.auth.as_ref(),
            frame.command,
            &origin,
        ) {
            Prepared::Reply(response) => {
                self.reply(corr, response).await;
                None
            }
            Prepared::Subscribe(rid) => {
                self.subscribe(rid, events).await;
                self.reply(corr, Response::Ok).await;
                self.deliver(rid).await;
                None
            }
            Prepared::Pending(fut) => Some(Box::pin(async move { (corr, fut.await) })),
        }
    }

    async fn subscribe(&mut self, rid: QueueId, events: &mpsc::UnboundedSender<SessionEvent>) {
        self.relay.subscribe(rid, self.number, events);
        if self.subscriptions.insert(rid, None).is_none() {
            self.limits.subscriptions += 1;
        }
    }

    async fn finish(
        &mut self,
        corr: u32,
        outcome: Outcome,
        events: &mpsc::UnboundedSender<SessionEvent>,
    ) {
        self.reply(corr, outcome.response).await;
        match outcome.effect {
            Effect::None => {}
            Effect::Stored(rid) => {
                self.relay.metrics.message_stored();
                self.relay.wake(&rid);
            }
            Effect::Acked(rid, msg_id) => {
                if let Some(slot) = self.subscriptions.get_mut(&rid) {
                    *slot = None;
                    self.deliver(rid).await;
                } else {
                    self.relay.acked_elsewhere(&rid, msg_id, self.number);
                }
            }
            Effect::Created {
                recipient_id,
                subscribe,
            } => {
                if subscribe
                    && self.limits.subscriptions
                        < self.relay.config.limits.max_subscriptions_per_session
                {
                    self.subscribe(recipient_id, events).await;
                }
            }
            Effect::Deleted(rid) => {
                if self.subscriptions.remove(&rid).is_some() {
                    self.limits.subscriptions = self.limits.subscriptions.saturating_sub(1);
                }
                self.relay.end_subscription(&rid, self.number);
            }
        }
    }

    async fn event(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::Wake(rid) => self.deliver(rid).await,
            SessionEvent::Acked(rid, msg_id) => {
                // Only the message this session pushed: a later one is still in flight.
                if let Some(slot) = self.subscriptions.get_mut(&rid)
                    && slot.is_none_or(|pushed| pushed == msg_id)
                {
                    *slot = None;
                    self.deliver(rid).await;
                }
            }
            SessionEvent::Ended(rid) => {
                if self.subscriptions.remove(&rid).is_some() {
                    self.limits.subscriptions = self.limits.subscriptions.saturating_sub(1);
                    self.send(RelayFrame::SubscriptionEnded { recipient_id: rid })
                        .await;
                }
            }
        }
    }

    /// Pushes the oldest message of `rid` unless one is already waiting for its ACK.
    async fn deliver(&mut self, rid: QueueId) {
        let Some(slot) = self.subscriptions.get(&rid) else {
            return;
        };
        if slot.is_some() {
            return;
        }
        match self.relay.first_delivery(&rid) {
            Ok(Some(delivery)) => {
                self.subscriptions.insert(rid, Some(delivery.msg_id));
                self.relay.metrics.delivery();
                self.send(RelayFrame::Deliver(delivery)).await;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "store read failed during delivery"),
        }
    }
}
