//! The queue service: what each command does to the store, independent of the transport.
//!
//! A session calls [`Relay::prepare`] with a decoded frame. The synchronous part — rate
//! limits, size checks, the key-hash comparison and the signature check against a read
//! snapshot — happens at once; what must change the store becomes a [`Pending`] future
//! that resolves after the group commit. Every write closure re-checks the state it
//! depends on inside the write transaction, so two sessions racing on one queue see a
//! consistent outcome.
//!
//! Authentication (`specs/protocol.md` §Command authentication): the relay looks the queue
//! up, hashes the presented key, compares the hashes in constant time and verifies the
//! signature. When the queue does not exist it does the same work against a dummy hash and
//! the dummy key, so "no such queue" and "wrong key" take the same path and both answer
//! `AUTH`.

use crate::clock::Clock;
use crate::config::Config;
use crate::keys::RelayKeys;
use crate::metrics::Metrics;
use crate::store::{QueueRecord, QueueStatus, Store, StoreError, StoredMessage, Tables};
use petrel_federation::auth::{Auth, dummy_verifying_key, signed_bytes};
use petrel_federation::client::{Command, Delivery, QueueCreated, Response};
use petrel_federation::delivery::{DeliveryBody, DeliveryKey, DeliveryKind};
use petrel_federation::peer::{RelayInfo, SignedRelayInfo};
use petrel_federation::{ErrorCode, KeyHash, MsgId, QueueId, SessionId, padding};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

/// How long a signed relay info is valid.
const INFO_VALIDITY_SECS: u64 = 7 * 24 * 3600;

/// Where a command came from: which relay handed it over (this one for direct sessions)
/// and, for a forwarded SEND, the envelope's replay tag and how long to keep it.
#[derive(Debug, Clone)]
pub struct Origin {
    /// `KeyHash::of_forwarder` of the relay that handed the command over.
    pub via: KeyHash,
    /// Replay tag and its expiry, for forwarded SENDs.
    pub replay: Option<([u8; 32], u64)>,
}

/// Events the relay sends to a session about its subscriptions.
#[derive(Debug, Clone, Copy)]
pub enum SessionEvent {
    /// A message arrived in a subscribed queue.
    Wake(QueueId),
    /// Another session subscribed to the queue, or deleted it.
    Ended(QueueId),
    /// Another session acknowledged this message of a subscribed queue: push the next.
    Acked(QueueId, MsgId),
}

struct Subscriber {
    session: u64,
    events: mpsc::UnboundedSender<SessionEvent>,
}

/// The relay's shared state.
pub struct Relay {
    /// The store.
    pub store: Store,
    /// The relay's keys.
    pub keys: RelayKeys,
    /// Configuration.
    pub config: Config,
    /// Metrics.
    pub metrics: Metrics,
    info: RwLock<SignedRelayInfo>,
    subscribers: Mutex<HashMap<QueueId, Subscriber>>,
    dummy_hash: KeyHash,
    dummy_key: ed25519_dalek::VerifyingKey,
    own_forwarder_hash: KeyHash,
    draining: AtomicBool,
    next_session: AtomicU64,
    forwarder: std::sync::OnceLock<std::sync::Arc<crate::forward::Forwarder>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// What a command needs after the synchronous checks.
pub enum Prepared {
    /// Answer at once.
    Reply(Response),
    /// Answer once the store commits.
    Pending(std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>),
    /// SUB passed authentication: the session registers the subscription.
    Subscribe(QueueId),
}

/// The result of a pending command, with what the session must do next.
#[derive(Debug)]
pub struct Outcome {
    /// The response.
    pub response: Response,
    /// Follow-up for the session.
    pub effect: Effect,
}

/// Follow-ups of a committed command.
#[derive(Debug, Clone, Copy)]
pub enum Effect {
    /// Nothing.
    None,
    /// A message was stored in this queue: wake its subscriber.
    Stored(QueueId),
    /// The in-flight message of this queue was acknowledged: deliver the next one (on
    /// whichever session holds the subscription).
    Acked(QueueId, MsgId),
    /// A queue was created; subscribe this session when asked.
    Created {
        /// The new queue.
        recipient_id: QueueId,
        /// Whether CREATE asked to subscribe.
        subscribe: bool,
    },
    /// The queue was deleted: drop the subscription (telling another subscribed session).
    Deleted(QueueId),
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prepared::Reply(r) => f.debug_tuple("Reply").field(r).finish(),
            Prepared::Pending(_) => f.write_str("Pending(..)"),
            Prepared::Subscribe(_) => f.write_str("Subscribe(..)"),
        }
    }
}

