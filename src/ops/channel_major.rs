//! Batch-major `[B, R, L]` to channel-major `[R, B, L]` copies and back, and plain transposes.
//!
//! In channel-major layout the per-sample matrices `[R, L]` of a batch sit side by side as one
//! `[R, B · L]` matrix, so a product applied to every sample (`w · x_b`) becomes a single large
//! matrix product, which is much faster than `B` thin ones when `L` is small.

use rayon::prelude::*;

use std::mem::MaybeUninit;

#[cfg(target_arch = "x86_64")]
use super::simd::{level, Level};
use super::uninit::{copy_into, written};

/// Below this many columns `L` per sample, the convolutions multiply the whole batch at once in
/// channel-major layout; from it on, one sample at a time.
pub(crate) const PER_SAMPLE_MIN_L: usize = 128;

/// `[B, R, L] -> [R, B, L]`.
pub(crate) fn to_channel_major(src: &[f32], b: usize, r: usize, l: usize) -> Vec<f32> {
    swap_outer(src, b, r, l)
}

/// `[R, B, L] -> [B, R, L]`, the inverse of [`to_channel_major`].
pub(crate) fn to_batch_major(src: &[f32], b: usize, r: usize, l: usize) -> Vec<f32> {
    swap_outer(src, r, b, l)
}

/// `[A, B, L] -> [B, A, L]`: swaps the two outer dimensions, parallel over `B`.
fn swap_outer(src: &[f32], a: usize, b: usize, l: usize) -> Vec<f32> {
    assert_eq!(src.len(), a * b * l, "swap_outer: size");
    // SAFETY: the `b` blocks of `a · l` slots are each filled by `a` rows of `l` (none if
    // either is zero).
    unsafe {
        written(src.len(), |dst| {
            if l > 0 && a > 0 {
                dst.par_chunks_mut(a * l)
                    .enumerate()
                    .for_each(|(bi, block)| {
                        for (ai, row) in block.chunks_exact_mut(l).enumerate() {
                            let at = (ai * b + bi) * l;
                            copy_into(row, &src[at..at + l]);
                        }
                    });
            }
        })
    }
}

/// The transpose of a row-major `rows x cols` matrix, as a row-major `cols x rows` one.
///
/// Parallel over blocks of [`BLOCK`] source columns. Inside a block, tiles of [`TILE`] × [`TILE`]
/// values are read as rows and written as rows of the transpose ([`tile`]); the edges that do not
/// fill a tile go value by value.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(src.len(), rows * cols, "transpose: size");
    // SAFETY: the block of destination rows `j0 .. j0 + width` is written in full: `rows`
    // entries for each of its `width` rows, by whole tiles and then the edges.
    unsafe {
        written(src.len(), |dst| {
            if rows == 0 {
                return;
            }
            dst.par_chunks_mut(BLOCK * rows)
                .enumerate()
                .for_each(|(jb, block)| {
                    let (j0, width) = (jb * BLOCK, block.len() / rows);
                    let (full_rows, full_cols) = (rows - rows % TILE, width - width % TILE);
                    for i in (0..full_rows).step_by(TILE) {
                        for jj in (0..full_cols).step_by(TILE) {
                            tile(
                                &src[i * cols + j0 + jj..],
                                cols,
                                &mut block[jj * rows + i..],
                                rows,
                            );
                        }
                    }
                    for i in 0..rows {
                        let from = if i < full_rows { full_cols } else { 0 };
                        let run = &src[i * cols + j0 + from..i * cols + j0 + width];
                        for (jj, &v) in run.iter().enumerate() {
                            block[(from + jj) * rows + i].write(v);
                        }
                    }
                })
        })
    }
}

/// Source columns per parallel task of [`transpose`].
const BLOCK: usize = 16;
/// Side of the square tiles [`transpose`] moves at once.
const TILE: usize = 8;

