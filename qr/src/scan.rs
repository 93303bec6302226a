//! Scanning: PNG or JPEG bytes (or a camera frame) back to a payload.
//!
//! 1. **Limits first.** The file size, then the width and height from the image header,
//!    are checked against [`ImageLimits`] before a single pixel is decoded; the decoder
//!    itself runs under `image::Limits` so its allocations are capped too. A
//!    decompression bomb costs a header parse.
//! 2. **Greyscale.** Transparent pixels are composited over white (a transparent PNG with
//!    black modules would otherwise be all black).
//! 3. **Detection passes** (`prep.rs` explains each), cheapest first, stopping at
//!    the first pass that reads a QR code: as is; smoothed, contrast stretched and
//!    locally thresholded; enlarged (tiny codes); shrunk (noisy or huge codes);
//!    sharpened and enlarged (small, blurred codes); inverted (light on dark).
//! 4. **Interpretation.** The first QR code whose text is a valid Petrel payload wins;
//!    otherwise the most telling error: a foreign code (with a preview of what it says),
//!    a damaged Petrel code, a code that could not be read, or no code at all.
//!
//! The image decoder and the detector are third-party code fed untrusted input; a panic
//! in either is contained and reported as [`ScanError::DecoderFault`].

use crate::error::{PayloadError, ScanError, preview};
use crate::link::parse_text;
use crate::prep::{Gray, binarize, enlarge, invert, sharpen, shrink, smooth, stretch};
use crate::{Decoded, PREVIEW_CHARS, Provenance};
use image::{DynamicImage, ImageFormat, ImageReader};
use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Size limits for images to scan. The defaults admit any phone photo (50 megapixels)
/// and refuse anything whose decoded pixels would take more than 256 MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest file, in bytes (default 64 MiB).
    pub max_file_bytes: usize,
    /// Widest image, in pixels (default 10 000).
    pub max_width: u32,
    /// Tallest image, in pixels (default 10 000).
    pub max_height: u32,
    /// Most memory the image decoder may allocate, in bytes (default 256 MiB).
    pub max_alloc: u64,
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: 64 << 20,
            max_width: 10_000,
            max_height: 10_000,
            max_alloc: 256 << 20,
        }
    }
}

/// Detection works on at most this many pixels along the long side; larger images are
/// averaged down first (a QR code that needs more is not one a phone could show).
const WORKING_LONG_SIDE: usize = 1400;

/// Scans a PNG or JPEG image with the default [`ImageLimits`].
pub fn scan_image(bytes: &[u8]) -> Result<Decoded, ScanError> {
    scan_image_with_limits(bytes, &ImageLimits::default())
}

/// Scans a PNG or JPEG image under the given limits.
pub fn scan_image_with_limits(bytes: &[u8], limits: &ImageLimits) -> Result<Decoded, ScanError> {
    if bytes.len() > limits.max_file_bytes {
        return Err(ScanError::ImageTooLarge {
            what: format!("{} bytes, limit {}", bytes.len(), limits.max_file_bytes),
        });
    }
    let gray = catch_unwind(AssertUnwindSafe(|| load_gray(bytes, limits))).map_err(|_| {
        ScanError::DecoderFault {
            stage: "decoding the image",
        }
    })??;
    detect(gray)
}

/// Scans an 8-bit greyscale frame (`width × height` bytes, row-major, 0 = black), as a
/// camera delivers it. The default [`ImageLimits`] width and height apply.
pub fn scan_luma(width: u32, height: u32, pixels: &[u8]) -> Result<Decoded, ScanError> {
    let limits = ImageLimits::default();
    check_dimensions(width, height, &limits)?;
    let (width, height) = (width as usize, height as usize);
    if pixels.len() != width * height {
        return Err(ScanError::NotAnImage(format!(
            "{} bytes of pixels for a {width} × {height} frame",
            pixels.len()
        )));
    }
    detect(Gray {
        width,
        height,
        pixels: pixels.to_vec(),
    })
}

fn check_dimensions(width: u32, height: u32, limits: &ImageLimits) -> Result<(), ScanError> {
    if width == 0 || height == 0 {
        return Err(ScanError::NotAnImage(format!(
            "the image is {width} × {height} pixels"
        )));
    }
    if width > limits.max_width || height > limits.max_height {
        return Err(ScanError::ImageTooLarge {
            what: format!(
                "{width} × {height} pixels, limit {} × {}",
                limits.max_width, limits.max_height
            ),
        });
    }
    Ok(())
}

fn reader(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>, ScanError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ScanError::NotAnImage(e.to_string()))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => Ok(reader),
        Some(other) => Err(ScanError::NotAnImage(format!(
            "{other:?} images are not supported; use PNG or JPEG"
        ))),
        None => Err(ScanError::NotAnImage(
            "the data is neither PNG nor JPEG".into(),
        )),
    }
}

