//! Layer 3: the destination relay re-encrypts every delivery with the queue's secret.
//!
//! At CREATE the recipient sends an X25519 key `recipient_dh`; the relay makes a fresh
//! X25519 key pair for the queue, returns its public half `relay_dh`, forgets the private
//! half and keeps only
//!
//! ```text
//! delivery_key = BLAKE3-derive_key("petrel v1 queue delivery key",
//!                                  X25519(relay, recipient) ‖ recipient_dh ‖ relay_dh)
//! ```
//!
//! Each delivery is `XChaCha20-Poly1305(delivery_key, nonce = msg_id ‖ 0^8,
//! aad = recipient_id, postcard(DeliveryBody))`. Message IDs are 128-bit random values drawn
//! by the relay, so nonces do not repeat under one key. A stored message is sealed once and
//! never re-sealed with different content under the same ID (a redelivery sends the same
//! bytes), so no nonce is ever used for two plaintexts. What enters the relay (the SEND
//! body) and what leaves it share no bytes, so an observer of both sides cannot match them.

use crate::ids::{MsgId, QueueId};
use crate::labels::DELIVERY_KEY;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A queue's delivery key. Zeroized on drop; `Debug` is redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DeliveryKey([u8; 32]);

impl std::fmt::Debug for DeliveryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeliveryKey(..)")
    }
}

/// Why a delivery could not be opened or a key derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The X25519 output was all zeros (a low-order public key).
    #[error("the peer's X25519 key is not contributory")]
    WeakKey,
    /// The ciphertext did not authenticate under this queue's key.
    #[error("delivery did not authenticate")]
    Decrypt,
    /// The plaintext is not a valid `DeliveryBody`.
    #[error("delivery body is malformed")]
    Malformed,
}

/// What a delivery decrypts to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryBody {
    /// When the relay accepted the message, Unix seconds on the relay's clock.
    pub received_at: u64,
    /// What this delivery is.
    pub kind: DeliveryKind,
    /// The SEND body as the sender sent it (empty for a quota marker).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// The kind of a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryKind {
    /// 0 — A message a sender sent.
    Message,
    /// 1 — The queue reached its quota and refused at least one SEND after the previous
    /// delivery; the sender saw `QUOTA`.
    QuotaReached,
}

impl DeliveryKey {
    /// Wraps raw key bytes (as loaded from a relay's store).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes (to store).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Derives the key from one side's X25519 secret and both public keys.
    pub fn derive(
        own_secret: &x25519_dalek::StaticSecret,
        recipient_dh: &[u8; 32],
        relay_dh: &[u8; 32],
        peer_public: &[u8; 32],
    ) -> Result<Self, DeliveryError> {
        let shared = own_secret.diffie_hellman(&x25519_dalek::PublicKey::from(*peer_public));
        if !shared.was_contributory() {
            return Err(DeliveryError::WeakKey);
        }
        let mut hasher = blake3::Hasher::new_derive_key(DELIVERY_KEY);
        hasher.update(shared.as_bytes());
        hasher.update(recipient_dh);
        hasher.update(relay_dh);
        Ok(Self(*hasher.finalize().as_bytes()))
    }

    fn nonce(msg_id: &MsgId) -> XNonce {
        let mut nonce = [0u8; 24];
        nonce[..16].copy_from_slice(&msg_id.0);
        XNonce::from(nonce)
    }

    /// Encrypts a delivery (relay side).
    pub fn seal(&self, recipient_id: &QueueId, msg_id: &MsgId, body: &DeliveryBody) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new(&self.0.into());
        let mut plain = postcard::to_stdvec(body).unwrap_or_default();
        let out = cipher
            .encrypt(
                &Self::nonce(msg_id),
                Payload {
                    msg: &plain,
                    aad: &recipient_id.0,
                },
            )
            .unwrap_or_default();
        plain.zeroize();
        out
    }

    /// Decrypts a delivery (recipient side).
    pub fn open(
        &self,
        recipient_id: &QueueId,
        msg_id: &MsgId,
        ciphertext: &[u8],
    ) -> Result<DeliveryBody, DeliveryError> {
        let cipher = XChaCha20Poly1305::new(&self.0.into());
        let mut plain = cipher
            .decrypt(
                &Self::nonce(msg_id),
                Payload {
                    msg: ciphertext,
                    aad: &recipient_id.0,
                },
            )
            .map_err(|_| DeliveryError::Decrypt)?;
        let body = postcard::from_bytes(&plain).map_err(|_| DeliveryError::Malformed);
        plain.zeroize();
        body
    }
}
