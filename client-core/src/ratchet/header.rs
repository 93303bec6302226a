//! The byte layout of a ratchet message: a fixed 1225-byte header, encrypted under a
//! header key, and a padded body, encrypted under a message key (§12.1).
//!
//! ```text
//! header  = dh [32] ‖ pn u32 BE ‖ n u32 BE ‖ kind [1] ‖ kem [1184]
//!           kind: bit 0 = KEM item (0 encapsulation key, 1 ciphertext ‖ 0^96),
//!                 bit 1 = this chain's root step mixed a re-key secret; other bits zero
//! message = header_nonce [24] ‖ AEAD(HK, header_nonce, AD, header) [1241]
//!         ‖ AEAD(mk.key, mk.nonce, AD ‖ header_nonce ‖ header_ct, pad(prev_hash ‖ payload))
//! ```
//!
//! Sealing and opening are split so the receiver can try header keys cheaply and decide
//! which message key to derive before it touches the body.

use super::error::RatchetError;
use super::kdf::{self, MessageKey};
use super::keys::{KEM_CT_LEN, KEM_EK_LEN};
use petrel_federation::padding::{self, PAD_HEADER_LEN};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// Length of a plaintext header.
pub(crate) const HEADER_LEN: usize = 41 + KEM_EK_LEN;
/// Length of an AEAD tag.
const TAG_LEN: usize = 16;
/// Length of the header nonce.
const NONCE_LEN: usize = 24;
/// Where the body ciphertext starts.
const BODY_OFFSET: usize = NONCE_LEN + HEADER_LEN + TAG_LEN;
/// Bytes a message adds to its payload, padding header included: 1317.
pub(crate) const OVERHEAD: usize = BODY_OFFSET + TAG_LEN + PAD_HEADER_LEN + 32;

const KIND_CIPHERTEXT: u8 = 0x01;
const KIND_REKEY: u8 = 0x02;

/// The KEM item every header of one sending chain carries.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum KemItem {
    /// A fresh ML-KEM-768 encapsulation key (1184 bytes).
    EncapsKey(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A ciphertext to the peer's last encapsulation key (1088 bytes).
    Ciphertext(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// A decoded header.
#[derive(Clone)]
pub(crate) struct Header {
    pub(crate) dh: [u8; 32],
    pub(crate) pn: u32,
    pub(crate) n: u32,
    pub(crate) rekey: bool,
    pub(crate) kem: KemItem,
}

impl Header {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(&self.dh);
        out.extend_from_slice(&self.pn.to_be_bytes());
        out.extend_from_slice(&self.n.to_be_bytes());
        let (kind, item) = match &self.kem {
            KemItem::EncapsKey(ek) => (0, ek),
            KemItem::Ciphertext(ct) => (KIND_CIPHERTEXT, ct),
        };
        out.push(kind | if self.rekey { KIND_REKEY } else { 0 });
        out.extend_from_slice(item);
        out.resize(HEADER_LEN, 0);
        out
    }

    /// Decodes a header, checking the kind bits, a ciphertext's zero filler and `n`. The
    /// encapsulation-key check is left to the step that adopts the key (every other message
    /// of the chain carries the same, already checked, key).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, RatchetError> {
        let bad = RatchetError::MalformedHeader;
        if bytes.len() != HEADER_LEN {
            return Err(bad);
        }
        let (fixed, kem) = bytes.split_at(41);
        let word = |at: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&fixed[at..at + 4]);
            u32::from_be_bytes(w)
        };
        let mut dh = [0u8; 32];
        dh.copy_from_slice(&fixed[..32]);
        let kind = fixed[40];
        if kind & !(KIND_CIPHERTEXT | KIND_REKEY) != 0 {
            return Err(bad);
        }
        let kem = if kind & KIND_CIPHERTEXT == 0 {
            KemItem::EncapsKey(kem.to_vec())
        } else {
            let (ct, filler) = kem.split_at(KEM_CT_LEN);
            if filler.iter().any(|&b| b != 0) {
                return Err(bad);
            }
            KemItem::Ciphertext(ct.to_vec())
        };
        // The largest `n` ever sent is 2^32 − 2, so that `Nr = n + 1` always fits.
        let n = word(36);
        if n == u32::MAX {
            return Err(bad);
        }
        Ok(Self {
            dh,
            pn: word(32),
            n,
            rekey: kind & KIND_REKEY != 0,
            kem,
        })
    }
}

