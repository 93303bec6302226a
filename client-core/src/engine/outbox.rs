//! The outbox: every SEND body is persisted (with the ratchet that made it) before it
//! leaves, and leaves in order, one at a time per contact (`specs/protocol.md` §15.3).
//!
//! ```text
//!   entry ──SEND (own relay, or the contact's when it asks for direct)──► Ok ──► done
//!     │                                                    └─ QUOTA/BUSY… ─► held, retried
//!     └─(contact on another relay) RELAY_INFO once ─► FORWARD sealed ─► Forwarded(Ok) ─► done
//!                                                          └─ Accepted ─► at our relay;
//!                          FORWARD_STATUS long polls until Forwarded(Ok) ─► done
//! ```
//!
//! The next entry of a contact goes when the one before is stored or taken into the
//! forwarding relay's outbox (which keeps order per destination). A SEND whose session
//! ended stays and goes again, with the same bytes, when a session is back; should both
//! copies arrive, the ratchet drops the second. An entry is dropped only when the
//! destination refuses it for good (AUTH, MESSAGE_SIZE), with a notice.

use super::{Connected, Engine, Event, OpId, Pending, Reply, Sent};
use crate::contact::{ContactState, MESSAGES, OUTBOX, Secret, Secret56, Trust, seq_key};
use crate::store::Batch;
use petrel_federation::client::{Command, Response};
use petrel_federation::seal::{EnvelopeKey, ForwardedRequest, ResponseOpener};
use petrel_federation::{Auth, ErrorCode, MsgId, RelayKey};
use rand_core::CryptoRng;
use std::collections::{BTreeMap, BTreeSet};

/// How long a contact's entries wait after a relay asked to come back later (QUOTA,
/// BUSY, RATE_LIMITED, OUTBOX_FULL, UNREACHABLE…), in milliseconds.
pub const HOLD_MS: u64 = 5_000;

/// Who waits for an entry's first outcome.
pub(super) enum Waiter {
    Send {
        op: OpId,
        contact: String,
        seq: u64,
        id: crate::payload::MessageId,
    },
    Connect {
        op: OpId,
        alias: String,
        trust: Trust,
        contact: [u8; 16],
    },
}

/// A SEND or FORWARD in flight.
pub(super) struct InFlight {
    key: Vec<u8>,
    contact: [u8; 16],
    opener: Option<ResponseOpener>,
}

/// The outbox's bookkeeping beside the entries themselves.
#[derive(Default)]
pub(super) struct State {
    pub(super) replies: BTreeMap<Vec<u8>, Waiter>,
    sending: BTreeSet<[u8; 16]>,
    pub(super) polling: BTreeSet<Vec<u8>>,
    pub(super) info_wanted: BTreeSet<RelayKey>,
    sealing: BTreeMap<RelayKey, [u8; 32]>,
    held: BTreeSet<[u8; 16]>,
    pub(super) retry_at: Option<u64>,
    denied: BTreeSet<RelayKey>,
}

fn contact_of(key: &[u8]) -> [u8; 16] {
    let mut id = [0u8; 16];
    if key.len() >= 16 {
        id.copy_from_slice(&key[..16]);
    }
    id
}

impl Engine {
    /// Sends what can go now: per contact, the first entry not yet taken by a relay.
    pub(super) fn pump<R: CryptoRng + ?Sized>(&mut self, rng: &mut R) {
        if self.outbox_state.retry_at.is_none() {
            self.outbox_state.held.clear();
        }
        let ids: BTreeSet<[u8; 16]> = self.outbox.keys().map(|k| contact_of(k)).collect();
        for id in ids {
            if self.outbox_state.sending.contains(&id) || self.outbox_state.held.contains(&id) {
                continue;
            }
            let Some(connected) = self
                .contacts
                .get(&id)
                .map(|c| c.state == ContactState::Connected)
            else {
                continue;
            };
            let keys: Vec<(Vec<u8>, bool, bool)> = self
                .outbox
                .range(id.to_vec()..)
                .take_while(|(k, _)| k.starts_with(&id))
                .map(|(k, e)| (k.clone(), e.accepted.is_some(), e.signed))
                .collect();
            for (key, accepted, signed) in keys {
                if accepted {
                    self.poll_status(&key);
                    continue;
                }
                if signed && !connected {
                    break; // Waits for the contact's reply to the confirmation.
                }
                self.send_entry(&key, rng);
                break;
            }
        }
        self.settle_waiters();
    }

