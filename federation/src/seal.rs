//! Layer 2: the envelope a sender seals to the destination relay, so that the forwarding
//! relay learns neither the queue nor anything inside.
//!
//! The sender draws an ephemeral X25519 key `e` and computes, with the destination relay's
//! sealing key `S` (published in its [`SignedRelayInfo`](crate::peer::SignedRelayInfo)):
//!
//! ```text
//! shared          = X25519(e, S)                        (all-zero output refused)
//! request key ‖ n = BLAKE3-XOF(derive_key "petrel v1 sealed request",  shared ‖ e_pub ‖ S)[0..56]
//! response key ‖ n= BLAKE3-XOF(derive_key "petrel v1 sealed response", shared ‖ e_pub ‖ S)[0..56]
//! envelope        = e_pub ‖ XChaCha20-Poly1305(request key, n, aad = "",
//!                                  pad(postcard(ForwardedRequest), body length + 256))
//! response        = XChaCha20-Poly1305(response key, n', aad = "", pad(postcard(Response), 64))
//! ```
//!
//! `pad` is the size-class padding of [`crate::padding`]. Padding the request to the SEND
//! body's length plus a constant makes signed and unsigned SENDs the same length, so the
//! forwarding relay learns only the size class; padding the response hides whether the
//! destination answered `OK` or an error.
//!
//! Each key is used for exactly one message, so the derived nonces never repeat. The SEND
//! inside is signed with `e_pub` as its binding (see [`crate::auth`]), and the destination
//! records `derive_key("petrel v1 sealed envelope replay tag", e_pub)` with the stored
//! message, until the envelope is too old to be accepted
//! ([`FORWARD_MAX_AGE_SECS`](crate::limits::FORWARD_MAX_AGE_SECS)): an envelope whose tag
//! is there is answered with the same sealed `OK` and not stored again, so retries are
//! idempotent.

use crate::auth::Auth;
use crate::client::{Command, Response};
use crate::labels::{SEAL_REPLAY_TAG, SEAL_REQUEST, SEAL_RESPONSE};
use crate::padding::{PAD_HEADER_LEN, pad, unpad};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A sealed forwarding request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedEnvelope {
    /// The sender's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// The AEAD ciphertext of a [`ForwardedRequest`].
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// The destination relay's sealed answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedResponse {
    /// The AEAD ciphertext of a [`Response`].
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// What a sealed envelope holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedRequest {
    /// The sender's clock when sealing, Unix seconds; the destination refuses envelopes more
    /// than `FORWARD_MAX_SKEW_SECS` away from its own clock.
    pub sent_at: u64,
    /// The SEND's authenticator (bound to the envelope's ephemeral key), once the queue is
    /// secured.
    pub auth: Option<Auth>,
    /// The command; only [`Command::Send`] is allowed.
    pub command: Command,
}

/// Why sealing or opening failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The X25519 output was all zeros (a low-order key).
    #[error("the X25519 key is not contributory")]
    WeakKey,
    /// The ciphertext did not authenticate.
    #[error("sealed data did not authenticate")]
    Decrypt,
    /// The plaintext is not a valid message.
    #[error("sealed plaintext is malformed")]
    Malformed,
}

/// Bytes the padded request plaintext has beyond its SEND body: room for `sent_at`, the
/// authenticator, the command tag, the sender ID and the body's length prefix.
pub const REQUEST_PAD_OVERHEAD: usize = 256;

/// Length of a padded response plaintext.
pub const RESPONSE_PAD_LEN: usize = 64;

/// The padded plaintext length for a request: the SEND body plus [`REQUEST_PAD_OVERHEAD`],
/// or just enough for anything else (which the destination refuses anyway).
fn request_pad_len(request: &ForwardedRequest, encoded: usize) -> usize {
    match &request.command {
        Command::Send { body, .. } => {
            (body.len() + REQUEST_PAD_OVERHEAD).max(encoded + PAD_HEADER_LEN)
        }
        _ => encoded + PAD_HEADER_LEN,
    }
}

#[derive(Zeroize, ZeroizeOnDrop)]
struct KeyNonce {
    key: [u8; 32],
    nonce: [u8; 24],
}

fn derive(context: &str, shared: &[u8; 32], ephemeral: &[u8; 32], sealing: &[u8; 32]) -> KeyNonce {
    let mut hasher = blake3::Hasher::new_derive_key(context);
    hasher.update(shared);
    hasher.update(ephemeral);
    hasher.update(sealing);
    let mut okm = [0u8; 56];
    hasher.finalize_xof().fill(&mut okm);
    let mut out = KeyNonce {
        key: [0; 32],
        nonce: [0; 24],
    };
    out.key.copy_from_slice(&okm[..32]);
    out.nonce.copy_from_slice(&okm[32..]);
    okm.zeroize();
    out
}

fn aead_seal(kn: &KeyNonce, plain: &[u8]) -> Vec<u8> {
    XChaCha20Poly1305::new(&kn.key.into())
        .encrypt(
            &XNonce::from(kn.nonce),
            Payload {
                msg: plain,
                aad: &[],
            },
        )
        // Only fails for plaintexts beyond 256 GiB; frames are capped far below that.
        .unwrap_or_default()
}

