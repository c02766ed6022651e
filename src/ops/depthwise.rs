//! Depthwise 2-D convolution (`groups == channels`, weight `[C, 1, k, k]`, padding `k / 2`)
//! as a candle custom op with backward.
//!
//! Planes at least [`FLAT_MIN_OW`] outputs wide are copied into a zero-padded, phase-split
//! buffer ([`Padded`]) in which every kernel tap reads one contiguous run covering all output
//! rows at once: the forward pass is `k²` long `axpy`s, the input gradient their transpose, the
//! weight gradient `k²` dot products. Rows are computed `wq` wide (`wq ≥ OW`); the extra columns
//! are dropped (forward) or zero (backward). Narrower planes, where most taps read padding, go
//! to [`super::depthwise_small`], which puts the batch innermost.
//!
//! Forward and input gradient run in parallel over `batch x channel` planes, the weight
//! gradient over channels, summing over the batch in order (reruns are bit-identical).

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::Mutex;

use super::cpu::{f32_slice, read_f32};
use super::depthwise_small::{self, TapTable};
use super::uninit::{copy_into, written};
use super::vecmath::{axpy, dot};

/// Output width from which a plane uses the flat layout.
const FLAT_MIN_OW: usize = 7;

/// Depthwise convolution of `x: [B, C, H, W]` with `w: [C, 1, k, k]`, padding `k / 2`.
///
/// Output is `[B, C, floor((H + 2p - k) / stride) + 1, ...]`. CPU and f32 only; inputs of any
/// layout are made contiguous first. Differentiable with respect to both `x` and `w`.
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&w.contiguous()?, DepthwiseConv2d::new(stride))
}

/// Kernel size of a depthwise weight `[c, 1, k, k]`.
fn kernel_size(w: &Shape, c: usize) -> Result<usize> {
    let (wc, one, kh, kw) = w.dims4()?;
    if wc != c || one != 1 || kh != kw {
        bail!("depthwise conv: weight {w:?} does not match [{c}, 1, k, k]")
    }
    Ok(kh)
}

/// Geometry of one plane in padded, phase-split layout.
///
/// With padding `p = k / 2` and stride `s`, padded row `hp` and column `wp` live in phase
/// `(hp % s, wp % s)` at row `hp / s`, column `wp / s` of a `hq x wq` block. Output `(oh, ow)`
/// then reads, for tap `(i, j)`, element `(oh + i / s, ow + j / s)` of phase `(i % s, j % s)`:
/// flattened with row width `wq`, the run `tap(i, j) .. tap(i, j) + oh_count * wq`. One spare
/// row per phase keeps the last run inside the buffer.
#[derive(Clone, Copy, Debug)]
struct Padded {
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
    oh: usize,
    ow: usize,
    hq: usize,
    wq: usize,
}

impl Padded {
    fn new(h: usize, w: usize, k: usize, s: usize) -> Result<Self> {
        let p = k / 2;
        if s == 0 || k == 0 || h + 2 * p < k || w + 2 * p < k {
            bail!("depthwise conv: kernel {k} stride {s} does not fit a {h}x{w} input")
        }
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        Ok(Self {
            h,
            w,
            k,
            s,
            p,
            oh: (hp - k) / s + 1,
            ow: (wp - k) / s + 1,
            hq: hp.div_ceil(s) + 1,
            wq: wp.div_ceil(s),
        })
    }

    /// Elements of the padded buffer.
    fn len(&self) -> usize {
        self.s * self.s * self.hq * self.wq
    }

    /// Length of every tap's run: the output rows, `wq` wide.
    fn run(&self) -> usize {
        self.oh * self.wq
    }

    /// Start of the run read by tap `(i, j)`.
    fn tap(&self, i: usize, j: usize) -> usize {
        let s = self.s;
        ((i % s) * s + j % s) * self.hq * self.wq + (i / s) * self.wq + j / s
    }

    /// Position of input pixel `(row, col)` in the buffer.
    #[inline(always)]
    fn at(&self, row: usize, col: usize) -> usize {
        let (hp, wp, s) = (row + self.p, col + self.p, self.s);
        ((hp % s) * s + wp % s) * self.hq * self.wq + (hp / s) * self.wq + wp / s
    }

