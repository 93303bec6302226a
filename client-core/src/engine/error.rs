//! Why an engine request failed: local misuse (no such contact, a message too long) apart
//! from what a relay or the network did.

use crate::payload::PayloadError;
use crate::ratchet::RatchetError;
use crate::store::StoreError;
use petrel_federation::ErrorCode;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such contact in this profile.
    #[error("no contact named `{0}` in this profile; `petrel contacts` lists them")]
    NoContact(String),
    /// The contact has not answered the invitation yet.
    #[error("`{0}` has not answered yet: the connection completes when they do")]
    NotConnected(String),
    /// The invitation was answered before (by this or another client).
    #[error("this invitation was already used: ask for a new one")]
    InvitationUsed,
    /// A re-key code that names no contact of this profile.
    #[error("this re-key code belongs to no contact of this profile")]
    UnknownRekey,
    /// A rotation or re-key is already under way.
    #[error("{0}")]
    Busy(String),
    /// The message is too long.
    #[error("the message is {len} bytes; the limit is {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The relay this needs has no session now.
    #[error("relay {relay} is unreachable ({reason}); try again when it is back")]
    RelayUnreachable {
        /// The relay's address.
        relay: String,
        /// What failed.
        reason: String,
    },
    /// A relay refused a command.
    #[error("relay {relay} refused {command}: {code}")]
    RelayRefused {
        /// The relay's address.
        relay: String,
        /// The command.
        command: &'static str,
        /// Its error code.
        code: ErrorCode,
    },
    /// A relay answered what the protocol does not allow there.
    #[error("relay {relay} answered {command} with an unexpected response")]
    Unexpected {
        /// The relay's address.
        relay: String,
        /// The command.
        command: &'static str,
    },
    /// The ratchet refused.
    #[error(transparent)]
    Ratchet(#[from] RatchetError),
    /// A payload could not be encoded.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// A record could not be encoded for the store.
    #[error(transparent)]
    Store(#[from] StoreError),
}
