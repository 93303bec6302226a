//! An in-memory relay model for the engine's tests: the queue semantics of
//! `specs/protocol.md` §8 and §10 (one subscriber, one unacknowledged delivery at a time,
//! durable messages), command authentication by key hash, delivery re-encryption, and
//! two-hop forwarding with sealed envelopes (answered at once, or Accepted and resolved
//! later in arrival order per destination, FORWARD_STATUS parked until then). Restarting
//! it ends every session and keeps every queue, message and accepted forward.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use petrel_client::contact::Secret;
use petrel_federation::client::{Command, Delivery, QueueCreated, RelayFrame, Response};
use petrel_federation::delivery::{DeliveryBody, DeliveryKey, DeliveryKind};
use petrel_federation::peer::{RelayInfo, SignedRelayInfo};
use petrel_federation::seal::{SealedEnvelope, SealedResponse, open_request};
use petrel_federation::{ErrorCode, KeyHash, MsgId, QueueId, RelayAddress, RelayKey};
use rand::RngExt as _;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};

pub struct Queue {
    recipient_hash: KeyHash,
    sender_hash: Option<KeyHash>,
    delivery: DeliveryKey,
    messages: VecDeque<(MsgId, Vec<u8>)>,
    /// (session, whether the current message was pushed on it)
    subscriber: Option<(u64, bool)>,
}

pub struct Forward {
    /// Arrival order: the outbox delivers per destination in this order.
    seq: u64,
    destination: RelayKey,
    envelope: SealedEnvelope,
    result: Option<SealedResponse>,
}

pub struct ModelRelay {
    pub identity: ed25519_dalek::SigningKey,
    pub key: RelayKey,
    pub address: RelayAddress,
    sealing: x25519_dalek::StaticSecret,
    pub up: bool,
    queues: BTreeMap<QueueId, Queue>,
    senders: BTreeMap<QueueId, QueueId>,
    pub forwards: BTreeMap<[u8; 16], Forward>,
    next_forward: u64,
    pub stored: u64,
}

/// What a relay says to the sessions of its clients.
pub enum Out {
    /// On the session that sent the command.
    Answer(Response),
    /// A push to a session (possibly another one).
    Push(u64, RelayFrame),
}

fn random16(rng: &mut ChaCha8Rng) -> [u8; 16] {
    let mut b = [0u8; 16];
    rng.fill(&mut b);
    b
}

fn signer_hash(signer: &Option<Secret>) -> Option<[u8; 32]> {
    signer
        .as_ref()
        .map(|s| KeyHash::of(&s.signing_key().verifying_key().to_bytes()).0)
}

impl ModelRelay {
    pub fn new(rng: &mut ChaCha8Rng, port: u16) -> Self {
        let mut seed = [0u8; 32];
        rng.fill(&mut seed);
        let identity = ed25519_dalek::SigningKey::from_bytes(&seed);
        let key = RelayKey(identity.verifying_key().to_bytes());
        let text = format!(
            "petrel://{}@127.0.0.1:{port}",
            petrel_federation::address::key_text(&key)
        );
        rng.fill(&mut seed);
        ModelRelay {
            identity,
            key,
            address: text.parse().unwrap(),
            sealing: x25519_dalek::StaticSecret::from(seed),
            up: true,
            queues: BTreeMap::new(),
            senders: BTreeMap::new(),
            forwards: BTreeMap::new(),
            next_forward: 0,
            stored: 0,
        }
    }

    pub fn info(&self, now_secs: u64) -> SignedRelayInfo {
        SignedRelayInfo::sign(
            &self.identity,
            RelayInfo {
                identity: self.key,
                sealing_key: x25519_dalek::PublicKey::from(&self.sealing).to_bytes(),
                valid_from: now_secs.saturating_sub(60),
                valid_until: now_secs + 86_400,
                min_version: 1,
                max_version: 1,
            },
        )
    }

    /// Every session ends; the durable state stays.
    pub fn restart(&mut self) {
        for q in self.queues.values_mut() {
            q.subscriber = None;
        }
    }

    pub fn session_ended(&mut self, session: u64) {
        for q in self.queues.values_mut() {
            if q.subscriber.is_some_and(|(s, _)| s == session) {
                q.subscriber = None;
            }
        }
    }

