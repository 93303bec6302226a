//! What the client keeps about invitations, contacts, messages and its outbox, as records
//! of the encrypted store (`specs/client-store.md` §"Tables").

use crate::payload::{MessageId, ProfileCard, QueueRef};
use crate::ratchet::{QrKey, Session};
use crate::store::{Batch, Store, StoreError};
use petrel_federation::delivery::DeliveryKey;
use petrel_federation::{QueueId, RelayAddress};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Store table of pending invitations, keyed by the invitation queue's recipient ID.
pub const INVITATIONS: &str = "invitations";
/// Store table of contacts, keyed by contact ID.
pub const CONTACTS: &str = "contacts";
/// Store table of messages, keyed by contact ID ‖ sequence number (u64 BE).
pub const MESSAGES: &str = "messages";
/// Store table of outgoing SEND bodies not yet accepted by a relay, keyed like messages.
pub const OUTBOX: &str = "outbox";

/// An invitation nobody answered is deleted after this long: 14 days, the relays'
/// default message lifetime.
pub const INVITATION_TTL_SECS: u64 = 14 * 24 * 3600;

/// How many recently received message IDs a contact remembers for de-duplication.
pub const RECENT_IDS: usize = 1024;

/// A 32-byte secret (a signing key seed, a delivery key): erased on drop, never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Secret(pub [u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// The Ed25519 signing key with this seed.
    pub fn signing_key(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&self.0)
    }
}

/// A queue this client owns (receives on).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OwnQueue {
    /// The relay holding it.
    pub relay: RelayAddress,
    /// The ID this client reads it with.
    pub recipient_id: QueueId,
    /// The ID the contact sends to it with.
    pub sender_id: QueueId,
    /// Seed of the Ed25519 recipient key.
    pub recipient_key: Secret,
    /// The layer-3 delivery key.
    pub delivery_key: Secret,
    /// When it was created (client clock, Unix seconds).
    pub created_at: u64,
}

impl OwnQueue {
    /// The delivery key.
    pub fn delivery(&self) -> DeliveryKey {
        DeliveryKey::from_bytes(self.delivery_key.0)
    }
}

/// A one-time invitation waiting for its confirmation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingInvitation {
    /// The profile that made it.
    pub profile: String,
    /// The invitation queue.
    pub queue: OwnQueue,
    /// `IK_B`.
    pub key: QrKey,
    /// The name to give the contact (default: its display name).
    pub alias: Option<String>,
    /// When it was made.
    pub created_at: u64,
}

/// How the contact's first key reached this client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trust {
    /// This client scanned the contact's QR code from an image: the key came out of band.
    Scanned,
    /// This client was given a pasted link: the channel it came through could have
    /// swapped it. Compare the security code to raise it.
    Pasted,
    /// The contact answered this client's invitation; how the invitation travelled is
    /// not known here.
    Invited,
}

impl Trust {
    /// As shown to the user.
    pub fn name(self) -> &'static str {
        match self {
            Trust::Scanned => "scanned",
            Trust::Pasted => "pasted link",
            Trust::Invited => "invited",
        }
    }
}

/// Where the connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContactState {
    /// The confirmation is sent; waiting for the contact's first reply.
    AwaitingReply,
    /// Both directions work.
    Connected,
}

/// A contact: one connection of one profile.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Contact {
    /// Random local ID (never sent).
    pub id: [u8; 16],
    /// The owning profile.
    pub profile: String,
    /// The local name.
    pub alias: String,
    /// What the contact showed of itself.
    pub peer: Option<ProfileCard>,
    /// How the first key arrived.
    pub trust: Trust,
    /// The user compared the security code.
    pub verified: bool,
    /// Handshake progress.
    pub state: ContactState,
    /// The ratchet.
    pub session: Session,
    /// Queues this client receives the contact's messages on: the current one last; two
    /// during a rotation.
    pub inbound: Vec<OwnQueue>,
    /// The contact's queue this client sends to.
    pub outbound: QueueRef,
    /// Secret of a re-key QR code this client showed, until the contact's key arrives.
    pub pending_rekey: Option<QrKey>,
    /// Queues a finished rotation retired, until their relay confirms the DELETE.
    pub retired: Vec<OwnQueue>,
    /// Next sequence number for messages and outbox entries.
    pub next_seq: u64,
    /// Recently received message IDs (de-duplication).
    pub recent_ids: VecDeque<MessageId>,
    /// Gaps and late arrivals the ratchet reported (shown by `contacts`).
    pub gaps: u64,
    /// When the connection was made.
    pub created_at: u64,
}

impl Contact {
    /// Takes the next sequence number.
    pub fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Remembers a received message ID; false if it was already there.
    pub fn remember(&mut self, id: MessageId) -> bool {
        if self.recent_ids.contains(&id) {
            return false;
        }
        if self.recent_ids.len() >= RECENT_IDS {
            self.recent_ids.pop_front();
        }
        self.recent_ids.push_back(id);
        true
    }

    /// The name shown for the contact.
    pub fn label(&self) -> &str {
        &self.alias
    }
}

/// Which way a message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Sent by this client.
    Out,
    /// Received.
    In,
}

/// A stored text message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Message {
    /// Its position in the conversation (per contact).
    pub seq: u64,
    /// Sent or received.
    pub direction: Direction,
    /// The sender's ID for it.
    pub id: MessageId,
    /// The text.
    pub text: String,
    /// Client clock when sent or received.
    pub at: u64,
    /// Outgoing: a relay accepted it. Incoming: always true.
    pub sent: bool,
    /// Outgoing: the contact's receipt arrived.
    pub delivered: bool,
}

/// A SEND body waiting for a relay to accept it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The contact.
    pub contact: [u8; 16],
    /// Order within the contact's outbox.
    pub seq: u64,
    /// Where it goes.
    pub target: QueueRef,
    /// Signed with `target.sender_key` (false only for the confirmation).
    pub signed: bool,
    /// The ratchet message (exactly one size class).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The text message it carries, if any (marked sent when accepted).
    pub message_seq: Option<u64>,
    /// The forwarding relay took it into its outbox: the forward ID and the opener of the
    /// destination's sealed answer, for FORWARD_STATUS.
    pub accepted: Option<([u8; 16], Secret56)>,
    /// When it was queued.
    pub created_at: u64,
}

/// A 56-byte secret (a response opener's key and nonce).
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Secret56(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl std::fmt::Debug for Secret56 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret56(..)")
    }
}

/// `contact ‖ seq` as a store key (sorts by sequence within a contact).
pub fn seq_key(contact: &[u8; 16], seq: u64) -> Vec<u8> {
    let mut key = contact.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Deletes every local record of a profile: invitations, contacts (with their keys),
/// messages and outbox entries, in one transaction. Returns how many records went. The
/// profile's queues stay on the relays until their messages expire; nothing links them to
/// anyone.
pub fn delete_profile_data<R: rand_core::CryptoRng + ?Sized>(
    rng: &mut R,
    store: &Store,
    profile: &str,
) -> Result<usize, StoreError> {
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
    for (table, keys) in [
        (
            MESSAGES,
            store
                .list::<Message>(MESSAGES)?
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>(),
        ),
        (
            OUTBOX,
            store
                .list::<OutboxEntry>(OUTBOX)?
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
        ),
    ] {
        for key in keys.iter().filter(|k| ours(k)) {
            batch.delete(table, key);
            count += 1;
        }
    }
    store.commit(rng, batch)?;
    Ok(count)
}
