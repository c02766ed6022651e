//! A register-blocked matrix product for the inference kernels: `C = A · B` with `B` packed into
//! [`Panels`] and each row of `A` given as segments ([`Segments`]): the row's own values for a 1×1
//! convolution, the pieces of its window for a k×k one, so a window is never copied into a patch
//! matrix. Tiles of up to [`MR`] rows × [`NR`] columns keep their sums in registers over the whole
//! inner loop.
//!
//! `B` is a weight, packed once: each panel of [`NR`] columns is contiguous, so the inner loop
//! reads it sequentially. Read in place instead, a weight with a power-of-two row length puts
//! every row of a tile's columns into the same few L1 sets, and the loads miss.
//!
//! On AVX-512 the tile is 8 rows (1, 2 or 4 for a shorter tile), written with intrinsics so that
//! the sums stay in registers; the other levels run a 4-row tile the compiler vectorizes (with
//! five or more rows it no longer keeps the sums in registers). Both add each row's products in
//! the order of `B`'s rows, with fused multiply-adds where the level has them.

use std::mem::MaybeUninit;
use std::ops::Range;

use crate::ops::simd::{level, multiversion, Level};
use crate::ops::uninit::copy_into;

/// Rows per tile at most (the AVX-512 tile's height).
pub(crate) const MR: usize = 8;
/// Rows of the portable tile.
const MR_PORTABLE: usize = 4;
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

    /// Panel `t` (columns `t·NR ..`).
    fn panel(&self, t: usize) -> &[f32] {
        &self.data[t * self.k * NR..(t + 1) * self.k * NR]
    }
}

/// The rows of `A`, tile by tile: each row is `count` segments of `len` values, segment `s`
/// meeting rows `s·len ..` of `B`. All rows of one tile share `len`.
pub(crate) trait Segments: Sync {
    /// Appends, for each segment of the tile of rows `rows` (at most [`MR`]), one slice per row
    /// (a tile shorter than [`MR`] repeats its last row), and returns the segment length.
    fn tile<'a>(&'a self, rows: Range<usize>, out: &mut Vec<[&'a [f32]; MR]>) -> usize;
}

/// `A` as a row-major matrix: row `i` is `a[i·lda .. i·lda + k]`, one segment.
pub(crate) struct RowMajor<'a> {
    pub a: &'a [f32],
    pub lda: usize,
    pub k: usize,
}

impl Segments for RowMajor<'_> {
    fn tile<'a>(&'a self, rows: Range<usize>, out: &mut Vec<[&'a [f32]; MR]>) -> usize {
        let last = rows.end - 1;
        out.push(std::array::from_fn(|r| {
            let i = (rows.start + r).min(last);
            &self.a[i * self.lda..][..self.k]
        }));
        self.k
    }
}

/// The tiles of one block of rows: their segments and segment lengths.
struct Tiles<'a> {
    segs: Vec<[&'a [f32]; MR]>,
    /// Per tile: its rows (from the block's first), its segments in `segs` and their length.
    spans: Vec<(Range<usize>, Range<usize>, usize)>,
}

impl<'a> Tiles<'a> {
    fn gather(a: &'a impl Segments, rows: Range<usize>, k: usize) -> Self {
        let mut segs = Vec::new();
        let mut spans = Vec::with_capacity(rows.len().div_ceil(MR));
        for m0 in rows.clone().step_by(MR) {
            let tile = m0..(m0 + MR).min(rows.end);
            let first = segs.len();
            let len = a.tile(tile.clone(), &mut segs);
            assert_eq!(
                (segs.len() - first) * len,
                k,
                "tile product: A's row length"
            );
            let own = tile.start - rows.start..tile.end - rows.start;
            spans.push((own, first..segs.len(), len));
        }
        Self { segs, spans }
    }
}

/// Writes columns `cols` of `A · B` for rows `rows` of `A` into `c` (`rows.len() × cols.len()`,
/// row stride `ldc`); columns `cols.len()..ldc` of `c` are left as they are. `cols` must start at
/// a panel boundary. `c` may be uninitialized: every slot of the product is written, none is read.
pub(crate) fn product(
    a: &impl Segments,
    rows: Range<usize>,
    b: &Panels,
    cols: Range<usize>,
    c: &mut [MaybeUninit<f32>],
    ldc: usize,
) {
    let n = cols.len();
    assert!(
        cols.start.is_multiple_of(NR) && cols.end <= b.n,
        "tile product: columns"
    );
    assert!(ldc >= n, "tile product: strides");
    if rows.is_empty() {
        return;
    }
    assert!(c.len() >= (rows.len() - 1) * ldc + n, "tile product: C");
    let tiles = Tiles::gather(a, rows, b.k);
    for n0 in cols.clone().step_by(NR) {
        let panel = b.panel(n0 / NR);
        let width = NR.min(cols.end - n0);
        for (span, segs, len) in &tiles.spans {
            let out = &mut c[span.start * ldc + n0 - cols.start..];
            tile(
                &tiles.segs[segs.clone()],
                *len,
                span.len(),
                panel,
                (out, ldc, width),
            );
        }
    }
}

