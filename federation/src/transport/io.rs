//! Reading and writing frames on a byte stream.
//!
//! Generic over `futures` I/O so the same code runs over a libp2p stream in production and
//! over `tokio::io::duplex` (through `tokio_util::compat`) in tests. The length prefix is
//! checked against the limit before the body buffer is allocated.

use crate::frame::{self, FrameError, LEN_PREFIX, WireMessage};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

fn io_err(e: std::io::Error) -> FrameError {
    FrameError::Io(e.kind().to_string())
}

/// Reads one frame body (version byte and message) of at most `max` bytes.
/// Returns `Ok(None)` when the stream ends cleanly between frames.
pub async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; LEN_PREFIX];
    let mut got = 0;
    while got < LEN_PREFIX {
        let n = reader.read(&mut prefix[got..]).await.map_err(io_err)?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated {
                    needed: LEN_PREFIX,
                    have: got,
                })
            };
        }
        got += n;
    }
    let len = frame::body_len(prefix, max)?;
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated {
                needed: LEN_PREFIX + len,
                have: LEN_PREFIX,
            }
        } else {
            io_err(e)
        }
    })?;
    Ok(Some(body))
}

/// Reads and decodes one message; a clean end of stream is [`FrameError::Io`] "closed".
pub async fn read_message<T: WireMessage, R: AsyncRead + Unpin>(
    reader: &mut R,
    version: u8,
    max: usize,
) -> Result<T, FrameError> {
    let body = read_body(reader, max)
        .await?
        .ok_or_else(|| FrameError::Io("stream closed".into()))?;
    frame::decode_body(version, &body)
}

/// Encodes and writes one message, then flushes.
pub async fn write_message<T: WireMessage, W: AsyncWrite + Unpin>(
    writer: &mut W,
    version: u8,
    message: &T,
) -> Result<(), FrameError> {
    let bytes = frame::encode(version, message)?;
    writer.write_all(&bytes).await.map_err(io_err)?;
    writer.flush().await.map_err(io_err)
}
