//! Layer 1: the end-to-end double ratchet (`specs/protocol.md` §12.1), sans I/O.
//!
//! A [`Session`] is one end of a connection. It never touches the network, the clock or
//! the OS RNG: randomness and time come in as arguments, bytes go in and out.
//!
//! The flow of a connection:
//!
//! 1. **Pairing** (§15). Bob shows an invitation holding a fresh [`QrKey`] `IK_B`. Alice
//!    calls [`Session::initiate`] with its public key; her first [`Session::encrypt`] is
//!    the *confirmation*, `E_A ‖ ratchet message`, whose ratchet header carries her first
//!    ML-KEM-768 encapsulation key. Bob passes it to [`Session::respond`] with `IK_B`.
//! 2. **Messages.** Each message is a SEND body of exactly one size class: a random header
//!    nonce, the header (ratchet key, counters, KEM item) encrypted under a header key,
//!    and the body (hash of the sender's previous message ‖ payload, padded) under a
//!    one-time message key (the layout is in `header.rs`).
//! 3. **Ratchet steps.** Whenever the direction of talk changes, the new sender draws a
//!    fresh X25519 key (a DH step, mixed into the root key) and a KEM item: the side that
//!    received an encapsulation key answers with a ciphertext to it, the other side sends
//!    a fresh encapsulation key. So from Bob's first reply on, every second step also
//!    mixes a fresh ML-KEM shared secret into the root key (`kdf.rs`).
//! 4. **Out of order.** Keys of skipped messages are kept, bounded ([`MAX_SKIP`] per
//!    chain, [`MAX_SKIPPED_KEYS`] in all, oldest evicted; `store.rs`); an exact copy of a
//!    recent message is a [`RatchetError::Duplicate`]; every message carries the hash of
//!    the sender's previous one, so [`Decrypted::order`] reports gaps and late arrivals.
//! 5. **Re-keying.** [`Session::rekey`] mixes the X25519 secret of a re-key QR exchange
//!    into the root key at the next step.
//!
//! Every failed call leaves the session as it was; every secret is erased on drop.

mod error;
mod header;
mod kdf;
mod keys;
mod receive;
mod session;
mod store;

pub use error::RatchetError;
pub use kdf::labels;
pub use keys::QrKey;
pub use session::Session;

use zeroize::Zeroizing;

/// The most keys one message may skip in one chain (§17.2).
pub const MAX_SKIP: u32 = 1000;

/// The most skipped message keys a session stores (§17.2).
pub const MAX_SKIPPED_KEYS: usize = 2000;

/// The most distinct header keys in the skipped-key store (§17.2): with `HKr` and `NHKr`,
/// at most ten header trial decryptions per incoming message.
pub const MAX_SKIPPED_HEADER_KEYS: usize = 8;

/// Skipped keys older than this are forgotten (§17.2): 30 days.
pub const SKIPPED_KEY_MAX_AGE_SECS: u64 = 30 * 24 * 3600;

/// How many accepted messages a session remembers (by hash) to name exact copies
/// duplicates (§17.2).
pub const SEEN_WINDOW: usize = 256;

/// Bytes a message adds to its payload (1317): the largest payload of the 2048-byte class
/// is 731 bytes (699 for the confirmation).
pub const MESSAGE_OVERHEAD: usize = header::OVERHEAD;

/// Which side of the pairing a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// Scanned the invitation and sent the confirmation (Alice).
    Initiator,
    /// Made the invitation (Bob).
    Responder,
}

/// Which side of a re-key starts mixing the secret (see [`Session::rekey`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RekeyRole {
    /// This side mixes the secret into its next sending chain and marks that chain's
    /// headers. Use it on the side that learned the peer's re-key key over the ratchet,
    /// or on both sides after an in-person exchange of two QR codes.
    Lead,
    /// This side waits for the peer's marked chain. Use it on the side that scanned the
    /// peer's re-key QR and still has to send its own public key over the ratchet: a chain
    /// carrying that key must not already depend on it.
    Follow,
}

/// Where a decrypted message stands relative to what was received before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Order {
    /// It follows the last message accepted: nothing was lost or reordered in between.
    InOrder,
    /// Something is missing before it: `skipped` messages of the ratchet's chains have not
    /// arrived (lost, expired, or still on their way), or — when `skipped` is 0 — its
    /// previous-message hash does not name the last message accepted.
    Gap {
        /// Message keys this message skipped (they are kept for late arrivals).
        skipped: u32,
    },
    /// It arrived after later messages and was read with a key skipped earlier.
    Late,
}

/// A decrypted message.
pub struct Decrypted {
    /// The payload (erased on drop).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// Gap and reorder information.
    pub order: Order,
}

impl std::fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypted")
            .field("plaintext_len", &self.plaintext.len())
            .field("order", &self.order)
            .finish()
    }
}
