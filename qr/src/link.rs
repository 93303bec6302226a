//! The text forms: `PETREL:` links, and what a pasted text or a QR code's content means.
//!
//! A link is the scheme `PETREL:` followed by the frame ([`crate::payload`]) in upper-case
//! base32 (RFC 4648 alphabet, no padding):
//!
//! ```text
//! PETREL:CEWQAIXR5YB3V...
//! ```
//!
//! Why this alphabet: `A–Z`, `2–7` and `:` are all in the QR alphanumeric set, so the QR
//! code stores 5.5 bits per character instead of 8 (a default invitation fits version 7
//! at level M instead of version 9), and none of them is special to a chat app, a shell,
//! a URI or a terminal. Reading is lenient where a human or an app may have touched the
//! text: any letter case, and spaces, line breaks or invisible break hints (soft hyphen,
//! zero-width space) anywhere after the scheme.
//!
//! [`parse_text`] also accepts a relay address in its own text form
//! (`petrel://<key>@<endpoints>`), so a relay operator's printed address can be pinned by
//! scanning it. That form has no checksum; the relay key still has to prove itself in the
//! Noise handshake.

use crate::error::{PayloadError, preview};
use crate::payload::Payload;
use crate::{Decoded, PREVIEW_CHARS, Provenance};
use petrel_federation::RelayAddress;
use petrel_federation::address::SCHEME as RELAY_SCHEME;

/// The scheme that starts every link, as written. Reading ignores case.
pub const LINK_SCHEME: &str = "PETREL:";

const BASE32_SYMBOLS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Base32 as links write and strictly read it: RFC 4648, upper case, no padding, and
/// the unused low bits of the last character must be zero, so every frame has exactly
/// one link.
fn strict() -> data_encoding::Encoding {
    data_encoding::BASE32_NOPAD
}

/// The same alphabet without the trailing-bits check, used only to salvage the prefix of
/// a link that was cut off mid-character.
fn lenient() -> data_encoding::Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str(BASE32_SYMBOLS);
    spec.check_trailing_bits = false;
    // The specification is a constant and valid (the tests use it); the fallback keeps
    // this free of panics and only makes salvage stricter.
    spec.encoding()
        .unwrap_or_else(|_| data_encoding::BASE32_NOPAD.clone())
}

impl Payload {
    /// The link form: `PETREL:` and the frame in upper-case base32.
    pub fn to_link(&self) -> Result<String, crate::EncodeError> {
        let bytes = self.to_bytes()?;
        Ok(format!("{LINK_SCHEME}{}", strict().encode(&bytes)))
    }

    /// Parses a link written by [`Payload::to_link`] (or retyped: case and white space
    /// are ignored). Unlike [`parse_text`] this does not accept `petrel://` relay texts.
    pub fn from_link(text: &str) -> Result<Payload, PayloadError> {
        let text = text.trim();
        let rest = strip_scheme(text).ok_or_else(|| not_petrel(text))?;
        decode_link_body(rest)
    }
}

/// Interprets pasted text, or the content of a scanned QR code, as a Petrel payload.
///
/// `provenance` is recorded in the result as given: [`Provenance::Pasted`] for text from
/// the clipboard or a command line, [`Provenance::Scanned`] for a QR code's content.
pub fn parse_text(text: &str, provenance: Provenance) -> Result<Decoded, PayloadError> {
    let text = text.trim();
    let payload = if is_relay_text(text) {
        Payload::RelayAddress(text.parse::<RelayAddress>()?)
    } else {
        Payload::from_link(text)?
    };
    Ok(Decoded {
        payload,
        provenance,
    })
}

/// Interprets pasted text: [`parse_text`] with [`Provenance::Pasted`].
pub fn parse_pasted(text: &str) -> Result<Decoded, PayloadError> {
    parse_text(text, Provenance::Pasted)
}

fn is_relay_text(text: &str) -> bool {
    text.get(..RELAY_SCHEME.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(RELAY_SCHEME))
}

fn strip_scheme(text: &str) -> Option<&str> {
    let head = text.get(..LINK_SCHEME.len())?;
    if head.eq_ignore_ascii_case(LINK_SCHEME) && !is_relay_text(text) {
        text.get(LINK_SCHEME.len()..)
    } else {
        None
    }
}

