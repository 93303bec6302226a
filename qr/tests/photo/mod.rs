//! A deterministic "camera": turns a rendered QR code into a photo of it.
//!
//! One projective warp places the code on a cluttered canvas (scale, rotation and
//! perspective in a single resampling, supersampled so that shrinking averages like a
//! sensor does), then the photo is degraded in the order a camera degrades it: contrast
//! and uneven light, lens blur, sensor noise, JPEG compression. Every random choice comes
//! from the seeded RNG passed in, so a photo is a pure function of its parameters.
#![allow(dead_code, unreachable_pub)]

use image::{DynamicImage, GrayImage, ImageEncoder};
use rand::{Rng, RngExt};
use rand_chacha::ChaCha8Rng;

/// How to photograph a code.
#[derive(Clone, Debug)]
pub struct Shot {
    /// Rotation in degrees, counter-clockwise.
    pub angle: f64,
    /// Size relative to the rendered image (1.0 = one photo pixel per rendered pixel).
    pub scale: f64,
    /// Perspective: how much nearer one edge is than the opposite one (0 = flat, 0.3 =
    /// the far edge appears 30 % shorter).
    pub tilt: f64,
    /// Gaussian blur sigma in photo pixels (0 = sharp).
    pub blur: f64,
    /// Gaussian noise sigma in grey levels.
    pub noise: f64,
    /// Contrast factor around mid-grey (1 = full, 0.2 = washed out).
    pub contrast: f64,
    /// Clutter around the code: shapes, text-like marks, a fake finder pattern.
    pub clutter: bool,
    /// Encode as JPEG at this quality instead of PNG.
    pub jpeg: Option<u8>,
}

impl Default for Shot {
    fn default() -> Self {
        Shot {
            angle: 0.0,
            scale: 1.0,
            tilt: 0.0,
            blur: 0.0,
            noise: 0.0,
            contrast: 1.0,
            clutter: false,
            jpeg: None,
        }
    }
}

/// A float greyscale buffer: plain indexing keeps the debug build fast.
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<f32>,
}

impl Canvas {
    fn get(&self, x: i64, y: i64) -> f32 {
        let x = x.clamp(0, self.w as i64 - 1) as usize;
        let y = y.clamp(0, self.h as i64 - 1) as usize;
        self.px[y * self.w + x]
    }

    fn bilinear(&self, u: f64, v: f64) -> f32 {
        let (x0, y0) = (u.floor(), v.floor());
        let (fx, fy) = ((u - x0) as f32, (v - y0) as f32);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let inside = x0 >= 0 && y0 >= 0 && x0 + 1 < self.w as i64 && y0 + 1 < self.h as i64;
        let [a, b, c, d] = if inside {
            let i = y0 as usize * self.w + x0 as usize;
            [
                self.px[i],
                self.px[i + 1],
                self.px[i + self.w],
                self.px[i + self.w + 1],
            ]
        } else {
            let g = |x, y| self.get(x, y);
            [g(x0, y0), g(x0 + 1, y0), g(x0, y0 + 1), g(x0 + 1, y0 + 1)]
        };
        let top = a + (b - a) * fx;
        let bottom = c + (d - c) * fx;
        top + (bottom - top) * fy
    }
}

