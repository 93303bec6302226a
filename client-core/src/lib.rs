//! The Petrel client core: everything a Petrel client does, without I/O of its own.
//!
//! * [`ratchet`] — layer 1, the end-to-end double ratchet with header encryption and an
//!   ML-KEM-768 hybrid (`specs/protocol.md` §12.1): sessions created by the pairing
//!   handshake, messages padded to a size class, skipped keys, duplicate and gap detection,
//!   re-keying and the safety code.
//! * [`profile`] — profiles and their pinned relays.
//! * [`client`] — the engine: invitations, pairing through relays, messages, receipts,
//!   the outbox, queue rotation and re-keying; [`contact`] its records, [`payload`] what
//!   the ratchet carries, [`net`] the relay sessions.
//! * [`store`] — the encrypted redb store: Argon2id-wrapped data key, every record sealed
//!   with XChaCha20-Poly1305 under a keyed-hash index.
//! * [`api`] — the transport of the local API of `petrel serve` (`specs/api.md`):
//!   JSON-RPC 2.0 over HTTP and WebSocket on loopback with a token, and its client.
//!
//! Randomness and time are passed in, so that every test replays exactly; only [`net`]
//! and [`client`] do I/O (relay sessions over libp2p), and [`api`] (its own sockets).

#![warn(missing_docs)]

pub mod api;
pub mod client;
pub mod contact;
pub mod engine;
pub mod net;
pub mod payload;
pub mod profile;
pub mod ratchet;
pub mod serve;
pub mod store;
