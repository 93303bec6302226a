//! Every error a scan can give, each produced from a real image file: PNG or JPEG bytes
//! as a user would hand them over, never a hand-built error value.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod photo;

use image::{GrayImage, Luma, Rgba, RgbaImage};
use petrel_qr::payload::checksum;
use petrel_qr::{ImageLimits, PayloadError, QrCode, ScanError, scan_image, scan_image_with_limits};

fn png_of_text(text: &str) -> Vec<u8> {
    QrCode::from_text(text, 40).unwrap().to_png(6).unwrap()
}

fn default_link() -> String {
    common::default_invitation().to_link().unwrap()
}

/// CRC-32 (IEEE), as PNG chunks use it.
fn crc32(bytes: &[u8]) -> u32 {
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
}

/// A PNG whose header claims `width × height` but whose data is a single tiny row: a
/// decompression bomb's shape, cheap to build.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = photo::encode(&GrayImage::from_pixel(1, 1, Luma([255])), None);
    // The IHDR chunk starts at byte 8: length (4), "IHDR" (4), width, height, ...
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

#[test]
fn not_an_image() {
    for bytes in [
        &b""[..],
        b"hello, this is text",
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
    ] {
        assert!(
            matches!(scan_image(bytes), Err(ScanError::NotAnImage(_))),
            "{bytes:?}"
        );
    }
    // A real PNG cut in half: recognised as PNG, refused as corrupt.
    let png = QrCode::new(&common::default_invitation())
        .unwrap()
        .to_png(8)
        .unwrap();
    let err = scan_image(&png[..png.len() / 2]).unwrap_err();
    assert!(matches!(err, ScanError::NotAnImage(_)), "{err}");
    // A JPEG cut short likewise.
    let jpeg = photo::encode(&GrayImage::from_pixel(64, 64, Luma([200])), Some(80));
    assert!(matches!(
        scan_image(&jpeg[..40]),
        Err(ScanError::NotAnImage(_))
    ));
}

#[test]
fn image_too_large_is_refused_before_decoding() {
    // Header says 60 000 × 60 000 (3.6 gigapixels); refused from the header alone.
    let err = scan_image(&png_claiming(60_000, 60_000)).unwrap_err();
    assert!(
        matches!(&err, ScanError::ImageTooLarge { what } if what.contains("60000 × 60000")),
        "{err}"
    );
    assert!(matches!(
        scan_image(&png_claiming(10_001, 1)),
        Err(ScanError::ImageTooLarge { .. })
    ));
    // Within width and height, over the allocation limit.
    let limits = ImageLimits {
        max_alloc: 1 << 20,
        ..ImageLimits::default()
    };
    let big = photo::encode(&GrayImage::from_pixel(2000, 2000, Luma([255])), None);
    let err = scan_image_with_limits(&big, &limits).unwrap_err();
    assert!(matches!(err, ScanError::ImageTooLarge { .. }), "{err}");
    // Over the file size limit.
    let limits = ImageLimits {
        max_file_bytes: 100,
        ..ImageLimits::default()
    };
    assert!(matches!(
        scan_image_with_limits(&big, &limits),
        Err(ScanError::ImageTooLarge { .. })
    ));
}

#[test]
fn no_qr_found() {
    // A cluttered photo of a blank card: shapes, text-like marks and a fake finder
    // pattern, but no QR code.
    let blank = GrayImage::from_pixel(400, 400, Luma([250]));
    let shot = photo::Shot {
        clutter: true,
        angle: 30.0,
        ..photo::Shot::default()
    };
    let bytes = photograph_seeded(&blank, &shot, 1);
    assert_eq!(scan_image(&bytes).unwrap_err(), ScanError::NoQrFound);
}

fn photograph_seeded(code: &GrayImage, shot: &photo::Shot, seed: u64) -> Vec<u8> {
    photo::photograph(code, shot, &mut common::rng(seed))
}

#[test]
fn unreadable_code_is_reported_as_such() {
    // The default invitation with a third of its data area scrambled: the finder
    // patterns are intact, so the code is found, but error correction cannot repair it.
    let code = QrCode::new(&common::default_invitation()).unwrap();
    let mut image = code.to_image(8).unwrap();
    let mut rng = common::rng(7);
    let (from, to) = (8 * (4 + 10), 8 * (4 + 35));
    for my in (from..to).step_by(8) {
        for mx in (from..to).step_by(8) {
            let shade = if rand::RngExt::random_bool(&mut rng, 0.5) {
                0
            } else {
                255
            };
            for y in my..my + 8 {
                for x in mx..mx + 8 {
                    image.put_pixel(x, y, Luma([shade]));
                }
            }
        }
    }
    let err = scan_image(&photo::encode(&image, None)).unwrap_err();
    assert!(matches!(err, ScanError::Unreadable(_)), "{err}");
}

