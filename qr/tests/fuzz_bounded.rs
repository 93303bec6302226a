//! A bounded, seeded run of what `qr/fuzz` does without bound: arbitrary and mutated
//! input into the payload decoder, the link parser and the image scanner. No input may
//! panic, a contained panic ([`ScanError::DecoderFault`]) fails the test too, and
//! whatever decodes must round-trip.
//!
//! Mutations start from valid inputs, so they reach past the first check: frames get a
//! correct checksum after mutation (exercising the body decoder), PNG chunks get their
//! CRCs fixed (exercising the pixel decoder and the detector), JPEGs are mutated as is.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod photo;

use petrel_qr::payload::{CHECKSUM_LEN, checksum};
use petrel_qr::{Payload, QrCode, ScanError, parse_pasted, scan_image, scan_luma};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// Applies one to four random mutations: bit flips, byte overwrites, insertions,
/// deletions, truncation.
fn mutate(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..=4) {
        if bytes.is_empty() {
            bytes.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..bytes.len());
        match rng.random_range(0..5) {
            0 => bytes[at] ^= 1 << rng.random_range(0..8),
            1 => bytes[at] = rng.random(),
            2 => bytes.insert(at, rng.random()),
            3 => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
}

fn check_payload_bytes(bytes: &[u8]) {
    if let Ok(payload) = Payload::from_bytes(bytes) {
        assert_eq!(
            payload.to_bytes().unwrap(),
            bytes,
            "decoded payloads are canonical"
        );
        assert_eq!(
            Payload::from_link(&payload.to_link().unwrap()).unwrap(),
            payload
        );
    }
}

#[test]
fn payload_decoder_survives_arbitrary_and_mutated_frames() {
    let mut rng = common::rng(0xf022_0001);
    let seeds: Vec<Vec<u8>> = common::samples()
        .iter()
        .map(|(_, p)| p.to_bytes().unwrap())
        .collect();
    for i in 0..20_000 {
        let mut bytes = match i % 3 {
            0 => (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect(),
            _ => seeds[i % seeds.len()].clone(),
        };
        mutate(&mut rng, &mut bytes);
        check_payload_bytes(&bytes);
        // Re-seal with a valid checksum so the mutation reaches the body decoder.
        if i % 3 == 2 && bytes.len() > CHECKSUM_LEN {
            let end = bytes.len() - CHECKSUM_LEN;
            let check = checksum(&bytes[..end]);
            bytes[end..].copy_from_slice(&check);
            check_payload_bytes(&bytes);
        }
        let link = format!("PETREL:{}", data_encoding::BASE32_NOPAD.encode(&bytes));
        if let Ok(decoded) = parse_pasted(&link) {
            assert_eq!(decoded.payload.to_bytes().unwrap(), bytes);
        }
    }
}

#[test]
fn link_parser_survives_arbitrary_text() {
    let mut rng = common::rng(0xf022_0002);
    let alphabet: Vec<char> = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567abcxyz018 \n\t:/@.,[]é€\u{200b}"
        .chars()
        .collect();
    let link = common::default_invitation().to_link().unwrap();
    for i in 0..10_000 {
        let text: String = if i % 2 == 0 {
            let prefix = ["PETREL:", "petrel:", "petrel://", "", "PETREL"][i % 5];
            let body: String = (0..rng.random_range(0..300))
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            format!("{prefix}{body}")
        } else {
            let mut bytes = link.clone().into_bytes();
            mutate(&mut rng, &mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        };
        if let Ok(decoded) = parse_pasted(&text) {
            // Only the pristine link (modulo case and white space) decodes to a payload
            // that re-encodes; a `petrel://` text decodes to an address.
            let _ = decoded.payload.to_link().unwrap();
        }
    }
}

/// Recomputes every PNG chunk's CRC so that a mutated chunk is decoded, not refused.
fn fix_png_crcs(png: &mut [u8]) {
    let crc32 = |bytes: &[u8]| {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    };
    let mut at = 8;
    while at + 12 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let Some(end) = at.checked_add(8 + len).filter(|&e| e + 4 <= png.len()) else {
            break;
        };
        let crc = crc32(&png[at + 4..end]);
        png[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
}

fn scan_must_not_fault(bytes: &[u8]) {
    match scan_image(bytes) {
        Err(ScanError::DecoderFault { stage }) => panic!("contained panic while {stage}"),
        Ok(decoded) => {
            let _ = decoded.payload.to_bytes().unwrap();
        }
        Err(_) => {}
    }
}

#[test]
fn image_scanner_survives_mutated_png_and_jpeg() {
    let mut rng = common::rng(0xf022_0003);
    // Small images (2 pixels per module) keep each scan cheap in a debug build.
    let code = QrCode::new(&common::default_invitation()).unwrap();
    let png = code.to_png(2).unwrap();
    let jpeg = photo::encode(&code.to_image(2).unwrap(), Some(50));
    assert!(scan_image(&code.to_png(2).unwrap()).is_ok());
    for i in 0..300 {
        let mut bytes = if i % 2 == 0 {
            png.clone()
        } else {
            jpeg.clone()
        };
        mutate(&mut rng, &mut bytes);
        if i % 2 == 0 {
            fix_png_crcs(&mut bytes);
        }
        scan_must_not_fault(&bytes);
    }
}

#[test]
fn detector_survives_random_and_qr_like_frames() {
    let mut rng = common::rng(0xf022_0004);
    let code = QrCode::new(&common::default_invitation()).unwrap();
    let side = 2 * code.padded_width();
    let clean = code.to_image(2).unwrap().into_raw();
    for i in 0..120 {
        let pixels: Vec<u8> = match i % 3 {
            // Noise.
            0 => (0..side * side).map(|_| rng.random()).collect(),
            // The real code with a share of its pixels replaced: finder patterns mostly
            // intact, so the detector gets as far as sampling and error correction.
            _ => {
                let share = rng.random_range(0.0..0.4);
                clean
                    .iter()
                    .map(|&p| {
                        if rng.random_bool(share) {
                            rng.random()
                        } else {
                            p
                        }
                    })
                    .collect()
            }
        };
        match scan_luma(side as u32, side as u32, &pixels) {
            Err(ScanError::DecoderFault { stage }) => panic!("contained panic while {stage}"),
            Ok(decoded) => assert_eq!(decoded.payload, common::default_invitation()),
            Err(_) => {}
        }
    }
}
