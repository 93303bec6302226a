//! The Petrel client core: everything a Petrel client does, without I/O of its own.
//!
//! * [`ratchet`] — layer 1, the end-to-end double ratchet with header encryption and an
//!   ML-KEM-768 hybrid (`specs/protocol.md` §12.1): sessions created by the pairing
//!   handshake, messages padded to a size class, skipped keys, duplicate and gap detection,
//!   re-keying and the safety code.
//! * [`profile`] — profiles and their pinned relays.
//! * [`store`] — the encrypted redb store: Argon2id-wrapped data key, every record sealed
//!   with XChaCha20-Poly1305 under a keyed-hash index.
//!
//! Randomness and time are passed in, so that every test replays exactly.

#![warn(missing_docs)]

pub mod profile;
pub mod ratchet;
pub mod store;
