//! The hello exchanges that open a session on a fresh stream.
//!
//! Hello frames are always wire version 1 (their format is frozen), so two nodes of any
//! versions can always agree on the version to use next, or learn that they share none.

use super::io::{read_message, write_message};
use crate::SUPPORTED_VERSIONS;
use crate::client::{ClientHello, RelayHello};
use crate::error::ErrorCode;
use crate::frame::FrameError;
use crate::ids::SessionId;
use crate::limits::MAX_FRAME_LEN;
use crate::peer::{PeerHello, PeerHelloReply};
use futures::{AsyncRead, AsyncWrite};

/// The wire version of hello frames.
pub const HELLO_WIRE_VERSION: u8 = 1;

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    /// The hello frame could not be read, written or decoded.
    #[error("hello failed: {0}")]
    Frame(#[from] FrameError),
    /// The other side refused the session.
    #[error("the relay refused the session: {0}")]
    Rejected(ErrorCode),
    /// No protocol version in common.
    #[error("no protocol version in common: peer speaks {min}..={max}, this build {ours:?}")]
    NoCommonVersion {
        /// Peer's lowest version.
        min: u16,
        /// Peer's highest version.
        max: u16,
        /// Ours.
        ours: std::ops::RangeInclusive<u16>,
    },
    /// The relay chose a version this build did not offer.
    #[error("the relay chose version {0}, which was not offered")]
    BadChoice(u16),
}

/// The highest version in both `min..=max` and this build's supported range.
pub fn negotiate(min: u16, max: u16) -> Option<u16> {
    let high = max.min(*SUPPORTED_VERSIONS.end());
    let low = min.max(*SUPPORTED_VERSIONS.start());
    (low <= high).then_some(high)
}

/// An open client session, as the client sees it.
#[derive(Debug, Clone)]
pub struct ClientSession {
    /// The negotiated version.
    pub version: u16,
    /// The session ID signatures must be bound to.
    pub session_id: SessionId,
    /// The relay's clock at hello, Unix seconds.
    pub relay_time: u64,
}

/// Client side: sends [`ClientHello`] and reads the relay's answer.
pub async fn client_hello<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> Result<ClientSession, HelloError> {
    let hello = ClientHello {
        min_version: *SUPPORTED_VERSIONS.start(),
        max_version: *SUPPORTED_VERSIONS.end(),
    };
    write_message(stream, HELLO_WIRE_VERSION, &hello).await?;
    match read_message::<RelayHello, _>(stream, HELLO_WIRE_VERSION, MAX_FRAME_LEN).await? {
        RelayHello::Accept {
            version,
            session_id,
            relay_time,
        } => {
            if !SUPPORTED_VERSIONS.contains(&version) {
                return Err(HelloError::BadChoice(version));
            }
            Ok(ClientSession {
                version,
                session_id,
                relay_time,
            })
        }
        RelayHello::Reject(code) => Err(HelloError::Rejected(code)),
    }
}

/// Relay side: reads [`ClientHello`], answers, and returns the negotiated version. On no
/// common version it sends `Reject(Version)` before returning the error.
pub async fn accept_client_hello<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    session_id: SessionId,
    relay_time: u64,
) -> Result<u16, HelloError> {
    let hello: ClientHello = match read_message(stream, HELLO_WIRE_VERSION, MAX_FRAME_LEN).await {
        Ok(h) => h,
        Err(e) => {
            if let Some(code) = e.notice_code() {
                let _ = write_message(stream, HELLO_WIRE_VERSION, &RelayHello::Reject(code)).await;
            }
            return Err(e.into());
        }
    };
    match negotiate(hello.min_version, hello.max_version) {
        Some(version) => {
            let accept = RelayHello::Accept {
                version,
                session_id,
                relay_time,
            };
            write_message(stream, HELLO_WIRE_VERSION, &accept).await?;
            Ok(version)
        }
        None => {
            write_message(
                stream,
                HELLO_WIRE_VERSION,
                &RelayHello::Reject(ErrorCode::Version),
            )
            .await?;
            Err(HelloError::NoCommonVersion {
                min: hello.min_version,
                max: hello.max_version,
                ours: SUPPORTED_VERSIONS,
            })
        }
    }
}

/// Forwarding-relay side of a peer session: sends [`PeerHello`], returns the version.
pub async fn peer_hello<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> Result<u16, HelloError> {
    let hello = PeerHello {
        min_version: *SUPPORTED_VERSIONS.start(),
        max_version: *SUPPORTED_VERSIONS.end(),
    };
    write_message(stream, HELLO_WIRE_VERSION, &hello).await?;
    match read_message::<PeerHelloReply, _>(stream, HELLO_WIRE_VERSION, MAX_FRAME_LEN).await? {
        PeerHelloReply::Accept { version } if SUPPORTED_VERSIONS.contains(&version) => Ok(version),
        PeerHelloReply::Accept { version } => Err(HelloError::BadChoice(version)),
        PeerHelloReply::Reject(code) => Err(HelloError::Rejected(code)),
    }
}

/// Destination side of a peer session: reads [`PeerHello`], answers, returns the version.
pub async fn accept_peer_hello<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> Result<u16, HelloError> {
    let hello: PeerHello = match read_message(stream, HELLO_WIRE_VERSION, MAX_FRAME_LEN).await {
        Ok(h) => h,
        Err(e) => {
            if let Some(code) = e.notice_code() {
                let reject = PeerHelloReply::Reject(code);
                let _ = write_message(stream, HELLO_WIRE_VERSION, &reject).await;
            }
            return Err(e.into());
        }
    };
    match negotiate(hello.min_version, hello.max_version) {
        Some(version) => {
            write_message(
                stream,
                HELLO_WIRE_VERSION,
                &PeerHelloReply::Accept { version },
            )
            .await?;
            Ok(version)
        }
        None => {
            let reject = PeerHelloReply::Reject(ErrorCode::Version);
            write_message(stream, HELLO_WIRE_VERSION, &reject).await?;
            Err(HelloError::NoCommonVersion {
                min: hello.min_version,
                max: hello.max_version,
                ours: SUPPORTED_VERSIONS,
            })
        }
    }
}
