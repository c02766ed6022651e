//! Depthwise 2-D convolution (`groups == channels`, weight `[C, 1, k, k]`, padding `k / 2`)
//! as candle custom ops, with backward.
//!
//! * [`DepthwiseConv2d`]: `(x, w) -> y`; its backward applies the two ops below.
//! * [`DepthwiseInputGrad`]: `(dy, w) -> dx`, the transposed depthwise convolution.
//! * [`DepthwiseWeightGrad`]: `(x, dy) -> dw`, a per-channel correlation summed over the batch.
//!
//! Forward and input gradient run in parallel over `batch x channel` planes, the weight
//! gradient over channels. Inner loops are contiguous row slices (see [`super::window`]).

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::f32_slice;
use super::vecmath::{axpy, mul_acc};
use super::window::{Tap, Window};

/// Depthwise convolution of `x: [B, C, H, W]` with `w: [C, 1, k, k]`, padding `k / 2`.
///
/// Output is `[B, C, floor((H + 2p - k) / stride) + 1, ...]`. CPU and f32 only; inputs of any
/// layout are made contiguous first. Differentiable with respect to both `x` and `w`.
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&w.contiguous()?, DepthwiseConv2d { stride })
}

/// Kernel size of a depthwise weight `[c, 1, k, k]`.
fn kernel_size(w: &Shape, c: usize) -> Result<usize> {
    let (wc, one, kh, kw) = w.dims4()?;
    if wc != c || one != 1 || kh != kw {
        bail!("depthwise conv: weight {w:?} does not match [{c}, 1, k, k]")
    }
    Ok(kh)
}

/// The window of a depthwise convolution with kernel `k` and padding `k / 2`.
fn window(h: usize, w: usize, k: usize, stride: usize) -> Result<Window> {
    Window::new(h, w, k, k, stride, k / 2)
}

/// Forward op: `(x [B, C, H, W], w [C, 1, k, k]) -> y [B, C, OH, OW]`.
struct DepthwiseConv2d {
    stride: usize,
}

