//! The client ↔ relay protocol (`/petrel/client/1`).
//!
//! One libp2p stream per session. The client opens it and sends [`ClientHello`]; the relay
//! answers [`RelayHello`] with the negotiated version and a fresh [`SessionId`]. After that
//! the client sends [`ClientFrame`]s (a correlation number, an optional [`Auth`] and a
//! [`Command`]) and the relay sends [`RelayFrame`]s: a [`Response`] to each command, in
//! any order, matched by `corr`, and pushed [`Delivery`]s for subscribed queues — one
//! unacknowledged message per queue at a time.
//!
//! Which commands need which key (`specs/protocol.md` §"Commands"):
//!
//! | command | auth | signed by |
//! |---|---|---|
//! | CREATE | required | the new recipient key (proof of possession) |
//! | SECURE, SUB, ACK, GET, SUSPEND, DELETE, RESTRICT | required | the queue's recipient key |
//! | SEND | required once secured, absent before | the queue's sender key |
//! | PING, RELAY_INFO, FORWARD, FORWARD_STATUS | absent | — |

use crate::address::RelayAddress;
use crate::auth::Auth;
use crate::error::ErrorCode;
use crate::frame::WireMessage;
use crate::ids::{KeyHash, MsgId, QueueId, RelayKey, SessionId};
use crate::peer::SignedRelayInfo;
use crate::seal::{SealedEnvelope, SealedResponse};
use serde::{Deserialize, Serialize};

/// The libp2p protocol name of the client ↔ relay stream.
pub const PROTOCOL: &str = "/petrel/client/1";

/// First frame from the client: the versions it speaks. Always encoded as wire version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// Lowest protocol version the client speaks.
    pub min_version: u16,
    /// Highest protocol version the client speaks.
    pub max_version: u16,
}
impl WireMessage for ClientHello {
    const NAME: &'static str = "ClientHello";
}

/// The relay's answer to [`ClientHello`]. Always encoded as wire version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayHello {
    /// The session is open.
    Accept {
        /// The version both sides will use (the highest in common).
        version: u16,
        /// The session ID command signatures are bound to.
        session_id: SessionId,
        /// The relay's clock, Unix seconds (clients use it to judge TTLs and skew).
        relay_time: u64,
    },
    /// No session: usually [`ErrorCode::Version`] or [`ErrorCode::Busy`]. The relay closes
    /// the stream after sending this.
    Reject(ErrorCode),
}
impl WireMessage for RelayHello {
    const NAME: &'static str = "RelayHello";
}

/// A command with its correlation number and authenticator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// Chosen by the client, echoed in the response. Any value; the client keeps them unique
    /// among its outstanding commands.
    pub corr: u32,
    /// The signature, where the command needs one.
    pub auth: Option<Auth>,
    /// The command.
    pub command: Command,
}
impl WireMessage for ClientFrame {
    const NAME: &'static str = "ClientFrame";
}

/// A client command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// 0 — Create a queue. The relay stores `KeyHash::of(recipient_key)`, derives the delivery
    /// key from `recipient_dh` and a fresh relay key, and answers [`Response::Created`].
    Create {
        /// Ed25519 key that will sign the recipient's commands (only its hash is stored).
        recipient_key: [u8; 32],
        /// X25519 key for the delivery (re-encryption) secret.
        recipient_dh: [u8; 32],
        /// Subscribe this session to the new queue at once.
        subscribe: bool,
        /// The relay's queue-creation password, when it requires one.
        #[serde(with = "serde_bytes")]
        password: Option<Vec<u8>>,
    },
    /// 1 — Allow only the holder of the key with this hash to send. Once only.
    Secure {
        /// The queue.
        recipient_id: QueueId,
        /// `KeyHash::of(sender_key)`.
        sender_key_hash: KeyHash,
    },
    /// 2 — Put a message into a queue.
    Send {
        /// The queue's sender ID.
        sender_id: QueueId,
        /// The end-to-end ciphertext: exactly one size class long.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// 3 — Receive pushed deliveries for a queue on this session (ending any other session's
    /// subscription to it).
    Subscribe {
        /// The queue.
        recipient_id: QueueId,
    },
    /// 4 — Acknowledge the message being delivered; the relay deletes it and delivers the next.
    Ack {
        /// The queue.
        recipient_id: QueueId,
        /// The message's ID.
        msg_id: MsgId,
    },
    /// 5 — Fetch the oldest unacknowledged message without subscribing.
    Get {
        /// The queue.
        recipient_id: QueueId,
    },
    /// 6 — Stop accepting SENDs (the recipient can still read what is there).
    Suspend {
        /// The queue.
        recipient_id: QueueId,
    },
    /// 7 — Delete the queue and every message in it.
    Delete {
        /// The queue.
        recipient_id: QueueId,
    },
    /// 8 — Keep the session alive.
    Ping,
    /// 9 — Ask for a relay's signed info (its sealing key). For this relay's own key the
    /// relay answers itself; for another relay it asks that relay over a peer session.
    RelayInfo {
        /// The relay whose info is wanted.
        relay: RelayAddress,
    },
    /// 10 — Forward a sealed SEND to another relay (2-hop routing).
    Forward {
        /// The destination relay.
        destination: RelayAddress,
        /// The sealed request.
        envelope: SealedEnvelope,
    },
    /// 11 — Ask how a forward that was answered `Accepted` ended.
    ForwardStatus {
        /// The ID from [`Response::Accepted`].
        forward_id: MsgId,
        /// Seconds the relay may hold the answer while the forward is still pending
        /// (long poll; at most [`MAX_STATUS_WAIT_SECS`]). 0 answers at once.
        wait_secs: u8,
    },
    /// 12 — Accept SENDs to this queue only when they come through one of these relays
    /// (forwarded by them, or sent directly to this relay if it is listed). An empty list
    /// lifts the restriction. At most [`MAX_FORWARDERS`](crate::limits::MAX_FORWARDERS).
    Restrict {
        /// The queue.
        recipient_id: QueueId,
        /// The relays allowed to hand SENDs to this queue.
        forwarders: Vec<RelayKey>,
    },
}

