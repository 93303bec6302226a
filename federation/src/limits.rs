//! Protocol limits. Each is also listed in `specs/protocol.md` §"Limits"; a relay may
//! choose lower operational limits but never accepts more than these.

/// Largest frame body (everything after the 4-byte length prefix), in bytes.
pub const MAX_FRAME_LEN: usize = 65_536;

/// Largest message body a SEND may carry; equal to the largest size class.
pub const MAX_BODY_LEN: usize =
    crate::padding::SIZE_CLASSES[crate::padding::SIZE_CLASSES.len() - 1];

/// Most endpoints a relay address may list.
pub const MAX_ENDPOINTS: usize = 8;

/// Longest host name in an endpoint, in bytes (the DNS limit).
pub const MAX_HOST_NAME_LEN: usize = 253;

/// Longest queue-creation password, in bytes.
pub const MAX_PASSWORD_LEN: usize = 128;

/// How far ahead of the destination relay's clock a forwarded request's timestamp may be,
/// in seconds, before it is refused.
pub const FORWARD_MAX_SKEW_SECS: u64 = 300;

/// Default number of messages a queue may hold before SEND answers `QUOTA`.
pub const DEFAULT_QUEUE_QUOTA: u32 = 128;

/// Default time a relay keeps an unacknowledged message, in seconds (14 days).
pub const DEFAULT_MESSAGE_TTL_SECS: u64 = 14 * 24 * 3600;

/// Seconds a peer has to finish the transport handshake and the protocol hello.
pub const HANDSHAKE_TIMEOUT_SECS: u64 = 10;

/// Seconds a connection may stay without any traffic before it is closed. Clients send
/// `PING` more often than this to stay subscribed.
pub const IDLE_TIMEOUT_SECS: u64 = 120;

/// Oldest forwarded request a destination accepts, in seconds (48 hours): how long a
/// forwarding relay's outbox may keep trying. Replay tags are kept this long plus
/// [`FORWARD_MAX_SKEW_SECS`].
pub const FORWARD_MAX_AGE_SECS: u64 = 48 * 3600;

/// Most relays a RESTRICT may list.
pub const MAX_FORWARDERS: usize = 8;