    /// Answers the requests whose entry cannot go now: it is queued.
    fn settle_waiters(&mut self) {
        let idle: Vec<Vec<u8>> = self
            .outbox_state
            .replies
            .keys()
            .filter(|k| {
                let id = contact_of(k);
                let entry_waits = self.outbox.get(*k).is_some_and(|e| e.accepted.is_none());
                entry_waits
                    && !self.outbox_state.sending.contains(&id)
                    && !self.outbox.get(*k).is_some_and(|e| {
                        self.outbox_state.info_wanted.contains(e.target.relay.key())
                    })
            })
            .cloned()
            .collect();
        for key in idle {
            self.reply_waiter(&key, Sent::Queued);
        }
    }

    fn reply_waiter(&mut self, key: &[u8], sent: Sent) {
        match self.outbox_state.replies.remove(key) {
            Some(Waiter::Send {
                op,
                contact,
                seq,
                id,
            }) => self.done(
                op,
                Ok(Reply::Sent {
                    contact,
                    seq,
                    id,
                    sent,
                }),
            ),
            Some(Waiter::Connect {
                op, alias, trust, ..
            }) => {
                if sent == Sent::Queued {
                    self.notice("the confirmation is queued: it goes when the relay answers");
                }
                self.done(
                    op,
                    Ok(Reply::Connected(Connected::Contact {
                        alias,
                        trust,
                        delivered: sent != Sent::Queued,
                    })),
                )
            }
            None => {}
        }
    }

    fn send_entry<R: CryptoRng + ?Sized>(&mut self, key: &[u8], rng: &mut R) {
        let Some(entry) = self.outbox.get(key) else {
            return;
        };
        let own = self.own_relay().clone();
        let target = entry.target.clone();
        let signed = entry.signed;
        let send = Command::Send {
            sender_id: target.sender_id,
            body: entry.body.clone(),
        };
        let signer = Secret(target.sender_key);
        let contact = entry.contact;
        if target.relay.key() == own.key() || target.direct {
            let hop = if target.direct { &target.relay } else { &own };
            let in_flight = InFlight {
                key: key.to_vec(),
                contact,
                opener: None,
            };
            if self.transmit(
                hop.key(),
                signed.then_some(signer),
                send,
                Pending::Send(in_flight),
            ) {
                self.outbox_state.sending.insert(contact);
            }
            return;
        }
        let Some(sealing) = self.outbox_state.sealing.get(target.relay.key()).copied() else {
            self.want_relay_info(&own, &target.relay);
            return;
        };
        let ephemeral = EnvelopeKey::generate(rng);
        let auth = if signed {
            match Auth::sign(&signer.signing_key(), &ephemeral.public(), &send) {
                Ok(auth) => Some(auth),
                Err(_) => return self.notice("a message could not be signed (kept)"),
            }
        } else {
            None
        };
        let request = ForwardedRequest {
            sent_at: self.net_secs(),
            auth,
            command: send,
        };
        let Ok((envelope, opener)) = ephemeral.seal(&sealing, &request) else {
            return self.notice("a message could not be sealed (kept)");
        };
        let forward = Command::Forward {
            destination: target.relay.clone(),
            envelope,
        };
        let in_flight = InFlight {
            key: key.to_vec(),
            contact,
            opener: Some(opener),
        };
        if self.transmit(own.key(), None, forward, Pending::Send(in_flight)) {
            self.outbox_state.sending.insert(contact);
        }
    }

