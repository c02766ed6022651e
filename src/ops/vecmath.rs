//! Slice kernels shaped so that LLVM vectorizes them: zipped slices, no indexing, no reductions.

/// `y += a * x`, element by element over the shorter of the two slices.
#[inline(always)]
pub(crate) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `acc += a * b`, element by element over the shortest of the three slices.
#[inline(always)]
pub(crate) fn mul_acc(a: &[f32], b: &[f32], acc: &mut [f32]) {
    for ((acc, &a), &b) in acc.iter_mut().zip(a).zip(b) {
        *acc += a * b;
    }
}
