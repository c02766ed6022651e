//! Slice kernels shaped so that LLVM vectorizes them: zipped slices, no indexing, and sums in
//! a fixed number of explicit lanes. Each is compiled per SIMD level ([`multiversion!`]) and
//! gives bit-identical results on every level.

use super::simd::multiversion;

multiversion! {
    /// `y += a * x`, element by element over the shorter of the two slices.
    pub(crate) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += a * x;
        }
    }
}

multiversion! {
    /// `Σ a_i · b_i` in eight f32 lanes.
    pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
        const L: usize = 8;
        let mut lanes = [0f32; L];
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
        lanes.iter().sum::<f32>() + tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::simd::{capped, ALL};

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
