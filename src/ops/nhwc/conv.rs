//! Dense convolutions on a channels-last map as matrix products over blocks of output pixels:
//! a 1×1 stride-1 convolution multiplies the input rows directly, a k×k one reads each output
//! pixel's window in place ([`Windows`]). The epilogue runs on each block right after its
//! product.

use std::ops::Range;

use rayon::prelude::*;

use super::tile::{product, Panels, RowMajor, Segments, MR, NR};
use super::windows::Windows;
use super::{Epilogue, Nhwc, Window};
use crate::ops::uninit::{assume_written, written};

/// Output pixels per task at most: the block and its inputs stay in cache.
const BLOCK_ROWS: usize = 128;

/// A dense convolution's weight as the matrix `[k·k·Cin, Cout]` (rows ordered by tap, row-major
/// over the window, then input channel), packed into column panels.
#[derive(Clone, Debug)]
pub(crate) struct DenseWeight {
    pub panels: Panels,
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
}

impl DenseWeight {
    /// From a weight in PyTorch's `[Cout, Cin, k, k]` layout.
    pub fn from_oihw(w: &[f32], cout: usize, cin: usize, kernel: usize) -> Self {
        let taps = kernel * kernel;
        assert_eq!(w.len(), cout * cin * taps, "dense weight shape");
        assert!(cin > 0 && kernel > 0, "dense weight: empty window");
        let panels = Panels::from_fn(taps * cin, cout, |row, o| {
            let (t, i) = (row / cin, row % cin);
            w[(o * cin + i) * taps + t]
        });
        Self {
            panels,
            cin,
            cout,
            kernel,
        }
    }
}

/// A 1×1 stride-1 convolution of `x` with `weight`, then `ep` (+ `residual`, the output's shape).
pub(crate) fn pointwise(
    x: &[f32],
    shape: Nhwc,
    weight: &DenseWeight,
    ep: &Epilogue,
    residual: Option<&[f32]>,
) -> (Vec<f32>, Nhwc) {
    assert_eq!(weight.kernel, 1, "pointwise: 1×1 weight");
    assert_eq!(x.len(), shape.len(), "pointwise: input shape");
    assert_eq!(weight.cin, shape.c, "pointwise: input channels");
    let out = Nhwc {
        c: weight.cout,
        ..shape
    };
    let rows = RowMajor {
        a: x,
        lda: shape.c,
        k: shape.c,
    };
    let y = blocked(&rows, out, weight, ep, residual);
    (y, out)
}

/// A k×k convolution (padding k / 2) of `x` with `weight` and stride `stride`, then `ep`
/// (+ `residual`, the output's shape).
pub(crate) fn dense(
    x: &[f32],
    shape: Nhwc,
    weight: &DenseWeight,
    stride: usize,
    ep: &Epilogue,
    residual: Option<&[f32]>,
) -> (Vec<f32>, Nhwc) {
    assert_eq!(x.len(), shape.len(), "dense: input shape");
    assert_eq!(weight.cin, shape.c, "dense: input channels");
    let win = Window {
        kernel: weight.kernel,
        stride,
    };
    let out = shape.conv_out(win.kernel, stride, weight.cout);
    let zeros = vec![0.0; win.kernel * shape.c];
    let windows = Windows {
        x,
        shape,
        win,
        out,
        zeros,
    };
    (blocked(&windows, out, weight, ep, residual), out)
}

/// Rows per task: enough tasks for the pool, whole register tiles, at most [`BLOCK_ROWS`].
fn rows_per_task(m: usize) -> usize {
    let tasks = 8 * rayon::current_num_threads();
    m.div_ceil(tasks).next_multiple_of(MR).clamp(MR, BLOCK_ROWS)
}

/// `lhs · weight` block by block of output pixels, each followed by the epilogue.
fn blocked(
    lhs: &impl Segments,
    out: Nhwc,
    weight: &DenseWeight,
    ep: &Epilogue,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let n = out.c;
    assert_eq!(ep.channels(), n, "conv: epilogue channels");
    if let Some(r) = residual {
        assert_eq!(r.len(), out.len(), "conv: residual shape");
    }
    let m = out.pixels();
    if m < 2 * MR {
        return few_rows(lhs, m, weight, ep, residual);
    }
    let rows = rows_per_task(m);
    // SAFETY: the blocks cover the vector and each block's product writes all of its slots.
    unsafe {
        written(m * n, |y| {
            y.par_chunks_mut(rows * n)
                .enumerate()
                .for_each(|(i, slots)| {
                    let first = i * rows;
                    let span = first..first + slots.len() / n;
                    product(lhs, span.clone(), &weight.panels, 0..n, slots, n);
                    // SAFETY: the product wrote all `span.len() × n` slots (row stride `n`).
                    let dst = assume_written(slots);
                    ep.apply(dst, residual.map(|res| &res[span.start * n..span.end * n]));
                })
        })
    }
}

