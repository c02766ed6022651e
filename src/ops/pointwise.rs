//! Pointwise (1x1, stride 1, no padding) convolution as matrix products on the NCHW layout,
//! as a candle custom op with backward.
//!
//! With `L = H · W`, sample `b` is `y_b [Co, L] = w [Co, Ci] · x_b [Ci, L]`; the backward is
//! `dx_b = wᵀ · dy_b` and `dw = Σ_b dy_b · x_bᵀ`. For `L = 1` the whole batch is one product on
//! strided views; for small `L` it is one product in channel-major layout
//! ([`super::channel_major`]), whose copy of `x` the forward keeps for the backward; otherwise
//! samples run in parallel, each product on one thread (a batch smaller than the thread pool
//! runs its products on all threads instead).

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::Mutex;

use super::channel_major::{to_batch_major, to_channel_major, PER_SAMPLE_MIN_L};
use super::conv_op::{image_weight, whole_grads, ConvOp, ImageDone, ReadsImages};
use super::cpu::{f32_slice, read_f32};
use super::gemm::{matmul, product, Mat, MatMut, Threads};
use super::images::Batch;
use super::uninit::{assume_written, written};

/// Convolution of `x: [B, Ci, H, W]` with a 1x1 kernel `w: [Co, Ci, 1, 1]`, stride 1, no
/// padding.
///
/// CPU and f32 only; inputs of any layout are made contiguous first. Differentiable with
/// respect to both `x` and `w`.
pub fn conv1x1(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let op = Conv1x1::new(x.shape(), w.shape())?;
    x.contiguous()?.apply_op2(&w.contiguous()?, op)
}

pub(super) struct Conv1x1 {
    /// The forward's channel-major input (small `L` only), taken by the backward.
    xcm: Mutex<Option<Vec<f32>>>,
}

impl Conv1x1 {
    /// The op for an input of shape `x` and a weight of shape `w`, checked against each other.
    pub(super) fn new(x: &Shape, w: &Shape) -> Result<Self> {
        let (_, ci, _, _) = x.dims4()?;
        let (_, wci, kh, kw) = w.dims4()?;
        if (wci, kh, kw) != (ci, 1, 1) {
            bail!("conv1x1: weight {w:?} does not match [Co, {ci}, 1, 1]")
        }
        Ok(Self {
            xcm: Mutex::new(None),
        })
    }
}

/// `(B, Ci, L, Co)` of an input `[B, Ci, H, W]` and a weight `[Co, Ci, 1, 1]`.
fn dims(x: &Shape, w: &Shape) -> Result<(usize, usize, usize, usize)> {
    let (b, ci, h, wd) = x.dims4()?;
    let (co, _, _, _) = w.dims4()?;
    Ok((b, ci, h * wd, co))
}

/// Whether products over samples run one per thread (`Threads::One`) or one at a time on
/// every thread (`Threads::All`).
fn per_sample_threads(b: usize) -> Threads {
    if b >= rayon::current_num_threads() {
        Threads::One
    } else {
        Threads::All
    }
}

impl CustomOp2 for Conv1x1 {
    fn name(&self) -> &'static str {
        "conv1x1"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward_each((xs, xl), (ws, wl), &|_, _| {})
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        whole_grads(self, x, w, dy)
    }
}

impl ConvOp for Conv1x1 {
    fn forward_each(
        &self,
        (xs, xl): (&CpuStorage, &Layout),
        (ws, wl): (&CpuStorage, &Layout),
        done: ImageDone,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        if self.reads_images(xl.shape(), wl.shape()) {
            return self.forward_images((Batch::Whole(x), xl.shape()), (ws, wl), done);
        }
        let w = f32_slice(ws, wl, self.name())?;
        let (b, ci, l, co) = dims(xl.shape(), wl.shape())?;
        let (_, _, h, wd) = xl.shape().dims4()?;
        let wm = Mat::new(w, co, ci);
        if l == 1 {
            // y [B, Co] = x [B, Ci] · wᵀ.
            let y = product(Mat::new(x, b, ci), wm.t(), Threads::All);
            return Ok((CpuStorage::F32(y), Shape::from((b, co, h, wd))));
        }
        let xcm = to_channel_major(x, b, ci, l);
        let ycm = product(wm, Mat::new(&xcm, ci, b * l), Threads::All);
        let y = to_batch_major(&ycm, b, co, l);
        *self.xcm.lock().unwrap_or_else(|e| e.into_inner()) = Some(xcm);
        Ok((CpuStorage::F32(y), Shape::from((b, co, h, wd))))
    }

    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: Batch,
        _want_dx: bool,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let xcm = self.xcm.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (dx, dw) = read_f32(x, |xv| grads_of((Batch::Whole(xv), x.shape()), w, dy, xcm))??;
        Ok((Some(dx), Some(dw)))
    }

    fn image_reader(&self) -> Option<&dyn ReadsImages> {
        Some(self)
    }
}

impl ReadsImages for Conv1x1 {
    fn reads_images(&self, x: &Shape, _w: &Shape) -> bool {
        let l = x.dims().iter().skip(2).product::<usize>();
        !(1..PER_SAMPLE_MIN_L).contains(&l)
    }

