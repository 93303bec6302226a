//! The error codes a relay sends on the wire.
//!
//! One byte each (`specs/protocol.md` §"Error codes"). A code this build does not know
//! decodes as [`ErrorCode::Unknown`] instead of failing, so a newer relay's codes still
//! reach the user as "error N".

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $code:expr, $text:expr;)*) => {
        /// An error a relay reports to a client or a peer relay.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* #[error($text)] $name,)*
            /// A code this build does not know.
            #[error("unknown error code {0}")]
            Unknown(u8),
        }

        impl ErrorCode {
            /// Every known code, in wire order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The wire byte.
            pub fn code(self) -> u8 {
                match self {
                    $(ErrorCode::$name => $code,)*
                    ErrorCode::Unknown(c) => c,
                }
            }

            /// The code for a wire byte.
            pub fn from_code(code: u8) -> Self {
                match code {
                    $($code => ErrorCode::$name,)*
                    other => ErrorCode::Unknown(other),
                }
            }
        }
    };
}

error_codes! {
    /// The frame could not be decoded (bad postcard, trailing bytes, invalid field).
    Malformed = 1, "malformed frame";
    /// No protocol version in common, or a frame of another version than the session's.
    Version = 2, "unsupported protocol version";
    /// The frame is longer than the limit.
    TooLarge = 3, "frame too large";
    /// A command arrived before the hello exchange finished.
    NoSession = 4, "hello exchange not done";
    /// Authentication failed: no such queue, wrong key, bad signature or suspended queue.
    /// Deliberately one code so that the cases cannot be told apart.
    Auth = 5, "authentication failed";
    /// The queue is already secured.
    Duplicate = 6, "queue already secured";
    /// The queue holds as many messages as its quota allows.
    Quota = 7, "queue quota exceeded";
    /// The message body is not exactly one of the size classes.
    MessageSize = 8, "message body is not a valid size class";
    /// ACK named a message that is not the one being delivered (or it expired).
    NoMessage = 9, "no such message";
    /// Creating queues needs a password, and it was missing or wrong.
    CreateDenied = 10, "queue creation not allowed";
    /// A per-connection cap (queues created, subscriptions) was reached.
    Limit = 11, "connection limit reached";
    /// Too many commands too fast.
    RateLimited = 12, "rate limited";
    /// This relay does not forward to that destination (policy).
    ForwardDenied = 13, "forwarding refused by policy";
    /// The destination relay could not be reached and the message was not stored.
    Unreachable = 14, "destination relay unreachable";
    /// The forwarding outbox is full.
    OutboxFull = 15, "forwarding outbox full";
    /// A sealed envelope could not be opened, or is too old or too far in the future.
    Envelope = 16, "sealed envelope rejected";
    /// A forwarded message expired in the outbox before it could be delivered.
    Expired = 17, "forwarded message expired";
    /// The relay is shutting down; retry elsewhere or later.
    Busy = 18, "relay busy or shutting down";
    /// The relay failed internally (for example its store). Nothing was changed.
    Internal = 19, "relay internal error";
    /// A command that is not allowed in this context (for example a non-SEND inside an
    /// envelope, or a relay-only request from a client).
    Prohibited = 20, "command not allowed here";
    /// The destination relay answered at its address but proved a different key than the
    /// address names; the forward was refused and not stored.
    KeyMismatch = 21, "destination relay proved another key";
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        u8::deserialize(deserializer).map(ErrorCode::from_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            assert!(seen.insert(code.code()), "duplicate code {}", code.code());
            assert_eq!(ErrorCode::from_code(code.code()), code);
            let bytes = postcard::to_stdvec(&code).unwrap();
            assert_eq!(bytes, vec![code.code()]);
        }
        assert_eq!(ErrorCode::from_code(200), ErrorCode::Unknown(200));
        assert_eq!(ErrorCode::from_code(0), ErrorCode::Unknown(0));
    }
}

/// An error and its causes as one line for people: each cause is appended after `": "`
/// unless the text so far already says it (most errors here quote their source), so
/// nothing is printed twice.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod describe_tests {
    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the store: {source}")]
    struct Quoting {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the relay failed")]
    struct Silent {
        #[source]
        inner: Quoting,
    }

    #[test]
    fn causes_are_said_once() {
        let quoting = Quoting {
            source: std::io::Error::other("locked"),
        };
        assert_eq!(super::describe(&quoting), "cannot open the store: locked");
        let silent = Silent { inner: quoting };
        assert_eq!(
            super::describe(&silent),
            "the relay failed: cannot open the store: locked"
        );
    }
}
