//! Depthwise convolution on a channels-last map: each output pixel is a sum over the window of
//! input pixels times per-channel weights, vectorized across channels.

use rayon::prelude::*;

use super::{Epilogue, Nhwc, Window};
use crate::ops::simd::multiversion;
use crate::ops::uninit::{written, zeroed};

/// The depthwise convolution of `x` (shape `shape`) with `weight` (`[k·k, C]`, tap-major) and
/// window `win`, then `ep`; plus `residual` (the output's shape) when given. Parallel over
/// output rows.
pub(crate) fn depthwise(
    x: &[f32],
    shape: Nhwc,
    weight: &[f32],
    win: Window,
    ep: &Epilogue,
    residual: Option<&[f32]>,
) -> (Vec<f32>, Nhwc) {
    let c = shape.c;
    assert_eq!(x.len(), shape.len(), "depthwise: input shape");
    assert_eq!(
        weight.len(),
        win.kernel * win.kernel * c,
        "depthwise: weight"
    );
    assert_eq!(ep.channels(), c, "depthwise: epilogue channels");
    let out = shape.conv_out(win.kernel, win.stride, c);
    if let Some(r) = residual {
        assert_eq!(r.len(), out.len(), "depthwise: residual shape");
    }
    let row = out.w * c;
    // SAFETY: every output row of `row` slots is zeroed, then accumulated into.
    let y = unsafe {
        written(out.len(), |y| {
            y.par_chunks_mut(row).enumerate().for_each(|(r, slots)| {
                let (b, oy) = (r / out.h, r % out.h);
                let dst = zeroed(slots);
                let image = &x[b * shape.h * shape.w * c..][..shape.h * shape.w * c];
                output_row(image, shape, weight, win, oy, dst);
                ep.apply(dst, residual.map(|res| &res[r * row..][..row]));
            })
        })
    };
    (y, out)
}

multiversion! {
    /// Accumulates output row `oy` of one image into `dst` (`[out_w, C]`, zeroed).
    fn output_row<F>(image: &[f32], shape: Nhwc, weight: &[f32], win: Window, oy: usize, dst: &mut [f32]) {
        let c = shape.c;
        let k = win.kernel;
        for (ox, acc) in dst.chunks_exact_mut(c).enumerate() {
            for ky in 0..k {
                let Some(iy) = win.source(oy, ky, shape.h) else { continue };
                for kx in 0..k {
                    let Some(ix) = win.source(ox, kx, shape.w) else { continue };
                    let px = &image[(iy * shape.w + ix) * c..][..c];
                    let wt = &weight[(ky * k + kx) * c..][..c];
                    for ((a, &v), &w) in acc.iter_mut().zip(px).zip(wt) {
                        *a = F::mul_add(v, w, *a);
                    }
                }
            }
        }
    }
}