    fn forward_images(
        &self,
        (x, x_shape): (Batch, &Shape),
        (ws, wl): (&CpuStorage, &Layout),
        done: ImageDone,
    ) -> Result<(CpuStorage, Shape)> {
        let w = image_weight((self, self.name()), x_shape, (ws, wl))?;
        let (b, ci, l, co) = dims(x_shape, wl.shape())?;
        let (_, _, h, wd) = x_shape.dims4()?;
        let y = per_sample_forward(x, Mat::new(w, co, ci), (b, ci, l, co), done);
        Ok((CpuStorage::F32(y), Shape::from((b, co, h, wd))))
    }

    fn grads_images(&self, x: (Batch, &Shape), w: &Tensor, dy: Batch) -> Result<(Tensor, Tensor)> {
        grads_of(x, w, dy, None)
    }
}

/// `(dx, dw)` for input `x` of shape `x_shape`, weight `w` and output gradient `dy`; `xcm` is
/// the forward's channel-major copy of `x`, if it kept one.
fn grads_of(
    (x, x_shape): (Batch, &Shape),
    w: &Tensor,
    dy: Batch,
    xcm: Option<Vec<f32>>,
) -> Result<(Tensor, Tensor)> {
    let (b, ci, l, co) = dims(x_shape, w.shape())?;
    let (dx, dw) = read_f32(w, |wv| backward(x, wv, dy, (b, ci, l, co), xcm))?;
    Ok((
        Tensor::from_vec(dx, x_shape, w.device())?,
        Tensor::from_vec(dw, w.shape(), w.device())?,
    ))
}

/// `y_b = w · x_b` sample by sample, each sample's input read (or written into scratch) just
/// before its product, `done(i, y_i)` called right after it.
fn per_sample_forward(
    x: Batch,
    wm: Mat,
    (b, ci, l, co): (usize, usize, usize, usize),
    done: ImageDone,
) -> Vec<f32> {
    let mut owned = Vec::new();
    let x = whole_if_few(x, b, &mut owned);
    // Samples from `first` into `ys`, on `threads`.
    let samples = |ys: &mut [MaybeUninit<f32>], first: usize, threads| {
        let mut scratch = Vec::new();
        for (i, yb) in (first..).zip(ys.chunks_mut(co * l)) {
            let xb = Mat::new(x.image(i, ci * l, &mut scratch), ci, l);
            matmul(MatMut::uninit(yb, co, l), wm, xb, false, threads);
            // SAFETY: the product overwrote all `co * l` slots of the sample.
            done(i, unsafe { assume_written(yb) });
        }
    };
    let write = |y: &mut [MaybeUninit<f32>]| {
        if per_sample_threads(b) == Threads::All {
            return samples(y, 0, Threads::All);
        }
        // One contiguous range of samples per thread, each with its own scratch.
        let per_task = b.div_ceil(rayon::current_num_threads());
        y.par_chunks_mut(per_task * co * l)
            .enumerate()
            .for_each(|(t, ys)| samples(ys, t * per_task, Threads::One));
    };
    // SAFETY: the products overwrite every sample's `co * l` slots (an empty batch or plane has
    // none).
    unsafe { written(b * co * l, write) }
}

/// `batch` of `b` images written whole (in parallel, into `owned`) where there are fewer images
/// than threads: each product then runs on every thread, and an image computed into scratch
/// would be computed on one.
fn whole_if_few<'s>(batch: Batch<'s>, b: usize, owned: &'s mut Vec<f32>) -> Batch<'s> {
    match batch {
        Batch::Images(source) if per_sample_threads(b) == Threads::All => {
            *owned = source.all();
            Batch::Whole(owned)
        }
        _ => batch,
    }
}

/// `(dx, dw)` for input `x`, weight `w` and output gradient `dy`; `xcm` is the forward's
/// channel-major copy of `x`, if it kept one.
fn backward(
    x: Batch,
    w: &[f32],
    dy: Batch,
    (b, ci, l, co): (usize, usize, usize, usize),
    xcm: Option<Vec<f32>>,
) -> (Vec<f32>, Vec<f32>) {
    if (1..PER_SAMPLE_MIN_L).contains(&l) {
        let (mut owned_x, mut owned_dy) = (Vec::new(), Vec::new());
        let (x, dy) = (x.whole(&mut owned_x), dy.whole(&mut owned_dy));
        return whole_batch_backward(x, w, dy, (b, ci, l, co), xcm);
    }
    per_sample_backward(x, w, dy, (b, ci, l, co))
}

