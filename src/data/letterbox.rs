//! Letterboxing, as Ultralytics prepares detection inputs: resize keeping the aspect ratio so
//! that the long side is the input size (bilinear, sides rounded up, as its `load_image`), then
//! pad to a square with grey 114, centred (`LetterBox`: the odd pixel of padding goes to the
//! bottom / right). Boxes are scaled by the same factors and shifted by the padding.

use super::bilinear::{sample, Tap};
use super::detect_image::{DetectImage, PixelBox};

/// The grey of letterbox padding and of warp borders (Ultralytics' 114).
pub const PAD_VALUE: u8 = 114;

/// Where a `width × height` image lands in its `size × size` letterbox: its resized sides, the
/// padding before it, and the per-axis scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LetterboxFit {
    pub w: usize,
    pub h: usize,
    pub left: usize,
    pub top: usize,
    pub rx: f32,
    pub ry: f32,
}

impl LetterboxFit {
    /// The fit of a `width × height` image in a `size × size` square.
    pub fn new(width: usize, height: usize, size: usize) -> Self {
        let long = width.max(height);
        let (w, h) = (
            (width * size).div_ceil(long),
            (height * size).div_ceil(long),
        );
        LetterboxFit {
            w,
            h,
            left: (size - w) / 2,
            top: (size - h) / 2,
            rx: w as f32 / width as f32,
            ry: h as f32 / height as f32,
        }
    }

    /// A box in the square's pixels, back in the original image's pixels.
    pub fn to_original(&self, xyxy: [f32; 4]) -> [f32; 4] {
        let (dx, dy) = (self.left as f32, self.top as f32);
        [
            (xyxy[0] - dx) / self.rx,
            (xyxy[1] - dy) / self.ry,
            (xyxy[2] - dx) / self.rx,
            (xyxy[3] - dy) / self.ry,
        ]
    }
}

/// `img` letterboxed to `size × size`; the identity for an image of that size.
pub fn letterbox(img: &DetectImage, size: usize) -> DetectImage {
    let LetterboxFit {
        w,
        h,
        left,
        top,
        rx,
        ry,
    } = LetterboxFit::new(img.width, img.height, size);
    let resized = resize(img, w, h);
    let mut rgb = vec![PAD_VALUE; size * size * 3];
    for y in 0..h {
        let at = ((top + y) * size + left) * 3;
        rgb[at..at + w * 3].copy_from_slice(&resized[y * w * 3..(y + 1) * w * 3]);
    }
    let (dx, dy) = (left as f32, top as f32);
    let objects = img
        .objects
        .iter()
        .map(|o| {
            let [x1, y1, x2, y2] = o.xyxy;
            PixelBox {
                class: o.class,
                xyxy: [x1 * rx + dx, y1 * ry + dy, x2 * rx + dx, y2 * ry + dy],
            }
        })
        .collect();
    DetectImage {
        width: size,
        height: size,
        rgb,
        objects,
    }
}

/// The pixels of `img` resized to `w × h` (half-pixel centres, edges replicated).
fn resize(img: &DetectImage, w: usize, h: usize) -> Vec<u8> {
    if (w, h) == (img.width, img.height) {
        return img.rgb.clone();
    }
    let taps = |out: usize, len: usize| -> Vec<Tap> {
        let scale = len as f32 / out as f32;
        (0..out)
            .map(|o| Tap::at((o as f32 + 0.5) * scale - 0.5, len, true))
            .collect()
    };
    let (xs, ys) = (taps(w, img.width), taps(h, img.height));
    let mut out = Vec::with_capacity(w * h * 3);
    for &ty in &ys {
        for &tx in &xs {
            out.extend(sample(&img.rgb, img.width, tx, ty, PAD_VALUE));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `w × h` image: a white rectangle `[x1, x2) × [y1, y2)` on black, with that box.
    fn rect(w: usize, h: usize, [x1, y1, x2, y2]: [usize; 4]) -> DetectImage {
        let mut rgb = vec![0u8; w * h * 3];
        for y in y1..y2 {
            rgb[(y * w + x1) * 3..(y * w + x2) * 3].fill(255);
        }
        let xyxy = [x1 as f32, y1 as f32, x2 as f32, y2 as f32];
        DetectImage {
            width: w,
            height: h,
            rgb,
            objects: vec![PixelBox { class: 1, xyxy }],
        }
    }

    fn px(img: &DetectImage, x: usize, y: usize) -> [u8; 3] {
        let i = (y * img.width + x) * 3;
        [img.rgb[i], img.rgb[i + 1], img.rgb[i + 2]]
    }

    #[test]
    fn a_wide_image_is_scaled_up_and_padded_top_and_bottom() {
        let out = letterbox(&rect(64, 32, [8, 4, 24, 20]), 128);
        assert_eq!(
            (out.width, out.height, out.rgb.len()),
            (128, 128, 128 * 128 * 3)
        );
        assert_eq!(out.objects[0].xyxy, [16.0, 40.0, 48.0, 72.0]);
        assert_eq!(out.objects[0].class, 1);
        for x in [0, 63, 127] {
            assert_eq!(px(&out, x, 31), [114; 3]);
            assert_eq!(px(&out, x, 96), [114; 3]);
            assert_eq!(px(&out, x, 32), [0; 3]);
        }
        assert_eq!(px(&out, 17, 41), [255; 3]);
        assert_eq!(px(&out, 46, 70), [255; 3]);
        assert_eq!(px(&out, 49, 71), [0; 3]);
    }

    #[test]
    fn an_odd_padding_leaves_the_extra_row_at_the_bottom() {
        let out = letterbox(&rect(64, 31, [0, 0, 64, 31]), 64);
        assert_eq!(out.objects[0].xyxy, [0.0, 16.0, 64.0, 47.0]);
        assert_eq!(px(&out, 5, 15), [114; 3]);
        assert_eq!(px(&out, 5, 16), [255; 3]);
        assert_eq!(px(&out, 5, 46), [255; 3]);
        assert_eq!(px(&out, 5, 47), [114; 3]);
        // A tall image shrinks: 40×80 → 16×32, centred with 8 columns either side.
        let out = letterbox(&rect(40, 80, [0, 0, 40, 80]), 32);
        assert_eq!(out.objects[0].xyxy, [8.0, 0.0, 24.0, 32.0]);
        assert_eq!(
            (px(&out, 7, 9), px(&out, 8, 9), px(&out, 24, 9)),
            ([114; 3], [255; 3], [114; 3])
        );
    }

    #[test]
    fn a_square_image_of_the_input_size_is_unchanged() {
        let mut img = rect(96, 96, [3, 7, 50, 90]);
        img.rgb
            .iter_mut()
            .enumerate()
            .for_each(|(i, p)| *p ^= (i * 7) as u8);
        img.objects[0].xyxy = [3.3, 7.7, 50.1, 89.9];
        assert_eq!(letterbox(&img, 96), img);
    }
}
