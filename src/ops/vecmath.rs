//! Slice kernels shaped so that LLVM vectorizes them: zipped slices, no indexing, and sums in
//! a fixed number of explicit lanes. Each is compiled per SIMD level ([`multiversion!`]) and
//! gives bit-identical results on every level.

use std::mem::MaybeUninit;

use super::simd::multiversion;

multiversion! {
    /// `y += a * x`, element by element over the shorter of the two slices.
    pub(crate) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    }
}

/// Lanes of [`dot_lanes`].
pub(crate) const DOT_LANES: usize = 8;

/// `Σ a_i · b_i` in eight f32 lanes: the lanes summed in order, then the tail. The reference
/// that the kernels accumulating [`dot_lanes`] over several runs are tested against.
#[cfg(test)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; DOT_LANES];
    let tail = dot_lanes(a, b, &mut lanes);
    lanes.iter().sum::<f32>() + tail
}

/// Adds the products `a_i · b_i` to `lanes` (product `i` to lane `i % 8`) as far as whole
/// lanes go, and returns the sum of the products past them. Inlined into its caller, so that a
/// [`multiversion!`] kernel compiles it at its own SIMD level.
#[inline(always)]
pub(crate) fn dot_lanes(a: &[f32], b: &[f32], lanes: &mut [f32; DOT_LANES]) -> f32 {
    const L: usize = DOT_LANES;
    let (ac, bc) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..L {
            lanes[i] += x[i] * y[i];
        }
    }
    tail
}

multiversion! {
    /// The values of `src` at even positions into `even`, at odd positions into `odd`: a row
    /// split into the two column phases of a stride-2 window.
    pub(crate) fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
        for ((pair, e), o) in src.chunks_exact(2).zip(even.iter_mut()).zip(odd.iter_mut()) {
            *e = pair[0];
            *o = pair[1];
        }
        if src.len() % 2 == 1 {
            even[src.len() / 2] = src[src.len() - 1];
        }
    }
}

multiversion! {
    /// The inverse of [`deinterleave`]: every slot of `dst` from `even` (its even positions)
    /// and `odd`.
    pub(crate) fn interleave_uninit(even: &[f32], odd: &[f32], dst: &mut [MaybeUninit<f32>]) {
        for ((pair, &e), &o) in dst.chunks_exact_mut(2).zip(even).zip(odd) {
            pair[0].write(e);
            pair[1].write(o);
        }
        if dst.len() % 2 == 1 {
            let n = dst.len();
            dst[n - 1].write(even[n / 2]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::simd::{capped, ALL};

    /// Splitting a row into its two column phases and joining them again gives the row back.
    #[test]
    fn phases_of_a_row_round_trip() {
        for n in [0usize, 1, 2, 7, 16, 33] {
            let row: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let (mut even, mut odd) = (vec![0.0; n.div_ceil(2)], vec![0.0; n / 2]);
            deinterleave(&row, &mut even, &mut odd);
            assert!(even.iter().enumerate().all(|(i, &v)| v == (2 * i) as f32));
            assert!(odd
                .iter()
                .enumerate()
                .all(|(i, &v)| v == (2 * i + 1) as f32));
            let mut back = Vec::with_capacity(n);
            interleave_uninit(&even, &odd, &mut back.spare_capacity_mut()[..n]);
            // SAFETY: `interleave_uninit` writes all `n` slots.
            unsafe { back.set_len(n) };
            assert_eq!(back, row, "{n}");
        }
    }

    /// Every SIMD level gives the same bits as the baseline.
    #[test]
    fn every_level_gives_the_same_bits() {
        let x: Vec<f32> = (0..203).map(|i| (i as f32 * 0.37).sin()).collect();
        let z: Vec<f32> = (0..203).map(|i| (i as f32 * 0.11).cos()).collect();
        let run = |limit| {
            capped(limit, || {
                let mut y = z.clone();
                axpy(0.7, &x, &mut y);
                (y, dot(&x, &z))
            })
        };
        let base = run(crate::ops::simd::Level::Base);
        let want: f32 = x.iter().zip(&z).map(|(a, b)| a * b).sum();
        assert!((base.1 - want).abs() < 1e-4, "{} vs {want}", base.1);
        for limit in ALL {
            assert_eq!(run(limit), base, "{limit:?}");
        }
    }
}
