//! Dense 2-D convolution (`groups == 1`) as im2col followed by a matrix product.
//!
//! [`Im2Col`] unfolds `x: [B, Ci, H, W]` into `cols: [B, Ci * kh * kw, OH * OW]`; the
//! convolution is then `w.reshape(Co, Ci * kh * kw) @ cols`, whose gradients come from candle's
//! matmul. The backward of [`Im2Col`] is [`Col2Im`], which folds column gradients back onto the
//! image. Both run in parallel over `batch x input channel` planes.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::f32_slice;
use super::vecmath::axpy;
use super::window::Window;

/// Convolution of `x: [B, Ci, H, W]` with `w: [Co, Ci, kh, kw]`, symmetric zero padding.
///
/// CPU and f32 only; inputs of any layout are accepted. Differentiable with respect to both
/// `x` and `w`.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (b, ci, h, wd) = x.dims4()?;
    let (co, wci, kh, kw) = w.dims4()?;
    if wci != ci {
        bail!(
            "dense conv: weight {:?} does not match {ci} input channels",
            w.shape()
        )
    }
    let g = Window::new(h, wd, kh, kw, stride, padding)?;
    let cols = x.contiguous()?.apply_op1(Im2Col {
        kh,
        kw,
        stride,
        padding,
    })?;
    w.reshape((co, ci * kh * kw))?
        .broadcast_matmul(&cols)?
        .reshape((b, co, g.oh, g.ow))
}

/// `x [B, Ci, H, W] -> cols [B, Ci * kh * kw, OH * OW]`, row `(c, i, j)` holding the input
/// seen by kernel tap `(i, j)` of channel `c` at every output position (zero in the padding).
struct Im2Col {
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let (b, ci, h, w) = l.shape().dims4()?;
        let g = Window::new(h, w, self.kh, self.kw, self.stride, self.padding)?;
        let taps = g.taps();
        let (plane, out_plane, kk) = (h * w, g.oh * g.ow, self.kh * self.kw);
        let mut cols = vec![0f32; b * ci * kk * out_plane];
        if !cols.is_empty() {
            cols.par_chunks_mut(kk * out_plane)
                .enumerate()
                .for_each_init(Vec::new, |buf, (bc, rows)| {
                    let xp = g.phased(&x[bc * plane..(bc + 1) * plane], buf);
                    for (i, rows_i) in rows.chunks_exact_mut(self.kw * out_plane).enumerate() {
                        for (tap, row) in taps.iter().zip(rows_i.chunks_exact_mut(out_plane)) {
                            for (oh, out) in row.chunks_exact_mut(g.ow).enumerate() {
                                let Some(ih) = g.in_row(oh, i) else { continue };
                                out[tap.lo..tap.hi]
                                    .copy_from_slice(tap.input(g.phase_row(xp, ih, tap.phase)));
                            }
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(cols), Shape::from((b, ci * kk, out_plane))))
    }

    fn bwd(&self, x: &Tensor, _cols: &Tensor, dcols: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, h, w) = x.dims4()?;
        let fold = Col2Im {
            h,
            w,
            kh: self.kh,
            kw: self.kw,
            stride: self.stride,
            padding: self.padding,
        };
        Ok(Some(dcols.contiguous()?.apply_op1_no_bwd(&fold)?))
    }
}

/// `cols [B, Ci * kh * kw, OH * OW] -> x [B, Ci, h, w]`, the adjoint of [`Im2Col`]: every column
/// entry is added onto the input pixel it was read from.
struct Col2Im {
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let cols = f32_slice(s, l, self.name())?;
        let g = Window::new(self.h, self.w, self.kh, self.kw, self.stride, self.padding)?;
        let (b, rows, out_plane) = l.shape().dims3()?;
        let kk = self.kh * self.kw;
        if rows % kk != 0 || out_plane != g.oh * g.ow {
            bail!(
                "{}: columns {:?} do not match window {g:?}",
                self.name(),
                l.shape()
            )
        }
        let ci = rows / kk;
        let taps = g.taps();
        let plane = self.h * self.w;
        let mut x = vec![0f32; b * ci * plane];
        if !x.is_empty() {
            x.par_chunks_mut(plane)
                .enumerate()
                .for_each_init(Vec::new, |buf, (bc, xp)| {
                    let src = &cols[bc * kk * out_plane..(bc + 1) * kk * out_plane];
                    g.fill_phased(xp, buf, |acc| {
                        for (i, rows_i) in src.chunks_exact(self.kw * out_plane).enumerate() {
                            for (tap, row) in taps.iter().zip(rows_i.chunks_exact(out_plane)) {
                                for (oh, col) in row.chunks_exact(g.ow).enumerate() {
                                    let Some(ih) = g.in_row(oh, i) else { continue };
                                    axpy(
                                        1.0,
                                        &col[tap.lo..tap.hi],
                                        tap.input_mut(g.phase_row_mut(acc, ih, tap.phase)),
                                    );
                                }
                            }
                        }
                    });
                });
        }
        Ok((CpuStorage::F32(x), Shape::from((b, ci, self.h, self.w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{check_against_generic, check_finite_differences};

    #[test]
    fn matches_generic_conv() -> Result<()> {
        let mut seed = 100;
        for k in [3, 5] {
            for stride in [1, 2] {
                for (h, w) in [(7, 7), (8, 8), (9, 6), (2, 3)] {
                    for (b, ci, co) in [(1, 1, 2), (3, 3, 8), (3, 5, 4)] {
                        seed += 1;
                        let conv = |x: &Tensor, wt: &Tensor| conv2d(x, wt, stride, k / 2);
                        check_against_generic(
                            &conv,
                            [b, ci, h, w],
                            [co, ci, k, k],
                            (stride, k / 2, 1),
                            seed,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn other_paddings_and_rectangular_kernels() -> Result<()> {
        for (kh, kw, stride, padding) in [
            (3, 3, 1, 0),
            (1, 1, 2, 0),
            (3, 1, 2, 1),
            (2, 4, 3, 2),
            (3, 3, 2, 3),
        ] {
            let conv = |x: &Tensor, wt: &Tensor| conv2d(x, wt, stride, padding);
            check_against_generic(
                &conv,
                [2, 3, 9, 8],
                [4, 3, kh, kw],
                (stride, padding, 1),
                (kh * 10 + kw) as u64,
            )?;
        }
        Ok(())
    }

    #[test]
    fn finite_differences() -> Result<()> {
        for stride in [1, 2] {
            let conv = |x: &Tensor, w: &Tensor| conv2d(x, w, stride, 1);
            check_finite_differences(&conv, [2, 2, 5, 4], [3, 2, 3, 3], 17 + stride as u64)?;
        }
        Ok(())
    }

    /// A strided (NHWC-backed) view of the input gives the same output and gradients.
    #[test]
    fn non_contiguous_input() -> Result<()> {
        let conv = |x: &Tensor, w: &Tensor| {
            let strided = x
                .permute((0, 2, 3, 1))?
                .contiguous()?
                .permute((0, 3, 1, 2))?;
            assert!(!strided.is_contiguous());
            conv2d(&strided, w, 2, 1)
        };
        check_against_generic(&conv, [2, 3, 6, 9], [4, 3, 3, 3], (2, 1, 1), 3)
    }
}