/// [`backward`] as one product over the batch: `L = 1`, or channel-major for small `L`.
fn whole_batch_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    (b, ci, l, co): (usize, usize, usize, usize),
    xcm: Option<Vec<f32>>,
) -> (Vec<f32>, Vec<f32>) {
    let mut dw = vec![0f32; co * ci];
    let wm = Mat::new(w, co, ci);
    if l > 1 {
        let n = b * l;
        let dycm = to_channel_major(dy, b, co, l);
        let xcm = match xcm {
            Some(xcm) if xcm.len() == ci * n => xcm,
            _ => to_channel_major(x, b, ci, l),
        };
        let dycm = Mat::new(&dycm, co, n);
        let dxcm = product(wm.t(), dycm, Threads::All);
        matmul(
            MatMut::new(&mut dw, co, ci),
            dycm,
            Mat::new(&xcm, ci, n).t(),
            false,
            Threads::All,
        );
        return (to_batch_major(&dxcm, b, ci, l), dw);
    }
    // dx [B, Ci] = dy [B, Co] · w; dw [Co, Ci] = dyᵀ · x.
    let dym = Mat::new(dy, b, co);
    let dx = product(dym, wm, Threads::All);
    matmul(
        MatMut::new(&mut dw, co, ci),
        dym.t(),
        Mat::new(x, b, ci),
        false,
        Threads::All,
    );
    (dx, dw)
}

/// [`backward`] as two products per sample; each sample's output gradient is read, or written,
/// just before its products.
fn per_sample_backward(
    x: Batch,
    w: &[f32],
    dy: Batch,
    (b, ci, l, co): (usize, usize, usize, usize),
) -> (Vec<f32>, Vec<f32>) {
    let (mut owned_x, mut owned_dy) = (Vec::new(), Vec::new());
    let (x, dy) = (
        whole_if_few(x, b, &mut owned_x),
        whole_if_few(dy, b, &mut owned_dy),
    );
    let mut dw = vec![0f32; co * ci];
    let wm = Mat::new(w, co, ci);
    // Samples `range` into their slots of `dx`, adding their weight gradients into `dw`.
    let samples =
        |dx: &mut [MaybeUninit<f32>], range: std::ops::Range<usize>, dw: &mut [f32], threads| {
            let (mut scratch, mut x_scratch) = (Vec::new(), Vec::new());
            for (dxb, i) in dx.chunks_mut(ci * l).zip(range) {
                let dyb = Mat::new(dy.image(i, co * l, &mut scratch), co, l);
                matmul(MatMut::uninit(dxb, ci, l), wm.t(), dyb, false, threads);
                let xb = Mat::new(x.image(i, ci * l, &mut x_scratch), ci, l);
                matmul(MatMut::new(dw, co, ci), dyb, xb.t(), true, threads);
            }
        };
    let write = |dx: &mut [MaybeUninit<f32>]| {
        if per_sample_threads(b) == Threads::All {
            samples(dx, 0..b, &mut dw, Threads::All);
            return;
        }
        // One contiguous range of samples per thread, each with its own weight-gradient partial.
        let per_task = b.div_ceil(rayon::current_num_threads());
        let parts = dx
            .par_chunks_mut(per_task * ci * l)
            .enumerate()
            .map(|(t, dxs)| {
                let mut part = vec![0f32; co * ci];
                samples(dxs, t * per_task..b, &mut part, Threads::One);
                part
            })
            .collect::<Vec<_>>();
        // Added up in order, so that reruns are bit-identical.
        for part in parts {
            dw.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
    };
    // SAFETY: every sample's `ci * l` slots are overwritten by its product (an empty batch or
    // plane has none).
    let dx = unsafe { written(b * ci * l, write) };
    (dx, dw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{check_against_generic, check_finite_differences};

    #[test]
    fn matches_generic_conv() -> Result<()> {
        let mut seed = 200;
        for (h, w) in [(7, 7), (8, 8), (9, 6), (1, 1), (2, 1), (16, 9)] {
            for (b, ci, co) in [(1, 1, 3), (3, 4, 4), (3, 8, 5), (1, 16, 24), (5, 6, 7)] {
                seed += 1;
                check_against_generic(&conv1x1, [b, ci, h, w], [co, ci, 1, 1], (1, 0, 1), seed)?;
            }
        }
        Ok(())
    }

    /// The backward gives the same bits with the forward's channel-major input or without.
    #[test]
    fn kept_input_changes_nothing() -> Result<()> {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(9);
        let (b, ci, l, co) = (5, 6, 4, 7);
        let x = crate::ops::testutil::uniform(&[b * ci * l], &mut rng)?.to_vec1::<f32>()?;
        let w = crate::ops::testutil::uniform(&[co * ci], &mut rng)?.to_vec1::<f32>()?;
        let dy = crate::ops::testutil::uniform(&[b * co * l], &mut rng)?.to_vec1::<f32>()?;
        let kept = to_channel_major(&x, b, ci, l);
        let without = backward(
            Batch::Whole(&x),
            &w,
            Batch::Whole(&dy),
            (b, ci, l, co),
            None,
        );
        assert_eq!(
            without,
            backward(
                Batch::Whole(&x),
                &w,
                Batch::Whole(&dy),
                (b, ci, l, co),
                Some(kept)
            )
        );
        Ok(())
    }

    #[test]
    fn finite_differences() -> Result<()> {
        check_finite_differences(&conv1x1, [2, 3, 3, 2], [2, 3, 1, 1], 21)?;
        check_finite_differences(&conv1x1, [3, 3, 1, 1], [2, 3, 1, 1], 22)
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
