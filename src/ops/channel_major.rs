//! Batch-major `[B, R, L]` to channel-major `[R, B, L]` copies and back, and plain transposes.
//!
//! In channel-major layout the per-sample matrices `[R, L]` of a batch sit side by side as one
//! `[R, B · L]` matrix, so a product applied to every sample (`w · x_b`) becomes a single large
//! matrix product, which is much faster than `B` thin ones when `L` is small.

use rayon::prelude::*;

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
/// Parallel over blocks of source columns, each copied row by row, so the reads are short
/// contiguous runs and the writes stay within the block.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(src.len(), rows * cols, "transpose: size");
    const BLOCK: usize = 16;
    // SAFETY: the block of destination rows `j0 .. j0 + width` is written in full: `rows`
    // entries for each of its `width` rows.
    unsafe {
        written(src.len(), |dst| {
            if rows == 0 {
                return;
            }
            dst.par_chunks_mut(BLOCK * rows)
                .enumerate()
                .for_each(|(jb, block)| {
                    let (j0, width) = (jb * BLOCK, block.len() / rows);
                    for i in 0..rows {
                        let run = &src[i * cols + j0..i * cols + j0 + width];
                        for (jj, &v) in run.iter().enumerate() {
                            block[jj * rows + i].write(v);
                        }
                    }
                })
        })
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
        for (rows, cols) in [(1, 1), (3, 40), (40, 3), (17, 33), (0, 5), (5, 0)] {
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
}
