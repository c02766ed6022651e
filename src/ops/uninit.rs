//! Output vectors that a kernel writes in full, allocated without the zero fill of
//! `vec![0.0; n]`. With freed memory kept for reuse ([`super::retain_freed_memory`]) that fill is
//! a serial `memset` of every output, about a tenth of a batch-1 forward pass.

use std::mem::MaybeUninit;

/// A vector of `n` f32 built by `write`, which gets the vector's `n` uninitialized slots.
///
/// # Safety
/// `write` must initialize every slot.
pub(crate) unsafe fn written(n: usize, write: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    write(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: the caller guarantees that `write` initialized all `n` slots.
    unsafe { v.set_len(n) };
    v
}

/// Writes the first `slots.len()` items of `values` into `slots` and returns them as initialized,
/// for kernels that read back what they wrote (a softmax row before its normalization).
///
/// Panics if `values` yields fewer items than there are slots.
pub(crate) fn filled(
    slots: &mut [MaybeUninit<f32>],
    values: impl IntoIterator<Item = f32>,
) -> &mut [f32] {
    let mut n = 0;
    for (slot, v) in slots.iter_mut().zip(values) {
        slot.write(v);
        n += 1;
    }
    assert_eq!(n, slots.len(), "filled: fewer values than slots");
    // SAFETY: all `slots.len()` slots were just written, and `MaybeUninit<f32>` has `f32`'s layout.
    unsafe { &mut *(slots as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// The slots as initialized values, once a kernel has written every one of them.
///
/// # Safety
/// Every slot of `slots` must have been written.
pub(crate) unsafe fn assume_written(slots: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: the caller guarantees every slot is initialized, and `MaybeUninit<f32>` has
    // `f32`'s layout.
    unsafe { &mut *(slots as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// Copies `src` into the first `src.len()` slots of `dst`.
#[inline(always)]
pub(crate) fn copy_into(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        d.write(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_slots() {
        // SAFETY: the closure writes all five slots.
        let v = unsafe {
            written(5, |s| {
                copy_into(&mut s[..2], &[1.0, 2.0]);
                filled(&mut s[2..], [3.0, 0.0, 9.0])[2] += 1.0;
            })
        };
        assert_eq!(v, [1.0, 2.0, 3.0, 0.0, 10.0]);
    }
}