    /// Copies plane `x` into `buf`, whose padding entries must be zero (they are never written,
    /// so a buffer reused for the same geometry stays valid).
    fn fill(&self, x: &[f32], buf: &mut [f32]) {
        for (row, xr) in x.chunks_exact(self.w).enumerate() {
            if self.s == 1 {
                let at = self.at(row, 0);
                buf[at..at + self.w].copy_from_slice(xr);
                continue;
            }
            for phase in 0..self.s.min(self.w) {
                // Columns `phase, phase + s, ...` land side by side in one phase row.
                let at = self.at(row, phase);
                for (d, &v) in buf[at..].iter_mut().zip(xr[phase..].iter().step_by(self.s)) {
                    *d = v;
                }
            }
        }
    }

    /// The inverse of [`Padded::fill`]: gathers plane `x` back from `buf`.
    fn gather(&self, buf: &[f32], x: &mut [f32]) {
        for (row, xr) in x.chunks_exact_mut(self.w).enumerate() {
            if self.s == 1 {
                let at = self.at(row, 0);
                xr.copy_from_slice(&buf[at..at + self.w]);
                continue;
            }
            for phase in 0..self.s.min(self.w) {
                let at = self.at(row, phase);
                for (d, &v) in xr[phase..].iter_mut().step_by(self.s).zip(&buf[at..]) {
                    *d = v;
                }
            }
        }
    }

    /// Spreads output plane `y` (`oh x ow`) into `flat` (`oh x wq`), whose extra columns must be
    /// zero.
    fn spread(&self, y: &[f32], flat: &mut [f32]) {
        for (src, dst) in y.chunks_exact(self.ow).zip(flat.chunks_exact_mut(self.wq)) {
            dst[..self.ow].copy_from_slice(src);
        }
    }
}

/// The tap table of a plane too narrow for the flat layout.
fn small_table(g: &Padded) -> TapTable {
    TapTable::new(g.h, g.w, g.k, g.s, (g.oh, g.ow))
}

/// Forward op: `(x [B, C, H, W], w [C, 1, k, k]) -> y [B, C, OH, OW]`.
pub(super) struct DepthwiseConv2d {
    stride: usize,
    /// The forward's batch-innermost input (small planes only), taken by the backward.
    xt: Mutex<Option<Vec<f32>>>,
}

impl DepthwiseConv2d {
    /// The op for `stride`; the forward checks the weight against the input.
    pub(super) fn new(stride: usize) -> Self {
        Self {
            stride,
            xt: Mutex::new(None),
        }
    }
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
        let g = Padded::new(h, w, k, self.stride)?;
        let (plane, out_plane) = (h * w, g.oh * g.ow);
        if g.ow < FLAT_MIN_OW {
            let (y, xt) = depthwise_small::forward(&small_table(&g), (b, c), x, wt);
            *self.xt.lock().unwrap_or_else(|e| e.into_inner()) = Some(xt);
            return Ok((CpuStorage::F32(y), Shape::from((b, c, g.oh, g.ow))));
        }
        let write = |y: &mut [MaybeUninit<f32>]| {
            if y.is_empty() {
                return;
            }
            y.par_chunks_mut(out_plane).enumerate().for_each_init(
                || (vec![0f32; g.len()], vec![0f32; g.run()]),
                |(buf, acc), (bc, yp)| {
                    g.fill(&x[bc * plane..(bc + 1) * plane], buf);
                    let wk = &wt[(bc % c) * k * k..(bc % c + 1) * k * k];
                    acc.fill(0.0);
                    for (t, &wv) in wk.iter().enumerate() {
                        let at = g.tap(t / k, t % k);
                        axpy(wv, &buf[at..at + g.run()], acc);
                    }
                    for (dst, src) in yp.chunks_exact_mut(g.ow).zip(acc.chunks_exact(g.wq)) {
                        copy_into(dst, &src[..g.ow]);
                    }
                },
            );
        };
        // SAFETY: every plane's slots are copied row by row from its accumulator.
        let y = unsafe { written(b * c * out_plane, write) };
        Ok((CpuStorage::F32(y), Shape::from((b, c, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (b, c, h, wd) = x.dims4()?;
        let k = kernel_size(w.shape(), c)?;
        let g = Padded::new(h, wd, k, self.stride)?;
        if dy.dims4()? != (b, c, g.oh, g.ow) {
            bail!(
                "{}: gradient {:?} does not match the output of {:?}",
                self.name(),
                dy.shape(),
                x.shape()
            )
        }
        let kept = self.xt.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (dx, dw) = read_f32(x, |x| {
            read_f32(w, |wt| {
                read_f32(&dy, |dy| {
                    if g.ow < FLAT_MIN_OW {
                        let t = small_table(&g);
                        depthwise_small::backward(&t, (b, c), (x, kept), wt, dy)
                    } else {
                        (
                            input_grad(&g, (b, c), dy, wt),
                            weight_grad(&g, (b, c), x, dy),
                        )
                    }
                })
            })
        })???;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dw, w.shape(), x.device())?),
        ))
    }
}

