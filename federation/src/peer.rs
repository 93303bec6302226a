//! The relay ↔ relay protocol (`/petrel/relay/1`) and a relay's signed info.
//!
//! The forwarding relay dials the destination by the key in its address (libp2p's Noise
//! handshake proves the key) and opens one stream per session, reused for every client's
//! forwards. It sends [`PeerHello`], gets [`PeerHelloReply`], then sends
//! [`PeerRequest`]s and gets [`PeerReply`]s matched by `corr`. The destination sees only the
//! forwarding relay, never the client.

use crate::auth::Signature;
use crate::error::ErrorCode;
use crate::frame::WireMessage;
use crate::ids::RelayKey;
use crate::labels::RELAY_INFO_SIG;
use crate::seal::{SealedEnvelope, SealedResponse};
use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

/// The libp2p protocol name of the relay ↔ relay stream.
pub const PROTOCOL: &str = "/petrel/relay/1";

/// First frame of a peer session. Always encoded as wire version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHello {
    /// Lowest protocol version the forwarding relay speaks.
    pub min_version: u16,
    /// Highest protocol version the forwarding relay speaks.
    pub max_version: u16,
}
impl WireMessage for PeerHello {
    const NAME: &'static str = "PeerHello";
}

/// The destination's answer to [`PeerHello`]. Always encoded as wire version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerHelloReply {
    /// The session is open at this version.
    Accept {
        /// The highest version in common.
        version: u16,
    },
    /// Refused (version, policy or load); the stream closes.
    Reject(ErrorCode),
}
impl WireMessage for PeerHelloReply {
    const NAME: &'static str = "PeerHelloReply";
}

/// A request from the forwarding relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerRequest {
    /// 0 — Deliver a sealed envelope.
    Forward {
        /// Correlation number.
        corr: u32,
        /// The envelope, as the client sealed it.
        envelope: SealedEnvelope,
    },
    /// 1 — Ask for the destination's signed info.
    Info {
        /// Correlation number.
        corr: u32,
    },
}
impl WireMessage for PeerRequest {
    const NAME: &'static str = "PeerRequest";
}

/// The destination's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerReply {
    /// 0 — The sealed response to a forward.
    Forwarded {
        /// Correlation number.
        corr: u32,
        /// Sealed for the client; the forwarding relay cannot read it.
        response: SealedResponse,
    },
    /// 1 — The destination's info.
    Info {
        /// Correlation number.
        corr: u32,
        /// Signed by the destination's identity key.
        info: SignedRelayInfo,
    },
    /// 2 — The request failed at the relay level (bad envelope, rate limit, policy).
    Error {
        /// Correlation number.
        corr: u32,
        /// Why.
        code: ErrorCode,
    },
}
impl WireMessage for PeerReply {
    const NAME: &'static str = "PeerReply";
}

/// What a relay publishes about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayInfo {
    /// The identity key (the key in its address).
    pub identity: RelayKey,
    /// The X25519 key envelopes are sealed to.
    pub sealing_key: [u8; 32],
    /// The key is valid from this Unix time…
    pub valid_from: u64,
    /// …until this one; senders fetch fresh info before then.
    pub valid_until: u64,
    /// Lowest protocol version spoken.
    pub min_version: u16,
    /// Highest protocol version spoken.
    pub max_version: u16,
}

/// [`RelayInfo`] with the identity key's signature over
/// `"petrel v1 relay info\0" ‖ postcard(info)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRelayInfo {
    /// The info.
    pub info: RelayInfo,
    /// The signature.
    pub sig: Signature,
}

/// Why a relay's info was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayInfoError {
    /// The info names another identity than the address the client holds.
    #[error("relay info is for another relay key")]
    WrongRelay,
    /// The signature does not verify.
    #[error("relay info signature is invalid")]
    BadSignature,
    /// `now` is outside `valid_from..valid_until` (with [`INFO_CLOCK_SLACK_SECS`] of slack).
    #[error("relay info is not valid now")]
    Expired,
    /// The validity window is empty or longer than [`MAX_INFO_VALIDITY_SECS`].
    #[error("relay info has an invalid validity window")]
    BadValidity,
}

/// Longest validity window a relay info may claim (8 days).
pub const MAX_INFO_VALIDITY_SECS: u64 = 8 * 24 * 3600;

/// Clock difference tolerated when checking a relay info's validity window.
pub const INFO_CLOCK_SLACK_SECS: u64 = 300;

fn info_bytes(info: &RelayInfo) -> Vec<u8> {
    // Serialising a struct of integers and arrays into a Vec cannot fail.
    postcard::to_extend(info, RELAY_INFO_SIG.to_vec()).unwrap_or_default()
}

impl SignedRelayInfo {
    /// Signs `info` with the relay's identity key.
    pub fn sign(identity: &SigningKey, info: RelayInfo) -> Self {
        let sig = Signature(identity.sign(&info_bytes(&info)).to_bytes());
        Self { info, sig }
    }

    /// Checks that the info is for `expected`, signed by it, and valid at `now`.
    pub fn verify(&self, expected: &RelayKey, now: u64) -> Result<&RelayInfo, RelayInfoError> {
        if &self.info.identity != expected {
            return Err(RelayInfoError::WrongRelay);
        }
        crate::auth::verify_with(&expected.0, &self.sig, &info_bytes(&self.info))
            .map_err(|_| RelayInfoError::BadSignature)?;
        let info = &self.info;
        if info.valid_from >= info.valid_until
            || info.valid_until - info.valid_from > MAX_INFO_VALIDITY_SECS
        {
            return Err(RelayInfoError::BadValidity);
        }
        if now.saturating_add(INFO_CLOCK_SLACK_SECS) < info.valid_from
            || now >= info.valid_until.saturating_add(INFO_CLOCK_SLACK_SECS)
        {
            return Err(RelayInfoError::Expired);
        }
        Ok(&self.info)
    }
}
