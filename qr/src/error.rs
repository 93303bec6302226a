//! Errors, one enum per operation.
//!
//! * [`PayloadError`] — the bytes or the text of a payload are not a valid Petrel payload:
//!   not Petrel's at all, cut short, damaged, or made by a newer Petrel. Every variant is
//!   a fault of the input, never of the caller.
//! * [`ScanError`] — an image could not be turned into a payload: not an image, too large,
//!   no QR code in it, a QR code that cannot be read, or a [`PayloadError`] about what the
//!   QR code says.
//! * [`EncodeError`] — a payload could not be turned into bytes, a link or a QR code;
//!   in practice only "too large for the QR version allowed".
//!
//! Messages are written for the person holding the phone or the pasted text: they say what
//! was found and what to try, and they never echo more than a short, sanitised preview of
//! foreign content.

use petrel_federation::AddressError;

/// The bytes or text are not a valid Petrel payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The text (or the QR code's content) is not a Petrel link. `preview` shows the start
    /// of what it is instead, for example a web address, with control characters escaped.
    #[error("this is not a Petrel code or link; it says: {preview}")]
    NotPetrel {
        /// At most [`crate::PREVIEW_CHARS`] characters of the foreign content, sanitised.
        preview: String,
    },
    /// The link has a character that base32 does not use (after `PETREL:`, only letters
    /// and the digits 2 to 7 may appear; spaces and line breaks are ignored).
    #[error("the link is damaged: unexpected character {found:?} at position {position}")]
    BadCharacter {
        /// The offending character.
        found: char,
        /// Its position among the link's base32 characters (0 is the first after `PETREL:`).
        position: usize,
    },
    /// The payload ends before its declared length: a link cut off while copying, or a
    /// partial read.
    #[error("the code is incomplete: {actual} of {expected} bytes (was the link cut off?)")]
    Truncated {
        /// Bytes the payload declares (or, for a very short input, the minimum).
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
    /// The checksum does not match: the code or link was altered or damaged.
    #[error("the code is damaged or was altered: its checksum does not match")]
    ChecksumMismatch,
    /// The payload is intact but of a kind or version this build does not know, most
    /// likely made by a newer Petrel.
    #[error(
        "this Petrel code (kind {kind}, version {version}) is not supported by this build; \
         update Petrel"
    )]
    UnsupportedVersion {
        /// The payload kind (high nibble of the tag byte).
        kind: u8,
        /// The format version (low nibble of the tag byte).
        version: u8,
    },
    /// The checksum matches but the content breaks the format's rules (a trailing byte,
    /// a non-canonical encoding, an invalid relay key, an all-zero invitation key...).
    /// Damage cannot produce this; a buggy or hostile encoder can.
    #[error("the code is malformed: {0}")]
    Malformed(String),
    /// A `petrel://` relay address text could not be parsed.
    #[error("bad relay address: {0}")]
    BadRelayAddress(#[from] AddressError),
}

/// An image could not be turned into a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// The bytes are not a PNG or JPEG image, or the image data is corrupt.
    #[error("not a readable PNG or JPEG image: {0}")]
    NotAnImage(String),
    /// The image exceeds [`crate::ImageLimits`]; refused before its pixels were decoded.
    #[error("the image is too large ({what}); refused before decoding")]
    ImageTooLarge {
        /// Which limit, with the numbers involved.
        what: String,
    },
    /// No QR code could be located in the image.
    #[error("no QR code found in the image; try a sharper, closer, well-lit picture")]
    NoQrFound,
    /// A QR code was located but its modules could not be read back (too blurred, too
    /// small, damaged beyond what its error correction repairs).
    #[error("found a QR code but could not read it ({0}); try a sharper or closer picture")]
    Unreadable(String),
    /// The image decoder or the QR detector failed internally on this input. This is a
    /// bug in a dependency, contained and reported instead of crashing the program.
    #[error("internal failure while {stage}; the image was not read")]
    DecoderFault {
        /// What was being done.
        stage: &'static str,
    },
    /// The QR code was read, but what it says is not a valid Petrel payload.
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

/// A payload could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The payload does not fit a QR code of the allowed version at error-correction
    /// level M (for example a relay address with many long host names).
    #[error(
        "the payload ({link_chars} link characters) needs a larger QR code than version \
         {max_version} at error-correction level M"
    )]
    TooLargeForQr {
        /// Length of the link text that was to be encoded.
        link_chars: usize,
        /// The largest version that was allowed.
        max_version: u8,
    },
    /// A rendering parameter is out of range (for example a module size of 0 pixels).
    #[error("bad rendering option: {0}")]
    BadOption(&'static str),
    /// Serialising the payload failed. The payload types cannot produce this; it exists
    /// so that an impossible case is an error and not a panic.
    #[error("could not serialise the payload: {0}")]
    Serialize(String),
    /// Writing the PNG failed.
    #[error("could not write the PNG: {0}")]
    Png(String),
}

/// Shortens foreign text for display in an error: at most `max` characters, control and
/// other invisible characters escaped, an ellipsis when cut.
pub(crate) fn preview(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    for c in chars.by_ref().take(max) {
        if c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_cuts_and_escapes() {
        assert_eq!(preview("https://example.org/", 80), "https://example.org/");
        assert_eq!(preview("abcdef", 3), "abc…");
        assert_eq!(preview("a\nb\u{1b}[31m", 80), "a\\nb\\u{1b}[31m");
        assert_eq!(preview("x\u{202e}y", 80), "x\\u{202e}y");
    }
}