    fn want_relay_info(
        &mut self,
        own: &petrel_federation::RelayAddress,
        destination: &petrel_federation::RelayAddress,
    ) {
        if self.outbox_state.info_wanted.contains(destination.key()) {
            return;
        }
        let command = Command::RelayInfo {
            relay: destination.clone(),
        };
        let pending = Pending::RelayInfo {
            destination: *destination.key(),
        };
        if self.transmit(own.key(), None, command, pending) {
            self.outbox_state.info_wanted.insert(*destination.key());
        }
    }

    /// The destination's sealing key arrived (through our relay), or did not.
    pub(super) fn relay_info(&mut self, destination: RelayKey, response: Response) {
        self.outbox_state.info_wanted.remove(&destination);
        let short: String = destination.to_hex().chars().take(12).collect();
        match response {
            Response::RelayInfo(info) => match info.verify(&destination, self.net_secs()) {
                Ok(info) => {
                    self.outbox_state
                        .sealing
                        .insert(destination, info.sealing_key);
                }
                Err(e) => {
                    self.notice(format!(
                        "the contact's relay {short} sent info that does not verify ({e}): \
                         messages to it wait"
                    ));
                    self.hold_destination(&destination);
                }
            },
            Response::Error(code) => {
                if code == ErrorCode::ForwardDenied && self.outbox_state.denied.insert(destination)
                {
                    let own = relay_label(self.own_relay());
                    self.notice(forward_denied_text(&own, &short));
                } else if code == ErrorCode::KeyMismatch {
                    self.notice(format!(
                        "the server at the contact's relay address {short} proved another key \
                         (KEY_MISMATCH): it is not the relay the contact pinned, so nothing is \
                         sent to it; the messages wait in the outbox (ask the contact for a \
                         fresh invitation if their relay moved)"
                    ));
                } else if code != ErrorCode::ForwardDenied {
                    self.notice(format!(
                        "your relay cannot reach the contact's relay {short} ({code}): the \
                         messages wait in the outbox"
                    ));
                }
                self.hold_destination(&destination);
            }
            _ => self.hold_destination(&destination),
        }
    }

    /// Holds every contact whose entries go to `destination` for [`HOLD_MS`].
    fn hold_destination(&mut self, destination: &RelayKey) {
        let ids: Vec<[u8; 16]> = self
            .outbox
            .values()
            .filter(|e| e.target.relay.key() == destination)
            .map(|e| e.contact)
            .collect();
        for id in ids {
            self.hold(id);
        }
    }

    fn hold(&mut self, contact: [u8; 16]) {
        self.outbox_state.held.insert(contact);
        let at = self.now_ms + HOLD_MS;
        self.outbox_state.retry_at = Some(self.outbox_state.retry_at.map_or(at, |t| t.min(at)));
    }

    pub(super) fn send_answered<R: CryptoRng + ?Sized>(
        &mut self,
        in_flight: InFlight,
        response: Response,
        rng: &mut R,
    ) {
        let _ = rng;
        self.outbox_state.sending.remove(&in_flight.contact);
        let InFlight { key, opener, .. } = in_flight;
        match (response, opener) {
            (Response::Ok, None) => self.entry_done(&key),
            (Response::Forwarded(sealed), Some(opener)) => match opener.open(&sealed) {
                Ok(Response::Ok) => self.entry_done(&key),
                Ok(Response::Error(code)) => self.entry_refused(&key, code),
                _ => {
                    self.notice("the contact's relay answered a forward unreadably: it is retried");
                    self.hold(contact_of(&key));
                }
            },
            (Response::Accepted { forward_id }, Some(opener)) => {
                if let Some(entry) = self.outbox.get_mut(&key) {
                    entry.accepted = Some((forward_id.0, Secret56(opener.to_bytes().to_vec())));
                    let mut batch = Batch::new();
                    if batch.put(OUTBOX, &key, &*entry).is_ok() {
                        self.persist(batch);
                    }
                    self.message_state(&key, Sent::AtRelay);
                }
                self.reply_waiter(&key, Sent::AtRelay);
                self.poll_status(&key);
            }
            (Response::Error(code), _) => self.entry_refused(&key, code),
            _ => {
                self.notice("a relay answered a SEND unexpectedly: it is retried");
                self.hold(contact_of(&key));
            }
        }
    }

