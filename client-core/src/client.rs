//! The client engine: invitations, pairing, messages, receipts, rotation and re-keying
//! for one profile (`specs/protocol.md` §15).
//!
//! A [`Client`] is one profile in one run: it opens its own relay sessions (fresh
//! transport keys, nothing shared with another profile), and every state change is one
//! store transaction committed **before** the relay is told (ACK, DELETE), so a crash at
//! any point loses nothing and shows nothing twice:
//!
//! * a received message is decrypted, stored with the advanced ratchet, then ACKed; a
//!   redelivery after a crash is a ratchet duplicate and is ACKed silently;
//! * an outgoing message is encrypted, stored with the advanced ratchet in the outbox,
//!   then sent; the outbox entry is deleted once a relay has stored it (or taken it into
//!   its forwarding outbox), and a retry resends the same bytes.

use crate::contact::{
    CONTACTS, Contact, ContactState, Direction, INVITATIONS, MESSAGES, Message, OUTBOX,
    OutboxEntry, OwnQueue, PendingInvitation, Secret, Secret56, Trust, seq_key,
};
use crate::net::{ForwardState, NetError, Relays, SendOutcome};
use crate::payload::{MessageId, Payload, PayloadError, ProfileCard, QueueRef};
use crate::profile::Profile;
use crate::ratchet::{QrKey, RatchetError, RekeyRole, Session};
use crate::store::{Batch, Store, StoreError};
use petrel_federation::client::{Delivery, RelayFrame};
use petrel_federation::delivery::DeliveryKind;
use petrel_federation::seal::ResponseOpener;
use petrel_federation::{ErrorCode, MsgId, RelayAddress};
use petrel_qr::{Invitation, Provenance, Purpose};
use rand_core::CryptoRng;
use std::collections::HashMap;
use std::time::Duration;

/// Default period of automatic queue rotation: 7 days.
pub const DEFAULT_ROTATION_SECS: u64 = 7 * 24 * 3600;

/// An invitation nobody answered is deleted after this long: 14 days, the relays'
/// default message lifetime.
pub const INVITATION_TTL_SECS: u64 = 14 * 24 * 3600;

/// Longest a `send` or `connect` waits for a forward its relay queued to reach the
/// contact's relay, in seconds.
pub const FORWARD_WAIT_SECS: u8 = 10;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A relay failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The ratchet refused.
    #[error(transparent)]
    Ratchet(#[from] RatchetError),
    /// A payload was refused.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// No such contact in this profile.
    #[error("no contact named `{0}` in this profile; `petrel contacts` lists them")]
    NoContact(String),
    /// The invitation was answered before (by this or another client).
    #[error("this invitation was already used: ask for a new one")]
    InvitationUsed,
    /// The code is not an invitation.
    #[error("this code is a relay address, not an invitation: pin it with `petrel relay pin`")]
    NotAnInvitation,
    /// A re-key code that names no contact of this profile.
    #[error("this re-key code belongs to no contact of this profile")]
    UnknownRekey,
    /// The contact has not answered the invitation yet.
    #[error("`{0}` has not answered yet: run `petrel sync` until it is connected")]
    NotConnected(String),
    /// A rotation or re-key is already under way.
    #[error("{0}")]
    Busy(String),
    /// The message is too long.
    #[error("the message is {len} bytes; the limit is {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Something a run did that the user should see.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A text message arrived.
    Message {
        /// The contact's alias.
        contact: String,
        /// The text.
        text: String,
    },
    /// A handshake completed.
    Connected {
        /// The contact's alias.
        contact: String,
    },
    /// A receipt arrived for messages this client sent.
    Delivered {
        /// The contact's alias.
        contact: String,
        /// How many messages it confirmed.
        count: usize,
    },
    /// Anything else worth a line on stderr.
    Notice(String),
}

/// The clock: the application clock (rotation, timestamps, skipped-key expiry) and the
/// network clock (envelope timestamps, judged by relays). They differ only in tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    /// Seconds added to the application clock (tests of periodic rotation).
    pub skip_secs: u64,
}

impl Clock {
    /// Unix seconds, network clock.
    pub fn network_now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Unix seconds, application clock.
    pub fn now(&self) -> u64 {
        self.network_now().saturating_add(self.skip_secs)
    }
}

/// What a finished `connect` did.
#[derive(Debug)]
pub enum Connected {
    /// A new contact, waiting for its reply (`sync`).
    Contact {
        /// Its alias.
        alias: String,
        /// How the invitation arrived.
        trust: Trust,
        /// The confirmation is stored at the contact's relay (else queued).
        delivered: bool,
    },
    /// A re-key of an existing contact.
    Rekeyed {
        /// Its alias.
        alias: String,
    },
}

/// How a flush of the outbox ended.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flushed {
    /// Entries the contact's relay stored.
    pub sent: usize,
    /// Entries the profile's own relay holds in its forwarding outbox (it keeps trying;
    /// the next sync asks how they ended).
    pub at_relay: usize,
    /// Entries still in the local outbox (a relay unreachable).
    pub waiting: usize,
}

/// Where a message just sent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Stored at the contact's relay.
    Stored,
    /// Stored at the profile's own relay, which forwards it when the contact's relay
    /// answers.
    AtRelay,
    /// In the local outbox: the next `sync` sends it.
    Queued,
}

/// Who owns a queue this client reads.
#[derive(Clone, Debug)]
enum Owner {
    Invitation,
    Contact([u8; 16]),
}

/// One profile, one run.
pub struct Client<'a> {
    store: &'a Store,
    profile: Profile,
    clock: Clock,
    relays: Relays,
    events: Vec<Event>,
    receipts: HashMap<[u8; 16], Vec<MessageId>>,
}

impl std::fmt::Debug for Client<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("profile", &self.profile.name)
            .finish_non_exhaustive()
    }
}

fn random16<R: CryptoRng + ?Sized>(rng: &mut R) -> [u8; 16] {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    b
}

fn random_secret<R: CryptoRng + ?Sized>(rng: &mut R) -> Secret {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    Secret(b)
}

