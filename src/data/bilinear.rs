//! Bilinear sampling of interleaved RGB u8 images, as OpenCV's `INTER_LINEAR` (no antialiasing):
//! a source coordinate `x` lies between pixel centres `floor(x)` and `floor(x) + 1`.

/// The two source pixels an output coordinate reads along one axis, and the second's weight.
/// `None` is outside the image: it reads the border value.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tap {
    i0: Option<usize>,
    i1: Option<usize>,
    w1: f32,
}

impl Tap {
    /// Taps at source coordinate `x` (pixel centres at integers) of an axis of `len` pixels;
    /// `clamp` replicates the edge pixels, otherwise pixels past them read the border value.
    pub(super) fn at(x: f32, len: usize, clamp: bool) -> Tap {
        let x = if clamp {
            x.clamp(0.0, (len - 1) as f32)
        } else {
            x
        };
        let f = x.floor();
        let inside = |i: f32| (i >= 0.0 && i < len as f32).then_some(i as usize);
        Tap {
            i0: inside(f),
            i1: inside(f + 1.0),
            w1: x - f,
        }
    }
}

/// The pixel at taps `(tx, ty)` of `src` (`width` pixels per row), `fill` outside, rounded.
pub(super) fn sample(src: &[u8], width: usize, tx: Tap, ty: Tap, fill: u8) -> [u8; 3] {
    let px = |y: Option<usize>, x: Option<usize>, c: usize| match (y, x) {
        (Some(y), Some(x)) => src[(y * width + x) * 3 + c] as f32,
        _ => fill as f32,
    };
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let top = px(ty.i0, tx.i0, c) * (1.0 - tx.w1) + px(ty.i0, tx.i1, c) * tx.w1;
        let bottom = px(ty.i1, tx.i0, c) * (1.0 - tx.w1) + px(ty.i1, tx.i1, c) * tx.w1;
        *o = (top * (1.0 - ty.w1) + bottom * ty.w1).round() as u8;
    }
    out
}
