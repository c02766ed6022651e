//! Training augmentation of a letterboxed detection sample, as Ultralytics' `RandomPerspective`
//! restricted to scale and translation, then `RandomFlip` (no mosaic):
//!
//! 1. One affine warp `x' = s·(x − W/2) + W/2 + dx` (and likewise in `y`), `s` uniform in
//!    `[1 − scale, 1 + scale]`, `dx` uniform in `±translate·W`; bilinear, border grey 114.
//!    Pixels and boxes use the same continuous coordinates (pixel centres at `i + ½`).
//! 2. Boxes are warped, clipped to the image, and kept as `box_candidates` keeps them: width
//!    and height over 2 px, area over 10 % of the warped box before the clip (the box before
//!    augmentation, scaled by `s`), aspect ratio under 100.
//! 3. Horizontal flip with probability `fliplr`, boxes mirrored.

use rand::Rng;

use super::bilinear::{sample, Tap};
use super::detect_image::{DetectImage, PixelBox};
use super::error::DataError;
use super::letterbox::PAD_VALUE;

/// A kept box is wider and taller than this, in pixels.
const MIN_SIDE: f32 = 2.0;
/// A kept box keeps more than this fraction of its area.
const MIN_AREA_RATIO: f32 = 0.1;
/// A kept box's long side is less than this many times its short side.
const MAX_ASPECT: f32 = 100.0;
const EPS: f32 = 1e-16;

/// Augmentation strengths, named as Ultralytics' hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectAugment {
    /// Scale gain: `s` uniform in `[1 − scale, 1 + scale]`, `0 ≤ scale < 1` (default 0.5).
    pub scale: f32,
    /// Translation, as a fraction of the side, `0..=1` (default 0.1).
    pub translate: f32,
    /// Probability of a horizontal flip, `0..=1` (default 0.5).
    pub fliplr: f32,
}

impl Default for DetectAugment {
    fn default() -> Self {
        DetectAugment {
            scale: 0.5,
            translate: 0.1,
            fliplr: 0.5,
        }
    }
}

impl DetectAugment {
    /// Errors unless every strength is in its range.
    pub fn check(&self) -> Result<(), DataError> {
        let ok = (0.0..1.0).contains(&self.scale)
            && (0.0..=1.0).contains(&self.translate)
            && (0.0..=1.0).contains(&self.fliplr);
        if ok {
            return Ok(());
        }
        Err(DataError::Invalid(format!(
            "detection augmentation {self:?}: scale must be in 0..1, translate and fliplr in 0..=1"
        )))
    }

    /// Draws one warp for a `width × height` image (always three draws from `rng`).
    pub fn draw(&self, width: usize, height: usize, rng: &mut impl Rng) -> DetectWarp {
        let mut u = || rng.random::<f32>();
        let scale = 1.0 - self.scale + 2.0 * self.scale * u();
        let dx = (2.0 * u() - 1.0) * self.translate * width as f32;
        let dy = (2.0 * u() - 1.0) * self.translate * height as f32;
        DetectWarp {
            scale,
            shift: [dx, dy],
            flip: u() < self.fliplr,
        }
    }
}

/// One drawn augmentation: zoom about the centre, then shift (pixels), then mirror.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectWarp {
    pub scale: f32,
    pub shift: [f32; 2],
    pub flip: bool,
}

impl DetectWarp {
    /// `img` warped, its boxes warped, clipped and filtered, and mirrored when `flip`. Scale 1
    /// without shift or flip leaves the pixels and boxes as they are, but still drops boxes of
    /// 2 px or less, as Ultralytics does.
    pub fn apply(&self, img: &DetectImage) -> DetectImage {
        let (w, h) = (img.width, img.height);
        let mut out = DetectImage {
            width: w,
            height: h,
            rgb: self.warp_pixels(img),
            objects: img
                .objects
                .iter()
                .filter_map(|o| self.warp_box(o, w, h))
                .collect(),
        };
        if self.flip {
            mirror(&mut out);
        }
        out
    }

    /// The offset `b` of the forward map `v' = scale·v + b` along an axis of `len` pixels;
    /// 0 exactly for scale 1 and no shift, so that such a warp changes nothing.
    fn offset(&self, len: usize, shift: f32) -> f32 {
        let c = len as f32 / 2.0;
        c + shift - self.scale * c
    }

