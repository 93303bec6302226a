//! The one error type of layer 1.
//!
//! Variants fall in two groups, as rustls separates `PeerMisbehaved` from API misuse:
//!
//! * **what arrived** — the message was damaged, forged, replayed, duplicated, too old or
//!   otherwise unusable. These are expected on an open network (relays redeliver, attackers
//!   replay); the client counts them, ACKs the message and moves on
//!   ([`RatchetError::is_peer_fault`] is true);
//! * **local misuse** — the caller asked for something the session cannot do, or its
//!   stored state is damaged.
//!
//! Whatever the variant, a failed call leaves the session exactly as it was.

/// Why a layer-1 operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RatchetError {
    // ---- What arrived ----
    /// The message's length is not a size class (minus the 32-byte prefix, for a
    /// confirmation).
    #[error("a {len}-byte message is not a size class")]
    BadLength {
        /// The length received.
        len: usize,
    },
    /// An exact copy of a message accepted recently (relay redelivery or replay).
    #[error("duplicate of a message already received")]
    Duplicate,
    /// The header opened, but the message key it names is gone: used already (an older
    /// duplicate or replay) or discarded (evicted from the skipped-key store, or expired).
    #[error("the message's key was already used or discarded")]
    Stale,
    /// No header key of this session opens the header: damaged, forged, meant for another
    /// session, or from a chain this session no longer remembers.
    #[error("no header key opens the message")]
    Undecryptable,
    /// The header opened but the body did not authenticate: tampering, or a forgery by
    /// someone who holds a header key but not the chain.
    #[error("the message body did not authenticate")]
    BodyAuth,
    /// The header is invalid: an unknown kind bit, non-zero filler after a KEM ciphertext,
    /// the message number 2^32 − 1, an encapsulation key that fails the FIPS 203 check, or
    /// the wrong KEM item for the ratchet step.
    #[error("malformed message header")]
    MalformedHeader,
    /// The body authenticated but its padding is not the one valid form.
    #[error("malformed message body")]
    MalformedBody,
    /// The message would skip more than [`MAX_SKIP`](super::MAX_SKIP) keys of one chain.
    #[error("the message skips {skip} keys, more than allowed")]
    TooManySkipped {
        /// Keys it would skip in one chain.
        skip: u64,
    },
    /// A Diffie–Hellman output was all zeros: the peer's (or the invitation's) key has low
    /// order.
    #[error("the X25519 key is not contributory")]
    WeakKey,
    /// The peer's new chain mixes a re-key secret, but this session holds none.
    #[error("the peer re-keyed but no re-key secret is pending here")]
    UnexpectedRekey,

    // ---- Local misuse ----
    /// The plaintext does not fit the largest size class.
    #[error("a {len}-byte plaintext exceeds the {max}-byte capacity")]
    TooLong {
        /// Length of the plaintext.
        len: usize,
        /// The largest plaintext this message could carry.
        max: usize,
    },
    /// The sending chain reached 2^32 − 1 messages; the peer must answer before more can
    /// be sent.
    #[error("the sending chain is exhausted")]
    ChainExhausted,
    /// The session's state is inconsistent (a damaged or hand-edited store).
    #[error("the session state is inconsistent")]
    CorruptState,
}

impl RatchetError {
    /// True for a fault of what arrived (count it, ACK it, move on); false for local
    /// misuse.
    pub fn is_peer_fault(&self) -> bool {
        !matches!(
            self,
            Self::TooLong { .. } | Self::ChainExhausted | Self::CorruptState
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups() {
        assert!(RatchetError::Duplicate.is_peer_fault());
        assert!(RatchetError::WeakKey.is_peer_fault());
        assert!(!RatchetError::ChainExhausted.is_peer_fault());
        assert!(!RatchetError::TooLong { len: 1, max: 0 }.is_peer_fault());
    }
}
