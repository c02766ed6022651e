//! Depthwise convolution on a channels-last map: each output pixel is a sum over the window of
//! input pixels times per-channel weights, vectorized across channels.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{Epilogue, Nhwc, Window};
use crate::ops::simd::{multiversion, MulAdd};
use crate::ops::uninit::{assume_written, copy_into, written};

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
    // SAFETY: `output_row` writes every slot of each output row of `row` slots.
    let y = unsafe {
        written(out.len(), |y| {
            y.par_chunks_mut(row).enumerate().for_each(|(r, slots)| {
                let (b, oy) = (r / out.h, r % out.h);
                let image = &x[b * shape.h * shape.w * c..][..shape.h * shape.w * c];
                output_row(image, shape, weight, win, oy, slots);
                // SAFETY: `output_row` wrote every channel of every pixel of the row.
                let dst = assume_written(slots);
                ep.apply(dst, residual.map(|res| &res[r * row..][..row]));
            })
        })
    };
    (y, out)
}

/// One output pixel's window over one image.
struct Pixel<'a> {
    image: &'a [f32],
    weight: &'a [f32],
    shape: Nhwc,
    win: Window,
    oy: usize,
    ox: usize,
}

/// Channels `c0 .. c0 + N` of one output pixel into `out` (`N` values): the window summed in
/// registers tap by tap and stored once, instead of read and written back at every tap.
#[inline(always)]
fn block<F: MulAdd, const N: usize>(p: &Pixel, c0: usize, out: &mut [MaybeUninit<f32>]) {
    let (c, k) = (p.shape.c, p.win.kernel);
    let mut acc = [0f32; N];
    for ky in 0..k {
        let Some(iy) = p.win.source(p.oy, ky, p.shape.h) else {
            continue;
        };
        for kx in 0..k {
            let Some(ix) = p.win.source(p.ox, kx, p.shape.w) else {
                continue;
            };
            let px = &p.image[(iy * p.shape.w + ix) * c + c0..][..N];
            let wt = &p.weight[(ky * k + kx) * c + c0..][..N];
            for j in 0..N {
                acc[j] = F::mul_add(px[j], wt[j], acc[j]);
            }
        }
    }
    copy_into(&mut out[..N], &acc);
}

/// [`block`] at channel `*c0` when `N` channels are left, moving `*c0` past them.
#[inline(always)]
fn block_if<F: MulAdd, const N: usize>(p: &Pixel, c0: &mut usize, out: &mut [MaybeUninit<f32>]) {
    if p.shape.c - *c0 >= N {
        block::<F, N>(p, *c0, &mut out[*c0..]);
        *c0 += N;
    }
}

multiversion! {
    /// Writes output row `oy` of one image into `dst` (`[out_w, C]`): blocks of 128 channels,
    /// then one each of 64, 32, …, 1 as the rest needs, summed in registers. Every channel adds
    /// its taps in window order.
    fn output_row<F>(image: &[f32], shape: Nhwc, weight: &[f32], win: Window, oy: usize, dst: &mut [MaybeUninit<f32>]) {
        let c = shape.c;
        for (ox, out) in dst.chunks_exact_mut(c).enumerate() {
            let p = Pixel { image, weight, shape, win, oy, ox };
            let mut c0 = 0;
            while c - c0 >= 128 {
                block_if::<F, 128>(&p, &mut c0, out);
            }
            block_if::<F, 64>(&p, &mut c0, out);
            block_if::<F, 32>(&p, &mut c0, out);
            block_if::<F, 16>(&p, &mut c0, out);
            block_if::<F, 8>(&p, &mut c0, out);
            block_if::<F, 4>(&p, &mut c0, out);
            block_if::<F, 2>(&p, &mut c0, out);
            block_if::<F, 1>(&p, &mut c0, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Act;

    #[test]
    fn every_channel_block_matches_the_definition() {
        // 7: 4 + 2 + 1; 40: 32 + 8; 96: 64 + 32; 200: 128 + 64 + 8.
        for (c, k, stride) in [(7, 3, 1), (40, 5, 2), (96, 3, 2), (200, 5, 1)] {
            let shape = Nhwc {
                batch: 2,
                h: 7,
                w: 6,
                c,
            };
            let win = Window { kernel: k, stride };
            let x: Vec<f32> = (0..shape.len())
                .map(|i| ((i * 7) % 13) as f32 * 0.25 - 1.5)
                .collect();
            let w: Vec<f32> = (0..k * k * c)
                .map(|i| ((i * 5) % 11) as f32 * 0.125 - 0.625)
                .collect();
            let bias = vec![0.0; c];
            let ep = Epilogue {
                bias: &bias,
                act: Act::Identity,
                gamma: None,
            };
            let (y, out) = depthwise(&x, shape, &w, win, &ep, None);
            for (at, &got) in y.iter().enumerate() {
                let (ch, px) = (at % c, at / c);
                let (b, oy, ox) = (px / (out.h * out.w), px / out.w % out.h, px % out.w);
                let mut want = 0.0f32;
                for (ky, kx) in (0..k).flat_map(|ky| (0..k).map(move |kx| (ky, kx))) {
                    if let (Some(iy), Some(ix)) =
                        (win.source(oy, ky, shape.h), win.source(ox, kx, shape.w))
                    {
                        want = x[((b * shape.h + iy) * shape.w + ix) * c + ch]
                            .mul_add(w[(ky * k + kx) * c + ch], want);
                    }
                }
                assert!(
                    (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "c {c} k {k} s {stride} at {at}: {got} vs {want}"
                );
            }
        }
    }
}