    /// The current message of `rid` pushed to its subscriber, if it has not been yet.
    fn push_current(&mut self, rid: &QueueId, out: &mut Vec<Out>) {
        let Some(q) = self.queues.get_mut(rid) else {
            return;
        };
        let Some((session, pushed)) = q.subscriber else {
            return;
        };
        if pushed {
            return;
        }
        let Some((msg_id, body)) = q.messages.front() else {
            return;
        };
        let ciphertext = q.delivery.seal(
            rid,
            msg_id,
            &DeliveryBody {
                received_at: 0,
                kind: DeliveryKind::Message,
                body: body.clone(),
            },
        );
        q.subscriber = Some((session, true));
        out.push(Out::Push(
            session,
            RelayFrame::Deliver(Delivery {
                recipient_id: *rid,
                msg_id: *msg_id,
                ciphertext,
            }),
        ));
    }

    /// Pushes the current message of every queue `session` holds again (a duplicate, as
    /// after a re-subscription).
    pub fn repush(&mut self, session: u64, out: &mut Vec<Out>) {
        let rids: Vec<QueueId> = self
            .queues
            .iter()
            .filter(|(_, q)| q.subscriber.is_some_and(|(s, _)| s == session))
            .map(|(r, _)| *r)
            .collect();
        for rid in rids {
            if let Some(q) = self.queues.get_mut(&rid) {
                q.subscriber = Some((session, false));
            }
            self.push_current(&rid, out);
        }
    }

    fn recipient_ok(&self, rid: &QueueId, signer: &Option<Secret>) -> bool {
        match (self.queues.get(rid), signer_hash(signer)) {
            (Some(q), Some(h)) => q.recipient_hash.0 == h,
            _ => false,
        }
    }

    /// A SEND, from a client directly (`signer` binds to the session) or opened from an
    /// envelope (`auth_key` is the key the envelope's authenticator carried, already
    /// verified).
    fn send(
        &mut self,
        sender_id: QueueId,
        key: Option<[u8; 32]>,
        body: Vec<u8>,
        rng: &mut ChaCha8Rng,
        out: &mut Vec<Out>,
    ) -> Response {
        let Some(rid) = self.senders.get(&sender_id).copied() else {
            return Response::Error(ErrorCode::Auth);
        };
        let Some(q) = self.queues.get_mut(&rid) else {
            return Response::Error(ErrorCode::Auth);
        };
        let ok = match (&q.sender_hash, key) {
            (Some(h), Some(k)) => h.0 == KeyHash::of(&k).0,
            (None, None) => true,
            _ => false,
        };
        if !ok {
            return Response::Error(ErrorCode::Auth);
        }
        q.messages.push_back((MsgId(random16(rng)), body));
        self.stored += 1;
        if self.queues[&rid].messages.len() == 1 {
            self.push_current(&rid, out);
        }
        Response::Ok
    }