#[test]
fn a_foreign_code_shows_what_it_says() {
    let err = scan_image(&png_of_text("https://example.org/login?next=/home")).unwrap_err();
    assert_eq!(
        err,
        ScanError::Payload(PayloadError::NotPetrel {
            preview: "https://example.org/login?next=/home".into()
        })
    );
    assert!(
        err.to_string().contains("https://example.org/login"),
        "{err}"
    );
    // Long content is cut, control characters escaped.
    let long = format!("WIFI:S:home;T:WPA;P:{};\n", "x".repeat(200));
    match scan_image(&png_of_text(&long)).unwrap_err() {
        ScanError::Payload(PayloadError::NotPetrel { preview }) => {
            assert_eq!(preview.chars().count(), petrel_qr::PREVIEW_CHARS + 1);
            assert!(preview.starts_with("WIFI:S:home") && preview.ends_with('…'));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn unsupported_version() {
    // Kind 1 (invitation), version 2, with a valid checksum: intact but newer.
    let mut frame = vec![0x12, 0x01, 0x00];
    let check = checksum(&frame);
    frame.extend_from_slice(&check);
    let link = format!("PETREL:{}", data_encoding::BASE32_NOPAD.encode(&frame));
    let err = scan_image(&png_of_text(&link)).unwrap_err();
    assert_eq!(
        err,
        ScanError::Payload(PayloadError::UnsupportedVersion {
            kind: 1,
            version: 2
        })
    );
}

#[test]
fn checksum_mismatch() {
    // One base32 character changed in the middle of the link (still valid base32).
    let mut link = default_link().into_bytes();
    link[60] = if link[60] == b'A' { b'B' } else { b'A' };
    let err = scan_image(&png_of_text(std::str::from_utf8(&link).unwrap())).unwrap_err();
    assert_eq!(err, ScanError::Payload(PayloadError::ChecksumMismatch));
}

#[test]
fn truncated() {
    let link = default_link();
    for cut in [8, 40, 100, link.len() - 1] {
        let err = scan_image(&png_of_text(&link[..cut])).unwrap_err();
        assert!(
            matches!(err, ScanError::Payload(PayloadError::Truncated { .. })),
            "{cut}: {err}"
        );
    }
}

#[test]
fn other_payload_errors_from_images() {
    let link = default_link();
    let err = scan_image(&png_of_text(&format!("{}1{}", &link[..30], &link[31..]))).unwrap_err();
    assert!(
        matches!(
            err,
            ScanError::Payload(PayloadError::BadCharacter {
                found: '1',
                position: 23
            })
        ),
        "{err}"
    );
    let err = scan_image(&png_of_text("petrel://nonsense")).unwrap_err();
    assert!(
        matches!(err, ScanError::Payload(PayloadError::BadRelayAddress(_))),
        "{err}"
    );
    let mut frame = common::default_invitation().to_bytes().unwrap();
    frame.push(0);
    let long = format!("PETREL:{}", data_encoding::BASE32_NOPAD.encode(&frame));
    let err = scan_image(&png_of_text(&long)).unwrap_err();
    assert!(
        matches!(err, ScanError::Payload(PayloadError::Malformed(_))),
        "{err}"
    );
}

#[test]
fn petrel_code_wins_next_to_a_foreign_one() {
    let payload = common::default_invitation();
    let ours = QrCode::new(&payload).unwrap().to_image(4).unwrap();
    let theirs = image::load_from_memory(&png_of_text("https://example.org/"))
        .unwrap()
        .into_luma8();
    let mut both = GrayImage::from_pixel(
        ours.width() + theirs.width() + 20,
        ours.height().max(theirs.height()),
        Luma([255]),
    );
    image::imageops::replace(&mut both, &theirs, 0, 0);
    image::imageops::replace(&mut both, &ours, i64::from(theirs.width()) + 20, 0);
    assert_eq!(
        scan_image(&photo::encode(&both, None)).unwrap().payload,
        payload
    );
}

#[test]
fn transparent_png_is_composited_over_white() {
    // Black modules on a fully transparent background whose colour channels are black
    // too, as many web generators write it: read naively, the whole image is black.
    let payload = common::default_invitation();
    let code = QrCode::new(&payload).unwrap().to_image(6).unwrap();
    let rgba = RgbaImage::from_fn(code.width(), code.height(), |x, y| {
        if code.get_pixel(x, y).0[0] == 0 {
            Rgba([0, 0, 0, 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    });
    let mut png = Vec::new();
    rgba.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    assert_eq!(scan_image(&png).unwrap().payload, payload);
}