fn outcome(response: Response) -> Outcome {
    Outcome {
        response,
        effect: Effect::None,
    }
}

fn err(code: ErrorCode) -> Response {
    Response::Error(code)
}

fn internal(e: StoreError) -> Response {
    tracing::error!(error = %e, "store failure");
    err(ErrorCode::Internal)
}

impl Relay {
    /// Builds the relay's state.
    pub fn new(store: Store, keys: RelayKeys, config: Config, metrics: Metrics) -> Self {
        let info = sign_info(&keys, config.clock.now());
        Self {
            store,
            config,
            metrics,
            info: RwLock::new(info),
            subscribers: Mutex::new(HashMap::new()),
            dummy_hash: KeyHash::of(dummy_verifying_key()),
            // A key drawn by `SigningKey::generate` always decodes.
            dummy_key: ed25519_dalek::VerifyingKey::from_bytes(dummy_verifying_key())
                .unwrap_or_else(|_| {
                    ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key()
                }),
            own_forwarder_hash: KeyHash::of_forwarder(&keys.relay_key()),
            keys,
            draining: AtomicBool::new(false),
            next_session: AtomicU64::new(1),
            forwarder: std::sync::OnceLock::new(),
        }
    }

    /// Installs the forwarder (once, at start-up).
    pub fn set_forwarder(&self, forwarder: std::sync::Arc<crate::forward::Forwarder>) {
        let _ = self.forwarder.set(forwarder);
    }

    /// The origin of commands from this relay's own sessions.
    pub fn direct_origin(&self) -> Origin {
        Origin {
            via: self.own_forwarder_hash,
            replay: None,
        }
    }

    /// `KeyHash::of_forwarder` of this relay's own key.
    pub fn own_forwarder_hash(&self) -> KeyHash {
        self.own_forwarder_hash
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.config.clock
    }

