//! The Petrel client core: everything a Petrel client does, without I/O of its own.
//!
//! * [`ratchet`] — layer 1, the end-to-end double ratchet with header encryption and an
//!   ML-KEM-768 hybrid (`specs/protocol.md` §12.1): sessions created by the pairing
//!   handshake, messages padded to a size class, skipped keys, duplicate and gap detection,
//!   re-keying and the safety code.
//! * [`profile`] — profiles and their pinned relays.
//! * [`engine`] — the sans-IO client engine of one profile: invitations, pairing through
//!   relays, messages, receipts, the outbox, queue rotation and re-keying, as inputs
//!   (relay frames, commands, `now`, randomness) and effects (frames, store writes,
//!   events, the next timer); [`contact`] its records, [`payload`] what the ratchet
//!   carries.
//! * [`serve`] — the drivers that run engines over real relay sessions, for `petrel serve`
//!   and, for the length of one command, for the CLI.
//! * [`store`] — the encrypted redb store: Argon2id-wrapped data key, every record sealed
//!   with XChaCha20-Poly1305 under a keyed-hash index.
//! * [`api`] — the transport of the local API of `petrel serve` (`specs/api.md`):
//!   JSON-RPC 2.0 over HTTP and WebSocket on loopback with a token, and its client.
//!
//! Randomness and time are passed in, so that every test replays exactly; only [`serve`]
//! does I/O (relay sessions over libp2p, the clock, signals), and [`api`] (its own
//! sockets).

#![warn(missing_docs)]

pub mod api;
pub mod contact;
pub mod engine;
pub mod payload;
pub mod profile;
pub mod ratchet;
pub mod serve;
pub mod store;
