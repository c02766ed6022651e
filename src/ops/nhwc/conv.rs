//! Dense convolutions on a channels-last map as matrix products over blocks of output pixels:
//! a 1×1 stride-1 convolution multiplies the input rows directly, a k×k one reads each output
//! pixel's window in place ([`Windows`]), or, on a map of few channels, from a patch matrix
//! gathered block by block. The epilogue runs on each block right after its product.

use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use super::tile::{product, Panels, RowMajor, MR, NR};
use super::windows::Windows;
use super::{Epilogue, Nhwc, Window};
use crate::ops::uninit::{assume_written, written};

/// Output pixels per task at most: the block and its patches stay in cache.
const BLOCK_ROWS: usize = 128;
/// The shortest window row (`k·C` values) read in place; shorter ones (a stem on 1–3 channels)
/// cost more to find than to copy.
const MIN_WINDOW_ROW: usize = 16;

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
    let out = Nhwc {
        c: weight.cout,
        ..shape
    };
    let rows = RowMajor {
        a: x,
        lda: shape.c,
        k: shape.c,
    };
    let y = blocked(&Lhs::Rows(rows), out, weight, ep, residual);
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
    let zeros = vec![0.0; win.kernel * shape.c];
    let windows = Windows {
        x,
        shape,
        win,
        out,
        zeros,
    };
    let lhs = if win.kernel * shape.c < MIN_WINDOW_ROW {
        Lhs::Patches(windows)
    } else {
        Lhs::Windows(windows)
    };
    (blocked(&lhs, out, weight, ep, residual), out)
}

/// Where the left-hand rows come from: one row per output pixel.
enum Lhs<'a> {
    /// The input's own pixels (1×1 stride-1 convolution).
    Rows(RowMajor<'a>),
    /// Each output pixel's window of input pixels, zero outside the map, read in place.
    Windows(Windows<'a>),
    /// The same windows, copied block by block into a patch matrix: for a map of few channels,
    /// whose window rows are too short to be read as pieces.
    Patches(Windows<'a>),
}

impl Lhs<'_> {
    /// Values per row.
    fn width(&self) -> usize {
        match self {
            Lhs::Rows(rows) => rows.k,
            Lhs::Windows(w) | Lhs::Patches(w) => w.win.kernel * w.win.kernel * w.shape.c,
        }
    }

    /// Writes columns `cols` of the product of the rows of output pixels `rows` with `b` into
    /// `c` (row stride `ldc`), as [`product`] does.
    fn product(
        &self,
        rows: Range<usize>,
        b: &Panels,
        cols: Range<usize>,
        c: &mut [MaybeUninit<f32>],
        ldc: usize,
    ) {
        match self {
            Lhs::Rows(r) => product(r, rows, b, cols, c, ldc),
            Lhs::Windows(w) => product(w, rows, b, cols, c, ldc),
            Lhs::Patches(w) => {
                let k = self.width();
                let a = w.patches(rows.clone());
                product(
                    &RowMajor { a: &a, lda: k, k },
                    0..rows.len(),
                    b,
                    cols,
                    c,
                    ldc,
                )
            }
        }
    }
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
                    lhs.product(span.clone(), &weight.panels, 0..n, slots, n);
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
                    lhs.product(0..m, &weight.panels, cols.clone(), c, w)
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
