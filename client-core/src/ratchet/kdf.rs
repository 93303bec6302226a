//! The ratchet's key derivations and its one AEAD, exactly as `specs/protocol.md` §12.1 and
//! §15 write them.
//!
//! ```text
//! handshake:  SK ‖ HKA ‖ NHKB = XOF("petrel v1 ratchet init", X25519(E_A, IK_B) ‖ E_A ‖ IK_B, 96)
//!             AD              = DK("petrel v1 ratchet associated data", IK_B ‖ E_A)
//! KDF_RK(rk, dh, ss) = XOF("petrel v1 ratchet root", rk ‖ dh ‖ (ss or 0^32), 96)
//!                    → rk' ‖ ck ‖ nhk
//! KDF_CK(ck):  ck' = DK("petrel v1 ratchet chain key", ck)
//!              key ‖ nonce = XOF("petrel v1 ratchet message key", ck, 56)
//! rekey:       rk' = DK("petrel v1 ratchet rekey", rk ‖ X25519 output)
//! hash:        DK("petrel v1 ratchet message hash", SEND body)
//! safety code: XOF("petrel v1 safety code", IK_B ‖ E_A, 60) → 12 groups of 5 digits
//! ```
//!
//! `DK` is BLAKE3's `derive_key` mode and `XOF` its extendable output; the AEAD is
//! XChaCha20-Poly1305. Every intermediate buffer is erased before it goes out of scope.
//! The labels are the public [`labels`] module.

use super::keys::Secret32;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Domain-separation labels of layer 1 and the pairing (`specs/protocol.md` §16.2).
///
/// Each is a BLAKE3 `derive_key` context used for exactly one derivation, so that no value
/// made for one purpose is ever accepted for another. They follow the federation crate's
/// `labels` module (same `petrel v1 …` prefix, no NUL byte) and live here, next to the
/// derivations that use them, because only clients use them.
pub mod labels {
    /// `SK ‖ HKA ‖ NHKB` from the handshake's DH output (§15).
    pub const RATCHET_INIT: &str = "petrel v1 ratchet init";

    /// The associated data `AD` that every header and body authenticates (§15).
    pub const RATCHET_AD: &str = "petrel v1 ratchet associated data";

    /// `KDF_RK`: the root key, a chain key and the next header key (§12.1).
    pub const RATCHET_ROOT: &str = "petrel v1 ratchet root";

    /// `KDF_CK`: the next chain key (§12.1).
    pub const RATCHET_CHAIN: &str = "petrel v1 ratchet chain key";

    /// `KDF_CK`: a message key and its nonce (§12.1).
    pub const RATCHET_MESSAGE: &str = "petrel v1 ratchet message key";

    /// The hash of the sender's previous message that each message carries (§12.1).
    pub const RATCHET_MESSAGE_HASH: &str = "petrel v1 ratchet message hash";

    /// Mixing a re-key shared secret into the root key (§12.1, re-keying).
    pub const RATCHET_REKEY: &str = "petrel v1 ratchet rekey";

    /// The safety code both sides compare in person (§15).
    pub const SAFETY_CODE: &str = "petrel v1 safety code";

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn labels_are_distinct_and_prefixed() {
            let all = [
                RATCHET_INIT,
                RATCHET_AD,
                RATCHET_ROOT,
                RATCHET_CHAIN,
                RATCHET_MESSAGE,
                RATCHET_MESSAGE_HASH,
                RATCHET_REKEY,
                SAFETY_CODE,
            ];
            for (i, a) in all.iter().enumerate() {
                assert!(a.starts_with("petrel v1 ") && !a.contains('\0'));
                for b in &all[i + 1..] {
                    assert_ne!(a, b);
                }
            }
        }
    }
}

/// One message's key and nonce (the output of `KDF_CK`).
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub(crate) struct MessageKey {
    pub(crate) key: [u8; 32],
    pub(crate) nonce: [u8; 24],
}

impl std::fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageKey(..)")
    }
}

/// The output of `KDF_RK`: the next root key, a chain key and the next header key.
pub(crate) struct RootStep {
    pub(crate) rk: Secret32,
    pub(crate) ck: Secret32,
    pub(crate) nhk: Secret32,
}

/// The connection constants that the handshake derives.
pub(crate) struct Handshake {
    pub(crate) sk: Secret32,
    pub(crate) hka: Secret32,
    pub(crate) nhkb: Secret32,
    pub(crate) ad: [u8; 32],
}