    /// Each output pixel centre read at its preimage under the forward map.
    fn warp_pixels(&self, img: &DetectImage) -> Vec<u8> {
        let taps = |len: usize, shift: f32| -> Vec<Tap> {
            let b = self.offset(len, shift);
            (0..len)
                .map(|o| Tap::at((o as f32 + 0.5 - b) / self.scale - 0.5, len, false))
                .collect()
        };
        let (xs, ys) = (
            taps(img.width, self.shift[0]),
            taps(img.height, self.shift[1]),
        );
        let mut out = Vec::with_capacity(img.rgb.len());
        for &ty in &ys {
            for &tx in &xs {
                out.extend(sample(&img.rgb, img.width, tx, ty, PAD_VALUE));
            }
        }
        out
    }

    /// The warped box clipped to `w × h`, or `None` when too little of it is left.
    fn warp_box(&self, o: &PixelBox, width: usize, height: usize) -> Option<PixelBox> {
        let [x1, y1, x2, y2] = o.xyxy;
        let (bx, by) = (
            self.offset(width, self.shift[0]),
            self.offset(height, self.shift[1]),
        );
        let s = self.scale;
        let warped = [s * x1 + bx, s * y1 + by, s * x2 + bx, s * y2 + by];
        let (w, h) = (width as f32, height as f32);
        let clip = |v: f32, hi: f32| v.clamp(0.0, hi);
        let clipped = PixelBox {
            class: o.class,
            xyxy: [
                clip(warped[0], w),
                clip(warped[1], h),
                clip(warped[2], w),
                clip(warped[3], h),
            ],
        };
        let before = (warped[2] - warped[0], warped[3] - warped[1]);
        keep(before, clipped.size()).then_some(clipped)
    }
}

/// Ultralytics' `box_candidates` for one box: sizes `(w, h)` before and after the clip.
fn keep((w1, h1): (f32, f32), (w2, h2): (f32, f32)) -> bool {
    let aspect = (w2 / (h2 + EPS)).max(h2 / (w2 + EPS));
    w2 > MIN_SIDE
        && h2 > MIN_SIDE
        && w2 * h2 / (w1 * h1 + EPS) > MIN_AREA_RATIO
        && aspect < MAX_ASPECT
}