/// One tile: `rows` rows × one panel, of which the first `width` columns are stored.
fn tile(
    segs: &[[&[f32]; MR]],
    len: usize,
    rows: usize,
    panel: &[f32],
    out: (&mut [MaybeUninit<f32>], usize, usize),
) {
    #[cfg(target_arch = "x86_64")]
    if level() == Level::Avx512 {
        // SAFETY: `level` reports AVX-512 F/BW, AVX2 and FMA present on this CPU.
        return unsafe { avx512::tile(segs, len, rows, panel, out) };
    }
    let (c, ldc, width) = out;
    for half in (0..rows).step_by(MR_PORTABLE) {
        let n = MR_PORTABLE.min(rows - half);
        let c = &mut c[half * ldc..];
        portable_tile(segs, len, half, n, panel, (c, ldc, width));
    }
}

multiversion! {
    /// Rows `first .. first + rows` (at most [`MR_PORTABLE`]) of a tile.
    fn portable_tile<F>(
        segs: &[[&[f32]; MR]],
        len: usize,
        first: usize,
        rows: usize,
        panel: &[f32],
        out: (&mut [MaybeUninit<f32>], usize, usize),
    ) {
        let (c, ldc, width) = out;
        let pick: [usize; MR_PORTABLE] = std::array::from_fn(|r| first + r.min(rows - 1));
        let mut acc = [[0f32; NR]; MR_PORTABLE];
        for (seg, bs) in segs.iter().zip(panel.chunks_exact(len * NR)) {
            let xs: [&[f32]; MR_PORTABLE] = std::array::from_fn(|r| &seg[pick[r]][..len]);
            for (p, b) in bs.chunks_exact(NR).enumerate() {
                let b: [f32; NR] = b.try_into().unwrap();
                for (sums, x) in acc.iter_mut().zip(xs.map(|x| x[p])) {
                    for (s, w) in sums.iter_mut().zip(b) {
                        *s = F::mul_add(x, w, *s);
                    }
                }
            }
        }
        for (r, sums) in acc.iter().enumerate().take(rows) {
            copy_into(&mut c[r * ldc..r * ldc + width], &sums[..width]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{MR, NR};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// A tile of `rows` (at most [`MR`]) rows: computed with as many rows as the next of 1, 2, 4
    /// or 8 holds, so that a short tile (a batch-1 classifier has one row) does not compute eight.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub(super) fn tile(
        segs: &[[&[f32]; MR]],
        len: usize,
        rows: usize,
        panel: &[f32],
        out: (&mut [MaybeUninit<f32>], usize, usize),
    ) {
        match rows {
            1 => tile_of::<1>(segs, len, rows, panel, out),
            2 => tile_of::<2>(segs, len, rows, panel, out),
            3 | 4 => tile_of::<4>(segs, len, rows, panel, out),
            _ => tile_of::<MR>(segs, len, rows, panel, out),
        }
    }

    /// The first value of each of the first `R` rows' segments, each checked to hold `len`
    /// values. A plain loop, not a closure: an outlined closure made the compiler spill all the
    /// tile's sums to the stack at every segment.
    #[inline(always)]
    fn starts<const R: usize>(seg: &[&[f32]; MR], len: usize) -> [*const f32; R] {
        let mut xs = [std::ptr::null(); R];
        for (x, s) in xs.iter_mut().zip(seg) {
            assert!(
                s.len() >= len,
                "tile product: a segment shorter than its length"
            );
            *x = s.as_ptr();
        }
        xs
    }

    /// An `R`-row tile (`rows <= R`): `2·R` vector sums, two vectors of `B` and one broadcast
    /// value of `A` per row and step.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    #[inline]
    fn tile_of<const R: usize>(
        segs: &[[&[f32]; MR]],
        len: usize,
        rows: usize,
        panel: &[f32],
        (c, ldc, width): (&mut [MaybeUninit<f32>], usize, usize),
    ) {
        let mut lo = [_mm512_setzero_ps(); R];
        let mut hi = [_mm512_setzero_ps(); R];
        for (seg, bs) in segs.iter().zip(panel.chunks_exact(len * NR)) {
            let xs = starts::<R>(seg, len);
            for (p, b) in bs.chunks_exact(NR).enumerate() {
                // SAFETY: `b` holds `NR` = 32 values, two vectors of 16.
                let (b0, b1) = unsafe {
                    (
                        _mm512_loadu_ps(b.as_ptr()),
                        _mm512_loadu_ps(b.as_ptr().add(16)),
                    )
                };
                for r in 0..R {
                    // SAFETY: `p < len`, and `starts` checked that each row's segment holds
                    // `len` values.
                    let x = _mm512_set1_ps(unsafe { *xs[r].add(p) });
                    lo[r] = _mm512_fmadd_ps(x, b0, lo[r]);
                    hi[r] = _mm512_fmadd_ps(x, b1, hi[r]);
                }
            }
        }
        // The first `width` of the 32 columns, as masks of the two 16-lane halves.
        let lanes = |n: usize| (((1u32 << n.min(16)) - 1) & 0xffff) as __mmask16;
        let (mask_lo, mask_hi) = (lanes(width), lanes(width.saturating_sub(16)));
        for r in 0..rows {
            let dst = &mut c[r * ldc..r * ldc + width];
            let p = dst.as_mut_ptr().cast::<f32>();
            // SAFETY: `dst` holds `width` slots (`MaybeUninit<f32>` has `f32`'s layout) and the
            // masks store only lanes below `width`; masked-off lanes are not touched.
            unsafe {
                _mm512_mask_storeu_ps(p, mask_lo, lo[r]);
                if width > 16 {
                    _mm512_mask_storeu_ps(p.add(16), mask_hi, hi[r]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::simd::{capped, ALL};

    /// Rows of `a` as segments of `len` values, every third segment of every row from `zeros`
    /// (the shape of a window that crosses the map's edge).
    struct Split<'a> {
        a: &'a [f32],
        lda: usize,
        k: usize,
        len: usize,
        zeros: &'a [f32],
    }

    impl Segments for Split<'_> {
        fn tile<'a>(&'a self, rows: Range<usize>, out: &mut Vec<[&'a [f32]; MR]>) -> usize {
            for s in 0..self.k / self.len {
                out.push(std::array::from_fn(|r| {
                    let i = (rows.start + r).min(rows.end - 1);
                    match s % 3 {
                        2 => &self.zeros[..self.len],
                        _ => &self.a[i * self.lda + s * self.len..][..self.len],
                    }
                }));
            }
            self.len
        }
    }

    #[test]
    fn every_tile_shape_at_every_level_matches_the_naive_product() {
        for (rows, k, n, len) in [
            (1, 1, 1, 1),
            (4, 7, 32, 7),
            (9, 12, 70, 4),
            (3, 33, 31, 11),
            (17, 6, 64, 2),
            (8, 9, 40, 3),
            (2, 5, 33, 5),
            (6, 10, 32, 10),
        ] {
            let lda = k + 2;
            let a: Vec<f32> = (0..(rows + 1) * lda)
                .map(|i| ((i * 7) % 11) as f32 - 5.0)
                .collect();
            let zeros = vec![0.0; len];
            let split = Split {
                a: &a,
                lda,
                k,
                len,
                zeros: &zeros,
            };
            let a_at = |i: usize, p: usize| {
                if p / len % 3 == 2 {
                    0.0
                } else {
                    a[i * lda + p]
                }
            };
            let bv = |p: usize, j: usize| ((p * n + j) * 5 % 13) as f32 * 0.25 - 1.5;
            let b = Panels::from_fn(k, n, bv);
            // All columns, and the columns from the second panel on; rows from 0 and from 1.
            for (first, row0) in [(0, 0), (NR.min(n / NR * NR), 1)] {
                let w = n - first;
                let ldc = w + 3;
                for limit in ALL {
                    let mut c = vec![MaybeUninit::new(f32::NAN); rows * ldc];
                    let span = row0..row0 + rows;
                    capped(limit, || product(&split, span, &b, first..n, &mut c, ldc));
                    // SAFETY: every slot was initialized (NaN) before the product wrote some.
                    let c: Vec<f32> = c.iter().map(|v| unsafe { v.assume_init() }).collect();
                    for i in 0..rows {
                        for j in 0..w {
                            let want: f32 =
                                (0..k).map(|p| a_at(row0 + i, p) * bv(p, first + j)).sum();
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