    /// Runs one command from `session`. Forwarding needs the other relays: `peers`.
    pub fn command(
        &mut self,
        session: u64,
        signer: Option<Secret>,
        command: Command,
        now_secs: u64,
        peers: &mut BTreeMap<RelayKey, ModelRelay>,
        rng: &mut ChaCha8Rng,
    ) -> Vec<Out> {
        let mut out = Vec::new();
        let response = match command {
            Command::Create {
                recipient_key,
                recipient_dh,
                subscribe,
                ..
            } => {
                if signer_hash(&signer) != Some(KeyHash::of(&recipient_key).0) {
                    Response::Error(ErrorCode::Auth)
                } else {
                    let mut seed = [0u8; 32];
                    rng.fill(&mut seed);
                    let secret = x25519_dalek::StaticSecret::from(seed);
                    let relay_dh = x25519_dalek::PublicKey::from(&secret).to_bytes();
                    let delivery =
                        DeliveryKey::derive(&secret, &recipient_dh, &relay_dh, &recipient_dh)
                            .unwrap();
                    let rid = QueueId(random16(rng));
                    let sid = QueueId(random16(rng));
                    self.queues.insert(
                        rid,
                        Queue {
                            recipient_hash: KeyHash::of(&recipient_key),
                            sender_hash: None,
                            delivery,
                            messages: VecDeque::new(),
                            subscriber: subscribe.then_some((session, false)),
                        },
                    );
                    self.senders.insert(sid, rid);
                    Response::Created(QueueCreated {
                        recipient_id: rid,
                        sender_id: sid,
                        relay_dh,
                    })
                }
            }
            Command::Secure {
                recipient_id,
                sender_key_hash,
            } => {
                if !self.recipient_ok(&recipient_id, &signer) {
                    Response::Error(ErrorCode::Auth)
                } else {
                    let q = self.queues.get_mut(&recipient_id).unwrap();
                    if q.sender_hash.is_some() {
                        Response::Error(ErrorCode::Duplicate)
                    } else {
                        q.sender_hash = Some(sender_key_hash);
                        Response::Ok
                    }
                }
            }
            Command::Restrict { recipient_id, .. } => {
                if self.recipient_ok(&recipient_id, &signer) {
                    Response::Ok
                } else {
                    Response::Error(ErrorCode::Auth)
                }
            }
            Command::Send { sender_id, body } => {
                let key = signer
                    .as_ref()
                    .map(|s| s.signing_key().verifying_key().to_bytes());
                self.send(sender_id, key, body, rng, &mut out)
            }
            Command::Subscribe { recipient_id } => {
                if !self.recipient_ok(&recipient_id, &signer) {
                    Response::Error(ErrorCode::Auth)
                } else {
                    let q = self.queues.get_mut(&recipient_id).unwrap();
                    if let Some((old, _)) = q.subscriber
                        && old != session
                    {
                        out.push(Out::Push(
                            old,
                            RelayFrame::SubscriptionEnded { recipient_id },
                        ));
                    }
                    q.subscriber = Some((session, false));
                    out.push(Out::Answer(Response::Ok));
                    self.push_current(&recipient_id, &mut out);
                    return out;
                }
            }
            Command::Ack {
                recipient_id,
                msg_id,
            } => {
                let subscribed = self
                    .queues
                    .get(&recipient_id)
                    .is_some_and(|q| q.subscriber.is_some_and(|(s, _)| s == session));
                if !(self.recipient_ok(&recipient_id, &signer) || (signer.is_none() && subscribed))
                {
                    Response::Error(ErrorCode::Auth)
                } else {
                    let q = self.queues.get_mut(&recipient_id).unwrap();
                    if q.messages.front().map(|(id, _)| *id) == Some(msg_id) {
                        q.messages.pop_front();
                        if let Some((s, _)) = q.subscriber {
                            q.subscriber = Some((s, false));
                        }
                        out.push(Out::Answer(Response::Ok));
                        self.push_current(&recipient_id, &mut out);
                        return out;
                    }
                    Response::Error(ErrorCode::NoMessage)
                }
            }
            Command::Delete { recipient_id } => {
                if !self.recipient_ok(&recipient_id, &signer) {
                    Response::Error(ErrorCode::Auth)
                } else {
                    self.queues.remove(&recipient_id);
                    self.senders.retain(|_, r| *r != recipient_id);
                    Response::Ok
                }
            }
            Command::Ping => Response::Pong,
            Command::RelayInfo { relay } => match peers.get(relay.key()) {
                Some(peer) if peer.up => Response::RelayInfo(peer.info(now_secs)),
                _ => Response::Error(ErrorCode::Unreachable),
            },
            Command::Forward {
                destination,
                envelope,
            } => {
                // As the relay does (`relay/src/forward.rs`): while older forwards to this
                // destination wait in the outbox, a new one queues behind them.
                let backlog = self
                    .forwards
                    .values()
                    .any(|f| f.result.is_none() && f.destination == *destination.key());
                let at_once = !backlog && rng.random_bool(0.6);
                match peers.get_mut(destination.key()) {
                    Some(peer) if peer.up && at_once => {
                        // The destination's pushes go to its own sessions: the caller
                        // routes them (`Out::Push` with the destination's session IDs).
                        let sealed = peer.open_forward(&envelope, rng, &mut out);
                        Response::Forwarded(sealed)
                    }
                    Some(_) => {
                        let id = random16(rng);
                        self.next_forward += 1;
                        self.forwards.insert(
                            id,
                            Forward {
                                seq: self.next_forward,
                                destination: *destination.key(),
                                envelope,
                                result: None,
                            },
                        );
                        Response::Accepted {
                            forward_id: MsgId(id),
                        }
                    }
                    None => Response::Error(ErrorCode::Unreachable),
                }
            }
            Command::ForwardStatus { forward_id, .. } => match self.forwards.get(&forward_id.0) {
                None => Response::Error(ErrorCode::NoMessage),
                Some(f) => match &f.result {
                    Some(sealed) => {
                        let sealed = sealed.clone();
                        self.forwards.remove(&forward_id.0);
                        Response::Forwarded(sealed)
                    }
                    None => Response::Pending,
                },
            },
            Command::Get { .. } | Command::Suspend { .. } => Response::Error(ErrorCode::Prohibited),
        };
        out.push(Out::Answer(response));
        out
    }