impl CustomOp2 for DepthwiseConv2d {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let wt = f32_slice(ws, wl, self.name())?;
        let (b, c, h, w) = xl.shape().dims4()?;
        let k = kernel_size(wl.shape(), c)?;
        let g = window(h, w, k, self.stride)?;
        let taps = g.taps();
        let mut y = vec![0f32; b * c * g.oh * g.ow];
        if !y.is_empty() {
            y.par_chunks_mut(g.oh * g.ow)
                .enumerate()
                .for_each_init(Vec::new, |buf, (bc, yp)| {
                    let xp = g.phased(&x[bc * h * w..(bc + 1) * h * w], buf);
                    let wk = &wt[(bc % c) * k * k..(bc % c + 1) * k * k];
                    forward_plane(&g, &taps, xp, wk, yp);
                });
        }
        Ok((CpuStorage::F32(y), Shape::from((b, c, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (x, w, dy) = (x.contiguous()?, w.contiguous()?, dy.contiguous()?);
        let (_, _, h, wd) = x.dims4()?;
        let dx = dy.apply_op2_no_bwd(
            &w,
            &DepthwiseInputGrad {
                h,
                w: wd,
                stride: self.stride,
            },
        )?;
        let dw = x.apply_op2_no_bwd(
            &dy,
            &DepthwiseWeightGrad {
                k: w.dim(2)?,
                stride: self.stride,
            },
        )?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `y[oh, ow] = sum_{i, j} w[i, j] * x[oh * s + i - p, ow * s + j - p]` for one plane.
fn forward_plane(g: &Window, taps: &[Tap], x: &[f32], wk: &[f32], y: &mut [f32]) {
    for (oh, yrow) in y.chunks_exact_mut(g.ow).enumerate() {
        for (i, wrow) in wk.chunks_exact(g.kw).enumerate() {
            let Some(ih) = g.in_row(oh, i) else { continue };
            for (tap, &wv) in taps.iter().zip(wrow) {
                axpy(
                    wv,
                    tap.input(g.phase_row(x, ih, tap.phase)),
                    &mut yrow[tap.lo..tap.hi],
                );
            }
        }
    }
}

/// Input-gradient op: `(dy [B, C, OH, OW], w [C, 1, k, k]) -> dx [B, C, h, w]`.
struct DepthwiseInputGrad {
    h: usize,
    w: usize,
    stride: usize,
}

impl CustomOp2 for DepthwiseInputGrad {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        ds: &CpuStorage,
        dl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dy = f32_slice(ds, dl, self.name())?;
        let wt = f32_slice(ws, wl, self.name())?;
        let (b, c, oh, ow) = dl.shape().dims4()?;
        let k = kernel_size(wl.shape(), c)?;
        let g = window(self.h, self.w, k, self.stride)?;
        if (g.oh, g.ow) != (oh, ow) {
            bail!(
                "{}: gradient {oh}x{ow} does not match the {}x{} output",
                self.name(),
                g.oh,
                g.ow
            )
        }
        let taps = g.taps();
        let plane = self.h * self.w;
        let mut dx = vec![0f32; b * c * plane];
        if !dx.is_empty() {
            dx.par_chunks_mut(plane)
                .enumerate()
                .for_each_init(Vec::new, |buf, (bc, dxp)| {
                    let dyp = &dy[bc * oh * ow..(bc + 1) * oh * ow];
                    let wk = &wt[(bc % c) * k * k..(bc % c + 1) * k * k];
                    g.fill_phased(dxp, buf, |acc| input_grad_plane(&g, &taps, dyp, wk, acc));
                });
        }
        Ok((CpuStorage::F32(dx), Shape::from((b, c, self.h, self.w))))
    }
}

/// Scatters `dy[oh, ow] * w[i, j]` onto `dx[oh * s + i - p, ow * s + j - p]` (phased layout).
fn input_grad_plane(g: &Window, taps: &[Tap], dy: &[f32], wk: &[f32], dx: &mut [f32]) {
    for (oh, dyrow) in dy.chunks_exact(g.ow).enumerate() {
        for (i, wrow) in wk.chunks_exact(g.kw).enumerate() {
            let Some(ih) = g.in_row(oh, i) else { continue };
            for (tap, &wv) in taps.iter().zip(wrow) {
                axpy(
                    wv,
                    &dyrow[tap.lo..tap.hi],
                    tap.input_mut(g.phase_row_mut(dx, ih, tap.phase)),
                );
            }
        }
    }
}

/// Weight-gradient op: `(x [B, C, H, W], dy [B, C, OH, OW]) -> dw [C, 1, k, k]`.
struct DepthwiseWeightGrad {
    k: usize,
    stride: usize,
}

impl CustomOp2 for DepthwiseWeightGrad {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let dy = f32_slice(ds, dl, self.name())?;
        let (b, c, h, w) = xl.shape().dims4()?;
        let k = self.k;
        let g = window(h, w, k, self.stride)?;
        if dl.shape().dims4()? != (b, c, g.oh, g.ow) {
            bail!(
                "{}: gradient {:?} does not match the output of {:?}",
                self.name(),
                dl.shape(),
                xl.shape()
            )
        }
        let taps = g.taps();
        let (plane, out_plane) = (h * w, g.oh * g.ow);
        let mut dw = vec![0f32; c * k * k];
        if !dw.is_empty() {
            dw.par_chunks_mut(k * k).enumerate().for_each_init(
                || (Vec::new(), Vec::new()),
                |(buf, acc), (ch, dwc)| {
                    // One accumulator row per tap, summed over output rows and batch, reduced last.
                    acc.clear();
                    acc.resize(k * k * g.ow, 0.0);
                    for bc in (0..b).map(|bi| bi * c + ch) {
                        let xp = g.phased(&x[bc * plane..(bc + 1) * plane], buf);
                        weight_grad_plane(
                            &g,
                            &taps,
                            xp,
                            &dy[bc * out_plane..(bc + 1) * out_plane],
                            acc,
                        );
                    }
                    for (d, row) in dwc.iter_mut().zip(acc.chunks_exact(g.ow)) {
                        *d = row.iter().sum();
                    }
                },
            );
        }
        Ok((CpuStorage::F32(dw), Shape::from((c, 1, k, k))))
    }
}

/// Adds `dy[oh, ow] * x[oh * s + i - p, ow * s + j - p]` into column `ow` of accumulator row
/// `i * k + j`, for one plane.
fn weight_grad_plane(g: &Window, taps: &[Tap], x: &[f32], dy: &[f32], acc: &mut [f32]) {
    for (oh, dyrow) in dy.chunks_exact(g.ow).enumerate() {
        for (i, acc_i) in acc.chunks_exact_mut(g.kw * g.ow).enumerate() {
            let Some(ih) = g.in_row(oh, i) else { continue };
            for (tap, acc_ij) in taps.iter().zip(acc_i.chunks_exact_mut(g.ow)) {
                let xin = tap.input(g.phase_row(x, ih, tap.phase));
                mul_acc(&dyrow[tap.lo..tap.hi], xin, &mut acc_ij[tap.lo..tap.hi]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{
        assert_close, check_against_generic, check_finite_differences, generic, grads, uniform,
    };
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn matches_generic_conv() -> Result<()> {
        let mut seed = 0;
        for k in [3, 5] {
            for stride in [1, 2] {
                for (h, w) in [(7, 7), (8, 8), (9, 6), (6, 9), (2, 3), (1, 1)] {
                    for (b, c) in [(1, 1), (3, 4), (1, 6), (3, 8)] {
                        seed += 1;
                        let conv = |x: &Tensor, wt: &Tensor| depthwise_conv2d(x, wt, stride);
                        check_against_generic(
                            &conv,
                            [b, c, h, w],
                            [c, 1, k, k],
                            (stride, k / 2, c),
                            seed,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn larger_kernel_and_stride() -> Result<()> {
        let conv = |x: &Tensor, w: &Tensor| depthwise_conv2d(x, w, 3);
        check_against_generic(&conv, [2, 3, 11, 10], [3, 1, 7, 7], (3, 3, 3), 99)
    }

    #[test]
    fn finite_differences() -> Result<()> {
        for stride in [1, 2] {
            let conv = |x: &Tensor, w: &Tensor| depthwise_conv2d(x, w, stride);
            check_finite_differences(&conv, [2, 2, 5, 4], [2, 1, 3, 3], 7 + stride as u64)?;
        }
        Ok(())
    }

    /// Strided views of the input and of the incoming gradient give the same results.
    #[test]
    fn non_contiguous_inputs() -> Result<()> {
        let mut rng = StdRng::seed_from_u64(5);
        let (b, c, h, w, k, stride) = (2, 3, 9, 6, 5, 2);
        let x_nhwc = uniform(&[b, h, w, c], &mut rng)?;
        let x = x_nhwc.permute((0, 3, 1, 2))?;
        assert!(!x.is_contiguous());
        let wt = uniform(&[c, 1, k, k], &mut rng)?;
        let r = uniform(&[b, c, 3, 5], &mut rng)?;
        // Loss taken on the transposed output, so the gradient reaching the op is strided too.
        let fast = |x: &Tensor, wt: &Tensor| depthwise_conv2d(x, wt, stride)?.transpose(2, 3);
        let slow = |x: &Tensor, wt: &Tensor| generic(x, wt, stride, k / 2, c)?.transpose(2, 3);
        let got = grads(&fast, &x, &wt, &r)?;
        let want = grads(&slow, &x.contiguous()?, &wt, &r)?;
        assert_close(&got.y, &want.y, "forward")?;
        assert_close(&got.dx, &want.dx, "input gradient")?;
        assert_close(&got.dw, &want.dw, "weight gradient")
    }

    #[test]
    fn rejects_mismatched_weight() -> Result<()> {
        let x = Tensor::zeros(
            (1, 4, 5, 5),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )?;
        let w = Tensor::zeros(
            (3, 1, 3, 3),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )?;
        assert!(depthwise_conv2d(&x, &w, 1).is_err());
        Ok(())
    }
}