/// Writes the transpose of the `TILE × TILE` tile at the start of `src` (row stride `lds`) at the
/// start of `dst` (row stride `ldd`): eight-lane shuffles where the CPU has AVX2, value by value
/// otherwise.
fn tile(src: &[f32], lds: usize, dst: &mut [MaybeUninit<f32>], ldd: usize) {
    assert!(
        src.len() >= (TILE - 1) * lds + TILE && dst.len() >= (TILE - 1) * ldd + TILE,
        "transpose: a tile exceeds its matrix"
    );
    #[cfg(target_arch = "x86_64")]
    if level() != Level::Base {
        // SAFETY: `level` reports AVX2 (and so AVX) on this CPU, and the assertion above puts
        // every row `TILE` values long inside `src` and `dst`.
        return unsafe { avx::tile(src.as_ptr(), lds, dst.as_mut_ptr().cast(), ldd) };
    }
    for r in 0..TILE {
        for c in 0..TILE {
            dst[c * ldd + r].write(src[r * lds + c]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::TILE;
    use std::arch::x86_64::*;

    /// The 8 × 8 transpose in registers: pairs of rows interleaved, then pairs of pairs, then
    /// the 128-bit halves swapped.
    ///
    /// # Safety
    /// The CPU has AVX; rows `0..8` of `src` (stride `lds`) and of `dst` (stride `ldd`) are
    /// eight valid values each, and `dst` may be written.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn tile(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
        // SAFETY: the caller guarantees eight readable values in each of `src`'s eight rows.
        let r: [__m256; TILE] =
            std::array::from_fn(|i| unsafe { _mm256_loadu_ps(src.add(i * lds)) });
        let lo = |a, b| _mm256_unpacklo_ps(a, b);
        let hi = |a, b| _mm256_unpackhi_ps(a, b);
        let t = [
            lo(r[0], r[1]),
            hi(r[0], r[1]),
            lo(r[2], r[3]),
            hi(r[2], r[3]),
            lo(r[4], r[5]),
            hi(r[4], r[5]),
            lo(r[6], r[7]),
            hi(r[6], r[7]),
        ];
        let u = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        for c in 0..4 {
            let (first, second) = (
                _mm256_permute2f128_ps::<0x20>(u[c], u[c + 4]),
                _mm256_permute2f128_ps::<0x31>(u[c], u[c + 4]),
            );
            // SAFETY: the caller guarantees eight writable values in each of `dst`'s eight rows.
            unsafe {
                _mm256_storeu_ps(dst.add(c * ldd), first);
                _mm256_storeu_ps(dst.add((c + 4) * ldd), second);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let (b, r, l) = (3, 4, 5);
        let src: Vec<f32> = (0..b * r * l).map(|v| v as f32).collect();
        let cm = to_channel_major(&src, b, r, l);
        for bi in 0..b {
            for ri in 0..r {
                for p in 0..l {
                    assert_eq!(cm[(ri * b + bi) * l + p], src[(bi * r + ri) * l + p]);
                }
            }
        }
        assert_eq!(to_batch_major(&cm, b, r, l), src);
    }

    #[test]
    fn transposes_any_shape() {
        for (rows, cols) in [
            (1, 1),
            (3, 40),
            (40, 3),
            (17, 33),
            (0, 5),
            (5, 0),
            (8, 8),
            (16, 40),
            (128, 72),
            (23, 19),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let t = transpose(&src, rows, cols);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(t[j * rows + i], src[i * cols + j]);
                }
            }
            assert_eq!(transpose(&t, cols, rows), src);
        }
    }

    /// The tile gives the same transpose on every SIMD level, inside wider matrices.
    #[test]
    fn tiles_transpose_on_every_level() {
        let (lds, ldd) = (11, 13);
        let src: Vec<f32> = (0..7 * lds + TILE).map(|v| v as f32).collect();
        for limit in crate::ops::simd::ALL {
            let mut dst = vec![MaybeUninit::new(-1.0f32); 7 * ldd + TILE];
            crate::ops::simd::capped(limit, || tile(&src, lds, &mut dst, ldd));
            // SAFETY: every slot was initialized to -1 before the tile wrote its part.
            let dst: Vec<f32> = dst.iter().map(|v| unsafe { v.assume_init() }).collect();
            for r in 0..TILE {
                for c in 0..TILE {
                    assert_eq!(dst[c * ldd + r], src[r * lds + c], "{limit:?}");
                }
            }
            assert_eq!(dst[TILE], -1.0, "{limit:?}: wrote outside the tile");
        }
    }
}
