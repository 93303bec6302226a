//! The sans-IO client engine: one profile's protocol state machines, with no socket, no
//! runtime and no clock of its own (`specs/protocol.md` §15, `specs/api.md`).
//!
//! The engine is driven the way quinn-proto is: a driver feeds it *inputs* and executes
//! the *effects* it queues, in order.
//!
//! ```text
//!   driver ──request(Request, now, rng)──────────► Engine ──poll_effect()──► Effect::Connect
//!          ──relay_up / relay_down(relay, now)───►        ──────────────────► Effect::Transmit
//!          ──handle_response(id, outcome, now)───►        ──────────────────► Effect::Persist
//!          ──handle_push(relay, frame, now)──────►        ──────────────────► Effect::Event
//!          ──handle_timeout(now)─────────────────►        ──────────────────► Effect::Done
//!                                                         ──poll_timeout()──► next deadline
//! ```
//!
//! The one rule the driver must keep: execute effects **in the order they are polled**,
//! and commit an [`Effect::Persist`] before transmitting anything polled after it. The
//! engine relies on it for crash safety — a received message is persisted (with the
//! advanced ratchet) before its ACK is transmitted, and an outgoing message is persisted
//! in the outbox (with the advanced ratchet) before its SEND — so a crash at any point
//! loses nothing and shows nothing twice (a redelivery is a ratchet duplicate).
//!
//! Time is the network clock in Unix milliseconds, passed with every input; the
//! application clock (rotation, expiry, timestamps) is the network clock plus a fixed
//! skew (zero outside tests). Randomness is passed in too, so a seeded test replays
//! exactly. Nothing here imports tokio or libp2p, reads a clock or draws randomness of its
//! own, or touches the network or the file system (`tests/engine_purity.rs` checks it).
//!
//! The concepts live in their own modules: [`links`] (relay sessions wanted, up, down,
//! backoff, keep-alive), `queues` (CREATE → SECURE → RESTRICT chains), `pairing`
//! (invitations, confirmations, re-keying), `inbound` (deliveries, payloads, receipts),
//! `outbox` (sending in order, forwarding, FORWARD_STATUS) and `housekeeping` (periodic
//! rotation, invitation expiry, retired queues).

mod drain;
mod error;
mod housekeeping;
mod inbound;
pub mod links;
mod outbox;
pub use outbox::HOLD_MS;
mod pairing;
mod queues;
mod types;

pub use error::Error;
pub use types::{
    Connected, Effect, Event, LinkFailure, MessageView, OpId, OutboxState, Reply, Request,
    RequestId, Sent, Snapshot,
};

use crate::contact::{
    Contact, ContactState, MESSAGES, Message, OUTBOX, OutboxEntry, PendingInvitation, seq_key,
};
use crate::payload::{MessageId, Payload, ProfileCard};
use crate::profile::Profile;
use crate::store::Batch;
use links::Links;
use petrel_federation::client::{Command, RelayFrame, Response};
use petrel_federation::{QueueId, RelayKey};
use rand_core::CryptoRng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How long receipts for messages just received are held back so that one receipt covers
/// a burst, in milliseconds.
pub const RECEIPT_DELAY_MS: u64 = 50;

/// How often rotations and invitation expiry are checked, in milliseconds.
pub const HOUSEKEEPING_MS: u64 = 60_000;

/// Seconds a FORWARD_STATUS long poll may be held by the forwarding relay.
pub const STATUS_WAIT_SECS: u8 = 10;

/// A continuation: what a request in flight was for.
enum Pending {
    Ping,
    Subscribe,
    Ack {
        recipient_id: QueueId,
        msg_id: petrel_federation::MsgId,
        signed: bool,
    },
    Queue(Box<queues::Step>),
    Confirmation(Box<pairing::Accepting>),
    DeleteRetired {
        contact: [u8; 16],
        recipient_id: QueueId,
    },
    DeleteInvitation {
        recipient_id: QueueId,
    },
    DeleteAbandoned,
    RelayInfo {
        destination: RelayKey,
    },
    Send(outbox::InFlight),
    ForwardStatus {
        key: Vec<u8>,
    },
    /// A GET that tells whether a queue being drained is empty (`drain`).
    Probe {
        recipient_id: QueueId,
    },
}

