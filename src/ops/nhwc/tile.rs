//! A register-blocked matrix product for the inference kernels: `C = A · B` with `A` row-major
//! (row stride `lda`) and `B` packed into [`Panels`]. Tiles of up to [`MR`] rows × [`NR`] columns
//! keep their sums in registers over the whole inner loop.
//!
//! `B` is a weight, packed once: each panel of [`NR`] columns is contiguous, so the inner loop
//! reads it sequentially. Read in place instead, a weight with a power-of-two row length puts
//! every row of a tile's columns into the same few L1 sets, and the loads miss.

use std::mem::MaybeUninit;

use crate::ops::simd::{multiversion, MulAdd};
use crate::ops::uninit::copy_into;

/// Rows per register tile. With five or more rows the compiler no longer keeps the sums in
/// registers (the kernel ran 25 times slower). An 8-row AVX-512 tile in explicit intrinsics made
/// no measurable difference to a whole pass (reports/speed_experiments.md).
pub(crate) const MR: usize = 4;
/// Columns per register tile and panel: two AVX-512 or four AVX2 vectors.
pub(crate) const NR: usize = 32;

/// A `k × n` matrix as panels of [`NR`] columns, each `k × NR` row-major and contiguous; the last
/// panel is padded with zero columns.
#[derive(Clone, Debug)]
pub(crate) struct Panels {
    data: Vec<f32>,
    k: usize,
    n: usize,
}

impl Panels {
    /// From `value(row, col)` over `k × n`.
    pub fn from_fn(k: usize, n: usize, value: impl Fn(usize, usize) -> f32) -> Self {
        let tiles = n.div_ceil(NR);
        let mut data = vec![0.0; tiles * k * NR];
        for (t, panel) in data.chunks_exact_mut(k * NR.max(1)).enumerate() {
            for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                for (j, v) in row.iter_mut().enumerate().take(n - t * NR) {
                    *v = value(p, t * NR + j);
                }
            }
        }
        Self { data, k, n }
    }

    /// Rows of the inner dimension.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Panel `t` (columns `t·NR ..`).
    fn panel(&self, t: usize) -> &[f32] {
        &self.data[t * self.k * NR..(t + 1) * self.k * NR]
    }
}

/// `rows` rows of `A` (row stride `lda`, at least `b.k()` values each) times `b`.
#[derive(Clone, Copy)]
pub(crate) struct Operands<'a> {
    pub a: &'a [f32],
    pub lda: usize,
    pub rows: usize,
    pub b: &'a Panels,
}

/// Writes columns `cols` of `A · B` into `c` (`rows × cols.len()`, row stride `ldc`); columns
/// `cols.len()..ldc` of `c` are left as they are. `cols` must start at a panel boundary. `c` may
/// be uninitialized: every slot of the product is written, none is read.
pub(crate) fn product(
    ops: Operands,
    cols: std::ops::Range<usize>,
    c: &mut [MaybeUninit<f32>],
    ldc: usize,
) {
    let (k, n) = (ops.b.k, cols.len());
    assert!(
        cols.start.is_multiple_of(NR) && cols.end <= ops.b.n,
        "tile product: columns"
    );
    assert!(ops.lda >= k && ldc >= n, "tile product: strides");
    if ops.rows > 0 {
        assert!(
            ops.a.len() >= (ops.rows - 1) * ops.lda + k,
            "tile product: A"
        );
        assert!(c.len() >= (ops.rows - 1) * ldc + n, "tile product: C");
    }
    tiles(ops, cols, c, ldc);
}

multiversion! {
    fn tiles<F>(ops: Operands, cols: std::ops::Range<usize>, c: &mut [MaybeUninit<f32>], ldc: usize) {
        for n0 in cols.clone().step_by(NR) {
            let panel = ops.b.panel(n0 / NR);
            let (at, width) = (n0 - cols.start, NR.min(cols.end - n0));
            for m0 in (0..ops.rows).step_by(MR) {
                let a = &ops.a[m0 * ops.lda..];
                let c = &mut c[m0 * ldc + at..];
                let out = (c, ldc, width);
                tile::<F>(a, ops.lda, MR.min(ops.rows - m0), panel, out);
            }
        }
    }
}

/// A tile of `rows` (at most [`MR`]) rows × one panel, of which the first `width` columns are
/// stored. The sums live in registers: the loop shape (whole arrays, zipped) is what lets the
/// compiler keep them there. A short tile repeats its last row rather than use a shape of its own:
/// one shape serves every tile, and the one-row shape compiled to scalar code (which made no
/// measurable difference to a pass: the batch-1 head is bound by reading its weights).
#[inline(always)]
fn tile<F: MulAdd>(
    a: &[f32],
    lda: usize,
    rows: usize,
    panel: &[f32],
    (c, ldc, width): (&mut [MaybeUninit<f32>], usize, usize),
) {
    let starts: [usize; MR] = std::array::from_fn(|r| r.min(rows - 1) * lda);
    let mut acc = [[0f32; NR]; MR];
    for (p, b) in panel.chunks_exact(NR).enumerate() {
        let b: [f32; NR] = b.try_into().unwrap();
        let xs: [f32; MR] = std::array::from_fn(|r| a[starts[r] + p]);
        for (sums, x) in acc.iter_mut().zip(xs) {
            for (s, w) in sums.iter_mut().zip(b) {
                *s = F::mul_add(x, w, *s);
            }
        }
    }
    for (r, sums) in acc.iter().enumerate().take(rows) {
        copy_into(&mut c[r * ldc..r * ldc + width], &sums[..width]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::simd::{capped, ALL};

    #[test]
    fn every_tile_shape_at_every_level_matches_the_naive_product() {
        for (rows, k, n) in [(1, 1, 1), (4, 7, 32), (9, 13, 70), (3, 33, 31), (17, 5, 64)] {
            let lda = k + 2;
            let a: Vec<f32> = (0..rows * lda)
                .map(|i| ((i * 7) % 11) as f32 - 5.0)
                .collect();
            let bv = |p: usize, j: usize| ((p * n + j) * 5 % 13) as f32 * 0.25 - 1.5;
            let b = Panels::from_fn(k, n, bv);
            let ops = Operands {
                a: &a,
                lda,
                rows,
                b: &b,
            };
            // All columns, and the columns from the second panel on.
            for first in [0, NR.min(n / NR * NR)] {
                let w = n - first;
                let ldc = w + 3;
                for limit in ALL {
                    let mut c = vec![MaybeUninit::new(f32::NAN); rows * ldc];
                    capped(limit, || product(ops, first..n, &mut c, ldc));
                    // SAFETY: every slot was initialized (NaN) before the product wrote some.
                    let c: Vec<f32> = c.iter().map(|v| unsafe { v.assume_init() }).collect();
                    for i in 0..rows {
                        for j in 0..w {
                            let want: f32 = (0..k).map(|p| a[i * lda + p] * bv(p, first + j)).sum();
                            assert_eq!(
                                c[i * ldc + j],
                                want,
                                "{limit:?} ({rows},{k},{n}) at ({i},{j})"
                            );
                        }
                        assert!(c[i * ldc + w..(i + 1) * ldc].iter().all(|v| v.is_nan()));
                    }
                }
            }
        }
    }
}