/// Mirrors `img` left-right in place, boxes too.
fn mirror(img: &mut DetectImage) {
    let w = img.width;
    for row in img.rgb.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            let (a, b) = (x * 3, (w - 1 - x) * 3);
            for c in 0..3 {
                row.swap(a + c, b + c);
            }
        }
    }
    let w = w as f32;
    for o in &mut img.objects {
        let [x1, y1, x2, y2] = o.xyxy;
        o.xyxy = [w - x2, y1, w - x1, y2];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// A `side²` image of varied pixels with the given boxes (class = position).
    fn image(side: usize, boxes: &[[f32; 4]]) -> DetectImage {
        DetectImage {
            width: side,
            height: side,
            rgb: (0..side * side * 3).map(|i| (i * 37 % 251) as u8).collect(),
            objects: boxes
                .iter()
                .enumerate()
                .map(|(class, &xyxy)| PixelBox { class, xyxy })
                .collect(),
        }
    }

    fn px(img: &DetectImage, x: usize, y: usize) -> &[u8] {
        let i = (y * img.width + x) * 3;
        &img.rgb[i..i + 3]
    }

    fn warp(scale: f32, shift: [f32; 2], flip: bool) -> DetectWarp {
        DetectWarp { scale, shift, flip }
    }

    #[test]
    fn a_flip_mirrors_pixels_and_boxes_exactly() {
        let img = image(32, &[[2.0, 3.0, 10.0, 20.0]]);
        let out = warp(1.0, [0.0, 0.0], true).apply(&img);
        assert_eq!(out.objects[0].xyxy, [22.0, 3.0, 30.0, 20.0]);
        for (x, y) in [(0, 0), (5, 9), (31, 31), (16, 2)] {
            assert_eq!(px(&out, x, y), px(&img, 31 - x, y));
        }
        assert_eq!(warp(1.0, [0.0, 0.0], false).apply(&img), img);
    }

    #[test]
    fn a_shift_moves_pixels_and_boxes_exactly() {
        let img = image(32, &[[4.0, 8.0, 12.0, 20.0]]);
        let out = warp(1.0, [8.0, -4.0], false).apply(&img);
        assert_eq!(out.objects[0].xyxy, [12.0, 4.0, 20.0, 16.0]);
        assert_eq!(px(&out, 8, 0), px(&img, 0, 4));
        assert_eq!(px(&out, 31, 27), px(&img, 23, 31));
        assert_eq!(px(&out, 7, 5), [PAD_VALUE; 3]);
        assert_eq!(px(&out, 20, 28), [PAD_VALUE; 3]);
    }

    #[test]
    fn a_zoom_scales_about_the_centre() {
        let out = warp(0.5, [0.0, 0.0], false).apply(&image(32, &[[0.0, 0.0, 32.0, 32.0]]));
        assert_eq!(out.objects[0].xyxy, [8.0, 8.0, 24.0, 24.0]);
        assert_eq!(px(&out, 7, 16), [PAD_VALUE; 3]);
        assert_eq!(px(&out, 24, 16), [PAD_VALUE; 3]);
        let grey = DetectImage {
            rgb: vec![40; 32 * 32 * 3],
            ..image(32, &[])
        };
        let out = warp(2.0, [3.5, -2.25], false).apply(&grey);
        assert!(
            out.rgb.iter().all(|&p| p == 40),
            "zooming in reads no border"
        );
    }

    #[test]
    fn boxes_are_clipped_and_tiny_ones_dropped() {
        let img = image(32, &[[0.0, 0.0, 10.0, 10.0], [20.0, 12.0, 30.0, 22.0]]);
        let out = warp(1.0, [24.0, 0.0], false).apply(&img);
        assert_eq!(out.objects.len(), 1, "the second box left the image");
        assert_eq!(out.objects[0].xyxy, [24.0, 0.0, 32.0, 10.0]);
        // 3 px left of a 10 px wide box: kept; 1.5 px: dropped.
        let sliver = |dx: f32| warp(1.0, [dx, 0.0], false).apply(&img).objects.len();
        assert_eq!((sliver(29.0), sliver(30.5)), (1, 0));
        assert!(!keep((30.0, 10.0), (3.0, 10.0)), "exactly 10 % of the area");
        assert!(keep((30.0, 10.0), (3.1, 10.0)));
        assert!(!keep((300.0, 2.5), (300.0, 2.5)), "aspect ratio over 100");
        let small = image(32, &[[14.0, 14.0, 18.0, 18.0]]);
        assert!(warp(0.5, [0.0, 0.0], false)
            .apply(&small)
            .objects
            .is_empty());
    }

    #[test]
    fn drawn_warps_are_seeded_in_range_and_keep_boxes_inside() {
        let aug = DetectAugment::default();
        let img = image(
            64,
            &[
                [1.0, 2.0, 40.0, 30.0],
                [50.0, 50.0, 64.0, 64.0],
                [30.0, 5.0, 34.0, 60.0],
            ],
        );
        let mut flips = 0;
        for seed in 0..200 {
            let w = aug.draw(64, 64, &mut StdRng::seed_from_u64(seed));
            assert_eq!(w, aug.draw(64, 64, &mut StdRng::seed_from_u64(seed)));
            assert!((0.5..=1.5).contains(&w.scale), "{w:?}");
            assert!(w.shift.iter().all(|s| s.abs() <= 6.4), "{w:?}");
            flips += w.flip as usize;
            for o in w.apply(&img).objects {
                let [x1, y1, x2, y2] = o.xyxy;
                assert!(0.0 <= x1 && x2 <= 64.0 && 0.0 <= y1 && y2 <= 64.0, "{o:?}");
                assert!(x2 - x1 > 2.0 && y2 - y1 > 2.0, "{o:?}");
            }
        }
        assert!((60..140).contains(&flips), "{flips} flips in 200");
        let off = DetectAugment {
            scale: 0.0,
            translate: 0.0,
            fliplr: 0.0,
        };
        let w = off.draw(64, 64, &mut StdRng::seed_from_u64(3));
        assert_eq!(w.apply(&img), img);
    }

    #[test]
    fn strengths_out_of_range_are_refused() {
        assert!(DetectAugment::default().check().is_ok());
        for bad in [
            DetectAugment {
                scale: 1.0,
                ..Default::default()
            },
            DetectAugment {
                translate: -0.1,
                ..Default::default()
            },
            DetectAugment {
                fliplr: f32::NAN,
                ..Default::default()
            },
        ] {
            let e = bad.check().unwrap_err().to_string();
            assert!(e.contains("scale must be in 0..1"), "{e}");
        }
    }
}