/// `XOF(label, parts…, N)`, with the hasher state erased afterwards.
fn xof<const N: usize>(label: &str, parts: &[&[u8]]) -> Zeroizing<[u8; N]> {
    let mut hasher = blake3::Hasher::new_derive_key(label);
    for part in parts {
        hasher.update(part);
    }
    let mut out = Zeroizing::new([0u8; N]);
    let mut reader = hasher.finalize_xof();
    reader.fill(out.as_mut());
    reader.zeroize();
    hasher.zeroize();
    out
}

fn split32(okm: &[u8], i: usize) -> Secret32 {
    let mut out = Secret32([0; 32]);
    out.0.copy_from_slice(&okm[32 * i..32 * (i + 1)]);
    out
}

/// `SK ‖ HKA ‖ NHKB` and `AD` from the handshake's DH output and both public keys.
pub(crate) fn handshake(dh: &Secret32, initiator: &[u8; 32], responder: &[u8; 32]) -> Handshake {
    let okm = xof::<96>(labels::RATCHET_INIT, &[&dh.0, initiator, responder]);
    let ad = xof::<32>(labels::RATCHET_AD, &[responder, initiator]);
    Handshake {
        sk: split32(&okm[..], 0),
        hka: split32(&okm[..], 1),
        nhkb: split32(&okm[..], 2),
        ad: *ad,
    }
}

/// `KDF_RK(rk, dh, ss)`; a step without a KEM secret feeds 32 zero bytes.
pub(crate) fn kdf_rk(rk: &Secret32, dh: &Secret32, ss: Option<&Secret32>) -> RootStep {
    let zeros = [0u8; 32];
    let ss = ss.map_or(&zeros, |s| &s.0);
    let okm = xof::<96>(labels::RATCHET_ROOT, &[&rk.0, &dh.0, ss]);
    RootStep {
        rk: split32(&okm[..], 0),
        ck: split32(&okm[..], 1),
        nhk: split32(&okm[..], 2),
    }
}

/// `KDF_CK(ck)`: the next chain key and this message's key and nonce.
pub(crate) fn kdf_ck(ck: &Secret32) -> (Secret32, MessageKey) {
    let next = Secret32(blake3::derive_key(labels::RATCHET_CHAIN, &ck.0));
    let okm = xof::<56>(labels::RATCHET_MESSAGE, &[&ck.0]);
    let mut mk = MessageKey {
        key: [0; 32],
        nonce: [0; 24],
    };
    mk.key.copy_from_slice(&okm[..32]);
    mk.nonce.copy_from_slice(&okm[32..]);
    (next, mk)
}

/// The root key after mixing in a re-key shared secret.
pub(crate) fn rekey(rk: &Secret32, shared: &Secret32) -> Secret32 {
    let out = xof::<32>(labels::RATCHET_REKEY, &[&rk.0, &shared.0]);
    Secret32(*out)
}

/// The hash a message carries of the sender's previous one (over the whole SEND body).
pub(crate) fn message_hash(body: &[u8]) -> [u8; 32] {
    blake3::derive_key(labels::RATCHET_MESSAGE_HASH, body)
}

/// The 60-digit safety code: twelve groups of five digits, each the big-endian value of
/// five output bytes modulo 100000 (a bias below 2^-20 per group).
pub(crate) fn safety_code(responder: &[u8; 32], initiator: &[u8; 32]) -> String {
    let okm = xof::<60>(labels::SAFETY_CODE, &[responder, initiator]);
    okm.chunks_exact(5)
        .map(|chunk| {
            let value = chunk.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
            format!("{:05}", value % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `AEAD(key, nonce, aad, plain)`.
pub(crate) fn seal(key: &[u8; 32], nonce: &[u8; 24], aad: &[&[u8]], plain: &[u8]) -> Vec<u8> {
    let aad = aad.concat();
    XChaCha20Poly1305::new(&(*key).into())
        .encrypt(
            &XNonce::from(*nonce),
            Payload {
                msg: plain,
                aad: &aad,
            },
        )
        // Only fails beyond 256 GiB of plaintext; messages are at most 61440 bytes.
        .unwrap_or_default()
}

/// Opens `AEAD(key, nonce, aad, ct)`; `None` if it does not authenticate.
pub(crate) fn open(
    key: &[u8; 32],
    nonce: &[u8; 24],
    aad: &[&[u8]],
    ct: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let aad = aad.concat();
    XChaCha20Poly1305::new(&(*key).into())
        .decrypt(&XNonce::from(*nonce), Payload { msg: ct, aad: &aad })
        .ok()
        .map(Zeroizing::new)
}
