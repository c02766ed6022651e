//! Dense convolutions on a channels-last map as matrix products over blocks of output pixels:
//! a 1×1 stride-1 convolution multiplies the input rows directly, a k×k one first gathers each
//! block's patches (im2col) into a buffer that stays in cache. The epilogue runs on each block
//! right after its product.

use std::ops::Range;

use rayon::prelude::*;

use super::tile::{product, Operands, Panels, MR, NR};
use super::{Epilogue, Nhwc, Window};
use crate::ops::uninit::{assume_written, written};

/// Output pixels per task at most: the block and its patches stay in cache.
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

    /// `rows` rows of `a`, each this weight's `k·k·Cin` inputs, as the left operand.
    fn operands<'a>(&'a self, a: &'a [f32], rows: usize) -> Operands<'a> {
        Operands {
            a,
            lda: self.panels.k(),
            rows,
            b: &self.panels,
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
    let out = Nhwc {
        c: weight.cout,
        ..shape
    };
    let y = blocked(&Lhs::Rows { x, c: shape.c }, out, weight, ep, residual);
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
    let win = Window {
        kernel: weight.kernel,
        stride,
    };
    let out = shape.conv_out(win.kernel, stride, weight.cout);
    let lhs = Lhs::Patches { x, shape, win, out };
    (blocked(&lhs, out, weight, ep, residual), out)
}

/// Where a block's left-hand rows come from.
enum Lhs<'a> {
    /// The input's own pixels (`c` channels each).
    Rows { x: &'a [f32], c: usize },
    /// Each output pixel's window of input pixels, zero outside the map.
    Patches {
        x: &'a [f32],
        shape: Nhwc,
        win: Window,
        out: Nhwc,
    },
}

impl Lhs<'_> {
    /// Values per row.
    fn width(&self) -> usize {
        match *self {
            Lhs::Rows { c, .. } => c,
            Lhs::Patches { shape, win, .. } => win.kernel * win.kernel * shape.c,
        }
    }

    /// The rows for output pixels `rows` (row-major, [`Self::width`] apart), gathered into
    /// `buf` when they must be.
    fn block<'b>(&'b self, rows: Range<usize>, buf: &'b mut Vec<f32>) -> &'b [f32] {
        match *self {
            Lhs::Rows { x, c } => &x[rows.start * c..rows.end * c],
            Lhs::Patches { x, shape, win, out } => {
                let width = self.width();
                buf.resize(rows.len() * width, 0.0);
                for (r, dst) in rows.zip(buf.chunks_exact_mut(width)) {
                    let (b, oy, ox) = (r / (out.h * out.w), r / out.w % out.h, r % out.w);
                    patch(x, shape, win, (b, oy, ox), dst);
                }
                buf
            }
        }
    }
}

/// Writes the window of output pixel `(b, oy, ox)` into `dst`: `k·k·C` values, tap-major.
/// A window row that lies inside the map is `k·C` contiguous input values, copied at once.
fn patch(x: &[f32], shape: Nhwc, win: Window, (b, oy, ox): (usize, usize, usize), dst: &mut [f32]) {
    let (c, k) = (shape.c, win.kernel);
    let first = (ox * win.stride)
        .checked_sub(k / 2)
        .filter(|&ix| ix + k <= shape.w);
    for (ky, row) in dst.chunks_exact_mut(k * c).enumerate() {
        let Some(iy) = win.source(oy, ky, shape.h) else {
            row.fill(0.0);
            continue;
        };
        let line = &x[(b * shape.h + iy) * shape.w * c..][..shape.w * c];
        match first {
            Some(ix) => copy(row, &line[ix * c..(ix + k) * c]),
            None => {
                for (kx, tap) in row.chunks_exact_mut(c).enumerate() {
                    match win.source(ox, kx, shape.w) {
                        Some(ix) => copy(tap, &line[ix * c..(ix + 1) * c]),
                        None => tap.fill(0.0),
                    }
                }
            }
        }
    }
}

/// An element loop: a `memcpy` call costs more than the copy for the few values of a tap.
#[inline(always)]
fn copy(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, &s)| *d = s);
}

/// Rows per task: enough tasks for the pool, whole register tiles, at most [`BLOCK_ROWS`].
fn rows_per_task(m: usize) -> usize {
    let tasks = 8 * rayon::current_num_threads();
    m.div_ceil(tasks).next_multiple_of(MR).clamp(MR, BLOCK_ROWS)
}

/// `lhs · weight` block by block of output pixels, each followed by the epilogue.
fn blocked(
    lhs: &Lhs,
    out: Nhwc,
    weight: &DenseWeight,
    ep: &Epilogue,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let n = out.c;
    assert_eq!(ep.channels(), n, "conv: epilogue channels");
    assert_eq!(
        lhs.width(),
        weight.kernel * weight.kernel * weight.cin,
        "conv: weight rows"
    );
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
                    let mut buf = Vec::new();
                    let a = lhs.block(span.clone(), &mut buf);
                    product(weight.operands(a, span.len()), 0..n, slots, n);
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
    lhs: &Lhs,
    m: usize,
    weight: &DenseWeight,
    ep: &Epilogue,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let n = weight.cout;
    let mut buf = Vec::new();
    let a = lhs.block(0..m, &mut buf);
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
                    product(weight.operands(a, m), cols.clone(), c, w)
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
