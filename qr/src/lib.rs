//! Petrel's pairing codes: invitations and relay addresses as QR codes and links.
//!
//! Pairing is where a connection's security is decided: the QR code carries the
//! connection-specific key out of band, so the relay network never gets a chance to
//! substitute it. This crate turns the two payloads into something a phone can scan and a
//! person can paste, and back, without ever panicking on what it is given.
//!
//! The flow, and where each piece lives:
//!
//! * [`payload`] — [`Invitation`] and [`RelayAddress`](petrel_federation::RelayAddress)
//!   payloads in a compact binary frame: tag (kind and version), length, postcard body,
//!   4-byte BLAKE3 checksum.
//! * [`link`] — the frame as a `PETREL:` link in upper-case base32, which is also exactly
//!   the text the QR code holds (QR alphanumeric mode, so it stays small).
//! * [`render`] — the link as a QR code at error-correction level M, version 10 at most:
//!   in the terminal (half blocks, quiet zone, explicit colours), as PNG and as SVG.
//! * [`scan`] — PNG or JPEG bytes back to a payload: size limits checked before decoding,
//!   several detection passes for photos, typed errors for every way it can fail.
//!
//! Every decoded payload comes back as [`Decoded`], which says whether it was scanned
//! from an image or pasted as text ([`Provenance`]); the client records a pasted
//! invitation at a lower trust level. The byte-exact format is `specs/qr.md`, with
//! known-answer vectors in `specs/vectors/qr/`.
//!
//! ```
//! # fn demo(invitation: petrel_qr::Invitation) -> Result<(), Box<dyn std::error::Error>> {
//! use petrel_qr::{Payload, Provenance, QrCode};
//! let payload = Payload::Invitation(invitation);
//! let png = QrCode::new(&payload)?.to_png(8)?;
//! let decoded = petrel_qr::scan_image(&png)?;
//! assert_eq!(decoded.payload, payload);
//! assert_eq!(decoded.provenance, Provenance::Scanned);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod error;
pub mod link;
pub mod payload;
mod prep;
pub mod render;
pub mod scan;

pub use error::{EncodeError, PayloadError, ScanError};
pub use link::{LINK_SCHEME, parse_pasted, parse_text};
pub use payload::{Invitation, Payload, Purpose};
pub use render::{EC_LEVEL_NAME, MAX_QR_VERSION, QUIET_ZONE, QrCode, TerminalStyle};
pub use scan::{ImageLimits, scan_image, scan_image_with_limits, scan_luma};

/// Most characters of foreign content an error message repeats.
pub const PREVIEW_CHARS: usize = 80;

/// Where a decoded payload came from.
///
/// A code scanned from a screen in front of you is strong evidence that the key belongs
/// to the person showing it; a pasted link may have passed through any number of hands
/// and apps. The client stores this next to the contact and shows the lower trust of a
/// link until the safety code has been compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provenance {
    /// Read from a QR code in an image or a camera frame.
    Scanned,
    /// Read from text: pasted, typed, or given on a command line.
    Pasted,
}

/// A payload together with how it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// What the code or link carries.
    pub payload: Payload,
    /// Whether it was scanned or pasted.
    pub provenance: Provenance,
}

impl Decoded {
    /// The invitation, if that is what was decoded.
    pub fn invitation(&self) -> Option<&Invitation> {
        match &self.payload {
            Payload::Invitation(invitation) => Some(invitation),
            Payload::RelayAddress(_) => None,
        }
    }

    /// The relay address, if that is what was decoded.
    pub fn relay_address(&self) -> Option<&petrel_federation::RelayAddress> {
        match &self.payload {
            Payload::RelayAddress(address) => Some(address),
            Payload::Invitation(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use petrel_federation::{QueueId, RelayAddress, RelayKey};

    fn relay() -> RelayAddress {
        // The Ed25519 base point: a valid key that needs no signing crate here.
        let mut key = [0x66u8; 32];
        key[0] = 0x58;
        let endpoints = vec!["203.0.113.5:5223".parse().unwrap()];
        RelayAddress::new(RelayKey(key), endpoints).unwrap()
    }

    #[test]
    fn decoded_accessors_pick_the_right_payload() {
        let invitation = Invitation {
            purpose: Purpose::Rekey,
            relay: relay(),
            sender_id: QueueId([1; 16]),
            dh_key: [2; 32],
        };
        let decoded = Decoded {
            payload: Payload::Invitation(invitation.clone()),
            provenance: Provenance::Pasted,
        };
        assert_eq!(decoded.invitation(), Some(&invitation));
        assert_eq!(decoded.relay_address(), None);
        let decoded = Decoded {
            payload: Payload::RelayAddress(relay()),
            provenance: Provenance::Scanned,
        };
        assert_eq!(decoded.relay_address(), Some(&relay()));
        assert!(decoded.invitation().is_none());
    }

    #[test]
    fn invitation_debug_names_neither_queue_nor_key() {
        let invitation = Invitation {
            purpose: Purpose::Connect,
            relay: relay(),
            sender_id: QueueId([0xab; 16]),
            dh_key: [0xcd; 32],
        };
        let debug = format!("{invitation:?}");
        assert!(
            !debug.contains("ab, ") && !debug.contains("abab"),
            "{debug}"
        );
        assert!(!debug.contains("205") && !debug.contains("cdcd"), "{debug}");
        assert!(debug.contains("Connect"));
    }
}