/// A printable alias from a display name: control characters dropped, trimmed, at most
/// 64 bytes, never empty.
fn clean_alias(name: &str) -> String {
    let mut out: String = name.chars().filter(|c| !c.is_control()).collect();
    out = out.trim().to_string();
    while out.len() > 64 {
        out.pop();
    }
    if out.is_empty() {
        "contact".into()
    } else {
        out
    }
}

impl<'a> Client<'a> {
    /// The client of `profile`.
    pub fn new(store: &'a Store, profile: Profile, clock: Clock) -> Self {
        Self {
            store,
            profile,
            clock,
            relays: Relays::new(),
            events: Vec::new(),
            receipts: HashMap::new(),
        }
    }

    /// Takes the events of the run so far.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Closes the relay sessions.
    pub async fn close(self) {
        self.relays.close().await;
    }

    fn card(&self) -> ProfileCard {
        ProfileCard {
            display_name: self.profile.display_name.clone(),
            bio: self.profile.bio.clone(),
        }
    }

    fn own_relay(&self) -> &RelayAddress {
        // A profile always has at least one pinned relay (profile.rs enforces it).
        &self.profile.relays[0]
    }

    fn notice(&mut self, text: impl Into<String>) {
        self.events.push(Event::Notice(text.into()));
    }

    /// The profile's contacts.
    pub fn contacts(&self) -> Result<Vec<Contact>, ClientError> {
        let mut all: Vec<Contact> = self
            .store
            .list::<Contact>(CONTACTS)?
            .into_iter()
            .map(|(_, c)| c)
            .filter(|c| c.profile == self.profile.name)
            .collect();
        all.sort_by(|a, b| a.alias.cmp(&b.alias));
        Ok(all)
    }

    /// The contact called `alias`.
    pub fn contact(&self, alias: &str) -> Result<Contact, ClientError> {
        self.contacts()?
            .into_iter()
            .find(|c| c.alias == alias)
            .ok_or_else(|| ClientError::NoContact(alias.to_string()))
    }

