//! What a simulated message carries inside its (layer-1) body: which stream it belongs to,
//! its number in that stream, and what it is.
//!
//! The relays never see this — it is inside the sealed envelope and inside the delivery
//! encryption — but the recipient reads it back to tell a message it has not seen from a
//! second delivery of one it has, whatever relay message ID it arrives under. That is what
//! makes the duplicate count honest: a sender that resubmits an envelope whose answer it
//! lost produces a duplicate only if a relay stores it twice.
//!
//! Layout, padded to the smallest size class (2,048 bytes), a 100-byte text as a chat
//! message would be:
//!
//! ```text
//! "psim" ‖ stream u32 LE ‖ seq u64 LE ‖ kind u8 ‖ [sender key 32, Hello only] ‖ filler
//! ```

use anyhow::{Context, bail};
use petrel_federation::padding;

/// The size class every simulated body is padded to.
pub const BODY_CLASS: usize = 2_048;
/// Length of the text inside the padding, like a 100-character chat message.
pub const TEXT_LEN: usize = 100;
const MAGIC: &[u8; 4] = b"psim";
const HEADER_LEN: usize = 4 + 4 + 8 + 1;

/// What a message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The unsigned first message of a contact: carries the sender's public key, which the
    /// recipient SECUREs its queue with.
    Hello([u8; 32]),
    /// An ordinary signed message.
    Data,
    /// The sender's last message, sent once every earlier one is confirmed: anything a relay
    /// stored twice is delivered before it.
    End,
}

/// A message's identity and kind, as the recipient reads it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    /// The stream (one sender writing to one queue).
    pub stream: u32,
    /// The message's number within the stream, from 0 (the Hello).
    pub seq: u64,
    /// What it is.
    pub kind: Kind,
}

impl Message {
    /// The padded body.
    pub fn body(&self) -> anyhow::Result<Vec<u8>> {
        let mut text = Vec::with_capacity(TEXT_LEN);
        text.extend_from_slice(MAGIC);
        text.extend_from_slice(&self.stream.to_le_bytes());
        text.extend_from_slice(&self.seq.to_le_bytes());
        match self.kind {
            Kind::Hello(key) => {
                text.push(0);
                text.extend_from_slice(&key);
            }
            Kind::Data => text.push(1),
            Kind::End => text.push(2),
        }
        text.resize(TEXT_LEN, b'.');
        Ok(padding::pad(&text, BODY_CLASS)?)
    }

    /// Reads a delivered body back.
    pub fn parse(body: &[u8]) -> anyhow::Result<Message> {
        let text = padding::unpad(body)?;
        if text.len() < HEADER_LEN || &text[..4] != MAGIC {
            bail!("not a simulator message");
        }
        let stream = u32::from_le_bytes(text[4..8].try_into()?);
        let seq = u64::from_le_bytes(text[8..16].try_into()?);
        let kind = match text[16] {
            0 => Kind::Hello(
                text.get(HEADER_LEN..HEADER_LEN + 32)
                    .context("a Hello without its key")?
                    .try_into()?,
            ),
            1 => Kind::Data,
            2 => Kind::End,
            other => bail!("unknown message kind {other}"),
        };
        Ok(Message { stream, seq, kind })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip() {
        for kind in [Kind::Hello([7; 32]), Kind::Data, Kind::End] {
            let m = Message {
                stream: 0xdead_beef,
                seq: u64::MAX - 3,
                kind,
            };
            let body = m.body().unwrap();
            assert_eq!(body.len(), BODY_CLASS);
            assert_eq!(Message::parse(&body).unwrap(), m);
        }
    }

    #[test]
    fn foreign_bodies_are_refused() {
        let other = padding::pad(b"hello there, not a sim message", BODY_CLASS).unwrap();
        assert!(Message::parse(&other).is_err());
        assert!(Message::parse(&[0u8; 3]).is_err());
    }
}