/// Takes the photo; returns the encoded file (PNG or JPEG).
pub fn photograph(code: &GrayImage, shot: &Shot, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let code = Canvas {
        w: code.width() as usize,
        h: code.height() as usize,
        px: code.as_raw().iter().map(|&p| f32::from(p)).collect(),
    };
    let side = code.w as f64;
    let placed = side * shot.scale;
    let margin = (placed * 0.2).max(40.0);
    let (sin, cos) = shot.angle.to_radians().sin_cos();
    let extent = placed * (sin.abs() + cos.abs());
    let size = (extent + 2.0 * margin).ceil() as usize;
    let mut photo = background(size, shot.clutter, rng);

    // Where the code's corners land: scaled and rotated about the canvas centre, then one
    // edge pulled in for perspective (a random edge, so every direction is covered).
    let c = size as f64 / 2.0;
    let half = placed / 2.0;
    let mut corners = [(-half, -half), (half, -half), (half, half), (-half, half)];
    let far_edge = rng.random_range(0..4usize);
    for k in [far_edge, (far_edge + 1) % 4] {
        corners[k].0 *= 1.0 - shot.tilt;
        corners[k].1 *= 1.0 - shot.tilt;
    }
    let dst: Vec<(f64, f64)> = corners
        .iter()
        .map(|&(x, y)| (c + x * cos + y * sin, c - x * sin + y * cos))
        .collect();
    let src = [(0.0, 0.0), (side, 0.0), (side, side), (0.0, side)];
    let h = homography(&dst, &src);

    // Only the code's bounding box is resampled; supersampled when shrinking, so each
    // photo pixel averages its footprint as a sensor does.
    let n = if shot.scale < 1.0 {
        (1.0 / shot.scale).ceil() as usize
    } else {
        1
    };
    let bound = |f: fn(f64, f64) -> f64, pick: fn(&(f64, f64)) -> f64| {
        dst.iter()
            .map(pick)
            .fold(pick(&dst[0]), f)
            .clamp(0.0, size as f64)
    };
    let (x0, x1) = (
        bound(f64::min, |p| p.0) as usize,
        bound(f64::max, |p| p.0).ceil() as usize,
    );
    let (y0, y1) = (
        bound(f64::min, |p| p.1) as usize,
        bound(f64::max, |p| p.1).ceil() as usize,
    );
    let step = 1.0 / n as f64;
    for y in y0..y1.min(size) {
        for x in x0..x1.min(size) {
            if n == 1 {
                let (u, v) = apply(&h, x as f64 + 0.5, y as f64 + 0.5);
                if u >= 0.0 && v >= 0.0 && u < side && v < side {
                    photo.px[y * size + x] = code.bilinear(u - 0.5, v - 0.5);
                }
                continue;
            }
            let behind = photo.px[y * size + x];
            let mut sum = 0.0f32;
            let mut hits = 0;
            for sy in 0..n {
                for sx in 0..n {
                    let px = x as f64 + (sx as f64 + 0.5) * step;
                    let py = y as f64 + (sy as f64 + 0.5) * step;
                    let (u, v) = apply(&h, px, py);
                    if (0.0..side).contains(&u) && (0.0..side).contains(&v) {
                        sum += code.bilinear(u - 0.5, v - 0.5);
                        hits += 1;
                    } else {
                        sum += behind;
                    }
                }
            }
            if hits > 0 {
                photo.px[y * size + x] = sum / (n * n) as f32;
            }
        }
    }

    // Contrast around mid-grey, with light falling off towards one side.
    let slope = rng.random_range(-0.15f32..0.15);
    let contrast = shot.contrast as f32;
    let mut pixels = Vec::with_capacity(size * size);
    for (i, &p) in photo.px.iter().enumerate() {
        let light = 1.0 + slope * ((i % size) as f32 / size as f32 - 0.5);
        pixels.push(
            ((128.0 + (p - 128.0) * contrast) * light)
                .round()
                .clamp(0.0, 255.0) as u8,
        );
    }
    let mut image = GrayImage::from_raw(size as u32, size as u32, pixels).unwrap();
    if shot.blur > 0.0 {
        // The image crate's Gaussian blur: compiled optimised even in a debug build.
        image = DynamicImage::ImageLuma8(image)
            .blur(shot.blur as f32)
            .into_luma8();
    }
    if shot.noise > 0.0 {
        // One RNG call per eight pixels: each byte picks a normal quantile.
        let table = normal_table(shot.noise as f32);
        for chunk in image.chunks_mut(8) {
            let bytes = rng.next_u64().to_le_bytes();
            for (p, &b) in chunk.iter_mut().zip(&bytes) {
                *p = (f32::from(*p) + table[usize::from(b)])
                    .round()
                    .clamp(0.0, 255.0) as u8;
            }
        }
    }
    encode(&image, shot.jpeg)
}

pub fn encode(photo: &GrayImage, jpeg: Option<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    let (w, h) = photo.dimensions();
    match jpeg {
        Some(quality) => image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
            .write_image(photo.as_raw(), w, h, image::ExtendedColorType::L8)
            .unwrap(),
        None => image::codecs::png::PngEncoder::new(&mut out)
            .write_image(photo.as_raw(), w, h, image::ExtendedColorType::L8)
            .unwrap(),
    }
    out
}