    /// The conversation with a contact, oldest first.
    pub fn messages(&self, contact: &Contact) -> Result<Vec<Message>, ClientError> {
        let mut all: Vec<(Vec<u8>, Message)> = self
            .store
            .list::<Message>(MESSAGES)?
            .into_iter()
            .filter(|(k, _)| k.starts_with(&contact.id))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all.into_iter().map(|(_, m)| m).collect())
    }

    fn unique_alias(&self, wanted: &str) -> Result<String, ClientError> {
        let taken: Vec<String> = self.contacts()?.into_iter().map(|c| c.alias).collect();
        let base = clean_alias(wanted);
        if !taken.contains(&base) {
            return Ok(base);
        }
        let mut n = 2;
        loop {
            let candidate = format!("{base}-{n}");
            if !taken.contains(&candidate) {
                return Ok(candidate);
            }
            n += 1;
        }
    }

    /// The next pinned relay after `current` (for rotation), or the only one.
    fn next_relay(&self, current: &RelayAddress) -> RelayAddress {
        let relays = &self.profile.relays;
        let at = relays.iter().position(|r| r.key() == current.key());
        match at {
            Some(i) => relays[(i + 1) % relays.len()].clone(),
            None => relays[0].clone(),
        }
    }

    /// A new queue on `relay` with a sender key minted for the contact, SECUREd (and
    /// RESTRICTed when the profile asks for it).
    async fn new_contact_queue<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        relay: &RelayAddress,
    ) -> Result<(OwnQueue, QueueRef), ClientError> {
        let queue = self
            .relays
            .create_queue(rng, relay, self.clock.now())
            .await?;
        let sender = random_secret(rng);
        self.relays
            .secure(&queue, &sender.signing_key().verifying_key().to_bytes())
            .await?;
        let direct = self.profile.require_pinned_forwarding;
        if direct {
            self.relays.restrict(&queue, &self.profile.relays).await?;
        }
        let reference = QueueRef {
            relay: relay.clone(),
            sender_id: queue.sender_id,
            sender_key: sender.0,
            direct,
        };
        Ok((queue, reference))
    }

    /// Makes a one-time invitation: a fresh queue on the profile's first relay and a fresh
    /// invitation key. Show the returned invitation as a QR code or link.
    pub async fn invite<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        alias: Option<String>,
    ) -> Result<Invitation, ClientError> {
        let relay = self.own_relay().clone();
        let queue = self
            .relays
            .create_queue(rng, &relay, self.clock.now())
            .await?;
        let key = QrKey::generate(rng);
        let invitation = Invitation {
            purpose: Purpose::Connect,
            relay,
            sender_id: queue.sender_id,
            dh_key: key.public(),
        };
        let pending = PendingInvitation {
            profile: self.profile.name.clone(),
            key,
            alias,
            created_at: self.clock.now(),
            queue,
        };
        self.store.put(
            rng,
            INVITATIONS,
            pending.queue.recipient_id.as_bytes(),
            &pending,
        )?;
        Ok(invitation)
    }

    /// Makes a re-key code for a contact: show it to the contact, who scans it with
    /// `connect`; the new key is mixed into the connection when the contact's answer
    /// arrives.
    pub fn invite_rekey<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        alias: &str,
    ) -> Result<Invitation, ClientError> {
        let mut contact = self.contact(alias)?;
        if contact.state != ContactState::Connected {
            return Err(ClientError::NotConnected(contact.alias));
        }
        if contact.session.rekey_pending() {
            return Err(ClientError::Busy(format!(
                "a re-key with `{}` is still under way: exchange a message first",
                contact.alias
            )));
        }
        let queue = contact
            .inbound
            .last()
            .ok_or_else(|| ClientError::NotConnected(contact.alias.clone()))?;
        let key = QrKey::generate(rng);
        let invitation = Invitation {
            purpose: Purpose::Rekey,
            relay: queue.relay.clone(),
            sender_id: queue.sender_id,
            dh_key: key.public(),
        };
        contact.pending_rekey = Some(key);
        self.store.put(rng, CONTACTS, &contact.id, &contact)?;
        Ok(invitation)
    }

    /// Answers an invitation (or a contact's re-key code): scanned codes are recorded as
    /// such, pasted links as lower trust.
    pub async fn connect<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        invitation: &Invitation,
        provenance: Provenance,
        alias: Option<String>,
    ) -> Result<Connected, ClientError> {
        if invitation.purpose == Purpose::Rekey {
            return self.answer_rekey(rng, invitation).await;
        }
        let contacts = self.contacts()?;
        if contacts.iter().any(|c| {
            c.outbound.sender_id == invitation.sender_id
                || c.inbound
                    .iter()
                    .any(|q| q.sender_id == invitation.sender_id)
        }) {
            return Err(ClientError::InvitationUsed);
        }
        let own = self.own_relay().clone();
        let (reply_queue, reply) = self.new_contact_queue(rng, &own).await?;
        let invitation_sender = random_secret(rng);
        let mut session = Session::initiate(rng, &invitation.dh_key)?;
        let hello = Payload::Hello {
            sender_key: invitation_sender.signing_key().verifying_key().to_bytes(),
            reply,
            profile: self.card(),
        };
        let body = session.encrypt(rng, &hello.encode()?)?;
        let trust = match provenance {
            Provenance::Scanned => Trust::Scanned,
            Provenance::Pasted => Trust::Pasted,
        };
        let alias = self.unique_alias(alias.as_deref().unwrap_or("new contact"))?;
        let now = self.clock.now();
        let mut contact = Contact {
            id: random16(rng),
            profile: self.profile.name.clone(),
            alias: alias.clone(),
            peer: None,
            trust,
            verified: false,
            state: ContactState::AwaitingReply,
            session,
            inbound: vec![reply_queue],
            outbound: QueueRef {
                relay: invitation.relay.clone(),
                sender_id: invitation.sender_id,
                sender_key: invitation_sender.0,
                direct: false,
            },
            pending_rekey: None,
            retired: Vec::new(),
            next_seq: 0,
            recent_ids: Default::default(),
            gaps: 0,
            created_at: now,
        };
        let seq = contact.take_seq();
        let entry = OutboxEntry {
            contact: contact.id,
            seq,
            target: contact.outbound.clone(),
            signed: false,
            body,
            message_seq: None,
            accepted: None,
            created_at: now,
        };
        let mut batch = Batch::new();
        batch.put(CONTACTS, &contact.id, &contact)?;
        batch.put(OUTBOX, &seq_key(&contact.id, seq), &entry)?;
        self.store.commit(rng, batch)?;
        match self
            .send_entry(rng, &contact, entry, FORWARD_WAIT_SECS)
            .await
        {
            Ok(stored) => Ok(Connected::Contact {
                alias,
                trust,
                delivered: stored,
            }),
            Err(SendFailure::Refused(ErrorCode::Auth)) => {
                // The invitation queue is secured (answered before) or gone.
                self.forget_contact(rng, &contact).await?;
                Err(ClientError::InvitationUsed)
            }
            Err(SendFailure::Refused(code)) => {
                self.forget_contact(rng, &contact).await?;
                Err(ClientError::Net(NetError::Refused {
                    relay: "the contact's relay".into(),
                    command: "SEND",
                    code,
                }))
            }
            Err(SendFailure::Net(e)) => {
                self.notice(format!(
                    "the confirmation is queued and will be retried by `petrel sync`: {e}"
                ));
                Ok(Connected::Contact {
                    alias,
                    trust,
                    delivered: false,
                })
            }
        }
    }

    /// Deletes a contact that never connected, and its reply queue.
    async fn forget_contact<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        contact: &Contact,
    ) -> Result<(), ClientError> {
        let mut batch = Batch::new();
        batch.delete(CONTACTS, &contact.id);
        for (key, _) in self.store.list::<OutboxEntry>(OUTBOX)? {
            if key.starts_with(&contact.id) {
                batch.delete(OUTBOX, &key);
            }
        }
        self.store.commit(rng, batch)?;
        for queue in &contact.inbound {
            let _ = self.relays.delete(queue).await;
        }
        Ok(())
    }

    async fn answer_rekey<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        invitation: &Invitation,
    ) -> Result<Connected, ClientError> {
        let find = |contacts: Vec<Contact>| {
            contacts.into_iter().find(|c| {
                c.outbound.sender_id == invitation.sender_id
                    && c.outbound.relay.key() == invitation.relay.key()
            })
        };
        let mut contact = match find(self.contacts()?) {
            Some(c) => c,
            None => {
                // The code may name a queue the contact announced in a rotation this client
                // has not read yet: read, then look again.
                self.drain(rng).await?;
                find(self.contacts()?).ok_or(ClientError::UnknownRekey)?
            }
        };
        if contact.state != ContactState::Connected {
            return Err(ClientError::NotConnected(contact.alias));
        }
        if contact.session.rekey_pending() {
            return Err(ClientError::Busy(format!(
                "a re-key with `{}` is still under way: exchange a message first",
                contact.alias
            )));
        }
        let own = QrKey::generate(rng);
        contact
            .session
            .rekey(&own, &invitation.dh_key, RekeyRole::Follow)?;
        let mut batch = Batch::new();
        self.queue_payload(
            rng,
            &mut contact,
            &Payload::Rekey { key: own.public() },
            None,
            &mut batch,
        )?;
        batch.put(CONTACTS, &contact.id, &contact)?;
        self.store.commit(rng, batch)?;
        self.flush(rng, 0).await?;
        Ok(Connected::Rekeyed {
            alias: contact.alias,
        })
    }

    /// Encrypts `payload` for `contact` and adds the outbox entry to `batch` (the caller
    /// puts the contact, whose ratchet advanced, into the same batch).
    fn queue_payload<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        contact: &mut Contact,
        payload: &Payload,
        message_seq: Option<u64>,
        batch: &mut Batch,
    ) -> Result<(), ClientError> {
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
            created_at: self.clock.now(),
        };
        batch.put(OUTBOX, &seq_key(&contact.id, seq), &entry)?;
        Ok(())
    }

    /// Sends a text message: stored and queued at once, then handed to a relay; says
    /// where it is now. Earlier messages to the contact still in the outbox go first.
    pub async fn send_text<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        alias: &str,
        text: &str,
    ) -> Result<Sent, ClientError> {
        let max = crate::payload::MAX_TEXT_LEN;
        if text.len() > max {
            return Err(ClientError::TooLong {
                len: text.len(),
                max,
            });
        }
        let mut contact = self.contact(alias)?;
        if contact.state != ContactState::Connected {
            return Err(ClientError::NotConnected(contact.alias));
        }
        let id = random16(rng);
        let message_seq = contact.take_seq();
        let message = Message {
            seq: message_seq,
            direction: Direction::Out,
            id,
            text: text.to_string(),
            at: self.clock.now(),
            sent: false,
            delivered: false,
        };
        let mut batch = Batch::new();
        batch.put(MESSAGES, &seq_key(&contact.id, message_seq), &message)?;
        self.queue_payload(
            rng,
            &mut contact,
            &Payload::Text {
                id,
                text: text.to_string(),
            },
            Some(message_seq),
            &mut batch,
        )?;
        batch.put(CONTACTS, &contact.id, &contact)?;
        self.store.commit(rng, batch)?;
        let flushed = self.flush(rng, FORWARD_WAIT_SECS).await?;
        Ok(if flushed.waiting > 0 {
            Sent::Queued
        } else if flushed.at_relay > 0 {
            Sent::AtRelay
        } else {
            Sent::Stored
        })
    }

    /// Starts a queue rotation for a contact now: a new inbound queue (on the next pinned
    /// relay when there are several) is announced over the ratchet; the old one is deleted
    /// when the contact's last message on it arrives.
    pub async fn rotate<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        alias: &str,
    ) -> Result<(), ClientError> {
        let contact = self.contact(alias)?;
        self.start_rotation(rng, contact).await?;
        self.flush(rng, 0).await?;
        Ok(())
    }

    async fn start_rotation<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        mut contact: Contact,
    ) -> Result<(), ClientError> {
        if contact.state != ContactState::Connected {
            return Err(ClientError::NotConnected(contact.alias));
        }
        if contact.inbound.len() > 1 {
            return Err(ClientError::Busy(format!(
                "a rotation with `{}` is under way: it ends when {} next syncs",
                contact.alias, contact.alias
            )));
        }
        let current = contact
            .inbound
            .last()
            .map(|q| q.relay.clone())
            .unwrap_or_else(|| self.own_relay().clone());
        let relay = self.next_relay(&current);
        let (queue, reference) = self.new_contact_queue(rng, &relay).await?;
        contact.inbound.push(queue);
        let mut batch = Batch::new();
        self.queue_payload(
            rng,
            &mut contact,
            &Payload::NewQueue { queue: reference },
            None,
            &mut batch,
        )?;
        batch.put(CONTACTS, &contact.id, &contact)?;
        self.store.commit(rng, batch)?;
        self.notice(format!("rotating the queue of {}", contact.alias));
        Ok(())
    }

    /// Starts the rotations that are due.
    async fn rotate_due<R: CryptoRng + ?Sized>(&mut self, rng: &mut R) -> Result<(), ClientError> {
        let period = self.profile.rotation_secs;
        let now = self.clock.now();
        for contact in self.contacts()? {
            let due = contact.state == ContactState::Connected
                && contact.inbound.len() == 1
                && contact
                    .inbound
                    .first()
                    .is_some_and(|q| now.saturating_sub(q.created_at) >= period);
            if due {
                let alias = contact.alias.clone();
                if let Err(e) = self.start_rotation(rng, contact).await {
                    self.notice(format!("rotation for {alias} postponed: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Sends what the outbox holds, in order per contact. A forward still pending at the
    /// forwarding relay is asked about with a long poll of up to `wait_secs`.
    pub async fn flush<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        wait_secs: u8,
    ) -> Result<Flushed, ClientError> {
        let contacts: HashMap<[u8; 16], Contact> =
            self.contacts()?.into_iter().map(|c| (c.id, c)).collect();
        let mut entries: Vec<(Vec<u8>, OutboxEntry)> = self
            .store
            .list::<OutboxEntry>(OUTBOX)?
            .into_iter()
            .filter(|(_, e)| contacts.contains_key(&e.contact))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut result = Flushed::default();
        let mut blocked: Vec<[u8; 16]> = Vec::new();
        for (_, entry) in entries {
            let Some(contact) = contacts.get(&entry.contact) else {
                continue;
            };
            if blocked.contains(&contact.id)
                || (contact.state != ContactState::Connected && entry.signed)
            {
                result.waiting += 1;
                continue;
            }
            match self.send_entry(rng, contact, entry, wait_secs).await {
                Ok(true) => result.sent += 1,
                Ok(false) => result.at_relay += 1,
                Err(SendFailure::Net(e)) => {
                    self.notice(format!(
                        "messages to {} wait in the outbox: {e}",
                        contact.alias
                    ));
                    blocked.push(contact.id);
                    result.waiting += 1;
                }
                Err(SendFailure::Refused(code)) => {
                    self.notice(format!(
                        "a message to {} was refused by its relay ({code:?}) and dropped",
                        contact.alias
                    ));
                }
            }
        }
        Ok(result)
    }

    /// Sends one outbox entry (or asks how its forward ended). `Ok(true)`: done and
    /// removed from the outbox; `Ok(false)`: still waiting at the forwarding relay.
    async fn send_entry<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        contact: &Contact,
        mut entry: OutboxEntry,
        wait_secs: u8,
    ) -> Result<bool, SendFailure> {
        let own = self.own_relay().clone();
        let key = seq_key(&entry.contact, entry.seq);
        let (forward_id, opener) = match &entry.accepted {
            Some((id, opener)) => {
                let bytes: [u8; 56] = opener
                    .0
                    .as_slice()
                    .try_into()
                    .map_err(|_| SendFailure::Refused(ErrorCode::Internal))?;
                (MsgId(*id), ResponseOpener::from_bytes(&bytes))
            }
            None => {
                let outcome = self
                    .relays
                    .send(
                        rng,
                        &own,
                        &entry.target,
                        entry.signed,
                        entry.body.clone(),
                        self.clock.network_now(),
                    )
                    .await;
                match outcome {
                    Ok(SendOutcome::Stored) => {
                        self.entry_done(rng, contact, &key, &entry)?;
                        return Ok(true);
                    }
                    Ok(SendOutcome::Accepted { forward_id, opener }) => {
                        entry.accepted = Some((forward_id.0, Secret56(opener.to_bytes().to_vec())));
                        self.store.put(rng, OUTBOX, &key, &entry).map_err(|e| {
                            SendFailure::Net(NetError::Unreachable {
                                relay: "local store".into(),
                                reason: e.to_string(),
                            })
                        })?;
                        (forward_id, opener)
                    }
                    Err(e) => return Err(classify(e)),
                }
            }
        };
        match self
            .relays
            .forward_status(&own, forward_id, &opener, wait_secs)
            .await
        {
            Ok(ForwardState::Pending) => Ok(false),
            Ok(ForwardState::Done(Ok(()))) => {
                self.entry_done(rng, contact, &key, &entry)?;
                Ok(true)
            }
            Ok(ForwardState::Done(Err(code @ (ErrorCode::Auth | ErrorCode::MessageSize)))) => {
                // The destination refused the SEND itself: sending again cannot help.
                let _ = self.store.delete(OUTBOX, &key);
                Err(SendFailure::Refused(code))
            }
            Ok(ForwardState::Done(Err(code))) => {
                // The forward ended without the message stored (EXPIRED after 48 h, an ID
                // the relay forgot, a full queue, ...): seal it again at the next flush.
                // Should both envelopes arrive, the ratchet drops the second copy.
                entry.accepted = None;
                self.store.put(rng, OUTBOX, &key, &entry)?;
                Err(SendFailure::Net(NetError::Refused {
                    relay: "the contact's relay".into(),
                    command: "FORWARD",
                    code,
                }))
            }
            Err(e) => Err(classify(e)),
        }
    }

    /// Removes a sent entry and marks its message sent.
    fn entry_done<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        contact: &Contact,
        key: &[u8],
        entry: &OutboxEntry,
    ) -> Result<(), SendFailure> {
        let local = |e: StoreError| {
            SendFailure::Net(NetError::Unreachable {
                relay: "local store".into(),
                reason: e.to_string(),
            })
        };
        let mut batch = Batch::new();
        batch.delete(OUTBOX, key);
        if let Some(seq) = entry.message_seq {
            let mkey = seq_key(&contact.id, seq);
            if let Some(mut m) = self.store.get::<Message>(MESSAGES, &mkey).map_err(local)? {
                m.sent = true;
                batch.put(MESSAGES, &mkey, &m).map_err(local)?;
            }
        }
        self.store.commit(rng, batch).map_err(local)
    }

    /// Every queue this profile reads, with its owner.
    fn queues(&self) -> Result<Vec<(OwnQueue, Owner)>, ClientError> {
        let mut out = Vec::new();
        for (_, inv) in self.store.list::<PendingInvitation>(INVITATIONS)? {
            if inv.profile == self.profile.name {
                out.push((inv.queue.clone(), Owner::Invitation));
            }
        }
        for c in self.contacts()? {
            for q in &c.inbound {
                out.push((q.clone(), Owner::Contact(c.id)));
            }
        }
        Ok(out)
    }

    /// Talks to the relays once: sends the outbox, reads every queue until it is empty
    /// (completing handshakes, storing messages, sending receipts), starts due rotations,
    /// deletes retired queues. With `wait`, and when nothing new arrived, waits up to that
    /// long for the first new message. Returns how many messages and handshakes arrived.
    pub async fn sync<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        wait: Option<Duration>,
    ) -> Result<usize, ClientError> {
        self.flush(rng, 0).await?;
        let mut received = self.drain(rng).await?;
        if received == 0
            && let Some(wait) = wait
        {
            received += self.wait_for_push(rng, wait).await?;
            received += self.drain(rng).await?;
        }
        self.send_receipts(rng)?;
        self.delete_retired(rng).await?;
        self.expire_invitations().await?;
        self.rotate_due(rng).await?;
        self.flush(rng, 0).await?;
        Ok(received)
    }

    /// GETs every queue until it is empty.
    async fn drain<R: CryptoRng + ?Sized>(&mut self, rng: &mut R) -> Result<usize, ClientError> {
        let mut received = 0;
        let mut unreachable: Vec<[u8; 32]> = Vec::new();
        // Processing can add queues (a rotation) or retire them: read the list again until
        // a pass finds nothing.
        loop {
            let mut progress = false;
            for (queue, owner) in self.queues()? {
                if unreachable.contains(&queue.relay.key().0) {
                    continue;
                }
                loop {
                    match self.relays.get(&queue).await {
                        Ok(Some(delivery)) => {
                            self.process(rng, &queue, &owner, delivery).await?;
                            received += 1;
                            progress = true;
                        }
                        Ok(None) => break,
                        Err(NetError::Refused {
                            code: ErrorCode::Auth,
                            ..
                        }) => {
                            self.notice("a queue of this profile is gone from its relay");
                            break;
                        }
                        Err(e) => {
                            self.notice(format!("cannot read messages: {e}"));
                            unreachable.push(queue.relay.key().0);
                            break;
                        }
                    }
                    // A queue retired by what was just read is no longer read.
                    if !self.still_reads(&queue)? {
                        break;
                    }
                }
            }
            if !progress {
                break;
            }
            self.send_receipts(rng)?;
            self.flush(rng, 0).await?;
        }
        Ok(received)
    }

    fn still_reads(&self, queue: &OwnQueue) -> Result<bool, ClientError> {
        Ok(self
            .queues()?
            .iter()
            .any(|(q, _)| q.recipient_id == queue.recipient_id))
    }

    /// Subscribes every queue and waits up to `wait` for the first pushed delivery, which
    /// it processes.
    async fn wait_for_push<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        wait: Duration,
    ) -> Result<usize, ClientError> {
        let queues = self.queues()?;
        for (q, _) in &queues {
            if let Err(e) = self.relays.subscribe(q).await {
                self.notice(format!("cannot subscribe: {e}"));
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Some(delivery) = self.next_push(deadline).await else {
                return Ok(0);
            };
            if let Some((queue, owner)) = queues
                .iter()
                .find(|(q, _)| q.recipient_id == delivery.recipient_id)
            {
                let (queue, owner) = (queue.clone(), owner.clone());
                self.process(rng, &queue, &owner, delivery).await?;
                return Ok(1);
            }
        }
    }

    /// The next delivery pushed on any session, or `None` at the deadline or when every
    /// session has ended.
    async fn next_push(&mut self, deadline: tokio::time::Instant) -> Option<Delivery> {
        loop {
            let mut waits: Vec<_> = self
                .relays
                .sessions_mut()
                .map(|(_, conn)| Box::pin(conn.next_event()))
                .collect();
            if waits.is_empty() {
                return None;
            }
            let next =
                tokio::time::timeout_at(deadline, futures::future::select_all(waits.drain(..)));
            match next.await {
                Err(_) => return None,
                Ok((Some(RelayFrame::Deliver(d)), _, _)) => return Some(d),
                Ok((Some(_), _, _)) => continue,
                Ok((None, _, _)) => return None,
            }
        }
    }

    /// Stays connected, processing messages as they are pushed and handing each batch of
    /// events to `on_events`, until `stop` resolves.
    pub async fn listen<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        mut on_events: impl FnMut(Vec<Event>),
        mut outgoing: Option<&mut tokio::sync::mpsc::Receiver<(String, String)>>,
    ) -> Result<(), ClientError> {
        self.sync(rng, None).await?;
        on_events(self.take_events());
        loop {
            let queues = self.queues()?;
            for (q, _) in &queues {
                if let Err(e) = self.relays.subscribe(q).await {
                    self.notice(format!("cannot subscribe: {e}"));
                }
            }
            on_events(self.take_events());
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let pushed = match outgoing.as_deref_mut() {
                Some(rx) => {
                    tokio::select! {
                        d = self.next_push(deadline) => Some(d),
                        line = rx.recv() => {
                            match line {
                                Some((alias, text)) => {
                                    match self.send_text(rng, &alias, &text).await {
                                        Ok(Sent::Stored) => {}
                                        Ok(Sent::AtRelay) => self.notice("your relay holds it until the contact's relay answers"),
                                        Ok(Sent::Queued) => self.notice("queued: it will be sent when your relay answers"),
                                        Err(e) => self.notice(format!("not sent: {e}")),
                                    }
                                    None
                                }
                                None => return Ok(()),
                            }
                        }
                    }
                }
                None => Some(self.next_push(deadline).await),
            };
            if let Some(pushed) = pushed {
                match pushed {
                    Some(delivery) => {
                        if let Some((queue, owner)) = queues
                            .iter()
                            .find(|(q, _)| q.recipient_id == delivery.recipient_id)
                        {
                            let (queue, owner) = (queue.clone(), owner.clone());
                            self.process(rng, &queue, &owner, delivery).await?;
                        }
                        self.send_receipts(rng)?;
                    }
                    None => {
                        // Quiet for a while, or sessions ended: reconnect and catch up.
                        self.relays = Relays::new();
                        self.sync(rng, None).await?;
                    }
                }
            }
            self.rotate_due(rng).await?;
            self.flush(rng, 0).await?;
            on_events(self.take_events());
        }
    }

    /// Queues one receipt per contact for the messages stored since the last one.
    fn send_receipts<R: CryptoRng + ?Sized>(&mut self, rng: &mut R) -> Result<(), ClientError> {
        let pending = std::mem::take(&mut self.receipts);
        for (id, ids) in pending {
            let Some(mut contact) = self.store.get::<Contact>(CONTACTS, &id)? else {
                continue;
            };
            for chunk in ids.chunks(crate::payload::MAX_RECEIPT_IDS) {
                let mut batch = Batch::new();
                self.queue_payload(
                    rng,
                    &mut contact,
                    &Payload::Receipt {
                        ids: chunk.to_vec(),
                    },
                    None,
                    &mut batch,
                )?;
                batch.put(CONTACTS, &contact.id, &contact)?;
                self.store.commit(rng, batch)?;
            }
        }
        Ok(())
    }

    /// Handles one delivery from one of this profile's queues, stores the result, then
    /// ACKs it.
    async fn process<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        queue: &OwnQueue,
        owner: &Owner,
        delivery: Delivery,
    ) -> Result<(), ClientError> {
        let msg_id = delivery.msg_id;
        let opened = queue.delivery().open(
            &delivery.recipient_id,
            &delivery.msg_id,
            &delivery.ciphertext,
        );
        match opened {
            Err(_) => self.notice("a delivery did not decrypt (dropped)"),
            Ok(body) if body.kind == DeliveryKind::QuotaReached => {
                self.notice("the relay refused some messages to a full queue of yours");
            }
            Ok(body) => match owner {
                Owner::Invitation => self.accept_confirmation(rng, queue, &body.body).await?,
                Owner::Contact(id) => {
                    if self.receive(rng, *id, queue, &body.body).await? == Retire::Queue {
                        // The contact's last message on a rotated-away queue: the queue
                        // and everything left in it go (no ACK needed).
                        self.delete_retired(rng).await?;
                        return Ok(());
                    }
                }
            },
        }
        self.relays.ack(queue, msg_id).await?;
        Ok(())
    }

    /// Deletes invitations nobody answered within [`INVITATION_TTL_SECS`], and their
    /// queues.
    async fn expire_invitations(&mut self) -> Result<(), ClientError> {
        let now = self.clock.now();
        for (key, invitation) in self.store.list::<PendingInvitation>(INVITATIONS)? {
            if invitation.profile != self.profile.name
                || now.saturating_sub(invitation.created_at) < INVITATION_TTL_SECS
            {
                continue;
            }
            match self.relays.delete(&invitation.queue).await {
                Ok(())
                | Err(NetError::Refused {
                    code: ErrorCode::Auth,
                    ..
                }) => {
                    self.store.delete(INVITATIONS, &key)?;
                    self.notice("an invitation nobody answered expired and was deleted");
                }
                Err(_) => {} // Its relay is unreachable: next time.
            }
        }
        Ok(())
    }

    /// DELETEs the queues rotations retired; a queue whose relay does not answer stays
    /// listed for the next run.
    async fn delete_retired<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
    ) -> Result<(), ClientError> {
        for mut contact in self.contacts()? {
            if contact.retired.is_empty() {
                continue;
            }
            let mut kept = Vec::new();
            for queue in std::mem::take(&mut contact.retired) {
                match self.relays.delete(&queue).await {
                    Ok(()) => {}
                    // Already gone (deleted by an earlier run whose commit was lost).
                    Err(NetError::Refused {
                        code: ErrorCode::Auth,
                        ..
                    }) => {}
                    Err(e) => {
                        self.notice(format!("an old queue stays until the next sync: {e}"));
                        kept.push(queue);
                    }
                }
            }
            contact.retired = kept;
            self.store.put(rng, CONTACTS, &contact.id, &contact)?;
        }
        Ok(())
    }

    /// The first message on an invitation queue: a new contact.
    async fn accept_confirmation<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        queue: &OwnQueue,
        body: &[u8],
    ) -> Result<(), ClientError> {
        let Some(invitation) = self
            .store
            .get::<PendingInvitation>(INVITATIONS, queue.recipient_id.as_bytes())?
        else {
            self.notice(
                "one of your invitations was answered more than once (was it shared?): \
                 only the first answer was accepted",
            );
            return Ok(());
        };
        let now = self.clock.now();
        let (session, decrypted) = match Session::respond(&invitation.key, body, now) {
            Ok(ok) => ok,
            Err(e) => {
                self.notice(format!("an answer to your invitation was unreadable: {e}"));
                return Ok(());
            }
        };
        let (sender_key, reply, card) = match Payload::decode(&decrypted.plaintext) {
            Ok(Payload::Hello {
                sender_key,
                reply,
                profile,
            }) => (sender_key, reply, profile),
            _ => {
                self.notice("an answer to your invitation was not a confirmation (dropped)");
                return Ok(());
            }
        };
        // One confirmation per invitation: after SECURE the relay refuses every unsigned
        // SEND to this queue.
        self.relays.secure(queue, &sender_key).await?;
        let direct = self.profile.require_pinned_forwarding;
        if direct {
            self.relays.restrict(queue, &self.profile.relays).await?;
        }
        let wanted = invitation
            .alias
            .clone()
            .unwrap_or_else(|| card.display_name.clone());
        let alias = self.unique_alias(&wanted)?;
        let mut contact = Contact {
            id: random16(rng),
            profile: self.profile.name.clone(),
            alias: alias.clone(),
            peer: Some(card),
            trust: Trust::Invited,
            verified: false,
            state: ContactState::Connected,
            session,
            inbound: vec![invitation.queue.clone()],
            outbound: reply,
            pending_rekey: None,
            retired: Vec::new(),
            next_seq: 0,
            recent_ids: Default::default(),
            gaps: 0,
            created_at: now,
        };
        let mut batch = Batch::new();
        let card = self.card();
        self.queue_payload(
            rng,
            &mut contact,
            &Payload::HelloReply {
                profile: card,
                direct,
            },
            None,
            &mut batch,
        )?;
        batch.delete(INVITATIONS, queue.recipient_id.as_bytes());
        batch.put(CONTACTS, &contact.id, &contact)?;
        self.store.commit(rng, batch)?;
        self.events.push(Event::Connected { contact: alias });
        Ok(())
    }

    /// A ratchet message from a contact.
    async fn receive<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        id: [u8; 16],
        queue: &OwnQueue,
        body: &[u8],
    ) -> Result<Retire, ClientError> {
        let Some(mut contact) = self.store.get::<Contact>(CONTACTS, &id)? else {
            return Ok(Retire::No);
        };
        let now = self.clock.now();
        let decrypted = match contact.session.decrypt(body, now) {
            Ok(d) => d,
            Err(RatchetError::Duplicate) => return Ok(Retire::No),
            Err(e) => {
                self.notice(format!("a message from {} was dropped: {e}", contact.alias));
                return Ok(Retire::No);
            }
        };
        if !matches!(decrypted.order, crate::ratchet::Order::InOrder) {
            contact.gaps += 1;
        }
        let mut batch = Batch::new();
        let mut retire = Retire::No;
        let payload = Payload::decode(&decrypted.plaintext);
        match payload {
            Err(e) => self.notice(format!("a message from {} was dropped: {e}", contact.alias)),
            Ok(Payload::HelloReply { profile, direct }) => {
                contact.peer = Some(profile.clone());
                contact.outbound.direct = direct;
                if contact.state == ContactState::AwaitingReply {
                    contact.state = ContactState::Connected;
                    // A placeholder alias takes the contact's display name.
                    if contact.alias.starts_with("new contact") {
                        contact.alias = self.unique_alias(&profile.display_name)?;
                    }
                    self.events.push(Event::Connected {
                        contact: contact.alias.clone(),
                    });
                }
            }
            Ok(Payload::Text { id: mid, text }) => {
                if contact.remember(mid) {
                    let seq = contact.take_seq();
                    let message = Message {
                        seq,
                        direction: Direction::In,
                        id: mid,
                        text: text.clone(),
                        at: now,
                        sent: true,
                        delivered: true,
                    };
                    batch.put(MESSAGES, &seq_key(&contact.id, seq), &message)?;
                    self.receipts.entry(contact.id).or_default().push(mid);
                    self.events.push(Event::Message {
                        contact: contact.alias.clone(),
                        text,
                    });
                }
            }
            Ok(Payload::Receipt { ids }) => {
                let mut count = 0;
                for (key, mut m) in self.store.list::<Message>(MESSAGES)? {
                    if key.starts_with(&contact.id)
                        && m.direction == Direction::Out
                        && !m.delivered
                        && ids.contains(&m.id)
                    {
                        m.delivered = true;
                        m.sent = true;
                        batch.put(MESSAGES, &key, &m)?;
                        count += 1;
                    }
                }
                if count > 0 {
                    self.events.push(Event::Delivered {
                        contact: contact.alias.clone(),
                        count,
                    });
                }
            }
            Ok(Payload::NewQueue { queue: next }) => {
                // The last message on the old queue says so; everything after goes to the
                // new one.
                self.queue_payload(rng, &mut contact, &Payload::Switched, None, &mut batch)?;
                contact.outbound = next;
                self.notice(format!("{} moved to a new queue", contact.alias));
            }
            Ok(Payload::Switched) => {
                let newest = contact.inbound.last().map(|q| q.recipient_id);
                if newest != Some(queue.recipient_id) {
                    contact
                        .inbound
                        .retain(|q| q.recipient_id != queue.recipient_id);
                    contact.retired.push(queue.clone());
                    retire = Retire::Queue;
                    self.notice(format!("queue rotation with {} finished", contact.alias));
                }
            }
            Ok(Payload::Rekey { key }) => match contact.pending_rekey.take() {
                Some(own) => {
                    contact.session.rekey(&own, &key, RekeyRole::Lead)?;
                    self.notice(format!(
                        "re-keyed the connection with {}: the new key is mixed in with the next message",
                        contact.alias
                    ));
                }
                None => self.notice(format!(
                    "{} sent a re-key answer to no code of yours (ignored)",
                    contact.alias
                )),
            },
            Ok(Payload::Profile(card)) => {
                self.notice(format!(
                    "{} now shows the name \"{}\"",
                    contact.alias, card.display_name
                ));
                contact.peer = Some(card);
            }
            Ok(Payload::Hello { .. }) => {
                self.notice(format!(
                    "{} sent a second confirmation (ignored)",
                    contact.alias
                ));
            }
        }
        batch.put(CONTACTS, &contact.id, &contact)?;
        self.store.commit(rng, batch)?;
        Ok(retire)
    }

    /// Sends the profile's display name and bio to every connected contact (after
    /// `profile edit`); returns how many contacts it went to.
    pub async fn announce_profile<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
    ) -> Result<usize, ClientError> {
        let card = self.card();
        let mut count = 0;
        for mut contact in self.contacts()? {
            if contact.state != ContactState::Connected {
                continue;
            }
            let mut batch = Batch::new();
            self.queue_payload(
                rng,
                &mut contact,
                &Payload::Profile(card.clone()),
                None,
                &mut batch,
            )?;
            batch.put(CONTACTS, &contact.id, &contact)?;
            self.store.commit(rng, batch)?;
            count += 1;
        }
        self.flush(rng, 0).await?;
        Ok(count)
    }

    /// Records that the user compared the security code with the contact.
    pub fn mark_verified<R: CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        alias: &str,
    ) -> Result<(), ClientError> {
        let mut contact = self.contact(alias)?;
        contact.verified = true;
        self.store.put(rng, CONTACTS, &contact.id, &contact)?;
        Ok(())
    }

    /// Messages and handshake messages waiting in the local outbox.
    pub fn outbox_len(&self) -> Result<usize, ClientError> {
        let ids: Vec<[u8; 16]> = self.contacts()?.iter().map(|c| c.id).collect();
        Ok(self
            .store
            .list::<OutboxEntry>(OUTBOX)?
            .iter()
            .filter(|(_, e)| ids.contains(&e.contact))
            .count())
    }
}