/// Everything needed to seal one message.
pub(crate) struct Outgoing<'a> {
    pub(crate) header_key: &'a [u8; 32],
    pub(crate) ad: &'a [u8; 32],
    pub(crate) header_nonce: [u8; 24],
    pub(crate) header: &'a Header,
    pub(crate) mk: &'a MessageKey,
    pub(crate) prev_hash: &'a [u8; 32],
    pub(crate) payload: &'a [u8],
    /// Total length of the ratchet message.
    pub(crate) len: usize,
}

impl Outgoing<'_> {
    /// The message bytes; fails only if the payload does not fit `len`.
    pub(crate) fn seal(&self) -> Result<Vec<u8>, RatchetError> {
        let too_long = RatchetError::TooLong {
            len: self.payload.len(),
            max: self.len.saturating_sub(OVERHEAD),
        };
        let padded_len = self
            .len
            .checked_sub(BODY_OFFSET + TAG_LEN)
            .ok_or(too_long.clone())?;
        let mut plain = Zeroizing::new(Vec::with_capacity(32 + self.payload.len()));
        plain.extend_from_slice(self.prev_hash);
        plain.extend_from_slice(self.payload);
        let mut padded = padding::pad(&plain, padded_len).map_err(|_| too_long)?;
        let header_ct = kdf::seal(
            self.header_key,
            &self.header_nonce,
            &[self.ad],
            &self.header.encode(),
        );
        let body_ct = kdf::seal(
            &self.mk.key,
            &self.mk.nonce,
            &[self.ad, &self.header_nonce, &header_ct],
            &padded,
        );
        padded.zeroize();
        let mut out = Vec::with_capacity(self.len);
        out.extend_from_slice(&self.header_nonce);
        out.extend_from_slice(&header_ct);
        out.extend_from_slice(&body_ct);
        Ok(out)
    }
}

/// Tries to open a message's header with `header_key`. `Ok(None)`: the key does not fit.
pub(crate) fn open_header(
    header_key: &[u8; 32],
    ad: &[u8; 32],
    message: &[u8],
) -> Result<Option<Header>, RatchetError> {
    let (Some(nonce), Some(header_ct)) = (
        message.first_chunk::<NONCE_LEN>(),
        message.get(NONCE_LEN..BODY_OFFSET),
    ) else {
        return Ok(None);
    };
    match kdf::open(header_key, nonce, &[ad], header_ct) {
        Some(plain) => Header::decode(&plain).map(Some),
        None => Ok(None),
    }
}

/// Opens and unpads the body: `(prev_hash, payload)`.
pub(crate) fn open_body(
    mk: &MessageKey,
    ad: &[u8; 32],
    message: &[u8],
) -> Result<([u8; 32], Zeroizing<Vec<u8>>), RatchetError> {
    let (head, body_ct) = message.split_at(BODY_OFFSET.min(message.len()));
    let (nonce, header_ct) = head.split_at(NONCE_LEN.min(head.len()));
    let padded = kdf::open(&mk.key, &mk.nonce, &[ad, nonce, header_ct], body_ct)
        .ok_or(RatchetError::BodyAuth)?;
    let plain = padding::unpad(&padded).map_err(|_| RatchetError::MalformedBody)?;
    let (prev, payload) = plain
        .split_first_chunk::<32>()
        .ok_or(RatchetError::MalformedBody)?;
    Ok((*prev, Zeroizing::new(payload.to_vec())))
}