/// `dx`: every `dy[oh, ow] · w[i, j]` added onto the pixel tap `(i, j)` read; per plane, the
/// transposed `axpy`s into a zeroed padded buffer, then gathered.
fn input_grad(g: &Padded, (b, c): (usize, usize), dy: &[f32], wt: &[f32]) -> Vec<f32> {
    let (k, plane, out_plane) = (g.k, g.h * g.w, g.oh * g.ow);
    let mut dx = vec![0f32; b * c * plane];
    if dx.is_empty() || out_plane == 0 {
        return dx;
    }
    dx.par_chunks_mut(plane).enumerate().for_each_init(
        || (vec![0f32; g.len()], vec![0f32; g.run()]),
        |(buf, flat), (bc, dxp)| {
            g.spread(&dy[bc * out_plane..(bc + 1) * out_plane], flat);
            buf.fill(0.0);
            let wk = &wt[(bc % c) * k * k..(bc % c + 1) * k * k];
            for (t, &wv) in wk.iter().enumerate() {
                let at = g.tap(t / k, t % k);
                axpy(wv, flat, &mut buf[at..at + g.run()]);
            }
            g.gather(buf, dxp);
        },
    );
    dx
}

/// `dw[c, i, j] = Σ_b Σ dy · x` under tap `(i, j)`: one dot product per tap and plane, summed
/// over the batch in order.
fn weight_grad(g: &Padded, (b, c): (usize, usize), x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (kk, plane, out_plane) = (g.k * g.k, g.h * g.w, g.oh * g.ow);
    let mut dw = vec![0f32; c * kk];
    if dw.is_empty() {
        return dw;
    }
    dw.par_chunks_mut(kk).enumerate().for_each_init(
        || (vec![0f32; g.len()], vec![0f32; g.run()], vec![0f64; kk]),
        |(buf, flat, acc), (ch, dwc)| {
            acc.fill(0.0);
            for bc in (0..b).map(|bi| bi * c + ch) {
                g.fill(&x[bc * plane..(bc + 1) * plane], buf);
                g.spread(&dy[bc * out_plane..(bc + 1) * out_plane], flat);
                for (t, a) in acc.iter_mut().enumerate() {
                    let at = g.tap(t / g.k, t % g.k);
                    *a += f64::from(dot(flat, &buf[at..at + g.run()]));
                }
            }
            for (d, &a) in dwc.iter_mut().zip(acc.iter()) {
                *d = a as f32;
            }
        },
    );
    dw
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
                for (h, w) in [(7, 7), (8, 8), (9, 6), (6, 9), (2, 3), (1, 1), (15, 16)] {
                    for (b, c) in [(1, 1), (3, 4), (1, 6), (3, 8), (13, 5)] {
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

    /// Both layouts: the row kernels (narrow output) and the flat buffer (wide output).
    #[test]
    fn finite_differences() -> Result<()> {
        for (stride, x_shape) in [
            (1, [2, 2, 5, 4]),
            (2, [2, 2, 5, 4]),
            (1, [1, 2, 4, 8]),
            (2, [1, 2, 5, 14]),
        ] {
            let conv = |x: &Tensor, w: &Tensor| depthwise_conv2d(x, w, stride);
            check_finite_differences(&conv, x_shape, [2, 1, 3, 3], 7 + stride as u64)?;
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