    pub(super) fn send_failed(&mut self, in_flight: InFlight, reason: &str) {
        let _ = reason;
        self.outbox_state.sending.remove(&in_flight.contact);
        // The entry stays; the next session sends it again.
    }

    /// The destination refused an entry.
    fn entry_refused(&mut self, key: &[u8], code: ErrorCode) {
        let alias = self
            .contacts
            .get(&contact_of(key))
            .map(|c| c.alias.clone())
            .unwrap_or_default();
        match code {
            ErrorCode::Auth | ErrorCode::MessageSize => {
                self.outbox.remove(key);
                let mut batch = Batch::new();
                batch.delete(OUTBOX, key);
                self.persist(batch);
                match self.outbox_state.replies.remove(key) {
                    Some(Waiter::Connect { op, contact, .. }) => {
                        // The invitation queue is secured (answered before) or gone.
                        self.forget_contact(&contact);
                        let error = if code == ErrorCode::Auth {
                            super::Error::InvitationUsed
                        } else {
                            super::Error::RelayRefused {
                                relay: "the contact's relay".into(),
                                command: "SEND",
                                code,
                            }
                        };
                        self.done(op, Err(error));
                    }
                    Some(Waiter::Send { op, .. }) => {
                        self.done(
                            op,
                            Err(super::Error::RelayRefused {
                                relay: "the contact's relay".into(),
                                command: "SEND",
                                code,
                            }),
                        );
                    }
                    None => self.notice(format!(
                        "a message to {alias} was refused by its relay ({code}) and dropped"
                    )),
                }
            }
            _ => {
                let destination = self.outbox.get(key).map(|e| *e.target.relay.key());
                let short: String = destination
                    .map(|d| d.to_hex().chars().take(12).collect())
                    .unwrap_or_default();
                let retry = HOLD_MS / 1000;
                let why = match code {
                    ErrorCode::ForwardDenied => {
                        let first = destination.is_some_and(|d| self.outbox_state.denied.insert(d));
                        first.then(|| forward_denied_text(&relay_label(self.own_relay()), &short))
                    }
                    ErrorCode::Quota => Some(format!(
                        "{alias}'s queue is full (QUOTA): they have not read their messages for \
                         a while; the message waits and is retried every {retry} s"
                    )),
                    ErrorCode::OutboxFull => Some(format!(
                        "your relay's forwarding outbox is full (OUTBOX_FULL); the message to \
                         {alias} waits and is retried every {retry} s"
                    )),
                    ErrorCode::KeyMismatch => Some(format!(
                        "the server at {alias}'s relay address {short} proved another key \
                         (KEY_MISMATCH): it is not the relay {alias} pinned; the message waits \
                         (ask {alias} for a fresh invitation if their relay moved)"
                    )),
                    other => Some(format!(
                        "the relay asked to send to {alias} later ({other}): retried in {retry} s"
                    )),
                };
                if let Some(text) = why {
                    self.notice(text);
                }
                self.hold(contact_of(key));
                self.reply_waiter(key, Sent::Queued);
            }
        }
    }

    /// An entry is stored at the contact's relay.
    fn entry_done(&mut self, key: &[u8]) {
        let Some(entry) = self.outbox.remove(key) else {
            return;
        };
        self.outbox_state.polling.remove(key);
        let mut batch = Batch::new();
        batch.delete(OUTBOX, key);
        if let Some(seq) = entry.message_seq {
            let mkey = seq_key(&entry.contact, seq);
            if let Some(m) = self.unsettled.get_mut(&mkey) {
                m.sent = true;
                let _ = batch.put(MESSAGES, &mkey, &*m);
            }
        }
        self.persist(batch);
        self.message_state_of(&entry.contact, entry.message_seq, Sent::Stored);
        self.reply_waiter(key, Sent::Stored);
    }

