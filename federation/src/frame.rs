//! Frames: how every protocol message is put on a stream.
//!
//! ```text
//! frame = length: u32 big-endian ‖ version: u8 ‖ postcard(message)
//! ```
//!
//! `length` counts the bytes after itself and must be between 1 and
//! [`MAX_FRAME_LEN`](crate::limits::MAX_FRAME_LEN). A reader checks it *before* allocating
//! the body, so a peer that claims 4 GiB costs four bytes of reading, not 4 GiB of memory.
//! The version byte is the protocol version the message is encoded for; a frame of another
//! version than the session's is refused with [`FrameError::Version`]. Decoding requires the
//! whole body to be consumed: trailing bytes are an error. (Postcard's decoder accepts an
//! over-long varint; nothing depends on a unique encoding, because signatures cover the
//! canonical re-encoding of a command, never the received bytes.)

use crate::limits::MAX_FRAME_LEN;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// A message that travels in a frame.
pub trait WireMessage: Serialize + DeserializeOwned {
    /// A short name for diagnostics and vector files.
    const NAME: &'static str;
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix (or an encoded message) exceeds the limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Claimed or actual length.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// The length prefix is zero: a frame always has a version byte.
    #[error("empty frame")]
    Empty,
    /// The input ended before the frame did.
    #[error("truncated frame: need {needed} bytes, have {have}")]
    Truncated {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// The frame's version byte is not the expected one.
    #[error("frame is version {got}, expected {expected}")]
    Version {
        /// Version in the frame.
        got: u8,
        /// Version of the session.
        expected: u8,
    },
    /// The body is not a valid encoding of the expected message.
    #[error("malformed {message}: {reason}")]
    Malformed {
        /// Which message was being decoded.
        message: &'static str,
        /// What postcard reported.
        reason: String,
    },
    /// Bytes were left over after the message.
    #[error("{extra} trailing bytes after {message}")]
    Trailing {
        /// Which message was decoded.
        message: &'static str,
        /// Bytes left over.
        extra: usize,
    },
    /// The underlying stream failed or closed.
    #[error("stream error: {0}")]
    Io(String),
}

impl FrameError {
    /// The wire error code a relay answers with for this failure.
    pub fn code(&self) -> crate::ErrorCode {
        use crate::ErrorCode;
        match self {
            FrameError::TooLarge { .. } => ErrorCode::TooLarge,
            FrameError::Version { .. } => ErrorCode::Version,
            FrameError::Io(_) => ErrorCode::Internal,
            _ => ErrorCode::Malformed,
        }
    }

    /// The code a receiver tells the other side before acting on this failure (§3): a
    /// frame that was read whole but is wrong (`MALFORMED`, `VERSION`), an empty frame
    /// (`MALFORMED`) or an over-long prefix (`TOO_LARGE`). `None` when the stream itself
    /// ended or failed, where nobody would read an answer.
    pub fn notice_code(&self) -> Option<crate::ErrorCode> {
        match self {
            FrameError::Truncated { .. } | FrameError::Io(_) => None,
            other => Some(other.code()),
        }
    }
}

/// Checks a length prefix against `max` and returns the body length. Call this before
/// allocating anything for the body.
pub fn body_len(prefix: [u8; LEN_PREFIX], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix);
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len as u64 > max as u64 {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max,
        });
    }
    Ok(len as usize)
}

/// Encodes `message` as a whole frame (length prefix included).
pub fn encode<T: WireMessage>(version: u8, message: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; LEN_PREFIX];
    out.push(version);
    let mut out = postcard::to_extend(message, out).map_err(|e| FrameError::Malformed {
        message: T::NAME,
        reason: e.to_string(),
    })?;
    let body = out.len() - LEN_PREFIX;
    if body > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len: body as u64,
            max: MAX_FRAME_LEN,
        });
    }
    out[..LEN_PREFIX].copy_from_slice(&(body as u32).to_be_bytes());
    Ok(out)
}

/// Decodes a frame body (the bytes after the length prefix).
pub fn decode_body<T: WireMessage>(expected_version: u8, body: &[u8]) -> Result<T, FrameError> {
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len: body.len() as u64,
            max: MAX_FRAME_LEN,
        });
    }
    let (&version, payload) = body.split_first().ok_or(FrameError::Empty)?;
    if version != expected_version {
        return Err(FrameError::Version {
            got: version,
            expected: expected_version,
        });
    }
    let (message, rest) =
        postcard::take_from_bytes::<T>(payload).map_err(|e| FrameError::Malformed {
            message: T::NAME,
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(FrameError::Trailing {
            message: T::NAME,
            extra: rest.len(),
        });
    }
    Ok(message)
}

/// Decodes one whole frame (length prefix included) that must fill `frame` exactly.
pub fn decode<T: WireMessage>(expected_version: u8, frame: &[u8]) -> Result<T, FrameError> {
    let (prefix, body) = frame
        .split_first_chunk::<LEN_PREFIX>()
        .ok_or(FrameError::Truncated {
            needed: LEN_PREFIX,
            have: frame.len(),
        })?;
    let len = body_len(*prefix, MAX_FRAME_LEN)?;
    if body.len() < len {
        return Err(FrameError::Truncated {
            needed: LEN_PREFIX + len,
            have: frame.len(),
        });
    }
    if body.len() > len {
        return Err(FrameError::Trailing {
            message: T::NAME,
            extra: body.len() - len,
        });
    }
    decode_body(expected_version, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_gib_prefix_is_refused_before_allocation() {
        // The claimed length is checked against the limit from the prefix alone.
        assert_eq!(
            body_len([0xff; 4], MAX_FRAME_LEN),
            Err(FrameError::TooLarge {
                len: u32::MAX as u64,
                max: MAX_FRAME_LEN
            })
        );
        assert_eq!(body_len([0; 4], MAX_FRAME_LEN), Err(FrameError::Empty));
        assert_eq!(body_len([0, 1, 0, 0], MAX_FRAME_LEN), Ok(65_536));
        assert!(body_len([0, 1, 0, 1], MAX_FRAME_LEN).is_err());
    }
}
