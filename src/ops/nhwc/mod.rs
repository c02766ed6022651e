//! Inference kernels on channels-last (NHWC) f32 maps, each with its [`Epilogue`] fused in:
//! depthwise convolution, dense convolution as a row-blocked matrix product (1×1 on the input
//! rows, k×k on each window read in place), global average pooling. Batch norm is expected folded
//! into the weights; all run on the rayon pool.

mod conv;
mod depthwise;
mod pool;
mod tile;
mod windows;

pub(crate) use super::epilogue::Epilogue;
pub(crate) use conv::{dense, pointwise, DenseWeight};
pub(crate) use depthwise::depthwise;
pub(crate) use pool::global_average;

/// The shape of a channels-last map `[batch, h, w, c]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Nhwc {
    pub batch: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Nhwc {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.batch * self.h * self.w * self.c
    }

    /// Number of pixels over the batch.
    pub fn pixels(&self) -> usize {
        self.batch * self.h * self.w
    }

    /// The shape after a `k`×`k` window with stride `s` and padding `k / 2`, with `c` channels.
    pub fn conv_out(&self, k: usize, s: usize, c: usize) -> Nhwc {
        let out = |n: usize| (n + 2 * (k / 2) - k) / s + 1;
        Nhwc {
            batch: self.batch,
            h: out(self.h),
            w: out(self.w),
            c,
        }
    }
}

/// A window's geometry: kernel size and stride, padding `kernel / 2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub kernel: usize,
    pub stride: usize,
}

impl Window {
    /// The input coordinate of tap `t` for output coordinate `o`, if inside `0..size`.
    #[inline(always)]
    pub fn source(&self, o: usize, t: usize, size: usize) -> Option<usize> {
        (o * self.stride + t)
            .checked_sub(self.kernel / 2)
            .filter(|&i| i < size)
    }
}
