//! Image preparation for the QR detector: the few greyscale operations that turn a poor
//! photo into something rqrr can read.
//!
//! rqrr binarises with a running average along each row, which is fast and good for
//! screenshots. Photos fail it in predictable ways, and each operation here answers one:
//!
//! * [`shrink`] — a large photo (or a code shown at 3×) is averaged down: faster, and
//!   averaging removes sensor noise and JPEG ringing.
//! * [`enlarge`] — a code shown small (two or three pixels per module) is doubled so the
//!   detector's minimum feature sizes are met.
//! * [`smooth`] — a 3 × 3 mean against sensor noise and JPEG speckle.
//! * [`sharpen`] — an unsharp mask for blurred photos, before enlarging.
//! * [`stretch`] — low contrast (a dim screen, a grey print) is stretched to full range.
//! * [`binarize`] — a local-mean threshold over a square window (integral image), which
//!   copes with uneven light and blur better than a row average.
//! * [`invert`] — light modules on dark (a dark-theme terminal, an inverted code).
//!
//! Everything works on a plain [`Gray`] buffer and allocates only its output.

/// An 8-bit greyscale image, row-major, 0 = black.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Gray {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) pixels: Vec<u8>,
}

impl Gray {
    /// The pixel at `(x, y)`, or white outside the image.
    pub(crate) fn at(&self, x: usize, y: usize) -> u8 {
        if x < self.width {
            self.pixels.get(y * self.width + x).copied().unwrap_or(255)
        } else {
            255
        }
    }

    pub(crate) fn long_side(&self) -> usize {
        self.width.max(self.height)
    }
}

/// Averages `factor × factor` blocks (a box filter), dropping a partial last block.
pub(crate) fn shrink(img: &Gray, factor: usize) -> Gray {
    let factor = factor.max(1);
    let (width, height) = ((img.width / factor).max(1), (img.height / factor).max(1));
    let area = (factor * factor) as u32;
    let mut pixels = Vec::with_capacity(width * height);
    for by in 0..height {
        for bx in 0..width {
            let mut sum = 0u32;
            for y in by * factor..(by + 1) * factor {
                for x in bx * factor..(bx + 1) * factor {
                    sum += u32::from(img.at(x, y));
                }
            }
            pixels.push((sum / area) as u8);
        }
    }
    Gray {
        width,
        height,
        pixels,
    }
}

/// Doubles the image with bilinear interpolation, so edges stay where they were.
pub(crate) fn enlarge(img: &Gray) -> Gray {
    let (width, height) = (img.width * 2, img.height * 2);
    let mut pixels = Vec::with_capacity(width * height);
    for y in 0..height {
        // Source coordinate of this pixel's centre, in quarter pixels.
        let sy = (y as isize * 2 - 1).max(0) as usize;
        let (y0, fy) = (sy / 4, (sy % 4) as u32);
        for x in 0..width {
            let sx = (x as isize * 2 - 1).max(0) as usize;
            let (x0, fx) = (sx / 4, (sx % 4) as u32);
            let x1 = (x0 + 1).min(img.width.saturating_sub(1));
            let y1 = (y0 + 1).min(img.height.saturating_sub(1));
            let top = u32::from(img.at(x0, y0)) * (4 - fx) + u32::from(img.at(x1, y0)) * fx;
            let bottom = u32::from(img.at(x0, y1)) * (4 - fx) + u32::from(img.at(x1, y1)) * fx;
            pixels.push(((top * (4 - fy) + bottom * fy + 8) / 16) as u8);
        }
    }
    Gray {
        width,
        height,
        pixels,
    }
}

/// Stretches the 1st–99th percentile range of grey levels to 0–255.
pub(crate) fn stretch(img: &Gray) -> Gray {
    let mut histogram = [0usize; 256];
    for &p in &img.pixels {
        histogram[usize::from(p)] += 1;
    }
    let cut = img.pixels.len() / 100;
    let level = |from_dark: bool| {
        let mut seen = 0;
        let order: Box<dyn Iterator<Item = usize>> = if from_dark {
            Box::new(0..256)
        } else {
            Box::new((0..256).rev())
        };
        for value in order {
            seen += histogram[value];
            if seen > cut {
                return value as u32;
            }
        }
        if from_dark { 0 } else { 255 }
    };
    let (low, high) = (level(true), level(false));
    let span = high.saturating_sub(low).max(1);
    let pixels = img
        .pixels
        .iter()
        .map(|&p| ((u32::from(p).clamp(low, high) - low) * 255 / span) as u8)
        .collect();
    Gray { pixels, ..*img }
}

/// The mean of each pixel's 3 × 3 neighbourhood (fewer at the edges): removes sensor
/// noise and JPEG speckle before thresholding, at the cost of a little sharpness.
pub(crate) fn smooth(img: &Gray) -> Gray {
    let mut pixels = Vec::with_capacity(img.pixels.len());
    for y in 0..img.height {
        let rows = y.saturating_sub(1)..=(y + 1).min(img.height - 1);
        for x in 0..img.width {
            let (mut sum, mut count) = (0u32, 0u32);
            for sy in rows.clone() {
                for sx in x.saturating_sub(1)..=(x + 1).min(img.width - 1) {
                    sum += u32::from(img.at(sx, sy));
                    count += 1;
                }
            }
            pixels.push(((sum + count / 2) / count) as u8);
        }
    }
    Gray { pixels, ..*img }
}

