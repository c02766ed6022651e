//! Pointwise (1x1, stride 1, no padding) convolution as a matrix product.

use candle_core::{bail, Result, Tensor};

/// Convolution of `x: [B, Ci, H, W]` with a 1x1 kernel `w: [Co, Ci, 1, 1]`, stride 1, no
/// padding: `w.reshape(Co, Ci) @ x.reshape(B, Ci, H * W)`. Built from candle ops, so it is
/// differentiable and runs on any device and float dtype.
pub fn conv1x1(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (b, ci, h, wd) = x.dims4()?;
    let (co, wci, kh, kw) = w.dims4()?;
    if (wci, kh, kw) != (ci, 1, 1) {
        bail!(
            "conv1x1: weight {:?} does not match [Co, {ci}, 1, 1]",
            w.shape()
        )
    }
    // One GEMM over every pixel of the batch: [B·HW, Ci] × [Ci, Co]. Broadcasting the weight
    // over the batch instead would copy it B times.
    let wt = w.reshape((co, ci))?.t()?;
    let hw = h * wd;
    if hw == 1 {
        return x.reshape((b, ci))?.matmul(&wt)?.reshape((b, co, 1, 1));
    }
    x.reshape((b, ci, hw))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * hw, ci))?
        .matmul(&wt)?
        .reshape((b, hw, co))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, co, h, wd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{check_against_generic, check_finite_differences};

    #[test]
    fn matches_generic_conv() -> Result<()> {
        let mut seed = 200;
        for (h, w) in [(7, 7), (8, 8), (9, 6), (1, 1)] {
            for (b, ci, co) in [(1, 1, 3), (3, 4, 4), (3, 8, 5), (1, 16, 24)] {
                seed += 1;
                check_against_generic(&conv1x1, [b, ci, h, w], [co, ci, 1, 1], (1, 0, 1), seed)?;
            }
        }
        Ok(())
    }

    #[test]
    fn finite_differences() -> Result<()> {
        check_finite_differences(&conv1x1, [2, 3, 3, 2], [2, 3, 1, 1], 21)
    }

    /// A strided (NHWC-backed) view of the input gives the same output and gradients.
    #[test]
    fn non_contiguous_input() -> Result<()> {
        let conv = |x: &Tensor, w: &Tensor| {
            conv1x1(
                &x.permute((0, 2, 3, 1))?
                    .contiguous()?
                    .permute((0, 3, 1, 2))?,
                w,
            )
        };
        check_against_generic(&conv, [2, 5, 6, 3], [4, 5, 1, 1], (1, 0, 1), 22)
    }

    #[test]
    fn rejects_larger_kernels() -> Result<()> {
        let x = Tensor::zeros(
            (1, 2, 4, 4),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )?;
        let w = Tensor::zeros(
            (3, 2, 3, 3),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )?;
        assert!(conv1x1(&x, &w).is_err());
        Ok(())
    }
}