/// Longest long-poll FORWARD_STATUS may ask for, in seconds.
pub const MAX_STATUS_WAIT_SECS: u8 = 30;

impl Command {
    /// The name used in logs and metrics (never with arguments).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Create { .. } => "CREATE",
            Command::Secure { .. } => "SECURE",
            Command::Send { .. } => "SEND",
            Command::Subscribe { .. } => "SUB",
            Command::Ack { .. } => "ACK",
            Command::Get { .. } => "GET",
            Command::Suspend { .. } => "SUSPEND",
            Command::Delete { .. } => "DELETE",
            Command::Ping => "PING",
            Command::RelayInfo { .. } => "RELAY_INFO",
            Command::Forward { .. } => "FORWARD",
            Command::ForwardStatus { .. } => "FORWARD_STATUS",
            Command::Restrict { .. } => "RESTRICT",
        }
    }
}

/// A frame from the relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayFrame {
    /// 0 — The answer to the command with the same `corr`.
    Reply {
        /// The command's correlation number.
        corr: u32,
        /// The answer.
        response: Response,
    },
    /// 1 — A message pushed for a subscribed queue.
    Deliver(Delivery),
    /// 2 — Another session subscribed to this queue; this one no longer receives it.
    SubscriptionEnded {
        /// The queue.
        recipient_id: QueueId,
    },
}
impl WireMessage for RelayFrame {
    const NAME: &'static str = "RelayFrame";
}

/// A relay's answer to a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// 0 — The queue exists.
    Created(QueueCreated),
    /// 1 — Done.
    Ok,
    /// 2 — The answer to GET.
    Message(Delivery),
    /// 3 — GET found the queue empty.
    Empty,
    /// 4 — The command failed; nothing changed.
    Error(ErrorCode),
    /// 5 — The answer to PING.
    Pong,
    /// 6 — The answer to RELAY_INFO.
    RelayInfo(SignedRelayInfo),
    /// 7 — The destination relay's sealed answer to a FORWARD.
    Forwarded(SealedResponse),
    /// 8 — The forwarding relay stored the envelope and will keep trying; ask
    /// FORWARD_STATUS with this ID for the outcome.
    Accepted {
        /// The forward's ID.
        forward_id: MsgId,
    },
    /// 9 — FORWARD_STATUS: still trying.
    Pending,
}

/// What CREATE returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCreated {
    /// The ID the recipient uses.
    pub recipient_id: QueueId,
    /// The ID senders use (given out in invitations).
    pub sender_id: QueueId,
    /// The relay's X25519 key for this queue's delivery secret.
    pub relay_dh: [u8; 32],
}

/// A message as the relay delivers it: re-encrypted with the queue's delivery key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The queue.
    pub recipient_id: QueueId,
    /// The message's ID (for ACK).
    pub msg_id: MsgId,
    /// `XChaCha20-Poly1305(delivery_key, nonce(msg_id), aad = recipient_id, DeliveryBody)`.
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}