/// Whether the queue a message arrived on is done with.
#[derive(Debug, PartialEq, Eq)]
enum Retire {
    No,
    Queue,
}

/// Why one outbox entry was not sent.
#[derive(Debug)]
enum SendFailure {
    /// Try again later.
    Net(NetError),
    /// The relay refused it for good.
    Refused(ErrorCode),
}

impl From<StoreError> for SendFailure {
    fn from(e: StoreError) -> Self {
        SendFailure::Net(NetError::Unreachable {
            relay: "local store".into(),
            reason: e.to_string(),
        })
    }
}

fn classify(e: NetError) -> SendFailure {
    match e {
        NetError::Refused {
            code: code @ (ErrorCode::Auth | ErrorCode::MessageSize | ErrorCode::ForwardDenied),
            ..
        } => SendFailure::Refused(code),
        other => SendFailure::Net(other),
    }
}

/// Deletes every local record of a profile: invitations, contacts (with their keys),
/// messages and outbox entries. Returns how many records went. The profile's queues stay
/// on the relays until their messages expire; nothing links them to anyone.
pub fn delete_profile_data(store: &Store, profile: &str) -> Result<usize, ClientError> {
    let mut rng = rand::rng();
    let mut batch = Batch::new();
    let mut count = 0;
    for (key, inv) in store.list::<PendingInvitation>(INVITATIONS)? {
        if inv.profile == profile {
            batch.delete(INVITATIONS, &key);
            count += 1;
        }
    }
    let mut ids = Vec::new();
    for (key, c) in store.list::<Contact>(CONTACTS)? {
        if c.profile == profile {
            batch.delete(CONTACTS, &key);
            ids.push(c.id);
            count += 1;
        }
    }
    let ours = |key: &[u8]| ids.iter().any(|id| key.starts_with(id));
    for (key, _) in store.list::<Message>(MESSAGES)? {
        if ours(&key) {
            batch.delete(MESSAGES, &key);
            count += 1;
        }
    }
    for (key, _) in store.list::<OutboxEntry>(OUTBOX)? {
        if ours(&key) {
            batch.delete(OUTBOX, &key);
            count += 1;
        }
    }
    store.commit(&mut rng, batch)?;
    Ok(count)
}
