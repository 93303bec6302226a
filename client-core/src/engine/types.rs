//! The engine's vocabulary: what goes in (requests, failures, the store's snapshot) and
//! what comes out (effects, events, replies). Plain data, no behaviour.

use super::Error;
use crate::contact::{Contact, Message, OutboxEntry, PendingInvitation, Secret, Trust};
use crate::payload::{MessageId, ProfileCard};
use crate::store::Batch;
use petrel_federation::client::Command;
use petrel_federation::{RelayAddress, RelayKey};
use petrel_qr::{Invitation, Provenance};

/// Names one command the engine transmitted, for its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Names one user request, for its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

/// What the engine asks its driver to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum Effect {
    /// Open a session with this relay (fresh transport key), then call
    /// [`Engine::relay_up`](super::Engine::relay_up) or
    /// [`relay_down`](super::Engine::relay_down).
    Connect {
        /// The relay.
        relay: RelayAddress,
    },
    /// Send `command` on the relay's session, signed (bound to the session ID) by `signer`
    /// when given, and hand the answer to
    /// [`handle_response`](super::Engine::handle_response).
    Transmit {
        /// The relay.
        relay: RelayKey,
        /// Names the answer.
        id: RequestId,
        /// The Ed25519 seed that signs it, if it is signed.
        signer: Option<Secret>,
        /// The command.
        command: Command,
    },
    /// Commit this batch to the store before executing any later effect.
    Persist(Batch),
    /// Tell the user.
    Event(Event),
    /// A user request finished.
    Done {
        /// The request.
        op: OpId,
        /// Its outcome.
        result: Result<Reply, Error>,
    },
}

/// Why a command got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkFailure {
    /// The session ended first.
    #[error("the session with the relay ended")]
    Closed,
    /// No answer in time (the driver closes such a session).
    #[error("the relay did not answer in time")]
    Timeout,
}

/// A user request.
#[derive(Debug)]
#[non_exhaustive]
pub enum Request {
    /// A one-time invitation: a fresh queue on the profile's first relay.
    Invite {
        /// The name to give whoever answers it.
        alias: Option<String>,
    },
    /// A re-key code for a connected contact.
    InviteRekey {
        /// The contact's alias.
        contact: String,
    },
    /// Answer an invitation or a contact's re-key code.
    Connect {
        /// The decoded code.
        invitation: Invitation,
        /// Scanned from an image or pasted.
        provenance: Provenance,
        /// The name to give the contact.
        alias: Option<String>,
    },
    /// Send a text message.
    Send {
        /// The contact's alias.
        contact: String,
        /// The text.
        text: String,
    },
    /// Start a queue rotation now.
    Rotate {
        /// The contact's alias.
        contact: String,
    },
    /// Record that the safety codes matched.
    MarkVerified {
        /// The contact's alias.
        contact: String,
    },
    /// Send the profile's new display name and bio to every connected contact.
    Announce {
        /// The new card.
        card: ProfileCard,
    },
    /// Read every queue until it is empty, and receive from then on (`drain`); done at
    /// once, [`Engine::is_settled`](super::Engine::is_settled) says when the reading is.
    Sync,
}

/// What a finished request produced.
#[derive(Debug)]
#[non_exhaustive]
pub enum Reply {
    /// An invitation or re-key code to show.
    Invitation(Invitation),
    /// An invitation was answered.
    Connected(Connected),
    /// A message was stored and went this far.
    Sent {
        /// The contact's alias.
        contact: String,
        /// Its place in the conversation.
        seq: u64,
        /// Its message ID (hex in the API).
        id: MessageId,
        /// How far it went.
        sent: Sent,
    },
    /// The profile card went to this many contacts.
    Announced {
        /// How many.
        contacts: usize,
    },
    /// Done, nothing to report.
    Done,
}

/// What a finished `connect` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connected {
    /// A new contact, waiting for its reply.
    Contact {
        /// Its alias.
        alias: String,
        /// How the invitation arrived.
        trust: Trust,
        /// The confirmation reached a relay (the contact's, or ours to forward).
        delivered: bool,
    },
    /// A re-key of an existing contact.
    Rekeyed {
        /// Its alias.
        alias: String,
    },
}

/// Where a message just sent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Stored at the contact's relay.
    Stored,
    /// Stored at the profile's own relay, which forwards it when the contact's relay
    /// answers.
    AtRelay,
    /// In the local outbox: it goes when the relay answers.
    Queued,
}

impl Sent {
    /// As named in the API and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Sent::Stored => "stored",
            Sent::AtRelay => "at_relay",
            Sent::Queued => "queued",
        }
    }
}

/// The outbox, counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxState {
    /// Entries no relay has taken yet.
    pub waiting: usize,
    /// Entries the profile's own relay holds in its forwarding outbox.
    pub at_relay: usize,
}

/// A message as an event or a history row shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageView {
    /// The contact's alias.
    pub contact: String,
    /// Its place in the conversation.
    pub seq: u64,
    /// The sender's message ID.
    pub id: MessageId,
    /// The text.
    pub text: String,
    /// Application clock, Unix seconds.
    pub at: u64,
}

/// Something the user should see.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A text message arrived.
    Message(MessageView),
    /// A handshake completed.
    Connected {
        /// The contact's alias.
        contact: String,
    },
    /// A message of ours reached a relay (`stored` at the contact's, or `at_relay`).
    MessageState {
        /// The contact's alias.
        contact: String,
        /// The message.
        seq: u64,
        /// Where it is now.
        state: Sent,
    },
    /// A receipt arrived for messages this profile sent.
    Delivered {
        /// The contact's alias.
        contact: String,
        /// The messages it confirmed.
        seqs: Vec<u64>,
    },
    /// A queue rotation finished.
    RotationDone {
        /// The contact's alias.
        contact: String,
    },
    /// The outbox changed.
    Outbox(OutboxState),
    /// A relay session opened.
    RelayUp {
        /// The relay's address.
        relay: String,
    },
    /// A relay session ended.
    RelayDown {
        /// The relay's address.
        relay: String,
        /// Why.
        reason: String,
    },
    /// Anything else worth a line.
    Notice(String),
}

/// What the store holds for one profile, read once when its engine starts.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Its contacts.
    pub contacts: Vec<Contact>,
    /// Its unanswered invitations.
    pub invitations: Vec<PendingInvitation>,
    /// Its outbox entries, by store key.
    pub outbox: Vec<(Vec<u8>, OutboxEntry)>,
    /// Its outgoing messages not yet confirmed by a receipt, by store key.
    pub unsettled: Vec<(Vec<u8>, Message)>,
}