    /// A fresh local number for a session.
    pub fn session_number(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Stops accepting new sessions and SENDs.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// True while shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The current signed info, re-signed when less than a day of validity is left.
    pub fn relay_info(&self) -> SignedRelayInfo {
        let now = self.clock().now();
        if let Ok(info) = self.info.read()
            && info.info.valid_until > now + 24 * 3600
            && info.info.valid_from <= now
        {
            return info.clone();
        }
        let fresh = sign_info(&self.keys, now);
        if let Ok(mut slot) = self.info.write() {
            *slot = fresh.clone();
        }
        fresh
    }

    /// Registers `session` as the subscriber of `rid`, telling any previous one it lost it.
    pub fn subscribe(
        &self,
        rid: QueueId,
        session: u64,
        events: &mpsc::UnboundedSender<SessionEvent>,
    ) {
        let Ok(mut subs) = self.subscribers.lock() else {
            return;
        };
        let previous = subs.insert(
            rid,
            Subscriber {
                session,
                events: events.clone(),
            },
        );
        if let Some(prev) = previous
            && prev.session != session
        {
            let _ = prev.events.send(SessionEvent::Ended(rid));
        }
    }

    /// Removes `session`'s subscription to `rid` (if it still holds it).
    pub fn unsubscribe(&self, rid: &QueueId, session: u64) {
        if let Ok(mut subs) = self.subscribers.lock()
            && subs.get(rid).is_some_and(|s| s.session == session)
        {
            subs.remove(rid);
        }
    }

    /// Tells the subscriber of `rid`, when it is not `session`, that `msg_id` was
    /// acknowledged elsewhere, so that it pushes the next message (§8: "acknowledged by any
    /// session").
    pub fn acked_elsewhere(&self, rid: &QueueId, msg_id: MsgId, session: u64) {
        if let Ok(subs) = self.subscribers.lock()
            && let Some(s) = subs.get(rid)
            && s.session != session
        {
            let _ = s.events.send(SessionEvent::Acked(*rid, msg_id));
        }
    }

    /// Ends every subscription to a deleted queue; a subscriber other than `session` (the
    /// one that deleted it) is told, and sends `SubscriptionEnded`.
    pub fn end_subscription(&self, rid: &QueueId, session: u64) {
        if let Ok(mut subs) = self.subscribers.lock()
            && let Some(s) = subs.remove(rid)
            && s.session != session
        {
            let _ = s.events.send(SessionEvent::Ended(*rid));
        }
    }

    /// Wakes the subscriber of `rid`, if any.
    pub fn wake(&self, rid: &QueueId) {
        if let Ok(subs) = self.subscribers.lock()
            && let Some(s) = subs.get(rid)
        {
            let _ = s.events.send(SessionEvent::Wake(*rid));
        }
    }

    fn ttl_cutoff(&self, now: u64) -> Option<u64> {
        now.checked_sub(self.config.limits.message_ttl_secs)
    }

    /// Checks an authenticator against a stored hash (or the dummy when there is none).
    /// Returns the presented key's hash on success.
    fn authenticate(
        &self,
        stored: Option<&KeyHash>,
        auth: Option<&Auth>,
        binding: &[u8; 32],
        command: &Command,
    ) -> Result<KeyHash, ErrorCode> {
        let auth = auth.ok_or(ErrorCode::Auth)?;
        let presented = KeyHash::of(&auth.key);
        let (expected, real) = match stored {
            Some(h) => (h, true),
            None => (&self.dummy_hash, false),
        };
        let key_ok: bool = presented.0.ct_eq(&expected.0).into();
        // Every path decodes the presented key and runs one full verification against a
        // valid key: an undecodable or weak presented key is swapped for the dummy key, so
        // that it costs the same whether or not the queue exists.
        // The presented key is decoded once; the dummy key was decoded at start-up.
        let presented_key = ed25519_dalek::VerifyingKey::from_bytes(&auth.key)
            .ok()
            .filter(|k| !k.is_weak());
        let decodable = presented_key.is_some();
        let verify_key = match presented_key {
            Some(k) if real => k,
            _ => self.dummy_key,
        };
        let msg = signed_bytes(binding, command).map_err(|_| ErrorCode::Auth)?;
        let signature = ed25519_dalek::Signature::from_bytes(&auth.sig.0);
        let sig_ok = verify_key.verify_strict(&msg, &signature).is_ok();
        let real = real & decodable;
        if real & key_ok & sig_ok {
            Ok(presented)
        } else {
            Err(ErrorCode::Auth)
        }
    }

    fn recipient_hash(&self, rid: &QueueId) -> Result<Option<KeyHash>, StoreError> {
        self.store
            .read(|t| Ok(t.queue(rid)?.map(|q| q.recipient_key_hash)))
    }

    /// Authenticates a recipient command against a read snapshot.
    fn auth_recipient(
        &self,
        rid: &QueueId,
        auth: Option<&Auth>,
        binding: &[u8; 32],
        command: &Command,
    ) -> Result<KeyHash, ErrorCode> {
        let stored = self.recipient_hash(rid).map_err(|e| {
            tracing::error!(error = %e, "store failure");
            ErrorCode::Internal
        })?;
        self.authenticate(stored.as_ref(), auth, binding, command)
    }

    /// Handles one command of a session. `binding` is the session ID (or the envelope key).
    pub fn prepare(
        self: &std::sync::Arc<Self>,
        session: &mut SessionLimits,
        session_id: &SessionId,
        auth: Option<&Auth>,
        command: Command,
        origin: &Origin,
    ) -> Prepared {
        let binding = &session_id.0;
        let now = self.clock().now();
        // §10.1: an authenticator where the table says "absent" is refused like a missing
        // one where it says "required".
        let unauthenticated = matches!(
            command,
            Command::Ping
                | Command::RelayInfo { .. }
                | Command::Forward { .. }
                | Command::ForwardStatus { .. }
        );
        if unauthenticated && auth.is_some() {
            return Prepared::Reply(err(ErrorCode::Auth));
        }
        match &command {
            Command::Ping => Prepared::Reply(Response::Pong),
            Command::Create {
                recipient_key,
                recipient_dh,
                subscribe,
                password,
            } => {
                if password
                    .as_ref()
                    .is_some_and(|p| p.len() > petrel_federation::limits::MAX_PASSWORD_LEN)
                {
                    return Prepared::Reply(err(ErrorCode::Malformed));
                }
                // The dummy key must never own a queue, or the missing-queue path could pass.
                if recipient_key == dummy_verifying_key() {
                    return Prepared::Reply(err(ErrorCode::Auth));
                }
                if let Some(required) = &self.config.create_password {
                    let given = password.as_deref().unwrap_or(&[]);
                    let same: bool = blake3::hash(given)
                        .as_bytes()
                        .ct_eq(blake3::hash(required.as_bytes()).as_bytes())
                        .into();
                    if !same {
                        return Prepared::Reply(err(ErrorCode::CreateDenied));
                    }
                }
                if session.queues_created >= self.config.limits.max_queues_per_session {
                    return Prepared::Reply(err(ErrorCode::Limit));
                }
                // Proof of possession: CREATE is signed by the new recipient key.
                let hash = KeyHash::of(recipient_key);
                if auth.map(|a| a.key) != Some(*recipient_key) {
                    return Prepared::Reply(err(ErrorCode::Auth));
                }
                if let Err(code) = self.authenticate(Some(&hash), auth, binding, &command) {
                    return Prepared::Reply(err(code));
                }
                let mut rng = rand::rng();
                let relay_secret = x25519_dalek::StaticSecret::random_from_rng(&mut rng);
                let relay_dh = x25519_dalek::PublicKey::from(&relay_secret).to_bytes();
                let Ok(key) =
                    DeliveryKey::derive(&relay_secret, recipient_dh, &relay_dh, recipient_dh)
                else {
                    return Prepared::Reply(err(ErrorCode::Malformed));
                };
                session.queues_created += 1;
                let rid = QueueId::random(&mut rng);
                session.prove(rid, hash);
                let sid = QueueId::random(&mut rng);
                let record = QueueRecord {
                    sender_id: sid,
                    recipient_key_hash: hash,
                    sender_key_hash: None,
                    delivery_key: *key.as_bytes(),
                    status: QueueStatus::Active,
                    next_seq: 0,
                    count: 0,
                    marker_queued: false,
                    forwarders: Vec::new(),
                };
                let subscribe = *subscribe;
                let relay = self.clone();
                Prepared::Pending(Box::pin(async move {
                    let result = relay
                        .store
                        .write(move |t| {
                            if t.id_taken(&rid)? || t.id_taken(&sid)? || rid == sid {
                                return Ok(false);
                            }
                            t.put_queue(&rid, &record)?;
                            t.put_sender(&sid, &rid)?;
                            Ok(true)
                        })
                        .await;
                    match result {
                        Ok(true) => Outcome {
                            response: Response::Created(QueueCreated {
                                recipient_id: rid,
                                sender_id: sid,
                                relay_dh,
                            }),
                            effect: Effect::Created {
                                recipient_id: rid,
                                subscribe,
                            },
                        },
                        Ok(false) => outcome(err(ErrorCode::Internal)),
                        Err(e) => outcome(internal(e)),
                    }
                }))
            }
            Command::Secure {
                recipient_id,
                sender_key_hash,
            } => {
                let hash = match self.auth_recipient(recipient_id, auth, binding, &command) {
                    Ok(h) => h,
                    Err(code) => return Prepared::Reply(err(code)),
                };
                if sender_key_hash.ct_eq(&self.dummy_hash) {
                    return Prepared::Reply(err(ErrorCode::Auth));
                }
                let (rid, sender_hash) = (*recipient_id, *sender_key_hash);
                self.pending_write(move |t| {
                    let Some(mut q) = recipient_queue(t, &rid, &hash)? else {
                        return Ok(outcome(err(ErrorCode::Auth)));
                    };
                    if q.sender_key_hash.is_some() {
                        return Ok(outcome(err(ErrorCode::Duplicate)));
                    }
                    q.sender_key_hash = Some(sender_hash);
                    t.put_queue(&rid, &q)?;
                    Ok(outcome(Response::Ok))
                })
            }
            Command::Send { body, .. } => {
                if self.is_draining() {
                    return Prepared::Reply(err(ErrorCode::Busy));
                }
                if !padding::is_class(body.len()) {
                    return Prepared::Reply(err(ErrorCode::MessageSize));
                }
                self.prepare_send(auth, binding, &command, now, origin)
            }
            Command::Subscribe { recipient_id } => {
                let hash = match self.auth_recipient(recipient_id, auth, binding, &command) {
                    Ok(h) => h,
                    Err(code) => return Prepared::Reply(err(code)),
                };
                if session.subscriptions >= self.config.limits.max_subscriptions_per_session {
                    return Prepared::Reply(err(ErrorCode::Limit));
                }
                session.prove(*recipient_id, hash);
                Prepared::Subscribe(*recipient_id)
            }
            Command::Get { recipient_id } => {
                let hash = match self.auth_recipient(recipient_id, auth, binding, &command) {
                    Ok(h) => h,
                    Err(code) => return Prepared::Reply(err(code)),
                };
                session.prove(*recipient_id, hash);
                match self.first_delivery(recipient_id) {
                    Ok(Some(d)) => Prepared::Reply(Response::Message(d)),
                    Ok(None) => Prepared::Reply(Response::Empty),
                    Err(e) => Prepared::Reply(internal(e)),
                }
            }
            Command::Ack {
                recipient_id,
                msg_id,
            } => {
                // Unsigned on a session that proved this queue's key; the write below checks
                // that the queue still has that key.
                let proven = session.proven.get(recipient_id).copied();
                let hash = match (auth, proven) {
                    (None, Some(hash)) => hash,
                    _ => match self.auth_recipient(recipient_id, auth, binding, &command) {
                        Ok(h) => h,
                        Err(code) => return Prepared::Reply(err(code)),
                    },
                };
                let (rid, mid) = (*recipient_id, *msg_id);
                let cutoff = self.ttl_cutoff(now);
                self.pending_write(move |t| {
                    let Some(mut q) = recipient_queue(t, &rid, &hash)? else {
                        return Ok(outcome(err(ErrorCode::Auth)));
                    };
                    purge_expired(t, &rid, &mut q, cutoff)?;
                    let first = t.first_message(&rid)?;
                    let Some((seq, msg)) = first.filter(|(_, m)| m.msg_id == mid) else {
                        t.put_queue(&rid, &q)?;
                        return Ok(outcome(err(ErrorCode::NoMessage)));
                    };
                    t.remove_message(&rid, seq)?;
                    q.count = q.count.saturating_sub(1);
                    if msg.is_marker {
                        q.marker_queued = false;
                    }
                    t.put_queue(&rid, &q)?;
                    Ok(Outcome {
                        response: Response::Ok,
                        effect: Effect::Acked(rid, mid),
                    })
                })
            }
            Command::Suspend { recipient_id } => {
                let hash = match self.auth_recipient(recipient_id, auth, binding, &command) {
                    Ok(h) => h,
                    Err(code) => return Prepared::Reply(err(code)),
                };
                let rid = *recipient_id;
                self.pending_write(move |t| {
                    let Some(mut q) = recipient_queue(t, &rid, &hash)? else {
                        return Ok(outcome(err(ErrorCode::Auth)));
                    };
                    q.status = QueueStatus::Suspended;
                    t.put_queue(&rid, &q)?;
                    Ok(outcome(Response::Ok))
                })
            }
            Command::Delete { recipient_id } => {
                let hash = match self.auth_recipient(recipient_id, auth, binding, &command) {
                    Ok(h) => h,
                    Err(code) => return Prepared::Reply(err(code)),
                };
                let rid = *recipient_id;
                self.pending_write(move |t| {
                    let Some(q) = recipient_queue(t, &rid, &hash)? else {
                        return Ok(outcome(err(ErrorCode::Auth)));
                    };
                    t.remove_queue(&rid, &q.sender_id)?;
                    Ok(Outcome {
                        response: Response::Ok,
                        effect: Effect::Deleted(rid),
                    })
                })
            }
            Command::RelayInfo { relay } => {
                if relay.key() == &self.keys.relay_key() {
                    return Prepared::Reply(Response::RelayInfo(self.relay_info()));
                }
                let Some(forwarder) = self.forwarder.get().cloned() else {
                    return Prepared::Reply(err(ErrorCode::ForwardDenied));
                };
                let (me, dest) = (self.clone(), relay.clone());
                Prepared::Pending(Box::pin(
                    async move { outcome(forwarder.info(&me, dest).await) },
                ))
            }
            Command::Forward {
                destination,
                envelope,
            } => {
                let Some(forwarder) = self.forwarder.get().cloned() else {
                    return Prepared::Reply(err(ErrorCode::ForwardDenied));
                };
                let me = self.clone();
                let (dest, envelope) = (destination.clone(), envelope.clone());
                Prepared::Pending(Box::pin(async move {
                    outcome(forwarder.forward(&me, dest, envelope).await)
                }))
            }
            Command::ForwardStatus {
                forward_id,
                wait_secs,
            } => {
                let Some(forwarder) = self.forwarder.get().cloned() else {
                    return Prepared::Reply(err(ErrorCode::NoMessage));
                };
                let me = self.clone();
                let (id, wait) = (*forward_id, *wait_secs);
                Prepared::Pending(Box::pin(async move {
                    outcome(forwarder.status(&me, id, wait).await)
                }))
            }
            Command::Restrict {
                recipient_id,
                forwarders,
            } => {
                if forwarders.len() > petrel_federation::limits::MAX_FORWARDERS {
                    return Prepared::Reply(err(ErrorCode::Malformed));
                }
                let hash = match self.auth_recipient(recipient_id, auth, binding, &command) {
                    Ok(h) => h,
                    Err(code) => return Prepared::Reply(err(code)),
                };
                let rid = *recipient_id;
                let list: Vec<KeyHash> = forwarders.iter().map(KeyHash::of_forwarder).collect();
                self.pending_write(move |t| {
                    let Some(mut q) = recipient_queue(t, &rid, &hash)? else {
                        return Ok(outcome(err(ErrorCode::Auth)));
                    };
                    q.forwarders = list;
                    t.put_queue(&rid, &q)?;
                    Ok(outcome(Response::Ok))
                })
            }
        }
    }

    fn pending_write<F>(self: &std::sync::Arc<Self>, f: F) -> Prepared
    where
        F: FnOnce(&mut Tables<'_>) -> Result<Outcome, StoreError> + Send + 'static,
    {
        let relay = self.clone();
        Prepared::Pending(Box::pin(async move {
            match relay.store.write(f).await {
                Ok(o) => o,
                Err(e) => outcome(internal(e)),
            }
        }))
    }

    fn prepare_send(
        self: &std::sync::Arc<Self>,
        auth: Option<&Auth>,
        binding: &[u8; 32],
        command: &Command,
        now: u64,
        origin: &Origin,
    ) -> Prepared {
        let Command::Send {
            sender_id: sid,
            body,
        } = command
        else {
            return Prepared::Reply(err(ErrorCode::Prohibited));
        };
        let snapshot = match self.store.read(|t| t.queue_by_sender(sid)) {
            Ok(s) => s,
            Err(e) => return Prepared::Reply(internal(e)),
        };
        // Who may send: nobody to a missing or suspended queue; anyone (unsigned) to an
        // unsecured queue; only the sender key's holder to a secured one.
        let expected_sender = match (&snapshot, auth) {
            (Some((_, q)), None) if q.sender_key_hash.is_none() => None,
            (_, None) => return Prepared::Reply(err(ErrorCode::Auth)),
            (snap, Some(_)) => {
                let stored = snap.as_ref().and_then(|(_, q)| q.sender_key_hash.as_ref());
                match self.authenticate(stored, auth, binding, command) {
                    Ok(h) => Some(h),
                    Err(code) => return Prepared::Reply(err(code)),
                }
            }
        };
        let Some((rid, q)) = snapshot else {
            return Prepared::Reply(err(ErrorCode::Auth));
        };
        if q.status == QueueStatus::Suspended {
            return Prepared::Reply(err(ErrorCode::Auth));
        }
        let key = DeliveryKey::from_bytes(q.delivery_key);
        let mut rng = rand::rng();
        let msg_id = MsgId::random(&mut rng);
        let marker_id = MsgId::random(&mut rng);
        let ciphertext = key.seal(
            &rid,
            &msg_id,
            &DeliveryBody {
                received_at: now,
                kind: DeliveryKind::Message,
                body: body.to_vec(),
            },
        );
        let quota = self.config.limits.queue_quota;
        let cutoff = self.ttl_cutoff(now);
        let relay = self.clone();
        let (via, replay) = (origin.via, origin.replay);
        Prepared::Pending(Box::pin(async move {
            let result = relay
                .store
                .write(move |t| {
                    let Some(mut q) = t.queue(&rid)? else {
                        return Ok(err(ErrorCode::Auth));
                    };
                    let same_sender = match (&q.sender_key_hash, &expected_sender) {
                        (None, None) => true,
                        (Some(a), Some(b)) => a.ct_eq(b),
                        _ => false,
                    };
                    if !same_sender || q.status == QueueStatus::Suspended {
                        return Ok(err(ErrorCode::Auth));
                    }
                    // A restricted queue takes SENDs only through the relays its owner listed.
                    if !q.forwarders.is_empty() && !q.forwarders.iter().any(|h| h.ct_eq(&via)) {
                        return Ok(err(ErrorCode::Auth));
                    }
                    // A forwarded SEND seen before was stored then: never store it twice.
                    if let Some((tag, _)) = &replay
                        && t.replay_seen(tag, now)?
                    {
                        return Ok(Response::Ok);
                    }
                    purge_expired(t, &rid, &mut q, cutoff)?;
                    if q.count >= quota {
                        if !q.marker_queued {
                            let marker = DeliveryKey::from_bytes(q.delivery_key).seal(
                                &rid,
                                &marker_id,
                                &DeliveryBody {
                                    received_at: now,
                                    kind: DeliveryKind::QuotaReached,
                                    body: Vec::new(),
                                },
                            );
                            let stored = StoredMessage {
                                msg_id: marker_id,
                                received_at: now,
                                is_marker: true,
                                ciphertext: marker,
                            };
                            t.put_message(&rid, q.next_seq, &stored)?;
                            q.next_seq += 1;
                            q.count += 1;
                            q.marker_queued = true;
                        }
                        t.put_queue(&rid, &q)?;
                        return Ok(err(ErrorCode::Quota));
                    }
                    let stored = StoredMessage {
                        msg_id,
                        received_at: now,
                        is_marker: false,
                        ciphertext,
                    };
                    t.put_message(&rid, q.next_seq, &stored)?;
                    q.next_seq += 1;
                    q.count += 1;
                    t.put_queue(&rid, &q)?;
                    if let Some((tag, expires)) = &replay {
                        t.put_replay(tag, *expires)?;
                    }
                    Ok(Response::Ok)
                })
                .await;
            match result {
                Ok(Response::Ok) => Outcome {
                    response: Response::Ok,
                    effect: Effect::Stored(rid),
                },
                Ok(other) => outcome(other),
                Err(e) => outcome(internal(e)),
            }
        }))
    }

    /// The oldest unexpired message of a queue, ready to send.
    pub fn first_delivery(&self, rid: &QueueId) -> Result<Option<Delivery>, StoreError> {
        let cutoff = self.ttl_cutoff(self.clock().now());
        self.store.read(|t| {
            let Some((_, msg)) = t.first_message(rid)? else {
                return Ok(None);
            };
            if cutoff.is_some_and(|c| msg.received_at <= c) {
                // Expired: it is gone as far as anyone can tell; the sweeper deletes it.
                return Ok(None);
            }
            Ok(Some(Delivery {
                recipient_id: *rid,
                msg_id: msg.msg_id,
                ciphertext: msg.ciphertext,
            }))
        })
    }

    /// Deletes expired messages (up to `limit`); returns how many.
    pub async fn sweep_expired(&self, limit: usize) -> Result<usize, StoreError> {
        let Some(cutoff) = self.ttl_cutoff(self.clock().now()) else {
            return Ok(0);
        };
        let expired = self.store.read(|t| t.expired(cutoff + 1, limit))?;
        if expired.is_empty() {
            return Ok(0);
        }
        let n = expired.len();
        self.store
            .write(move |t| {
                for (rid, seq) in expired {
                    t.remove_message(&rid, seq)?;
                    if let Some(mut q) = t.queue(&rid)? {
                        q.count = q.count.saturating_sub(1);
                        t.put_queue(&rid, &q)?;
                    }
                }
                Ok(())
            })
            .await?;
        Ok(n)
    }
}

/// Per-session counters the service checks.
#[derive(Debug, Default)]
pub struct SessionLimits {
    /// Queues this session created.
    pub queues_created: u32,
    /// Queues this session is subscribed to.
    pub subscriptions: u32,
    /// Queues whose recipient key this session proved (a signed CREATE, SUB or GET), with
    /// that key's hash: an ACK for them may come without a signature (protocol.md §11).
    /// At most [`MAX_PROVEN_QUEUES`] entries; beyond that, ACKs need signatures.
    pub proven: std::collections::HashMap<QueueId, KeyHash>,
}

/// Most queues one session remembers as proven (for unsigned ACKs).
pub const MAX_PROVEN_QUEUES: usize = 10_000;

impl SessionLimits {
    fn prove(&mut self, rid: QueueId, hash: KeyHash) {
        if self.proven.len() < MAX_PROVEN_QUEUES || self.proven.contains_key(&rid) {
            self.proven.insert(rid, hash);
        }
    }
}

/// The queue, if it still exists with the recipient hash that was authenticated.
fn recipient_queue(
    t: &Tables<'_>,
    rid: &QueueId,
    hash: &KeyHash,
) -> Result<Option<QueueRecord>, StoreError> {
    Ok(t.queue(rid)?.filter(|q| q.recipient_key_hash.ct_eq(hash)))
}

/// Removes expired messages at the head of a queue (they are oldest first).
fn purge_expired(
    t: &mut Tables<'_>,
    rid: &QueueId,
    q: &mut QueueRecord,
    cutoff: Option<u64>,
) -> Result<(), StoreError> {
    let Some(cutoff) = cutoff else { return Ok(()) };
    while let Some((seq, msg)) = t.first_message(rid)? {
        if msg.received_at > cutoff {
            break;
        }
        t.remove_message(rid, seq)?;
        q.count = q.count.saturating_sub(1);
        if msg.is_marker {
            q.marker_queued = false;
        }
    }
    Ok(())
}

fn sign_info(keys: &RelayKeys, now: u64) -> SignedRelayInfo {
    SignedRelayInfo::sign(
        &keys.identity,
        RelayInfo {
            identity: keys.relay_key(),
            sealing_key: x25519_dalek::PublicKey::from(&keys.sealing).to_bytes(),
            valid_from: now.saturating_sub(3600),
            valid_until: now.saturating_sub(3600) + INFO_VALIDITY_SECS,
            min_version: *petrel_federation::SUPPORTED_VERSIONS.start(),
            max_version: *petrel_federation::SUPPORTED_VERSIONS.end(),
        },
    )
}