/// Few rows (the head at a small batch): tasks split the output channels by panels, each
/// streaming its panels of the weight once.
fn few_rows(
    lhs: &impl Segments,
    m: usize,
    weight: &DenseWeight,
    ep: &Epilogue,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let n = weight.cout;
    let tiles = n.div_ceil(NR);
    let per_task = tiles.div_ceil(2 * rayon::current_num_threads());
    let groups: Vec<Range<usize>> = (0..tiles)
        .step_by(per_task)
        .map(|t| t * NR..((t + per_task) * NR).min(n))
        .collect();
    let parts: Vec<Vec<f32>> = groups
        .par_iter()
        .map(|cols| {
            let w = cols.len();
            // SAFETY: the product writes all `m × w` slots (row stride `w`).
            unsafe {
                written(m * w, |c| {
                    product(lhs, 0..m, &weight.panels, cols.clone(), c, w)
                })
            }
        })
        .collect();
    let mut y = vec![0.0; m * n];
    for (cols, part) in groups.iter().zip(&parts) {
        let w = cols.len();
        for (row, src) in y.chunks_exact_mut(n).zip(part.chunks_exact(w)) {
            row[cols.clone()].copy_from_slice(src);
        }
    }
    ep.apply(&mut y, residual);
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Act;

    /// The convolution by its definition: padding `k / 2`, weight `[Cout, Cin, k, k]`, plus bias.
    fn naive(
        x: &[f32],
        s: Nhwc,
        w: &[f32],
        cout: usize,
        k: usize,
        stride: usize,
        bias: &[f32],
    ) -> Vec<f32> {
        let out = s.conv_out(k, stride, cout);
        let win = Window { kernel: k, stride };
        let mut y = vec![0.0; out.len()];
        for (at, v) in y.iter_mut().enumerate() {
            let (o, px) = (at % cout, at / cout);
            let (b, oy, ox) = (px / (out.h * out.w), px / out.w % out.h, px % out.w);
            let mut sum = bias[o];
            for (ky, kx, i) in
                (0..k).flat_map(|ky| (0..k).flat_map(move |kx| (0..s.c).map(move |i| (ky, kx, i))))
            {
                if let (Some(iy), Some(ix)) = (win.source(oy, ky, s.h), win.source(ox, kx, s.w)) {
                    sum += x[((b * s.h + iy) * s.w + ix) * s.c + i]
                        * w[((o * s.c + i) * k + ky) * k + kx];
                }
            }
            *v = sum;
        }
        y
    }

    #[test]
    fn narrow_and_wide_windows_match_the_definition() {
        // Window rows of 3, 9, 15 and 24 values: border tiles read per tap, inner ones per row.
        for (c, cout, k, stride, h, w) in [
            (1, 16, 3, 2, 9, 11),
            (3, 32, 3, 2, 17, 15),
            (3, 40, 5, 1, 6, 7),
            (8, 24, 3, 2, 10, 9),
        ] {
            let shape = Nhwc { batch: 2, h, w, c };
            let x: Vec<f32> = (0..shape.len())
                .map(|i| ((i * 7) % 13) as f32 * 0.25 - 1.5)
                .collect();
            let wt: Vec<f32> = (0..cout * c * k * k)
                .map(|i| ((i * 5) % 11) as f32 * 0.125 - 0.625)
                .collect();
            let bias: Vec<f32> = (0..cout).map(|o| o as f32 * 0.5).collect();
            let ep = Epilogue {
                bias: &bias,
                act: Act::Identity,
                gamma: None,
            };
            let weight = DenseWeight::from_oihw(&wt, cout, c, k);
            let (y, out) = dense(&x, shape, &weight, stride, &ep, None);
            assert_eq!(out, shape.conv_out(k, stride, cout));
            let want = naive(&x, shape, &wt, cout, k, stride, &bias);
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                    "c {c} k {k} s {stride} at {i}: {a} vs {b}"
                );
            }
        }
    }
}
