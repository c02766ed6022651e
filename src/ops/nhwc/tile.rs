//! A register-blocked matrix product for the inference kernels: `C = A · B` with `A` row-major
//! (row stride `lda`), `B` row-major `[k, n]` (row stride `ldb`) and `C` row-major (row stride `ldc`). Tiles of
//! [`MR`] rows × [`NR`] columns keep their sums in registers over the whole `k` loop; `B` is
//! read in place (no packing), which is what the small matrices of a batch-1 pass want.

use std::mem::MaybeUninit;

use crate::ops::simd::{multiversion, MulAdd};
use crate::ops::uninit::copy_into;

/// Rows per register tile.
pub(crate) const MR: usize = 4;
/// Columns per register tile: two AVX-512 or four AVX2 vectors.
pub(crate) const NR: usize = 32;

/// The operands of one product.
#[derive(Clone, Copy)]
pub(crate) struct Operands<'a> {
    /// `rows × k`, row stride `lda`.
    pub a: &'a [f32],
    pub lda: usize,
    /// `k × n`, row stride `ldb`.
    pub b: &'a [f32],
    pub ldb: usize,
    pub rows: usize,
    pub k: usize,
    pub n: usize,
}

impl Operands<'_> {
    fn check(&self, c_len: usize, ldc: usize) {
        assert!(
            self.lda >= self.k && self.ldb >= self.n && ldc >= self.n,
            "tile product: strides"
        );
        if self.k > 0 {
            assert!(
                self.b.len() >= (self.k - 1) * self.ldb + self.n,
                "tile product: B"
            );
        }
        if self.rows > 0 {
            assert!(
                self.a.len() >= (self.rows - 1) * self.lda + self.k,
                "tile product: A"
            );
            assert!(c_len >= (self.rows - 1) * ldc + self.n, "tile product: C");
        }
    }
}

/// Writes `A · B` into `c` (row stride `ldc`); columns `n..ldc` of `c` are left as they are.
/// `c` may be uninitialized: every slot of the product is written, none is read.
pub(crate) fn product(ops: Operands, c: &mut [MaybeUninit<f32>], ldc: usize) {
    ops.check(c.len(), ldc);
    tiles(ops, c, ldc);
}

/// `A · B` into `c` (`rows × n`, packed) for a few rows: streams `B` row by row (contiguous
/// reads, which a matrix–vector product at batch 1 is bound by) and keeps `c` in cache.
pub(crate) fn few_rows_product(ops: Operands, c: &mut [f32]) {
    ops.check(c.len(), ops.n);
    assert_eq!(c.len(), ops.rows * ops.n, "few-rows product: C");
    c.fill(0.0);
    stream_rows(ops, c);
}

multiversion! {
    fn stream_rows<F>(ops: Operands, c: &mut [f32]) {
        let n = ops.n;
        for p in 0..ops.k {
            let b = &ops.b[p * ops.ldb..][..n];
            for (r, out) in c.chunks_exact_mut(n).enumerate() {
                let x = ops.a[r * ops.lda + p];
                for (s, &w) in out.iter_mut().zip(b) {
                    *s = F::mul_add(x, w, *s);
                }
            }
        }
    }
}

multiversion! {
    fn tiles<F>(ops: Operands, c: &mut [MaybeUninit<f32>], ldc: usize) {
        for n0 in (0..ops.n).step_by(NR) {
            let nb = NR.min(ops.n - n0);
            for m0 in (0..ops.rows).step_by(MR) {
                let mb = MR.min(ops.rows - m0);
                let a = &ops.a[m0 * ops.lda..];
                let c = &mut c[m0 * ldc + n0..];
                match (mb, nb == NR) {
                    (4, true) => full::<4, F>(ops, a, n0, c, ldc),
                    (3, true) => full::<3, F>(ops, a, n0, c, ldc),
                    (2, true) => full::<2, F>(ops, a, n0, c, ldc),
                    (1, true) => full::<1, F>(ops, a, n0, c, ldc),
                    _ => partial::<F>(ops, a, n0, (mb, nb), c, ldc),
                }
            }
        }
    }
}

/// A tile of `M` rows × [`NR`] columns starting at column `n0`. The sums live in registers:
/// the loop shape (whole arrays, zipped) is what lets the compiler keep them there.
#[inline(always)]
fn full<const M: usize, F: MulAdd>(
    ops: Operands,
    a: &[f32],
    n0: usize,
    c: &mut [MaybeUninit<f32>],
    ldc: usize,
) {
    let mut acc = [[0f32; NR]; M];
    for p in 0..ops.k {
        let b: [f32; NR] = ops.b[p * ops.ldb + n0..][..NR].try_into().unwrap();
        let xs: [f32; M] = std::array::from_fn(|r| a[r * ops.lda + p]);
        for (sums, x) in acc.iter_mut().zip(xs) {
            for (s, w) in sums.iter_mut().zip(b) {
                *s = F::mul_add(x, w, *s);
            }
        }
    }
    for (r, sums) in acc.iter().enumerate() {
        copy_into(&mut c[r * ldc..r * ldc + NR], sums);
    }
}

/// An edge tile of `mb` rows × `nb` columns.
#[inline(always)]
fn partial<F: MulAdd>(
    ops: Operands,
    a: &[f32],
    n0: usize,
    (mb, nb): (usize, usize),
    c: &mut [MaybeUninit<f32>],
    ldc: usize,
) {
    let mut acc = [[0f32; NR]; MR];
    for p in 0..ops.k {
        let b = &ops.b[p * ops.ldb + n0..][..nb];
        for r in 0..mb {
            let x = a[r * ops.lda + p];
            for (s, &w) in acc[r][..nb].iter_mut().zip(b) {
                *s = F::mul_add(x, w, *s);
            }
        }
    }
    for r in 0..mb {
        copy_into(&mut c[r * ldc..r * ldc + nb], &acc[r][..nb]);
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
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5) % 13) as f32 * 0.25 - 1.5)
                .collect();
            let ldc = n + 3;
            let ops = Operands {
                a: &a,
                lda,
                b: &b,
                ldb: n,
                rows,
                k,
                n,
            };
            for limit in ALL {
                let mut few = vec![f32::NAN; rows * n];
                capped(limit, || few_rows_product(ops, &mut few));
                let mut c = vec![MaybeUninit::new(f32::NAN); rows * ldc];
                capped(limit, || product(ops, &mut c, ldc));
                // SAFETY: every slot was initialized (NaN) before the product wrote some.
                let c: Vec<f32> = c.iter().map(|v| unsafe { v.assume_init() }).collect();
                for (i, row) in few.chunks_exact(n).enumerate() {
                    assert_eq!(row, &c[i * ldc..i * ldc + n], "{limit:?} row {i}");
                }
                for i in 0..rows {
                    for j in 0..n {
                        let want: f32 = (0..k).map(|p| a[i * lda + p] * b[p * n + j]).sum();
                        assert_eq!(
                            c[i * ldc + j],
                            want,
                            "{limit:?} ({rows},{k},{n}) at ({i},{j})"
                        );
                    }
                    assert!(c[i * ldc + n..(i + 1) * ldc].iter().all(|v| v.is_nan()));
                }
            }
        }
    }
}
