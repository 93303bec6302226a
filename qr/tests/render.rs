//! Rendering round trips: every sample payload → PNG / SVG / terminal text → scan gives
//! the same payload, marked as scanned; and the sizes the specification promises.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod photo;

use image::{GrayImage, Luma};
use petrel_qr::{MAX_QR_VERSION, Payload, Provenance, QUIET_ZONE, QrCode, TerminalStyle};
use petrel_qr::{scan_image, scan_luma};

#[test]
fn png_round_trip_for_every_sample() {
    for (name, payload) in common::samples() {
        let code = QrCode::new(&payload).unwrap();
        for module_px in [2, 4, 8] {
            let png = code.to_png(module_px).unwrap();
            let decoded = scan_image(&png).unwrap_or_else(|e| panic!("{name} at {module_px}: {e}"));
            assert_eq!(decoded.payload, payload, "{name}");
            assert_eq!(decoded.provenance, Provenance::Scanned);
        }
    }
}

#[test]
fn png_has_the_quiet_zone_and_the_asked_size() {
    let code = QrCode::new(&common::default_invitation()).unwrap();
    let png = code.to_png(8).unwrap();
    let image = image::load_from_memory(&png).unwrap().into_luma8();
    assert_eq!(image.width(), 8 * (code.width() + 2 * QUIET_ZONE) as u32);
    let q = (8 * QUIET_ZONE) as u32;
    for i in 0..image.width() {
        for j in 0..q {
            assert_eq!(image.get_pixel(i, j).0[0], 255, "top quiet zone at {i},{j}");
            assert_eq!(
                image.get_pixel(j, i).0[0],
                255,
                "left quiet zone at {j},{i}"
            );
        }
    }
    assert_eq!(image.get_pixel(q, q).0[0], 0, "finder pattern corner");
}

/// Rasterises the SVG subset [`QrCode::to_svg`] writes: the viewBox, and a path of
/// `M x y h n v1 h-n z` runs. Deliberately strict, so a change in the output shows.
fn rasterize_svg(svg: &str, px: u32) -> GrayImage {
    let view = svg.split("viewBox=\"0 0 ").nth(1).unwrap();
    let n: u32 = view.split(' ').next().unwrap().parse().unwrap();
    let mut image = GrayImage::from_pixel(n * px, n * px, Luma([255]));
    let d = svg
        .split(" d=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    for run in d.split('z').filter(|r| !r.is_empty()) {
        let rest = run.strip_prefix('M').unwrap();
        let (xy, rest) = rest.split_once('h').unwrap();
        let (x, y) = xy.split_once(' ').unwrap();
        let (len, rest) = rest.split_once('v').unwrap();
        assert_eq!(rest, format!("1h-{len}"));
        let (x, y, len): (u32, u32, u32) =
            (x.parse().unwrap(), y.parse().unwrap(), len.parse().unwrap());
        for yy in y * px..(y + 1) * px {
            for xx in x * px..(x + len) * px {
                image.put_pixel(xx, yy, Luma([0]));
            }
        }
    }
    image
}

#[test]
fn svg_round_trip_for_every_sample() {
    for (name, payload) in common::samples() {
        let code = QrCode::new(&payload).unwrap();
        let svg = code.to_svg(8);
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
        let side = 8 * code.padded_width();
        assert!(
            svg.contains(&format!("width=\"{side}\" height=\"{side}\"")),
            "{name}"
        );
        let image = rasterize_svg(&svg, 4);
        // The SVG shows exactly the modules of the code.
        let n = code.padded_width();
        for y in 0..n {
            for x in 0..n {
                let dark = image.get_pixel(4 * x as u32 + 1, 4 * y as u32 + 1).0[0] == 0;
                let expected = x >= QUIET_ZONE
                    && y >= QUIET_ZONE
                    && code.is_dark(x - QUIET_ZONE, y - QUIET_ZONE);
                assert_eq!(dark, expected, "{name} module {x},{y}");
            }
        }
        let png = photo::encode(&image, None);
        assert_eq!(scan_image(&png).unwrap().payload, payload, "{name}");
    }
}

/// Reads terminal text back into a module grid: each character is two modules, top and
/// bottom. `ink_is_dark` says whether the block glyphs stand for dark modules.
fn modules_from_terminal(text: &str, ink_is_dark: bool) -> Vec<Vec<bool>> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let line = line
            .replace("\x1b[38;5;16;48;5;231m", "")
            .replace("\x1b[0m", "");
        let (mut top, mut bottom) = (Vec::new(), Vec::new());
        for c in line.chars() {
            let (t, b) = match c {
                '█' => (true, true),
                '▀' => (true, false),
                '▄' => (false, true),
                ' ' => (false, false),
                other => panic!("unexpected character {other:?}"),
            };
            top.push(t == ink_is_dark);
            bottom.push(b == ink_is_dark);
        }
        rows.push(top);
        rows.push(bottom);
    }
    rows
}