fn load_gray(bytes: &[u8], limits: &ImageLimits) -> Result<Gray, ScanError> {
    let (width, height) = reader(bytes)?
        .into_dimensions()
        .map_err(|e| ScanError::NotAnImage(e.to_string()))?;
    check_dimensions(width, height, limits)?;
    let mut reader = reader(bytes)?;
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_width);
    decoder_limits.max_image_height = Some(limits.max_height);
    decoder_limits.max_alloc = Some(limits.max_alloc);
    reader.limits(decoder_limits);
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(limit) => ScanError::ImageTooLarge {
            what: format!("{width} × {height} pixels: {limit}"),
        },
        other => ScanError::NotAnImage(other.to_string()),
    })?;
    Ok(to_gray(image))
}

/// Greyscale, with any transparency composited over white.
fn to_gray(image: DynamicImage) -> Gray {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let pixels = if image.color().has_alpha() {
        image
            .to_luma_alpha8()
            .pixels()
            .map(|p| {
                let [luma, alpha] = p.0;
                let (l, a) = (u32::from(luma), u32::from(alpha));
                ((l * a + 255 * (255 - a) + 127) / 255) as u8
            })
            .collect()
    } else {
        image.into_luma8().into_raw()
    };
    Gray {
        width,
        height,
        pixels,
    }
}

/// What one detection pass found.
#[derive(Default)]
struct Found {
    /// Contents of the QR codes read, in the order found.
    contents: Vec<Vec<u8>>,
    /// Why located codes could not be read.
    failures: Vec<String>,
}

fn detect(gray: Gray) -> Result<Decoded, ScanError> {
    let base = match gray.long_side().div_ceil(WORKING_LONG_SIDE) {
        0 | 1 => gray,
        factor => shrink(&gray, factor),
    };
    let mut failures = Vec::new();
    for pass in 0..PASSES {
        let found = catch_unwind(AssertUnwindSafe(|| run_pass(&base, pass))).map_err(|_| {
            ScanError::DecoderFault {
                stage: "looking for QR codes",
            }
        })?;
        failures.extend(found.failures);
        if !found.contents.is_empty() {
            return interpret(found.contents);
        }
    }
    match failures.into_iter().next() {
        Some(reason) => Err(ScanError::Unreadable(reason)),
        None => Err(ScanError::NoQrFound),
    }
}

/// Number of detection passes [`run_pass`] knows.
const PASSES: usize = 7;

fn run_pass(base: &Gray, pass: usize) -> Found {
    let small = base.long_side() <= WORKING_LONG_SIDE / 2;
    match pass {
        0 => read_grey(base),
        1 => read_bits(&stretch(&smooth(base))),
        2 if small => read_bits(&enlarge(base)),
        3 if base.long_side() >= 200 => read_grey(&shrink(base, 2)),
        4 if small => read_bits(&enlarge(&sharpen(base))),
        5 => read_grey(&invert(base)),
        6 => read_bits(&invert(&stretch(&smooth(base)))),
        _ => Found::default(),
    }
}

/// One pass with rqrr's own row-average threshold.
fn read_grey(img: &Gray) -> Found {
    let mut prepared =
        rqrr::PreparedImage::prepare_from_greyscale(img.width, img.height, |x, y| img.at(x, y));
    read_grids(prepared.detect_grids())
}

/// One pass with the local-mean threshold of [`binarize`].
fn read_bits(img: &Gray) -> Found {
    let window = (img.long_side() / 8).max(15) | 1;
    let bits = binarize(img, window, 10);
    let width = img.width;
    let mut prepared = rqrr::PreparedImage::prepare_from_bitmap(img.width, img.height, |x, y| {
        bits.get(y * width + x).copied().unwrap_or(false)
    });
    read_grids(prepared.detect_grids())
}

fn read_grids<G: rqrr::BitGrid>(grids: Vec<rqrr::Grid<G>>) -> Found {
    let mut found = Found::default();
    for grid in grids {
        let mut content = Vec::new();
        match grid.decode_to(&mut content) {
            Ok(_) => found.contents.push(content),
            Err(e) => found.failures.push(describe(e)),
        }
    }
    found
}

fn describe(error: rqrr::DeQRError) -> String {
    use rqrr::DeQRError as E;
    match error {
        E::DataEcc => "too many damaged modules to correct",
        E::FormatEcc => "its format information is unreadable",
        E::InvalidVersion | E::InvalidGridSize => "its size could not be determined",
        E::DataUnderflow | E::DataOverflow => "its data does not add up",
        E::UnknownDataType | E::EncodingError => "it uses an unsupported encoding",
        E::IoError => "its content could not be collected",
    }
    .to_string()
}

/// Picks the first Petrel payload among the contents read; failing that, reports the
/// first content's problem.
fn interpret(contents: Vec<Vec<u8>>) -> Result<Decoded, ScanError> {
    let mut first_error = None;
    for content in contents {
        let result = match std::str::from_utf8(&content) {
            Ok(text) => parse_text(text, Provenance::Scanned),
            Err(_) => Err(PayloadError::NotPetrel {
                preview: preview(&String::from_utf8_lossy(&content), PREVIEW_CHARS),
            }),
        };
        match result {
            Ok(decoded) => return Ok(decoded),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.map_or(ScanError::NoQrFound, ScanError::Payload))
}
