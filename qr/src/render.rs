//! Rendering: a payload's link as a QR code, for the terminal, as PNG and as SVG.
//!
//! The QR code holds the link text exactly as [`Payload::to_link`] writes it, at
//! error-correction level M (15 % of the code words can be lost: enough for a screen photo
//! with glare, still small) and version [`MAX_QR_VERSION`] at most, so a phone can read it
//! at arm's length. The encoder picks the smallest version that fits; since the link is
//! all QR-alphanumeric characters, the whole text goes in one alphanumeric segment.
//!
//! Every output has a [`QUIET_ZONE`] of light modules around the symbol: scanners need it
//! to find the finder patterns, and a terminal's or a page's own background cannot be
//! trusted to provide it.

use crate::error::EncodeError;
use crate::payload::Payload;
use image::{GrayImage, ImageEncoder, Luma};
use qrcode::{Color, EcLevel, Version};
use std::fmt::Write as _;

/// Largest QR version the renderer produces by default (57 × 57 modules).
pub const MAX_QR_VERSION: u8 = 10;

/// Light modules around the symbol on every side, as the QR standard asks.
pub const QUIET_ZONE: usize = 4;

/// The error-correction level used, by its standard letter.
pub const EC_LEVEL_NAME: char = 'M';

/// Largest module size [`QrCode::to_png`] accepts, in pixels.
pub const MAX_MODULE_PX: u32 = 64;

/// How [`QrCode::to_terminal`] draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TerminalStyle {
    /// Black on white with explicit colours from the 256-colour cube (16 and 231), which
    /// terminal themes leave alone, so the code reads the same on dark and light themes.
    #[default]
    Colored,
    /// No escape codes; dark modules drawn as blocks. For light terminals, files, logs.
    PlainDarkOnLight,
    /// No escape codes; light modules drawn as blocks (the quiet zone too). For dark
    /// terminals that do not show colours.
    PlainLightOnDark,
}

/// A QR code symbol: a square of dark and light modules, without the quiet zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrCode {
    version: u8,
    width: usize,
    dark: Vec<bool>,
}

impl QrCode {
    /// The QR code of a payload's link, at level M, version [`MAX_QR_VERSION`] at most.
    pub fn new(payload: &Payload) -> Result<Self, EncodeError> {
        Self::with_max_version(payload, MAX_QR_VERSION)
    }

    /// As [`QrCode::new`] but allowing versions up to `max_version` (at most 40), for
    /// payloads that are only ever shown on large screens or printed.
    pub fn with_max_version(payload: &Payload, max_version: u8) -> Result<Self, EncodeError> {
        Self::from_text(&payload.to_link()?, max_version)
    }

    /// The QR code of arbitrary text (for tests of the decoder's error paths).
    pub fn from_text(text: &str, max_version: u8) -> Result<Self, EncodeError> {
        let too_large = || EncodeError::TooLargeForQr {
            link_chars: text.chars().count(),
            max_version,
        };
        if !(1..=40).contains(&max_version) {
            return Err(EncodeError::BadOption(
                "the QR version must be from 1 to 40",
            ));
        }
        let code = qrcode::QrCode::with_error_correction_level(text, EcLevel::M)
            .map_err(|_| too_large())?;
        let version = match code.version() {
            Version::Normal(v) => u8::try_from(v).map_err(|_| too_large())?,
            Version::Micro(_) => return Err(too_large()),
        };
        if version > max_version {
            return Err(too_large());
        }
        let dark = code
            .to_colors()
            .into_iter()
            .map(|c| c == Color::Dark)
            .collect();
        Ok(Self {
            version,
            width: code.width(),
            dark,
        })
    }

    /// The QR version (1 to 40); the symbol is `17 + 4 × version` modules wide.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Modules per side, without the quiet zone.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Whether the module at column `x`, row `y` is dark; outside the symbol (the quiet
    /// zone and beyond) everything is light.
    pub fn is_dark(&self, x: usize, y: usize) -> bool {
        x < self.width && y < self.width && self.dark.get(y * self.width + x) == Some(&true)
    }

    /// Whether the module at `(x, y)` counted with the quiet zone (so the symbol starts at
    /// `(QUIET_ZONE, QUIET_ZONE)`) is dark.
    fn is_dark_padded(&self, x: usize, y: usize) -> bool {
        match (x.checked_sub(QUIET_ZONE), y.checked_sub(QUIET_ZONE)) {
            (Some(x), Some(y)) => self.is_dark(x, y),
            _ => false,
        }
    }

    /// Modules per side including the quiet zone on both sides.
    pub fn padded_width(&self) -> usize {
        self.width + 2 * QUIET_ZONE
    }