#[test]
fn terminal_output_round_trips_in_every_style() {
    let payload = common::default_invitation();
    let code = QrCode::new(&payload).unwrap();
    let n = code.padded_width();
    for (style, ink_is_dark) in [
        (TerminalStyle::Colored, true),
        (TerminalStyle::PlainDarkOnLight, true),
        (TerminalStyle::PlainLightOnDark, false),
    ] {
        let text = code.to_terminal(style);
        assert_eq!(text.lines().count(), n.div_ceil(2), "{style:?}");
        if style == TerminalStyle::Colored {
            // Every line sets its own colours and resets them, so nothing leaks.
            assert!(
                text.lines()
                    .all(|l| l.starts_with("\x1b[38;5;16;48;5;231m") && l.ends_with("\x1b[0m"))
            );
        } else {
            assert!(!text.contains('\x1b'));
        }
        let rows = modules_from_terminal(&text, ink_is_dark);
        for (y, row) in rows.iter().take(n).enumerate() {
            assert_eq!(row.len(), n);
            for (x, &dark) in row.iter().enumerate() {
                let expected = x >= QUIET_ZONE
                    && y >= QUIET_ZONE
                    && code.is_dark(x - QUIET_ZONE, y - QUIET_ZONE);
                assert_eq!(dark, expected, "{style:?} module {x},{y}");
            }
        }
        // Screenshots: the style on the theme it is meant for, and the plain dark-on-light
        // style on a dark theme by mistake, which shows the code inverted.
        let glyph_on_theme = |glyph: bool, dark_theme: bool| match (glyph, dark_theme) {
            (true, false) | (false, true) => 20u8,
            _ => 230u8,
        };
        let dark_theme = style == TerminalStyle::PlainLightOnDark;
        let mut shots = vec![screenshot(&rows, n, |dark| {
            glyph_on_theme(dark == ink_is_dark, dark_theme)
        })];
        if style == TerminalStyle::PlainDarkOnLight {
            shots.push(screenshot(&rows, n, |dark| glyph_on_theme(dark, true)));
        }
        for (side, pixels) in shots {
            let decoded =
                scan_luma(side, side, &pixels).unwrap_or_else(|e| panic!("{style:?}: {e}"));
            assert_eq!(decoded.payload, payload);
        }
    }
}

/// A 4-pixels-per-module screenshot of a module grid, `shade` giving each module's grey.
fn screenshot(rows: &[Vec<bool>], n: usize, shade: impl Fn(bool) -> u8) -> (u32, Vec<u8>) {
    let px = 4;
    let mut pixels = vec![0u8; n * px * n * px];
    for (y, row) in rows.iter().take(n).enumerate() {
        for (x, &dark) in row.iter().enumerate() {
            for dy in 0..px {
                for dx in 0..px {
                    pixels[(y * px + dy) * n * px + x * px + dx] = shade(dark);
                }
            }
        }
    }
    ((n * px) as u32, pixels)
}

#[test]
fn default_invitation_fits_the_promised_qr_versions() {
    // specs/qr.md §"Sizes" quotes these numbers.
    let cases: [(&str, Payload, u8, usize); 3] = [
        ("one IPv4 endpoint", common::default_invitation(), 7, 161),
        ("one wss host name", common::paas_invitation(), 8, 195),
        (
            "relay address, one IPv4 endpoint",
            common::samples()[3].1.clone(),
            4,
            83,
        ),
    ];
    for (name, payload, version, link_chars) in cases {
        let code = QrCode::new(&payload).unwrap();
        assert_eq!(code.version(), version, "{name}");
        assert_eq!(payload.to_link().unwrap().len(), link_chars, "{name}");
        assert!(code.version() <= MAX_QR_VERSION);
        assert_eq!(code.width(), 17 + 4 * usize::from(version));
    }
}

#[test]
fn version_10_budget_is_101_bytes_of_endpoints() {
    // specs/qr.md §"Sizes": an invitation fits version 10 at level M while its relay's
    // endpoints take at most 101 bytes of binary form. A host-name endpoint with a port
    // of 128 or more takes 5 bytes plus the name.
    let with_name = |len: usize| {
        let name = format!("{}.{}", "a".repeat(60), "b".repeat(len - 61));
        Payload::Invitation(common::invitation(
            petrel_qr::Purpose::Connect,
            common::relay(3, &[&format!("wss/{name}:443")]),
        ))
    };
    assert_eq!(QrCode::new(&with_name(96)).unwrap().version(), 10);
    assert!(matches!(
        QrCode::new(&with_name(97)),
        Err(petrel_qr::EncodeError::TooLargeForQr {
            max_version: 10,
            ..
        })
    ));
    assert_eq!(
        QrCode::with_max_version(&with_name(97), 40)
            .unwrap()
            .version(),
        11
    );
    // Alphanumeric mode is worth two versions: the same link in lower case (byte mode)
    // needs version 9 instead of 7.
    let link = common::default_invitation().to_link().unwrap();
    assert_eq!(
        QrCode::from_text(&link.to_lowercase(), 40)
            .unwrap()
            .version(),
        9
    );
}

#[test]
fn a_relay_address_printed_as_text_scans_as_a_relay_address() {
    // An operator may print `petrel://…` itself rather than Petrel's link form.
    let relay = common::relay(7, &["203.0.113.5:5223", "wss/relay.example.org:443"]);
    let png = QrCode::from_text(&relay.to_string(), 10)
        .unwrap()
        .to_png(4)
        .unwrap();
    let decoded = scan_image(&png).unwrap();
    assert_eq!(decoded.relay_address(), Some(&relay));
    assert_eq!(decoded.provenance, Provenance::Scanned);
}
