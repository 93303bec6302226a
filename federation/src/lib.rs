//! Petrel's wire protocol, shared by every node.
//!
//! The flow of one message, and where each piece lives:
//!
//! * [`address`] — a relay is named by its Ed25519 key plus network endpoints
//!   ([`RelayAddress`]); no DNS or CA is ever trusted.
//! * [`frame`] — every protocol message travels as a length-prefixed, versioned frame
//!   whose length is checked before anything is allocated.
//! * [`client`] — the client ↔ relay protocol: hello, queue commands, responses and
//!   pushed deliveries.
//! * [`peer`] — the relay ↔ relay protocol: forwarding sealed envelopes.
//! * [`auth`] — command signatures bound to the transport session.
//! * [`seal`] — layer 2: the envelope a sender seals to the destination relay's key.
//! * [`delivery`] — layer 3: the per-queue re-encryption of each delivery.
//! * [`padding`] — the size classes that are all a relay ever learns of a message's length.
//! * `transport` (feature `transport`) — the libp2p swarm: TCP + Noise + Yamux, WebSocket,
//!   optional QUIC, and the two stream protocols.
//!
//! `specs/protocol.md` is the byte-exact contract; `specs/vectors/` holds the known-answer
//! vectors that this crate's tests read.

pub mod address;
pub mod auth;
pub mod client;
pub mod delivery;
pub mod error;
pub mod frame;
pub mod ids;
pub mod labels;
pub mod limits;
pub mod padding;
pub mod peer;
pub mod seal;
mod serde_util;
#[cfg(feature = "transport")]
pub mod transport;

pub use address::{AddressError, Endpoint, Host, RelayAddress, TransportKind};
pub use auth::{Auth, AuthError, Signature};
pub use error::ErrorCode;
pub use frame::{FrameError, WireMessage};
pub use ids::{KeyHash, MsgId, QueueId, RelayKey, SessionId};

/// The protocol versions this build speaks, lowest first.
pub const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u16> = 1..=1;

/// The current protocol version.
pub const PROTOCOL_VERSION: u16 = 1;

// Frames carry the version in one byte.
const _: () = assert!(*SUPPORTED_VERSIONS.end() <= u8::MAX as u16);
