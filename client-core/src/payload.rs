//! What the ratchet carries between two clients (`specs/protocol.md` §15.2).
//!
//! Every layer-1 plaintext is one [`Payload`], postcard-encoded. Relays never see these:
//! they are inside the ratchet message, which is inside the sealed envelope.

use petrel_federation::{QueueId, RelayAddress};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Longest display name, in bytes.
pub const MAX_DISPLAY_NAME_LEN: usize = 64;
/// Longest bio, in bytes.
pub const MAX_BIO_LEN: usize = 280;
/// Longest text message, in bytes (fits the 16 KiB size class).
pub const MAX_TEXT_LEN: usize = 8192;
/// Most message IDs in one receipt.
pub const MAX_RECEIPT_IDS: usize = 256;

/// A message ID chosen by its sender: 16 random bytes, used for de-duplication and
/// receipts.
pub type MessageId = [u8; 16];

/// What a profile shows its contacts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileCard {
    /// The display name.
    pub display_name: String,
    /// An optional short bio.
    pub bio: Option<String>,
}

/// Where and how to send into a queue the peer owns: its relay, sender ID, and the sender
/// key the owner minted for it and already SECUREd the queue with.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct QueueRef {
    /// The relay holding the queue.
    #[zeroize(skip)]
    pub relay: RelayAddress,
    /// The queue's sender ID.
    #[zeroize(skip)]
    pub sender_id: QueueId,
    /// The Ed25519 secret key that signs SENDs to it.
    pub sender_key: [u8; 32],
    /// The queue accepts SENDs only directly or through its owner's pinned relays: send
    /// straight to `relay` instead of forwarding through your own relay.
    #[zeroize(skip)]
    pub direct: bool,
}

impl std::fmt::Debug for QueueRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueRef")
            .field("relay", &self.relay)
            .field("direct", &self.direct)
            .finish_non_exhaustive()
    }
}

/// One layer-1 plaintext.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// 0 — The confirmation (initiator → invitation queue): the public key the initiator
    /// will sign SENDs to the invitation queue with, the initiator's reply queue, and its
    /// profile.
    Hello {
        /// Ed25519 public key for SECURE of the invitation queue.
        sender_key: [u8; 32],
        /// The reply queue, already secured with `reply.sender_key`.
        reply: QueueRef,
        /// The initiator's profile.
        profile: ProfileCard,
    },
    /// 1 — The responder's first message (into the reply queue): its profile, and whether
    /// the invitation queue must be reached directly.
    HelloReply {
        /// The responder's profile.
        profile: ProfileCard,
        /// Send to the invitation queue directly (see [`QueueRef::direct`]).
        direct: bool,
    },
    /// 2 — A text message.
    Text {
        /// The sender's ID for it.
        id: MessageId,
        /// The text (UTF-8, at most [`MAX_TEXT_LEN`] bytes).
        text: String,
    },
    /// 3 — These messages were received and stored.
    Receipt {
        /// Their IDs.
        ids: Vec<MessageId>,
    },
    /// 4 — Rotation: from now on send to this new queue; answer with [`Payload::Switched`]
    /// as your last message on the old one.
    NewQueue {
        /// The new queue.
        queue: QueueRef,
    },
    /// 5 — Rotation: this is the last message on the old queue (the one it arrives on);
    /// the sender now uses the new queue. The owner deletes the old queue on reading it.
    Switched,
    /// 6 — Re-keying: the public key of the sender's re-key pair, after it scanned the
    /// receiver's re-key QR code. The receiver mixes `X25519(own, key)` at its next step.
    Rekey {
        /// The scanner's fresh X25519 public key.
        key: [u8; 32],
    },
    /// 7 — The sender's profile changed.
    Profile(ProfileCard),
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Not a valid postcard encoding of a payload (or trailing bytes).
    #[error("the message does not decode: {0}")]
    Malformed(String),
    /// A field is over its limit.
    #[error("{0} is over its limit")]
    TooLong(&'static str),
}

impl Payload {
    /// The postcard encoding.
    pub fn encode(&self) -> Result<Vec<u8>, PayloadError> {
        self.check()?;
        postcard::to_stdvec(self).map_err(|e| PayloadError::Malformed(e.to_string()))
    }

    /// Decodes and checks limits; trailing bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<Payload, PayloadError> {
        let (payload, rest): (Payload, _) =
            postcard::take_from_bytes(bytes).map_err(|e| PayloadError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(PayloadError::Malformed("trailing bytes".into()));
        }
        payload.check()?;
        Ok(payload)
    }

    fn check(&self) -> Result<(), PayloadError> {
        let card = |c: &ProfileCard| {
            if c.display_name.len() > MAX_DISPLAY_NAME_LEN {
                return Err(PayloadError::TooLong("the display name"));
            }
            if c.bio.as_ref().is_some_and(|b| b.len() > MAX_BIO_LEN) {
                return Err(PayloadError::TooLong("the bio"));
            }
            Ok(())
        };
        match self {
            Payload::Hello { profile, .. }
            | Payload::HelloReply { profile, .. }
            | Payload::Profile(profile) => card(profile),
            Payload::Text { text, .. } if text.len() > MAX_TEXT_LEN => {
                Err(PayloadError::TooLong("the text"))
            }
            Payload::Receipt { ids } if ids.len() > MAX_RECEIPT_IDS => {
                Err(PayloadError::TooLong("the receipt"))
            }
            _ => Ok(()),
        }
    }
}
