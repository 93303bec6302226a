//! Command authentication: an Ed25519 signature by a queue key, bound to the session.
//!
//! The signed message is
//!
//! ```text
//! "petrel v1 command auth\0" ‖ binding (32 bytes) ‖ postcard(command)
//! ```
//!
//! where `binding` is the [`SessionId`](crate::SessionId) the relay chose in its hello
//! for a direct session, or the ephemeral public key of the sealed envelope for a forwarded
//! SEND. A signature is therefore useless on any other session or in any other envelope.
//!
//! The relay stores only [`KeyHash`](crate::KeyHash)es, so a command carries its public key;
//! the relay hashes it, compares the hash in constant time and then verifies. When the queue
//! does not exist the relay still hashes, compares and verifies against a fixed dummy key, so
//! "no such queue" and "wrong key" cost the same and answer the same `AUTH`.

use crate::labels::COMMAND_AUTH;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A 64-byte Ed25519 signature (raw on the wire, no length prefix).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "crate::serde_util")] pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signature(..)")
    }
}

/// A command's authenticator: the public key (whose hash the relay stored) and a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// The Ed25519 public key.
    pub key: [u8; 32],
    /// The signature over the command, bound to the session.
    pub sig: Signature,
}

/// Why an authenticator was refused. Deliberately carries no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct AuthError;

/// The bytes a command signature covers.
pub fn signed_bytes<T: Serialize>(binding: &[u8; 32], command: &T) -> Result<Vec<u8>, AuthError> {
    let mut msg = Vec::with_capacity(COMMAND_AUTH.len() + 32 + 128);
    msg.extend_from_slice(COMMAND_AUTH);
    msg.extend_from_slice(binding);
    postcard::to_extend(command, msg).map_err(|_| AuthError)
}

impl Auth {
    /// Signs `command` with `key`, bound to `binding`.
    pub fn sign<T: Serialize>(
        key: &SigningKey,
        binding: &[u8; 32],
        command: &T,
    ) -> Result<Self, AuthError> {
        let msg = signed_bytes(binding, command)?;
        Ok(Self {
            key: key.verifying_key().to_bytes(),
            sig: Signature(key.sign(&msg).to_bytes()),
        })
    }

    /// Verifies the signature with the key it carries (strict Ed25519: no small-order keys,
    /// no malleable signatures).
    pub fn verify<T: Serialize>(&self, binding: &[u8; 32], command: &T) -> Result<(), AuthError> {
        let msg = signed_bytes(binding, command)?;
        verify_with(&self.key, &self.sig, &msg)
    }
}

/// Strict Ed25519 verification of `msg` under raw key bytes.
pub fn verify_with(key: &[u8; 32], sig: &Signature, msg: &[u8]) -> Result<(), AuthError> {
    let key = VerifyingKey::from_bytes(key).map_err(|_| AuthError)?;
    let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
    key.verify_strict(msg, &sig).map_err(|_| AuthError)
}

/// The key a relay verifies against when a queue does not exist, so that the missing
/// queue costs as much as a wrong key. Drawn at random once per process: nobody knows its
/// secret, and it never authorises anything because no queue stores its hash.
pub fn dummy_verifying_key() -> &'static [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        SigningKey::generate(&mut rand::rng())
            .verifying_key()
            .to_bytes()
    })
}