/// A canvas: a light, slightly uneven table top, and with `clutter` the things that lie
/// around a code in a real photo, including one fake finder pattern.
fn background(side: usize, clutter: bool, rng: &mut ChaCha8Rng) -> Canvas {
    let base = rng.random_range(150.0f32..220.0);
    let ramp: Vec<f32> = (0..2 * side)
        .map(|i| base + 20.0 * (i as f32 / side as f32 - 1.0))
        .collect();
    let mut px = Vec::with_capacity(side * side);
    for y in 0..side {
        px.extend_from_slice(&ramp[y..y + side]);
    }
    let mut img = Canvas {
        w: side,
        h: side,
        px,
    };
    if !clutter {
        return img;
    }
    let s = side as f64;
    for _ in 0..12 {
        let (x0, y0) = (rng.random_range(0.0..s), rng.random_range(0.0..s));
        let (w, h) = (
            rng.random_range(4.0..s / 4.0),
            rng.random_range(4.0..s / 4.0),
        );
        let shade = rng.random_range(0.0..=255.0);
        fill(&mut img, x0, y0, w, h, shade);
    }
    // Rows of text-like marks.
    for _ in 0..4 {
        let (mut x, y) = (rng.random_range(0.0..s * 0.6), rng.random_range(0.0..s));
        let size = rng.random_range(3.0..10.0);
        for _ in 0..rng.random_range(5..25) {
            fill(
                &mut img,
                x,
                y,
                size * rng.random_range(0.4..1.0),
                size,
                30.0,
            );
            x += size * 1.2;
        }
    }
    // A fake finder pattern (1:1:3:1:1) to tempt the detector.
    let (fx, fy, m) = (
        rng.random_range(0.0..s * 0.8),
        rng.random_range(0.0..s * 0.8),
        4.0,
    );
    fill(&mut img, fx, fy, 7.0 * m, 7.0 * m, 20.0);
    fill(&mut img, fx + m, fy + m, 5.0 * m, 5.0 * m, 235.0);
    fill(&mut img, fx + 2.0 * m, fy + 2.0 * m, 3.0 * m, 3.0 * m, 20.0);
    img
}

fn fill(img: &mut Canvas, x0: f64, y0: f64, w: f64, h: f64, shade: f32) {
    let (x1, y1) = (
        (x0 + w).min(img.w as f64) as usize,
        (y0 + h).min(img.h as f64) as usize,
    );
    for y in (y0.max(0.0) as usize)..y1 {
        for x in (x0.max(0.0) as usize)..x1 {
            img.px[y * img.w + x] = shade;
        }
    }
}

/// The homography that maps each `from[i]` to `to[i]`, as 8 coefficients (h₈ = 1),
/// by Gaussian elimination with partial pivoting.
fn homography(from: &[(f64, f64)], to: &[(f64, f64)]) -> [f64; 8] {
    let mut m = [[0.0f64; 9]; 8];
    for i in 0..4 {
        let ((x, y), (u, v)) = (from[i], to[i]);
        m[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u, u];
        m[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -x * v, -y * v, v];
    }
    for col in 0..8 {
        let pivot = (col..8)
            .max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))
            .unwrap();
        m.swap(col, pivot);
        let pivot_row = m[col];
        for (row, line) in m.iter_mut().enumerate() {
            if row != col {
                let f = line[col] / pivot_row[col];
                for (value, p) in line.iter_mut().zip(&pivot_row).skip(col) {
                    *value -= f * p;
                }
            }
        }
    }
    std::array::from_fn(|i| m[i][8] / m[i][i])
}

fn apply(h: &[f64; 8], x: f64, y: f64) -> (f64, f64) {
    let d = h[6] * x + h[7] * y + 1.0;
    (
        (h[0] * x + h[1] * y + h[2]) / d,
        (h[3] * x + h[4] * y + h[5]) / d,
    )
}

/// 256 equally likely samples of a normal distribution with standard deviation `sigma`:
/// the quantiles at (i + 0.5) / 256, by inverting the CDF with bisection.
fn normal_table(sigma: f32) -> [f32; 256] {
    let cdf = |x: f64| 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
    std::array::from_fn(|i| {
        let target = (i as f64 + 0.5) / 256.0;
        let (mut lo, mut hi) = (-6.0f64, 6.0f64);
        for _ in 0..50 {
            let mid = (lo + hi) / 2.0;
            if cdf(mid) < target {
                lo = mid
            } else {
                hi = mid
            }
        }
        (lo as f32) * sigma
    })
}

/// The error function (Abramowitz and Stegun 7.1.26, error below 1.5e-7).
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    if x < 0.0 { -y } else { y }
}
