//! A detection sample in memory: RGB pixels and the objects on them, in pixel coordinates
//! (`x` right, `y` down, pixel `(i, j)` covering `[i, i + 1] × [j, j + 1]`).

/// One object: class index and `[x1, y1, x2, y2]` in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelBox {
    pub class: usize,
    pub xyxy: [f32; 4],
}

impl PixelBox {
    /// Width and height.
    pub fn size(&self) -> (f32, f32) {
        (self.xyxy[2] - self.xyxy[0], self.xyxy[3] - self.xyxy[1])
    }
}

/// An image as interleaved RGB u8 (`height × width × 3`, row-major) with its objects.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectImage {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    pub objects: Vec<PixelBox>,
}

impl DetectImage {
    /// The pixels as planar RGB scaled to `[0, 1]` into `out` (`3 × height × width`).
    pub fn write_planar(&self, out: &mut [f32]) {
        let plane = self.width * self.height;
        for (p, px) in self.rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + p] = px[c] as f32 / 255.0;
            }
        }
    }
}
