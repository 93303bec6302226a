//! The two payloads a Petrel QR code or link carries, and their binary form.
//!
//! Every payload travels in the same frame (`specs/qr.md` §"Frame"):
//!
//! ```text
//! frame    = tag (1 byte) ‖ body_len (LEB128, 1–2 bytes) ‖ body ‖ checksum (4 bytes)
//! tag      = kind << 4 | version        kind 1 = invitation, kind 2 = relay address
//! checksum = BLAKE3 derive_key(CHECKSUM_CONTEXT, tag ‖ body_len ‖ body)[..4]
//! body     = postcard of the payload's fields
//! ```
//!
//! The frame never changes between versions, so a reader can always tell the three cases
//! apart: too short (`Truncated`), damaged (`ChecksumMismatch`) and intact but newer
//! (`UnsupportedVersion`). The checksum catches damage and typing mistakes; it is not a
//! signature. Out-of-band transfer is what makes an invitation authentic.
//!
//! Decoding is strict: the body must re-encode to exactly the bytes read, so every
//! payload has one binary form (and one link).

use crate::error::{EncodeError, PayloadError};
use petrel_federation::{QueueId, RelayAddress};
use serde::{Deserialize, Serialize};
use std::fmt;

/// BLAKE3 `derive_key` context of the frame checksum.
pub const CHECKSUM_CONTEXT: &str = petrel_federation::labels::QR_CHECKSUM;

/// Bytes of checksum at the end of every frame.
pub const CHECKSUM_LEN: usize = 4;

/// Largest body a frame may declare; refused before anything is allocated. A relay
/// address with the maximum 8 endpoints of 253-byte host names needs about 2.1 KiB.
pub const MAX_BODY_LEN: usize = 4096;

/// Current version of the invitation format (the tag's low nibble).
pub const INVITATION_VERSION: u8 = 1;

/// Current version of the relay address format (the tag's low nibble).
pub const RELAY_ADDRESS_VERSION: u8 = 1;

const KIND_INVITATION: u8 = 1;
const KIND_RELAY_ADDRESS: u8 = 2;

/// What an invitation is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Purpose {
    /// A new contact: the scanner creates a connection. Wire value 0.
    Connect,
    /// An existing contact re-keys: the scanner mixes the new key into the connection's
    /// root key. Wire value 1.
    Rekey,
}

/// A one-time invitation: where to send the first message, and the key to encrypt it to.
///
/// Whoever holds an invitation can answer it once, so its `Debug` output names neither
/// the queue nor the key.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Invitation {
    /// What the invitation is for.
    pub purpose: Purpose,
    /// The relay that holds the inviter's queue.
    pub relay: RelayAddress,
    /// The queue's sender ID: where the scanner sends its confirmation.
    pub sender_id: QueueId,
    /// The inviter's one-time X25519 invitation public key.
    pub dh_key: [u8; 32],
}

impl fmt::Debug for Invitation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invitation")
            .field("purpose", &self.purpose)
            .field("relay", &self.relay)
            .field("sender_id", &self.sender_id)
            .field("dh_key", &"..")
            .finish()
    }
}

/// What a Petrel QR code or link carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Payload {
    /// A one-time invitation (kind 1).
    Invitation(Invitation),
    /// A relay address to pin (kind 2).
    RelayAddress(RelayAddress),
}

impl Payload {
    /// The tag byte: kind in the high nibble, format version in the low nibble.
    pub fn tag(&self) -> u8 {
        match self {
            Payload::Invitation(_) => KIND_INVITATION << 4 | INVITATION_VERSION,
            Payload::RelayAddress(_) => KIND_RELAY_ADDRESS << 4 | RELAY_ADDRESS_VERSION,
        }
    }