    fn message_state(&mut self, key: &[u8], state: Sent) {
        let Some(entry) = self.outbox.get(key) else {
            return;
        };
        let (contact, seq) = (entry.contact, entry.message_seq);
        self.message_state_of(&contact, seq, state);
    }

    fn message_state_of(&mut self, contact: &[u8; 16], seq: Option<u64>, state: Sent) {
        let (Some(seq), Some(alias)) = (seq, self.contacts.get(contact).map(|c| c.alias.clone()))
        else {
            return;
        };
        self.event(Event::MessageState {
            contact: alias,
            seq,
            state,
        });
    }

    /// Asks our relay how an accepted forward ended (a long poll), once at a time.
    fn poll_status(&mut self, key: &[u8]) {
        if self.outbox_state.polling.contains(key) {
            return;
        }
        let Some((forward_id, _)) = self.outbox.get(key).and_then(|e| e.accepted.clone()) else {
            return;
        };
        let own = *self.own_relay().key();
        let command = Command::ForwardStatus {
            forward_id: MsgId(forward_id),
            wait_secs: super::STATUS_WAIT_SECS,
        };
        if self.transmit(
            &own,
            None,
            command,
            Pending::ForwardStatus { key: key.to_vec() },
        ) {
            self.outbox_state.polling.insert(key.to_vec());
        }
    }

    pub(super) fn status_answered<R: CryptoRng + ?Sized>(
        &mut self,
        key: Vec<u8>,
        response: Response,
        rng: &mut R,
    ) {
        let _ = rng;
        self.outbox_state.polling.remove(&key);
        let opener = self.outbox.get(&key).and_then(|e| {
            let bytes: [u8; 56] = e.accepted.as_ref()?.1.0.as_slice().try_into().ok()?;
            Some(ResponseOpener::from_bytes(&bytes))
        });
        let Some(opener) = opener else {
            return;
        };
        match response {
            Response::Pending => {} // The next pump asks again.
            Response::Forwarded(sealed) => match opener.open(&sealed) {
                Ok(Response::Ok) => self.entry_done(&key),
                Ok(Response::Error(code @ (ErrorCode::Auth | ErrorCode::MessageSize))) => {
                    self.entry_refused(&key, code)
                }
                // The forward ended without the message stored (EXPIRED after 48 h, a
                // full queue, ...): seal it again.
                _ => self.reseal(&key),
            },
            // An ID the relay forgot, or another end: seal it again.
            _ => self.reseal(&key),
        }
    }

    fn reseal(&mut self, key: &[u8]) {
        if let Some(entry) = self.outbox.get_mut(key) {
            entry.accepted = None;
            let mut batch = Batch::new();
            if batch.put(OUTBOX, key, &*entry).is_ok() {
                self.persist(batch);
            }
        }
    }
}

/// A relay as people can tell it apart: the start of its key and its first endpoint.
fn relay_label(address: &petrel_federation::RelayAddress) -> String {
    let key: String = address.key().to_hex().chars().take(12).collect();
    match address.endpoints().first() {
        Some(endpoint) => format!("{key}…@{endpoint}"),
        None => key,
    }
}

/// What FORWARD_DENIED means and what to do about it.
fn forward_denied_text(own: &str, destination: &str) -> String {
    format!(
        "your relay {own} refused to forward to the contact's relay {destination} \
         (FORWARD_DENIED). Either your relay does not forward to addresses on loopback or \
         private networks (relays on one machine or a LAN: start them with `petrel-relay \
         --forward-to-private`), or one of the two relays runs `--forwarding peers` without \
         the other on its list, or `--forwarding off`. The messages wait in the outbox and go \
         once the relays allow it."
    )
}