    /// The code as text for a terminal: each character covers one module across and two
    /// down (Unicode half blocks), quiet zone included, lines ending in `\n`.
    pub fn to_terminal(&self, style: TerminalStyle) -> String {
        let n = self.padded_width();
        let (start, end) = match style {
            TerminalStyle::Colored => ("\x1b[38;5;16;48;5;231m", "\x1b[0m"),
            _ => ("", ""),
        };
        // In the "light on dark" style the blocks stand for light modules.
        let ink = |x, y| match style {
            TerminalStyle::PlainLightOnDark => y < n && !self.is_dark_padded(x, y),
            _ => y < n && self.is_dark_padded(x, y),
        };
        let mut out = String::with_capacity(n.div_ceil(2) * (n * 3 + 24));
        for row in (0..n).step_by(2) {
            out.push_str(start);
            for x in 0..n {
                out.push(match (ink(x, row), ink(x, row + 1)) {
                    (true, true) => '█',
                    (true, false) => '▀',
                    (false, true) => '▄',
                    (false, false) => ' ',
                });
            }
            out.push_str(end);
            out.push('\n');
        }
        out
    }

    /// The code as an SVG document: a white square and one path of black runs, one unit
    /// per module, shown at `module_px` pixels per module (it scales without loss).
    /// `stroke="none"` is explicit because some renderers (ImageMagick's own) otherwise
    /// outline every shape.
    pub fn to_svg(&self, module_px: u32) -> String {
        let n = self.padded_width();
        let size = n as u64 * u64::from(module_px.max(1));
        let mut path = String::new();
        for y in 0..n {
            let mut x = 0;
            while x < n {
                if !self.is_dark_padded(x, y) {
                    x += 1;
                    continue;
                }
                let run = (x..n).take_while(|&i| self.is_dark_padded(i, y)).count();
                let _ = write!(path, "M{x} {y}h{run}v1h-{run}z");
                x += run;
            }
        }
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{size}\" \
             height=\"{size}\" viewBox=\"0 0 {n} {n}\" shape-rendering=\"crispEdges\">\n\
             <rect width=\"{n}\" height=\"{n}\" fill=\"#ffffff\" stroke=\"none\"/>\n\
             <path fill=\"#000000\" stroke=\"none\" d=\"{path}\"/>\n\
             </svg>\n"
        )
    }

    /// The code as an 8-bit greyscale image, `module_px` pixels per module.
    pub fn to_image(&self, module_px: u32) -> Result<GrayImage, EncodeError> {
        if !(1..=MAX_MODULE_PX).contains(&module_px) {
            return Err(EncodeError::BadOption(
                "the module size must be from 1 to 64 pixels",
            ));
        }
        let n = self.padded_width();
        let side = u32::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(module_px))
            .ok_or(EncodeError::BadOption("the image would be too large"))?;
        let px = module_px as usize;
        Ok(GrayImage::from_fn(side, side, |x, y| {
            let dark = self.is_dark_padded(x as usize / px, y as usize / px);
            Luma([if dark { 0 } else { 255 }])
        }))
    }

    /// The code as a PNG file (8-bit greyscale), `module_px` pixels per module. Eight
    /// pixels per module is a good default for screens.
    pub fn to_png(&self, module_px: u32) -> Result<Vec<u8>, EncodeError> {
        let image = self.to_image(module_px)?;
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(
                image.as_raw(),
                image.width(),
                image.height(),
                image::ExtendedColorType::L8,
            )
            .map_err(|e| EncodeError::Png(e.to_string()))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_limit_is_enforced() {
        let long = "A".repeat(400);
        assert!(matches!(
            QrCode::from_text(&long, MAX_QR_VERSION),
            Err(EncodeError::TooLargeForQr {
                max_version: 10,
                ..
            })
        ));
        assert!(QrCode::from_text(&long, 40).is_ok());
        assert!(QrCode::from_text("x", 0).is_err());
        assert!(QrCode::from_text(&"A".repeat(5000), 40).is_err());
    }

    #[test]
    fn quiet_zone_and_finder_pattern() {
        let code = QrCode::from_text("PETREL:AAAA", 10).unwrap();
        assert_eq!(code.version(), 1);
        assert_eq!(code.width(), 21);
        assert!(code.is_dark(0, 0) && !code.is_dark(21, 0));
        assert!(!code.is_dark_padded(QUIET_ZONE - 1, QUIET_ZONE));
        assert!(code.is_dark_padded(QUIET_ZONE, QUIET_ZONE));
        let text = code.to_terminal(TerminalStyle::PlainDarkOnLight);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 29usize.div_ceil(2));
        assert!(lines.iter().all(|l| l.chars().count() == 29));
        assert!(lines[0].chars().all(|c| c == ' '));
        assert!(code.to_image(0).is_err() && code.to_image(65).is_err());
    }
}