    /// The binary form: the whole frame, checksum included.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let body = self.body()?;
        if body.len() > MAX_BODY_LEN {
            return Err(EncodeError::Serialize(format!(
                "body of {} bytes exceeds {MAX_BODY_LEN}",
                body.len()
            )));
        }
        let mut out = Vec::with_capacity(body.len() + 3 + CHECKSUM_LEN);
        out.push(self.tag());
        write_len(&mut out, body.len());
        out.extend_from_slice(&body);
        let check = checksum(&out);
        out.extend_from_slice(&check);
        Ok(out)
    }

    /// Decodes a frame. The order of checks is the specification's: length, checksum,
    /// kind and version, then the body.
    pub fn from_bytes(bytes: &[u8]) -> Result<Payload, PayloadError> {
        let (&tag, rest) = bytes.split_first().ok_or(PayloadError::Truncated {
            expected: 2 + CHECKSUM_LEN,
            actual: 0,
        })?;
        let (body_len, len_bytes) = read_len(rest, bytes.len())?;
        let header = 1 + len_bytes;
        let expected = header + body_len + CHECKSUM_LEN;
        if bytes.len() < expected {
            return Err(PayloadError::Truncated {
                expected,
                actual: bytes.len(),
            });
        }
        let (covered, tail) = bytes.split_at(header + body_len);
        if tail.get(..CHECKSUM_LEN) != Some(&checksum(covered)[..]) {
            return Err(PayloadError::ChecksumMismatch);
        }
        if tail.len() > CHECKSUM_LEN {
            return Err(PayloadError::Malformed(format!(
                "{} bytes after the checksum",
                tail.len() - CHECKSUM_LEN
            )));
        }
        let body = &covered[header..];
        let payload = match (tag >> 4, tag & 0x0f) {
            (KIND_INVITATION, INVITATION_VERSION) => {
                let invitation: Invitation = decode_body(body)?;
                if invitation.dh_key == [0u8; 32] {
                    return Err(PayloadError::Malformed(
                        "the invitation key is all zero".into(),
                    ));
                }
                Payload::Invitation(invitation)
            }
            (KIND_RELAY_ADDRESS, RELAY_ADDRESS_VERSION) => {
                Payload::RelayAddress(decode_body(body)?)
            }
            (kind, version) => return Err(PayloadError::UnsupportedVersion { kind, version }),
        };
        // One payload, one encoding: refuse bodies that decode but would not be written
        // this way (an overlong varint, say), so links and codes can be compared as bytes.
        if payload
            .body()
            .map_err(|e| PayloadError::Malformed(e.to_string()))?
            != body
        {
            return Err(PayloadError::Malformed(
                "the body is not canonically encoded".into(),
            ));
        }
        Ok(payload)
    }

    fn body(&self) -> Result<Vec<u8>, EncodeError> {
        let body = match self {
            Payload::Invitation(invitation) => postcard::to_allocvec(invitation),
            Payload::RelayAddress(address) => postcard::to_allocvec(address),
        };
        body.map_err(|e| EncodeError::Serialize(e.to_string()))
    }
}

fn decode_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, PayloadError> {
    let (value, rest) = postcard::take_from_bytes::<T>(body)
        .map_err(|e| PayloadError::Malformed(format!("the body does not decode: {e}")))?;
    if !rest.is_empty() {
        return Err(PayloadError::Malformed(format!(
            "{} stray bytes in the body",
            rest.len()
        )));
    }
    Ok(value)
}

/// The frame checksum of `covered` (tag, length and body).
pub fn checksum(covered: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut hasher = blake3::Hasher::new_derive_key(CHECKSUM_CONTEXT);
    hasher.update(covered);
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..CHECKSUM_LEN]);
    out
}

/// Writes `len` (at most [`MAX_BODY_LEN`]) as unsigned LEB128.
fn write_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        out.push((len & 0x7f) as u8 | 0x80);
        out.push((len >> 7) as u8);
    }
}

/// Reads the body length: LEB128 of at most two bytes, minimal, at most [`MAX_BODY_LEN`].
/// Returns the length and how many bytes it took.
fn read_len(rest: &[u8], total: usize) -> Result<(usize, usize), PayloadError> {
    let short = || PayloadError::Truncated {
        expected: 2 + CHECKSUM_LEN,
        actual: total,
    };
    let first = *rest.first().ok_or_else(short)?;
    if first < 0x80 {
        return Ok((usize::from(first), 1));
    }
    let second = *rest.get(1).ok_or_else(short)?;
    if second == 0 || second >= 0x80 {
        return Err(PayloadError::Malformed("bad body length field".into()));
    }
    let len = usize::from(first & 0x7f) | usize::from(second) << 7;
    if len > MAX_BODY_LEN {
        return Err(PayloadError::Malformed(format!(
            "declared body length {len} exceeds {MAX_BODY_LEN}"
        )));
    }
    Ok((len, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_field_round_trips_and_is_minimal() {
        for len in [0usize, 1, 127, 128, 300, MAX_BODY_LEN] {
            let mut out = Vec::new();
            write_len(&mut out, len);
            assert_eq!(read_len(&out, 99).unwrap(), (len, out.len()));
        }
        // Overlong (128 written as 0x80 0x00) and oversized lengths are refused.
        assert!(matches!(
            read_len(&[0x80, 0x00], 99),
            Err(PayloadError::Malformed(_))
        ));
        assert!(matches!(
            read_len(&[0xff, 0x7f], 99),
            Err(PayloadError::Malformed(_))
        ));
        assert!(matches!(
            read_len(&[0x80], 99),
            Err(PayloadError::Truncated { .. })
        ));
    }

    #[test]
    fn empty_and_tiny_inputs_are_truncated() {
        for bytes in [
            &[][..],
            &[0x11],
            &[0x11, 0x05],
            &[0x11, 0x05, 1, 2, 3, 4, 5],
        ] {
            assert!(
                matches!(
                    Payload::from_bytes(bytes),
                    Err(PayloadError::Truncated { .. })
                ),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn checksum_is_domain_separated() {
        let plain = blake3::hash(b"abc");
        assert_ne!(checksum(b"abc")[..], plain.as_bytes()[..CHECKSUM_LEN]);
    }
}