    /// The destination's side of a forward.
    pub fn open_forward(
        &mut self,
        envelope: &SealedEnvelope,
        rng: &mut ChaCha8Rng,
        out: &mut Vec<Out>,
    ) -> SealedResponse {
        let Ok((request, sealer)) = open_request(&self.sealing, envelope) else {
            return SealedResponse {
                ciphertext: vec![0; 32],
            };
        };
        let response = match request.command.clone() {
            Command::Send { sender_id, body } => {
                let key = match &request.auth {
                    Some(auth) if auth.verify(&envelope.ephemeral, &request.command).is_ok() => {
                        Some(auth.key)
                    }
                    Some(_) => return sealer.seal(&Response::Error(ErrorCode::Auth)),
                    None => None,
                };
                self.send(sender_id, key, body, rng, out)
            }
            _ => Response::Error(ErrorCode::Prohibited),
        };
        sealer.seal(&response)
    }

    /// Accepted forwards whose destination is up are delivered, per destination in the order
    /// they arrived (one step of the forwarding outbox).
    /// Returns how many resolved, and the pushes their SENDs made at the destinations.
    pub fn forward_pending(
        &mut self,
        peers: &mut BTreeMap<RelayKey, ModelRelay>,
        rng: &mut ChaCha8Rng,
    ) -> (usize, Vec<(RelayKey, Out)>) {
        let mut pushes = Vec::new();
        let mut resolved = 0;
        // In arrival order (the IDs are random), as the relay's outbox delivers them.
        let mut waiting: Vec<&mut Forward> = self.forwards.values_mut().collect();
        waiting.sort_by_key(|f| f.seq);
        for f in waiting {
            if f.result.is_some() {
                continue;
            }
            if let Some(peer) = peers.get_mut(&f.destination)
                && peer.up
            {
                let mut out = Vec::new();
                f.result = Some(peer.open_forward(&f.envelope, rng, &mut out));
                resolved += 1;
                pushes.extend(out.into_iter().map(|o| (f.destination, o)));
            }
        }
        (resolved, pushes)
    }

    /// Whether a forward waits for a destination that is up: work for `forward_pending`.
    /// Forwards whose destination is down, and resolved ones waiting for their
    /// FORWARD_STATUS, are not (counting them made a step always possible, and a network
    /// with a relay down never settled).
    pub fn can_forward(&self, up: impl Fn(&RelayKey) -> bool) -> bool {
        self.forwards
            .values()
            .any(|f| f.result.is_none() && f.destination != self.key && up(&f.destination))
    }

    pub fn parked_done(&self, forward_id: &[u8; 16]) -> bool {
        self.forwards
            .get(forward_id)
            .is_none_or(|f| f.result.is_some())
    }

    pub fn queued_messages(&self) -> usize {
        self.queues.values().map(|q| q.messages.len()).sum()
    }

    /// Its queues that hold messages (recipient ID: count, subscriber), and its forwards.
    pub fn describe(&self) -> String {
        let hex = |b: &[u8]| -> String { b.iter().take(3).map(|x| format!("{x:02x}")).collect() };
        let queues: Vec<String> = self
            .queues
            .iter()
            .filter(|(_, q)| !q.messages.is_empty())
            .map(|(r, q)| {
                format!(
                    "{}: {} (sub {:?})",
                    hex(&r.0),
                    q.messages.len(),
                    q.subscriber
                )
            })
            .collect();
        let pending = self
            .forwards
            .values()
            .filter(|f| f.result.is_none())
            .count();
        format!(
            "queues [{}], forwards {pending} pending / {} resolved",
            queues.join(", "),
            self.forwards.len() - pending
        )
    }
}