/// Unsharp mask: each pixel moves away from its neighbourhood mean by twice the
/// difference, which restores some of the edge contrast a blurred photo lost.
pub(crate) fn sharpen(img: &Gray) -> Gray {
    let mean = smooth(img);
    let pixels = img
        .pixels
        .iter()
        .zip(&mean.pixels)
        .map(|(&p, &m)| (3 * i32::from(p) - 2 * i32::from(m)).clamp(0, 255) as u8)
        .collect();
    Gray { pixels, ..*img }
}

/// Inverts light and dark.
pub(crate) fn invert(img: &Gray) -> Gray {
    Gray {
        pixels: img.pixels.iter().map(|&p| 255 - p).collect(),
        ..*img
    }
}

/// Local-mean threshold: a pixel is dark when it is darker than the mean of the square
/// window of side `window` around it by more than `offset` grey levels. Returns one bool
/// per pixel, `true` for dark.
pub(crate) fn binarize(img: &Gray, window: usize, offset: u32) -> Vec<bool> {
    let (w, h) = (img.width, img.height);
    // Integral image with a zero row and column in front: sums[(y + 1) * (w + 1) + x + 1]
    // is the sum of all pixels above and left of (x, y) inclusive.
    let stride = w + 1;
    let mut sums = vec![0u64; stride * (h + 1)];
    for y in 0..h {
        let mut row = 0u64;
        for x in 0..w {
            row += u64::from(img.at(x, y));
            sums[(y + 1) * stride + x + 1] = sums[y * stride + x + 1] + row;
        }
    }
    let r = (window / 2).max(1);
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        let (y0, y1) = (y.saturating_sub(r), (y + r + 1).min(h));
        for x in 0..w {
            let (x0, x1) = (x.saturating_sub(r), (x + r + 1).min(w));
            let total = sums[y1 * stride + x1] + sums[y0 * stride + x0]
                - sums[y0 * stride + x1]
                - sums[y1 * stride + x0];
            let count = ((y1 - y0) * (x1 - x0)) as u64;
            let pixel = u64::from(img.at(x, y)) + u64::from(offset);
            out.push(pixel * count < total);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(width: usize, height: usize, f: impl Fn(usize, usize) -> u8) -> Gray {
        let pixels = (0..height)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .map(|(x, y)| f(x, y));
        Gray {
            width,
            height,
            pixels: pixels.collect(),
        }
    }

    #[test]
    fn shrink_and_enlarge_keep_flat_areas_and_sizes() {
        let img = gray(10, 7, |x, _| if x < 5 { 0 } else { 200 });
        let small = shrink(&img, 2);
        assert_eq!((small.width, small.height), (5, 3));
        assert_eq!(small.at(0, 0), 0);
        assert_eq!(small.at(4, 2), 200);
        assert_eq!(small.at(2, 0), 100);
        let big = enlarge(&img);
        assert_eq!((big.width, big.height), (20, 14));
        assert_eq!(big.at(0, 0), 0);
        assert_eq!(big.at(19, 13), 200);
    }

    #[test]
    fn stretch_reaches_full_range_and_invert_flips() {
        let img = gray(20, 20, |x, _| if x < 10 { 110 } else { 140 });
        let s = stretch(&img);
        assert_eq!((s.at(0, 0), s.at(19, 0)), (0, 255));
        assert_eq!(invert(&s).at(0, 0), 255);
    }

    #[test]
    fn smooth_averages_and_sharpen_overshoots_at_edges() {
        let img = gray(9, 9, |x, y| if (x, y) == (4, 4) { 90 } else { 0 });
        let s = smooth(&img);
        assert_eq!((s.at(4, 4), s.at(3, 3), s.at(0, 0)), (10, 10, 0));
        let step = gray(8, 3, |x, _| if x < 4 { 60 } else { 180 });
        let sharp = sharpen(&step);
        // Either side of the edge is pushed further apart; flat areas stay put.
        assert!(sharp.at(3, 1) < 60 && sharp.at(4, 1) > 180);
        assert_eq!((sharp.at(0, 1), sharp.at(7, 1)), (60, 180));
    }

    #[test]
    fn binarize_follows_local_contrast_under_a_gradient() {
        // A dark stripe on a background that brightens from left to right.
        let img = gray(60, 10, |x, _| {
            let background = 100 + x as u8 * 2;
            if (28..32).contains(&x) {
                background - 60
            } else {
                background
            }
        });
        let bits = binarize(&img, 15, 8);
        assert!(bits[5 * 60 + 30]);
        assert!(!bits[5 * 60 + 5] && !bits[5 * 60 + 55]);
    }
}
