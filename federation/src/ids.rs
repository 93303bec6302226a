//! Identifiers and public keys that travel on the wire.
//!
//! Queue and message IDs are random and carry no structure. Their `Debug` output is
//! redacted because logs must never name a queue; call `to_hex` where a test or a
//! diagnostic really needs the value.

use serde::{Deserialize, Serialize};
use std::fmt;
use subtle::ConstantTimeEq;

macro_rules! byte_id {
    ($(#[$doc:meta])* $name:ident, $len:expr, $redact:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// A fresh random value.
            pub fn random<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
                let mut bytes = [0u8; $len];
                rng.fill_bytes(&mut bytes);
                Self(bytes)
            }

            /// The bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lower-case hex, for tests and explicit diagnostics only.
            pub fn to_hex(&self) -> String {
                data_encoding::HEXLOWER.encode(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if $redact {
                    write!(f, concat!(stringify!($name), "(..)"))
                } else {
                    write!(f, concat!(stringify!($name), "({})"), self.to_hex())
                }
            }
        }
    };
}

byte_id!(
    /// A queue's recipient ID or sender ID: 16 random bytes chosen by the relay. The two
    /// IDs of one queue are unrelated, so a sender cannot find the recipient's side.
    QueueId, 16, true
);
byte_id!(
    /// A message ID: 16 random bytes chosen by the relay when it stores a message.
    MsgId, 16, true
);
byte_id!(
    /// A transport session's ID: 32 random bytes the relay sends in its hello. Command
    /// signatures cover it, so a signed command cannot be replayed on another session.
    SessionId, 32, true
);
byte_id!(
    /// A relay's identity: its Ed25519 public key. The libp2p peer ID is derived from it,
    /// so the Noise handshake proves the peer holds it.
    RelayKey, 32, false
);

impl RelayKey {
    /// The key as an Ed25519 verifying key, if the bytes are a valid point.
    pub fn verifying_key(&self) -> Option<ed25519_dalek::VerifyingKey> {
        ed25519_dalek::VerifyingKey::from_bytes(&self.0).ok()
    }
}

/// The BLAKE3 hash a relay stores in place of a queue public key
/// (`derive_key("petrel v1 queue key hash", key)`). Compared in constant time.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Hashes a queue public key.
    pub fn of(public_key: &[u8; 32]) -> Self {
        Self(blake3::derive_key(
            crate::labels::QUEUE_KEY_HASH,
            public_key,
        ))
    }

    /// Hashes a relay key for a queue's forwarder list (RESTRICT).
    pub fn of_forwarder(relay: &RelayKey) -> Self {
        Self(blake3::derive_key(
            crate::labels::FORWARDER_KEY_HASH,
            &relay.0,
        ))
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(..)")
    }
}

impl PartialEq for KeyHash {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}
impl Eq for KeyHash {}