/// One profile's client engine. See the module documentation for how to drive it.
pub struct Engine {
    profile: Profile,
    app_skew_secs: u64,
    now_ms: u64,
    contacts: BTreeMap<[u8; 16], Contact>,
    invitations: BTreeMap<QueueId, PendingInvitation>,
    outbox: BTreeMap<Vec<u8>, OutboxEntry>,
    /// Outgoing messages not yet confirmed by a receipt, by store key.
    unsettled: BTreeMap<Vec<u8>, Message>,
    links: Links,
    pending: BTreeMap<RequestId, (RelayKey, Pending)>,
    next_request: u64,
    next_op: u64,
    effects: VecDeque<Effect>,
    /// Transmits waiting for a session that is being opened: sent by `relay_up`, failed
    /// (through `pending`) by `relay_down`.
    held: Vec<Effect>,
    outbox_state: outbox::State,
    /// Contacts with a rotation being set up.
    rotating: BTreeSet<[u8; 16]>,
    receipts: BTreeMap<[u8; 16], Vec<MessageId>>,
    receipt_due: Option<u64>,
    housekeeping_due: u64,
    last_outbox_report: Option<OutboxState>,
    /// Whether queues are SUBscribed when their session opens (always in `petrel serve`;
    /// a one-shot command that only sends does not read).
    receiving: bool,
    /// Set by `Request::Sync`: every subscription and every answered ACK is followed by a
    /// GET (`drain`).
    draining: bool,
    probing: BTreeMap<QueueId, drain::Probe>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("profile", &self.profile.name)
            .field("contacts", &self.contacts.len())
            .field("outbox", &self.outbox.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// The engine of `profile`, from what its store holds. `app_skew_secs` is added to the
    /// network clock to make the application clock (tests of periodic rotation; 0
    /// otherwise). Poll effects next: it asks for a session with every relay it needs.
    pub fn new(profile: Profile, snapshot: Snapshot, now_ms: u64, app_skew_secs: u64) -> Self {
        let Snapshot {
            contacts,
            invitations,
            outbox,
            unsettled,
        } = snapshot;
        let mut engine = Engine {
            profile,
            app_skew_secs,
            now_ms,
            contacts: contacts.into_iter().map(|c| (c.id, c)).collect(),
            invitations: invitations
                .into_iter()
                .map(|i| (i.queue.recipient_id, i))
                .collect(),
            outbox: outbox.into_iter().collect(),
            unsettled: unsettled.into_iter().collect(),
            links: Links::default(),
            pending: BTreeMap::new(),
            next_request: 1,
            next_op: 1,
            effects: VecDeque::new(),
            held: Vec::new(),
            outbox_state: outbox::State::default(),
            rotating: BTreeSet::new(),
            receipts: BTreeMap::new(),
            receipt_due: None,
            housekeeping_due: now_ms,
            last_outbox_report: None,
            receiving: true,
            draining: false,
            probing: BTreeMap::new(),
        };
        engine.ensure_links();
        engine.report_outbox();
        engine
    }

    /// An engine that does not read its queues until a `Request::Sync` (a one-shot
    /// command that only sends or creates): nothing is SUBscribed when a session opens.
    pub fn send_only(mut self) -> Self {
        self.receiving = false;
        self
    }

    /// The profile this engine runs.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The next effect to execute, in order.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due (network clock, Unix ms).
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut at = self.links.next_deadline();
        let mut take = |t: Option<u64>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a: u64| a.min(t)));
            }
        };
        take(self.receipt_due);
        take(Some(self.housekeeping_due));
        take(self.outbox_state.retry_at);
        at
    }

    /// The profile's contacts, by alias.
    pub fn contacts(&self) -> Vec<&Contact> {
        let mut all: Vec<&Contact> = self.contacts.values().collect();
        all.sort_by(|a, b| a.alias.cmp(&b.alias));
        all
    }

    /// The contact called `alias`.
    pub fn contact(&self, alias: &str) -> Result<&Contact, Error> {
        self.contacts
            .values()
            .find(|c| c.alias == alias)
            .ok_or_else(|| Error::NoContact(alias.to_string()))
    }

    /// Entries in the local outbox, and how many of them a forwarding relay holds.
    pub fn outbox_state(&self) -> OutboxState {
        let at_relay = self
            .outbox
            .values()
            .filter(|e| e.accepted.is_some())
            .count();
        OutboxState {
            waiting: self.outbox.len() - at_relay,
            at_relay,
        }
    }

    /// Every relay this engine keeps a session with, and whether it is up.
    pub fn relay_status(&self) -> Vec<(petrel_federation::RelayAddress, bool)> {
        self.links.status()
    }

    /// Starts a user request; its outcome arrives as [`Effect::Done`] with the returned
    /// ID (at once for requests that need no relay).
    pub fn request<R: CryptoRng + ?Sized>(
        &mut self,
        request: Request,
        now_ms: u64,
        rng: &mut R,
    ) -> OpId {
        self.now_ms = self.now_ms.max(now_ms);
        let op = OpId(self.next_op);
        self.next_op += 1;
        let started = match request {
            Request::Invite { alias } => self.invite(op, alias, rng),
            Request::InviteRekey { contact } => self
                .invite_rekey(&contact, rng)
                .map(|i| Some(Reply::Invitation(i))),
            Request::Connect {
                invitation,
                provenance,
                alias,
            } => self.connect(op, invitation, provenance, alias, rng),
            Request::Send { contact, text } => self.send_text(op, &contact, &text, rng),
            Request::Rotate { contact } => self.rotate(op, &contact, rng),
            Request::MarkVerified { contact } => self.mark_verified(&contact).map(Some),
            Request::Announce { card } => self.announce(card, rng).map(Some),
            Request::Sync => {
                self.start_sync();
                Ok(Some(Reply::Done))
            }
        };
        match started {
            Ok(Some(reply)) => self.done(op, Ok(reply)),
            Ok(None) => {}
            Err(e) => self.done(op, Err(e)),
        }
        self.pump(rng);
        self.after_input();
        op
    }

    /// A session with `relay` is open (after [`Effect::Connect`]).
    pub fn relay_up<R: CryptoRng + ?Sized>(&mut self, relay: &RelayKey, now_ms: u64, rng: &mut R) {
        self.now_ms = self.now_ms.max(now_ms);
        if self.links.up(relay, now_ms) {
            if let Some(address) = self.links.address(relay) {
                self.effects.push_back(Effect::Event(Event::RelayUp {
                    relay: address.to_string(),
                }));
            }
            let (now, later) = std::mem::take(&mut self.held)
                .into_iter()
                .partition(|e| matches!(e, Effect::Transmit { relay: r, .. } if r == relay));
            self.held = later;
            self.effects.extend::<Vec<Effect>>(now);
            if self.receiving {
                self.subscribe_all(relay);
            }
            self.delete_retired();
            self.pump(rng);
        }
        self.after_input();
    }

    /// The session with `relay` could not be opened, or ended. Every request in flight on
    /// it has failed; the engine asks for a new session after a backoff.
    pub fn relay_down<R: CryptoRng + ?Sized>(
        &mut self,
        relay: &RelayKey,
        reason: &str,
        now_ms: u64,
        rng: &mut R,
    ) {
        self.now_ms = self.now_ms.max(now_ms);
        let mut jitter = [0u8; 4];
        rng.fill_bytes(&mut jitter);
        let was_up = self.links.down(relay, now_ms, u32::from_le_bytes(jitter));
        // Held transmits for it fail with the rest of its requests below.
        self.held
            .retain(|e| !matches!(e, Effect::Transmit { relay: r, .. } if r == relay));
        if was_up && let Some(address) = self.links.address(relay) {
            self.effects.push_back(Effect::Event(Event::RelayDown {
                relay: address.to_string(),
                reason: reason.to_string(),
            }));
        }
        let failed: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, (r, _))| r == relay)
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            if let Some((relay, pending)) = self.pending.remove(&id) {
                self.on_failure(relay, pending, LinkFailure::Closed, rng);
            }
        }
        self.pump(rng);
        self.after_input();
    }

    /// The answer to a transmitted command, or why none came.
    pub fn handle_response<R: CryptoRng + ?Sized>(
        &mut self,
        id: RequestId,
        outcome: Result<Response, LinkFailure>,
        now_ms: u64,
        rng: &mut R,
    ) {
        self.now_ms = self.now_ms.max(now_ms);
        let Some((relay, pending)) = self.pending.remove(&id) else {
            return; // Already failed with its session.
        };
        match outcome {
            Ok(response) => {
                self.links.heard(&relay, now_ms);
                self.on_response(relay, pending, response, rng);
            }
            Err(failure) => {
                // The session is gone (a timeout ends it too): nothing more is transmitted
                // on it until the driver reports it down and a new one up (`links`).
                self.links.failed(&relay);
                self.on_failure(relay, pending, failure, rng)
            }
        }
        self.pump(rng);
        self.after_input();
    }

    /// A frame the relay pushed on its own: a delivery or the end of a subscription.
    pub fn handle_push<R: CryptoRng + ?Sized>(
        &mut self,
        relay: &RelayKey,
        frame: RelayFrame,
        now_ms: u64,
        rng: &mut R,
    ) {
        self.now_ms = self.now_ms.max(now_ms);
        self.links.heard(relay, now_ms);
        match frame {
            RelayFrame::Deliver(delivery) => self.on_delivery(*relay, delivery, rng),
            RelayFrame::SubscriptionEnded { recipient_id } => {
                // Another session took the queue (another client on the same home, or a
                // stale session of ours): take it back, since this engine owns the home.
                self.resubscribe(relay, recipient_id);
            }
            RelayFrame::Reply { .. } => {} // corr 0: a session error; its end follows.
        }
        self.pump(rng);
        self.after_input();
    }

    /// Time has reached [`poll_timeout`](Self::poll_timeout).
    pub fn handle_timeout<R: CryptoRng + ?Sized>(&mut self, now_ms: u64, rng: &mut R) {
        self.now_ms = self.now_ms.max(now_ms);
        for relay in self.links.due_connects(now_ms) {
            self.effects.push_back(Effect::Connect { relay });
        }
        for relay in self.links.due_pings(now_ms) {
            self.transmit(&relay, None, Command::Ping, Pending::Ping);
        }
        if self.receipt_due.is_some_and(|t| t <= now_ms) {
            self.receipt_due = None;
            self.queue_receipts(rng);
        }
        if self.outbox_state.retry_at.is_some_and(|t| t <= now_ms) {
            self.outbox_state.retry_at = None;
        }
        if self.housekeeping_due <= now_ms {
            self.housekeeping_due = now_ms + HOUSEKEEPING_MS;
            self.housekeeping(rng);
        }
        self.pump(rng);
        self.after_input();
    }

    /// Unix seconds, application clock.
    fn app_secs(&self) -> u64 {
        (self.now_ms / 1000).saturating_add(self.app_skew_secs)
    }

    /// Unix seconds, network clock (envelope timestamps, judged by relays).
    fn net_secs(&self) -> u64 {
        self.now_ms / 1000
    }

    fn card(&self) -> ProfileCard {
        ProfileCard {
            display_name: self.profile.display_name.clone(),
            bio: self.profile.bio.clone(),
        }
    }

    fn own_relay(&self) -> &petrel_federation::RelayAddress {
        // A profile always has at least one pinned relay (profile.rs enforces it).
        &self.profile.relays[0]
    }

    fn notice(&mut self, text: impl Into<String>) {
        self.effects
            .push_back(Effect::Event(Event::Notice(text.into())));
    }

    fn event(&mut self, event: Event) {
        self.effects.push_back(Effect::Event(event));
    }

    fn done(&mut self, op: OpId, result: Result<Reply, Error>) {
        self.effects.push_back(Effect::Done { op, result });
    }

    fn persist(&mut self, batch: Batch) {
        if !batch.is_empty() {
            self.effects.push_back(Effect::Persist(batch));
        }
    }

    /// Queues a command on `relay` if its session is up; false (and nothing queued) if not.
    fn transmit(
        &mut self,
        relay: &RelayKey,
        signer: Option<crate::contact::Secret>,
        command: Command,
        pending: Pending,
    ) -> bool {
        let up = self.links.is_up(relay);
        // A session being opened is waited for (a request made right after start, or
        // while a reconnect is under way); one that failed and waits to retry is not.
        if !up && !self.links.is_connecting(relay) {
            return false;
        }
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.pending.insert(id, (*relay, pending));
        let effect = Effect::Transmit {
            relay: *relay,
            id,
            signer,
            command,
        };
        if up {
            self.effects.push_back(effect);
        } else {
            self.held.push(effect);
        }
        true
    }

    /// Encrypts `payload` for `contact` and adds the outbox entry to `batch` and to the
    /// in-memory outbox (the caller puts the contact, whose ratchet advanced, into the same
    /// batch). Returns the entry's key.
    fn queue_payload<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        contact: &mut Contact,
        payload: &Payload,
        message_seq: Option<u64>,
        batch: &mut Batch,
    ) -> Result<Vec<u8>, Error> {
        let body = contact.session.encrypt(rng, &payload.encode()?)?;
        let seq = contact.take_seq();
        let entry = OutboxEntry {
            contact: contact.id,
            seq,
            target: contact.outbound.clone(),
            signed: true,
            body,
            message_seq,
            accepted: None,
            created_at: self.app_secs(),
        };
        let key = seq_key(&contact.id, seq);
        batch.put(OUTBOX, &key, &entry)?;
        self.outbox.insert(key.clone(), entry);
        Ok(key)
    }

    /// Stores `contact` in memory and in `batch`.
    fn keep_contact(&mut self, contact: Contact, batch: &mut Batch) -> Result<(), Error> {
        batch.put(crate::contact::CONTACTS, &contact.id, &contact)?;
        self.contacts.insert(contact.id, contact);
        Ok(())
    }

    /// Sends a text message: stored and queued at once, then handed to a relay; the reply
    /// says where it went first.
    fn send_text<R: CryptoRng + ?Sized>(
        &mut self,
        op: OpId,
        alias: &str,
        text: &str,
        rng: &mut R,
    ) -> Result<Option<Reply>, Error> {
        let max = crate::payload::MAX_TEXT_LEN;
        if text.len() > max {
            return Err(Error::TooLong {
                len: text.len(),
                max,
            });
        }
        let mut contact = self.contact(alias)?.clone();
        if contact.state != ContactState::Connected {
            return Err(Error::NotConnected(contact.alias));
        }
        let mut id = [0u8; 16];
        rng.fill_bytes(&mut id);
        let seq = contact.take_seq();
        let message = Message {
            seq,
            direction: crate::contact::Direction::Out,
            id,
            text: text.to_string(),
            at: self.app_secs(),
            sent: false,
            delivered: false,
        };
        let mut batch = Batch::new();
        let mkey = seq_key(&contact.id, seq);
        batch.put(MESSAGES, &mkey, &message)?;
        let payload = Payload::Text {
            id,
            text: text.to_string(),
        };
        let key = self.queue_payload(rng, &mut contact, &payload, Some(seq), &mut batch)?;
        let alias = contact.alias.clone();
        self.keep_contact(contact, &mut batch)?;
        self.persist(batch);
        self.unsettled.insert(mkey, message);
        self.outbox_state.replies.insert(
            key,
            outbox::Waiter::Send {
                op,
                contact: alias,
                seq,
                id,
            },
        );
        Ok(None)
    }

    fn mark_verified(&mut self, alias: &str) -> Result<Reply, Error> {
        let mut contact = self.contact(alias)?.clone();
        contact.verified = true;
        let mut batch = Batch::new();
        self.keep_contact(contact, &mut batch)?;
        self.persist(batch);
        Ok(Reply::Done)
    }

    /// Sends the profile's new card to every connected contact.
    fn announce<R: CryptoRng + ?Sized>(
        &mut self,
        card: ProfileCard,
        rng: &mut R,
    ) -> Result<Reply, Error> {
        self.profile.display_name = card.display_name.clone();
        self.profile.bio = card.bio.clone();
        let ids: Vec<[u8; 16]> = self
            .contacts
            .values()
            .filter(|c| c.state == ContactState::Connected)
            .map(|c| c.id)
            .collect();
        for id in &ids {
            let Some(mut contact) = self.contacts.get(id).cloned() else {
                continue;
            };
            let mut batch = Batch::new();
            self.queue_payload(
                rng,
                &mut contact,
                &Payload::Profile(card.clone()),
                None,
                &mut batch,
            )?;
            self.keep_contact(contact, &mut batch)?;
            self.persist(batch);
        }
        Ok(Reply::Announced {
            contacts: ids.len(),
        })
    }

    /// Dispatches an answer to the continuation that asked for it.
    fn on_response<R: CryptoRng + ?Sized>(
        &mut self,
        relay: RelayKey,
        pending: Pending,
        response: Response,
        rng: &mut R,
    ) {
        match pending {
            Pending::Ping => {}
            Pending::Subscribe => {
                if let Response::Error(code) = response {
                    self.notice(format!(
                        "a queue of this profile could not be subscribed ({code:?}): {}",
                        if code == petrel_federation::ErrorCode::Auth {
                            "it is gone from its relay"
                        } else {
                            "it is tried again with the next session"
                        }
                    ));
                }
            }
            Pending::Ack {
                recipient_id,
                msg_id,
                signed,
            } => {
                let done =
                    signed || response != Response::Error(petrel_federation::ErrorCode::Auth);
                self.ack_answered(recipient_id, msg_id, signed, response);
                if done {
                    self.ack_done(recipient_id);
                }
            }
            Pending::Probe { recipient_id } => self.probe_answered(recipient_id, response),
            Pending::Queue(step) => self.queue_step(relay, *step, response, rng),
            Pending::Confirmation(accepting) => {
                self.confirmation_step(relay, *accepting, response, rng)
            }
            Pending::DeleteRetired {
                contact,
                recipient_id,
            } => self.retired_deleted(contact, recipient_id, response),
            Pending::DeleteInvitation { recipient_id } => {
                self.invitation_deleted(recipient_id, response)
            }
            Pending::DeleteAbandoned => {}
            Pending::RelayInfo { destination } => self.relay_info(destination, response),
            Pending::Send(in_flight) => self.send_answered(in_flight, response, rng),
            Pending::ForwardStatus { key } => self.status_answered(key, response, rng),
        }
    }

    /// A request that got no answer: what it was for is retried with the next session
    /// (or reported to the user who asked).
    fn on_failure<R: CryptoRng + ?Sized>(
        &mut self,
        relay: RelayKey,
        pending: Pending,
        failure: LinkFailure,
        rng: &mut R,
    ) {
        let _ = rng;
        let reason = failure.to_string();
        match pending {
            Pending::Ping
            | Pending::Subscribe
            | Pending::Ack { .. }
            | Pending::DeleteAbandoned
            | Pending::DeleteRetired { .. }
            | Pending::DeleteInvitation { .. } => {}
            Pending::Queue(step) => self.queue_failed(relay, *step, &reason),
            Pending::Confirmation(_) => {} // Redelivered with the next subscription.
            Pending::RelayInfo { destination } => {
                self.outbox_state.info_wanted.remove(&destination);
            }
            Pending::Send(in_flight) => self.send_failed(in_flight, &reason),
            Pending::ForwardStatus { key } => {
                self.outbox_state.polling.remove(&key);
            }
            Pending::Probe { recipient_id } => self.probe_failed(recipient_id),
        }
    }

    /// SUBscribes every queue this profile reads on `relay`.
    fn subscribe_all(&mut self, relay: &RelayKey) {
        let mut queues: Vec<crate::contact::OwnQueue> = self
            .invitations
            .values()
            .filter(|i| i.queue.relay.key() == relay)
            .map(|i| i.queue.clone())
            .collect();
        for c in self.contacts.values() {
            queues.extend(c.inbound.iter().filter(|q| q.relay.key() == relay).cloned());
        }
        for q in queues {
            self.subscribe(&q);
        }
    }

    fn subscribe(&mut self, queue: &crate::contact::OwnQueue) {
        let command = Command::Subscribe {
            recipient_id: queue.recipient_id,
        };
        self.transmit(
            queue.relay.key(),
            Some(queue.recipient_key.clone()),
            command,
            Pending::Subscribe,
        );
        self.probe(queue);
    }

    fn resubscribe(&mut self, relay: &RelayKey, recipient_id: QueueId) {
        let queue = self.find_queue(&recipient_id).map(|(q, _)| q);
        if self.receiving
            && let Some(queue) = queue
            && queue.relay.key() == relay
        {
            self.subscribe(&queue);
        }
    }

    /// Wants a session with every relay this profile needs, and no other.
    fn ensure_links(&mut self) {
        let mut wanted: Vec<petrel_federation::RelayAddress> = self.profile.relays.clone();
        for i in self.invitations.values() {
            wanted.push(i.queue.relay.clone());
        }
        for c in self.contacts.values() {
            wanted.extend(c.inbound.iter().map(|q| q.relay.clone()));
            wanted.extend(c.retired.iter().map(|q| q.relay.clone()));
            if c.outbound.direct {
                wanted.push(c.outbound.relay.clone());
            }
        }
        for relay in self.links.want(wanted) {
            self.effects.push_back(Effect::Connect { relay });
        }
    }

    /// Bookkeeping at the end of every input: sessions for new queues, the outbox report.
    fn after_input(&mut self) {
        self.forget_unread_probes();
        self.ensure_links();
        self.report_outbox();
    }

    fn report_outbox(&mut self) {
        let state = self.outbox_state();
        if self.last_outbox_report != Some(state) {
            self.last_outbox_report = Some(state);
            self.event(Event::Outbox(state));
        }
    }
}