pub(crate) fn not_petrel(text: &str) -> PayloadError {
    PayloadError::NotPetrel {
        preview: preview(text, PREVIEW_CHARS),
    }
}

/// White space, and the invisible characters chat apps and editors insert to let a long
/// word wrap: soft hyphen, zero-width space and joiners, word joiner, BOM.
fn is_ignorable(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{ad}' | '\u{200b}'..='\u{200d}' | '\u{2060}' | '\u{feff}'
        )
}

fn decode_link_body(rest: &str) -> Result<Payload, PayloadError> {
    let mut symbols = String::with_capacity(rest.len());
    for c in rest.chars().filter(|&c| !is_ignorable(c)) {
        let upper = c.to_ascii_uppercase();
        if !BASE32_SYMBOLS.contains(upper) {
            return Err(PayloadError::BadCharacter {
                found: c,
                position: symbols.len(),
            });
        }
        symbols.push(upper);
    }
    // Refuse absurd lengths before decoding: no valid frame is longer than this.
    let max_symbols = (crate::payload::MAX_BODY_LEN + 8).div_ceil(5) * 8;
    if symbols.len() > max_symbols {
        return Err(PayloadError::Malformed(format!(
            "the link is {} characters long, more than any Petrel payload",
            symbols.len()
        )));
    }
    match strict().decode(symbols.as_bytes()) {
        Ok(bytes) => Payload::from_bytes(&bytes),
        Err(_) => {
            // A length no base32 text can have, or stray low bits at the end: typically
            // a link cut off mid-character. Decode the longest valid prefix to tell a
            // truncated frame (the common case) from other damage.
            let keep = (0..=symbols.len())
                .rev()
                .find(|n| matches!(n % 8, 0 | 2 | 4 | 5 | 7))
                .unwrap_or(0);
            let prefix = lenient()
                .decode(&symbols.as_bytes()[..keep])
                .unwrap_or_default();
            match Payload::from_bytes(&prefix) {
                Err(e @ PayloadError::Truncated { .. }) => Err(e),
                _ => Err(PayloadError::ChecksumMismatch),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_is_qr_alphanumeric() {
        // The QR alphanumeric set; every character a link can contain must be in it.
        let alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
        assert!(
            LINK_SCHEME
                .chars()
                .chain(BASE32_SYMBOLS.chars())
                .all(|c| alnum.contains(c))
        );
        // The lenient decoder is the specified one (not the fallback): it accepts stray
        // trailing bits that the strict one refuses.
        assert!(strict().decode(b"MF").is_err());
        assert_eq!(lenient().decode(b"MF").unwrap(), b"a");
        assert_eq!(strict().encode(&[0x00, 0x44, 0x32, 0x14, 0xc7]), "ABCDEFGH");
    }

    #[test]
    fn foreign_text_is_not_petrel_with_a_preview() {
        let err = Payload::from_link("https://example.org/login?x=1").unwrap_err();
        assert_eq!(
            err,
            PayloadError::NotPetrel {
                preview: "https://example.org/login?x=1".into()
            }
        );
        assert!(matches!(
            Payload::from_link(""),
            Err(PayloadError::NotPetrel { .. })
        ));
        assert!(matches!(
            Payload::from_link("petrel://abc@1.2.3.4:5"),
            Err(PayloadError::NotPetrel { .. })
        ));
    }

    #[test]
    fn invisible_break_hints_are_ignored() {
        let bytes = [0x21, 0x00];
        let plain = format!("PETREL:{}", strict().encode(&bytes));
        let (head, tail) = plain.split_at(9);
        let hinted = format!("{head}\u{ad}\u{200b} \u{feff}\n{tail}");
        // Both read the same frame (which is too short, hence the same error).
        assert_eq!(Payload::from_link(&plain), Payload::from_link(&hinted));
        assert!(matches!(
            Payload::from_link(&hinted),
            Err(PayloadError::Truncated { .. })
        ));
    }

    #[test]
    fn bad_characters_are_located() {
        let err = Payload::from_link("PETREL:AB C1DE").unwrap_err();
        assert_eq!(
            err,
            PayloadError::BadCharacter {
                found: '1',
                position: 3
            }
        );
        let err = Payload::from_link("petrel:aé").unwrap_err();
        assert_eq!(
            err,
            PayloadError::BadCharacter {
                found: 'é',
                position: 1
            }
        );
    }
}
