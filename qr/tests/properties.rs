//! Property tests: round trips, encoded lengths, and decoders that refuse damaged input
//! with the right error and never panic. Failing cases are kept in
//! `proptest-regressions/` and replayed first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use petrel_qr::payload::CHECKSUM_LEN;
use petrel_qr::{
    MAX_QR_VERSION, Payload, PayloadError, Provenance, QrCode, parse_pasted, scan_image,
};
use proptest::prelude::*;

const QR_ALPHANUMERIC: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

proptest! {
    #[test]
    fn bytes_round_trip(payload in common::any_payload()) {
        let bytes = payload.to_bytes().unwrap();
        prop_assert_eq!(Payload::from_bytes(&bytes).unwrap(), payload);
    }

    #[test]
    fn link_round_trip_survives_case_and_white_space(
        payload in common::any_payload(),
        breaks in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let link = payload.to_link().unwrap();
        prop_assert_eq!(Payload::from_link(&link).unwrap(), payload.clone());
        // What a chat app might do: lower-case it, wrap it (with white space or invisible
        // break hints), indent it.
        let mut mangled: Vec<char> = link.to_lowercase().chars().collect();
        for b in breaks {
            let at = 7 + b.index(mangled.len() - 7);
            mangled.insert(at, ['\n', ' ', '\u{200b}', '\u{ad}'][at % 4]);
        }
        let mangled: String = mangled.into_iter().collect();
        let decoded = parse_pasted(&format!("  {mangled}\n")).unwrap();
        prop_assert_eq!(decoded.payload, payload);
        prop_assert_eq!(decoded.provenance, Provenance::Pasted);
    }

    #[test]
    fn encoded_lengths(payload in common::any_payload()) {
        let bytes = payload.to_bytes().unwrap();
        let body = bytes.len() - 1 - CHECKSUM_LEN - if bytes[1] < 0x80 { 1 } else { 2 };
        let declared = if bytes[1] < 0x80 {
            usize::from(bytes[1])
        } else {
            usize::from(bytes[1] & 0x7f) | usize::from(bytes[2]) << 7
        };
        prop_assert_eq!(declared, body);
        let link = payload.to_link().unwrap();
        prop_assert_eq!(link.len(), "PETREL:".len() + (bytes.len() * 8).div_ceil(5));
        prop_assert!(link.chars().all(|c| QR_ALPHANUMERIC.contains(c)), "{}", link);
    }

    #[test]
    fn every_strict_prefix_is_truncated(payload in common::any_payload()) {
        let bytes = payload.to_bytes().unwrap();
        for cut in 0..bytes.len() {
            let err = Payload::from_bytes(&bytes[..cut]).unwrap_err();
            prop_assert!(matches!(err, PayloadError::Truncated { .. }), "cut {}: {}", cut, err);
        }
        let link = payload.to_link().unwrap();
        for cut in "PETREL:".len()..link.len() {
            let err = Payload::from_link(&link[..cut]).unwrap_err();
            prop_assert!(matches!(err, PayloadError::Truncated { .. }), "cut {}: {}", cut, err);
        }
    }

    #[test]
    fn every_bit_flip_is_refused(payload in common::any_payload()) {
        let bytes = payload.to_bytes().unwrap();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            // Almost always a checksum mismatch; a flip in the length field may also
            // read as truncated or malformed. Never a payload.
            let result = Payload::from_bytes(&flipped);
            prop_assert!(result.is_err(), "bit {} gave {:?}", bit, result);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(payload) = Payload::from_bytes(&bytes) {
            // Whatever decodes is canonical: it re-encodes to the same bytes.
            prop_assert_eq!(payload.to_bytes().unwrap(), bytes);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}", tail in "[A-Z2-7]{0,200}") {
        let _ = parse_pasted(&text);
        let _ = parse_pasted(&format!("PETREL:{tail}"));
        let _ = parse_pasted(&format!("petrel://{text}"));
    }
}

proptest! {
    // Rendering and scanning are slow in a debug build; a few cases suffice on top of
    // the fixed samples in `render.rs`.
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn qr_round_trip(payload in common::any_payload()) {
        match QrCode::new(&payload) {
            Ok(code) => {
                prop_assert!(code.version() <= MAX_QR_VERSION);
                let decoded = scan_image(&code.to_png(3).unwrap()).unwrap();
                prop_assert_eq!(decoded.payload, payload);
                prop_assert_eq!(decoded.provenance, Provenance::Scanned);
            }
            // Only large relay addresses (several long host names) may not fit.
            Err(petrel_qr::EncodeError::TooLargeForQr { link_chars, .. }) => {
                prop_assert!(link_chars > 300, "{} characters did not fit", link_chars);
            }
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
        }
    }
}