fn aead_open(kn: &KeyNonce, ciphertext: &[u8]) -> Result<Vec<u8>, SealError> {
    XChaCha20Poly1305::new(&kn.key.into())
        .decrypt(
            &XNonce::from(kn.nonce),
            Payload {
                msg: ciphertext,
                aad: &[],
            },
        )
        .map_err(|_| SealError::Decrypt)
}

/// Decodes a value that must fill `bytes` exactly.
fn decode_exact<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, SealError> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        _ => Err(SealError::Malformed),
    }
}

/// The replay-cache tag of an envelope.
pub fn replay_tag(envelope: &SealedEnvelope) -> [u8; 32] {
    blake3::derive_key(SEAL_REPLAY_TAG, &envelope.ephemeral)
}

/// The sender's ephemeral key for one envelope. Sign the SEND with [`Self::public`] as the
/// binding, then [`Self::seal`].
pub struct EnvelopeKey {
    secret: StaticSecret,
    public: [u8; 32],
}

impl std::fmt::Debug for EnvelopeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvelopeKey").finish_non_exhaustive()
    }
}

impl EnvelopeKey {
    /// A fresh ephemeral key.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::from_secret(StaticSecret::random_from_rng(rng))
    }

    /// From a given secret (for test vectors).
    pub fn from_secret(secret: StaticSecret) -> Self {
        let public = PublicKey::from(&secret).to_bytes();
        Self { secret, public }
    }

    /// The public key: the auth binding for the SEND inside.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// Seals `request` to the relay whose sealing key is `sealing_key`.
    pub fn seal(
        self,
        sealing_key: &[u8; 32],
        request: &ForwardedRequest,
    ) -> Result<(SealedEnvelope, ResponseOpener), SealError> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*sealing_key));
        if !shared.was_contributory() {
            return Err(SealError::WeakKey);
        }
        let req = derive(SEAL_REQUEST, shared.as_bytes(), &self.public, sealing_key);
        let resp = derive(SEAL_RESPONSE, shared.as_bytes(), &self.public, sealing_key);
        let mut encoded = postcard::to_stdvec(request).map_err(|_| SealError::Malformed)?;
        let mut plain = pad(&encoded, request_pad_len(request, encoded.len()))
            .map_err(|_| SealError::Malformed)?;
        let ciphertext = aead_seal(&req, &plain);
        encoded.zeroize();
        plain.zeroize();
        Ok((
            SealedEnvelope {
                ephemeral: self.public,
                ciphertext,
            },
            ResponseOpener(resp),
        ))
    }
}

/// Held by the sender to open the destination's answer.
pub struct ResponseOpener(KeyNonce);

impl std::fmt::Debug for ResponseOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseOpener(..)")
    }
}

impl ResponseOpener {
    /// Opens the sealed response.
    pub fn open(&self, sealed: &SealedResponse) -> Result<Response, SealError> {
        let mut plain = aead_open(&self.0, &sealed.ciphertext)?;
        let response = unpad(&plain)
            .map_err(|_| SealError::Malformed)
            .and_then(decode_exact);
        plain.zeroize();
        response
    }

    /// The raw key and nonce, for storing a pending forward in the client's encrypted store.
    pub fn to_bytes(&self) -> [u8; 56] {
        let mut out = [0u8; 56];
        out[..32].copy_from_slice(&self.0.key);
        out[32..].copy_from_slice(&self.0.nonce);
        out
    }

    /// Restores an opener saved with [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8; 56]) -> Self {
        let mut kn = KeyNonce {
            key: [0; 32],
            nonce: [0; 24],
        };
        kn.key.copy_from_slice(&bytes[..32]);
        kn.nonce.copy_from_slice(&bytes[32..]);
        Self(kn)
    }
}

/// Held by the destination relay to seal its answer.
pub struct ResponseSealer(KeyNonce);

impl std::fmt::Debug for ResponseSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseSealer(..)")
    }
}

impl ResponseSealer {
    /// Seals the answer.
    pub fn seal(&self, response: &Response) -> SealedResponse {
        let encoded = postcard::to_stdvec(response).unwrap_or_default();
        let target = RESPONSE_PAD_LEN.max(encoded.len() + PAD_HEADER_LEN);
        let plain = pad(&encoded, target).unwrap_or(encoded);
        SealedResponse {
            ciphertext: aead_seal(&self.0, &plain),
        }
    }
}

/// Opens an envelope with the relay's sealing secret.
pub fn open_request(
    sealing_secret: &StaticSecret,
    envelope: &SealedEnvelope,
) -> Result<(ForwardedRequest, ResponseSealer), SealError> {
    let sealing_public = PublicKey::from(sealing_secret).to_bytes();
    let shared = sealing_secret.diffie_hellman(&PublicKey::from(envelope.ephemeral));
    if !shared.was_contributory() {
        return Err(SealError::WeakKey);
    }
    let req = derive(
        SEAL_REQUEST,
        shared.as_bytes(),
        &envelope.ephemeral,
        &sealing_public,
    );
    let resp = derive(
        SEAL_RESPONSE,
        shared.as_bytes(),
        &envelope.ephemeral,
        &sealing_public,
    );
    let mut plain = aead_open(&req, &envelope.ciphertext)?;
    let request = unpad(&plain)
        .map_err(|_| SealError::Malformed)
        .and_then(decode_exact);
    plain.zeroize();
    Ok((request?, ResponseSealer(resp)))
}
