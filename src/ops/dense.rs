//! Dense 2-D convolution (`groups == 1`) as im2col followed by a matrix product, per sample,
//! as a candle custom op with backward.
//!
//! With `K = Ci · kh · kw` and `L = OH · OW`, sample `b` unfolds into `cols_b [K, L]`
//! ([`im2col_plane`], one input channel at a time) and `y_b [Co, L] = w [Co, K] · cols_b`, which
//! is already NCHW. The backward recomputes `cols_b` instead of keeping it, accumulates
//! `dw += dy_b · cols_bᵀ` and folds `wᵀ · dy_b` back onto the image with [`col2im_plane`], the
//! adjoint of im2col. Samples run in parallel, one contiguous range per thread with its own
//! column buffer; a batch smaller than the thread pool runs its products on all threads. For
//! small `L` the whole batch is unfolded at once in channel-major layout `[K, B · L]`
//! ([`super::channel_major`]) through index tables ([`super::column_table`]), and each product
//! is a single large one; those columns are small, so the forward keeps them for the backward.
//! An input that no gradient flows to (the images entering the stem) gets no input gradient.
//! Per sample, the input is read one plane at a time as it is unfolded, so it can also be
//! computed plane by plane just then ([`ReadsImages`]): the batch norm before the convolution
//! then never writes its output whole.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::Mutex;

use super::channel_major::{to_batch_major, to_channel_major, PER_SAMPLE_MIN_L};
use super::column_table::ColumnTable;
use super::conv_op::{image_weight, whole_grads, ConvOp, ImageDone, ReadsImages};
use super::cpu::{f32_slice, read_f32};
use super::gemm::{matmul, product, Mat, MatMut, Threads};
use super::images::Batch;
use super::uninit::{assume_written, written};
use super::vecmath::axpy;
use super::window::{Tap, Window};

/// Convolution of `x: [B, Ci, H, W]` with `w: [Co, Ci, kh, kw]`, symmetric zero padding.
///
/// CPU and f32 only; inputs of any layout are accepted. Differentiable with respect to both
/// `x` and `w`.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let op = DenseConv::new(x.shape(), w.shape(), stride, padding)?;
    x.contiguous()?.apply_op2(&w.contiguous()?, op)
}

pub(super) struct DenseConv {
    stride: usize,
    padding: usize,
    /// The forward's channel-major columns (small `L` only), taken by the backward.
    cols: Mutex<Option<Vec<f32>>>,
}

impl DenseConv {
    /// The op for an input of shape `x` and a weight of shape `w`, checked against each other
    /// and against the window.
    pub(super) fn new(x: &Shape, w: &Shape, stride: usize, padding: usize) -> Result<Self> {
        let (_, ci, h, wd) = x.dims4()?;
        let (_, wci, kh, kw) = w.dims4()?;
        if wci != ci {
            bail!("dense conv: weight {w:?} does not match {ci} input channels")
        }
        Window::new(h, wd, kh, kw, stride, padding)?;
        Ok(Self {
            stride,
            padding,
            cols: Mutex::new(None),
        })
    }
}

/// Sizes of one convolution: batch, channels, kernel, input plane and window.
#[derive(Clone, Copy)]
struct Geometry {
    b: usize,
    ci: usize,
    co: usize,
    kh: usize,
    kw: usize,
    g: Window,
}

impl Geometry {
    fn new(x: &Shape, w: &Shape, stride: usize, padding: usize) -> Result<Self> {
        let (b, ci, h, wd) = x.dims4()?;
        let (co, wci, kh, kw) = w.dims4()?;
        if wci != ci {
            bail!("dense conv: weight {w:?} does not match input {x:?}")
        }
        let g = Window::new(h, wd, kh, kw, stride, padding)?;
        Ok(Self {
            b,
            ci,
            co,
            kh,
            kw,
            g,
        })
    }

    /// Rows of the column matrix, `Ci · kh · kw`.
    fn k(&self) -> usize {
        self.ci * self.kh * self.kw
    }

    /// Output pixels, `OH · OW`.
    fn l(&self) -> usize {
        self.g.oh * self.g.ow
    }

    fn plane(&self) -> usize {
        self.g.h * self.g.w
    }

    /// Samples per parallel task and the threads each product uses.
    fn tasks(&self) -> (usize, Threads) {
        let threads = rayon::current_num_threads();
        if self.b >= threads {
            (self.b.div_ceil(threads), Threads::One)
        } else {
            (self.b.max(1), Threads::All)
        }
    }

    /// Unfolds sample `i` of `x` (`[Ci, H, W]` each, read plane by plane) into `cols [K, L]`.
    /// Entries that read padding are never written, so `cols` must hold zeros there (a buffer
    /// reused for the same geometry does).
    fn im2col(&self, taps: &[Tap], (x, i): (Batch, usize), cols: &mut [f32], bufs: &mut Bufs) {
        let (l, kk_l, plane) = (self.l(), self.kh * self.kw * self.l(), self.plane());
        for (c, rows) in cols.chunks_exact_mut(kk_l).enumerate() {
            let xp = x.row(i * self.ci + c, plane, &mut bufs.plane);
            im2col_plane(
                &self.g,
                taps,
                (self.kh, self.kw),
                self.g.phased(xp, &mut bufs.phased),
                (rows, l),
            );
        }
    }

    /// Elements of the whole input, `B · Ci · H · W`.
    fn input_len(&self) -> usize {
        self.b * self.ci * self.plane()
    }

    /// The columns of the whole batch in channel-major layout, `[K, B · L]`: row `(c, i, j)`
    /// holds the rows of every sample side by side, gathered through a [`ColumnTable`].
    /// Parallel over input channels.
    fn im2col_channel_major(&self, x: &[f32]) -> Vec<f32> {
        let (l, n, kk, plane) = (self.l(), self.b * self.l(), self.kh * self.kw, self.plane());
        let table = ColumnTable::new(&self.g, self.kh, n);
        // SAFETY: channel `c`'s block holds its `kk` rows of `n` slots, and sample `bi` writes
        // slots `bi · l .. (bi + 1) · l` of each: every slot once.
        unsafe {
            written(self.k() * n, |cols| {
                cols.par_chunks_mut(kk * n).enumerate().for_each_init(
                    Vec::new,
                    |padded, (c, block)| {
                        for bi in 0..self.b {
                            let at = (bi * self.ci + c) * plane;
                            table.unfold(&x[at..at + plane], &mut block[bi * l..], padded);
                        }
                    },
                )
            })
        }
    }
}

/// A task's scratch for unfolding: an input plane computed on demand, its phased copy.
#[derive(Default)]
struct Bufs {
    plane: Vec<f32>,
    phased: Vec<f32>,
}

/// Rows `(i, j)` of one input channel: row `t = i * kw + j`, at `rows[t * stride..][..L]`,
/// holds the input seen by kernel tap `(i, j)` at every output position. `xp` is the plane in
/// phased layout.
fn im2col_plane(
    g: &Window,
    taps: &[Tap],
    (kh, kw): (usize, usize),
    xp: &[f32],
    (rows, stride): (&mut [f32], usize),
) {
    let l = g.oh * g.ow;
    for i in 0..kh {
        for (j, tap) in taps.iter().enumerate() {
            let t = i * kw + j;
            let row = &mut rows[t * stride..t * stride + l];
            for (oh, out) in row.chunks_exact_mut(g.ow).enumerate() {
                let Some(ih) = g.in_row(oh, i) else { continue };
                out[tap.lo..tap.hi].copy_from_slice(tap.input(g.phase_row(xp, ih, tap.phase)));
            }
        }
    }
}

/// The adjoint of [`im2col_plane`]: every entry of one channel's rows added onto the input
/// pixel it was read from, the sums written into every slot of `plane`.
fn col2im_plane(
    g: &Window,
    taps: &[Tap],
    (kh, kw): (usize, usize),
    (rows, stride): (&[f32], usize),
    plane: &mut [MaybeUninit<f32>],
    buf: &mut Vec<f32>,
) {
    let l = g.oh * g.ow;
    g.fill_phased(plane, buf, |acc| {
        for i in 0..kh {
            for (j, tap) in taps.iter().enumerate() {
                let t = i * kw + j;
                let row = &rows[t * stride..t * stride + l];
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
}

impl CustomOp2 for DenseConv {
    fn name(&self) -> &'static str {
        "dense-conv2d"
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

impl ConvOp for DenseConv {
    fn forward_each(
        &self,
        (xs, xl): (&CpuStorage, &Layout),
        (ws, wl): (&CpuStorage, &Layout),
        done: ImageDone,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let w = f32_slice(ws, wl, self.name())?;
        let geo = Geometry::new(xl.shape(), wl.shape(), self.stride, self.padding)?;
        let (k, l, co) = (geo.k(), geo.l(), geo.co);
        let out_shape = Shape::from((geo.b, co, geo.g.oh, geo.g.ow));
        if l < PER_SAMPLE_MIN_L {
            let n = geo.b * l;
            let cols = geo.im2col_channel_major(x);
            let ycm = product(Mat::new(w, co, k), Mat::new(&cols, k, n), Threads::All);
            let y = to_batch_major(&ycm, geo.b, co, l);
            *self.cols.lock().unwrap_or_else(|e| e.into_inner()) = Some(cols);
            return Ok((CpuStorage::F32(y), out_shape));
        }
        let y = per_sample_forward(&geo, Batch::Whole(x), w, done);
        Ok((CpuStorage::F32(y), out_shape))
    }

    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: Batch,
        want_dx: bool,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let saved = self.cols.lock().unwrap_or_else(|e| e.into_inner()).take();
        let want = Wanted {
            dx: want_dx,
            cols: saved,
        };
        read_f32(x, |xv| {
            self.grads_of((Batch::Whole(xv), x.shape()), w, dy, want)
        })?
    }

    fn image_reader(&self) -> Option<&dyn ReadsImages> {
        Some(self)
    }
}

impl DenseConv {
    /// `(dx, dw)` on the input `x = (values, shape)`, `dx` only where `want` says so.
    fn grads_of(
        &self,
        (x, x_shape): (Batch, &Shape),
        w: &Tensor,
        dy: Batch,
        want: Wanted,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let geo = Geometry::new(x_shape, w.shape(), self.stride, self.padding)?;
        let (dx, dw) = read_f32(w, |wv| backward(&geo, x, wv, dy, want))?;
        let dx = match dx {
            Some(dx) => Some(Tensor::from_vec(dx, x_shape, w.device())?),
            None => None,
        };
        Ok((dx, Some(Tensor::from_vec(dw, w.shape(), w.device())?)))
    }
}

impl ReadsImages for DenseConv {
    fn reads_images(&self, x: &Shape, w: &Shape) -> bool {
        Geometry::new(x, w, self.stride, self.padding).is_ok_and(|g| g.l() >= PER_SAMPLE_MIN_L)
    }

    fn forward_images(
        &self,
        (x, x_shape): (Batch, &Shape),
        (ws, wl): (&CpuStorage, &Layout),
        done: ImageDone,
    ) -> Result<(CpuStorage, Shape)> {
        let w = image_weight((self, self.name()), x_shape, (ws, wl))?;
        let geo = Geometry::new(x_shape, wl.shape(), self.stride, self.padding)?;
        let y = per_sample_forward(&geo, x, w, done);
        let out_shape = Shape::from((geo.b, geo.co, geo.g.oh, geo.g.ow));
        Ok((CpuStorage::F32(y), out_shape))
    }

    fn grads_images(&self, x: (Batch, &Shape), w: &Tensor, dy: Batch) -> Result<(Tensor, Tensor)> {
        let want = Wanted {
            dx: true,
            cols: None,
        };
        match self.grads_of(x, w, dy, want)? {
            (Some(dx), Some(dw)) => Ok((dx, dw)),
            _ => bail!("dense conv: a gradient left out"),
        }
    }
}

/// `y_b = w · cols_b` sample by sample, each sample unfolded (its planes read, or computed into
/// scratch) just before its product, `done(i, y_i)` called right after it.
fn per_sample_forward(geo: &Geometry, x: Batch, w: &[f32], done: ImageDone) -> Vec<f32> {
    let (k, l, co) = (geo.k(), geo.l(), geo.co);
    let (per_task, threads) = geo.tasks();
    let n = geo.b * co * l;
    if n == 0 || geo.input_len() == 0 {
        return vec![0f32; n];
    }
    let taps = geo.g.taps();
    let wm = Mat::new(w, co, k);
    let fill = |y: &mut [MaybeUninit<f32>]| {
        y.par_chunks_mut(per_task * co * l)
            .enumerate()
            .for_each(|(t, ys)| {
                let (mut cols, mut bufs) = (vec![0f32; k * l], Bufs::default());
                for (j, yb) in ys.chunks_exact_mut(co * l).enumerate() {
                    let i = t * per_task + j;
                    geo.im2col(&taps, (x, i), &mut cols, &mut bufs);
                    let colm = Mat::new(&cols, k, l);
                    matmul(MatMut::uninit(yb, co, l), wm, colm, false, threads);
                    // SAFETY: the product overwrote all `co * l` slots of the sample.
                    done(i, unsafe { assume_written(yb) });
                }
            })
    };
    // SAFETY: every sample's `co * l` slots are overwritten by its product.
    unsafe { written(n, fill) }
}

/// What a backward pass computes and what it can reuse.
struct Wanted {
    /// Whether the input gradient is needed (some gradient flows to the input).
    dx: bool,
    /// The forward's channel-major columns, if it kept them.
    cols: Option<Vec<f32>>,
}

/// `(dx, dw)` for input `x`, weight `w` and output gradient `dy`; `dx` only if wanted.
fn backward(
    geo: &Geometry,
    x: Batch,
    w: &[f32],
    dy: Batch,
    want: Wanted,
) -> (Option<Vec<f32>>, Vec<f32>) {
    let (k, l, co, x_len) = (geo.k(), geo.l(), geo.co, geo.input_len());
    if x_len == 0 || l == 0 {
        return (want.dx.then(|| vec![0f32; x_len]), vec![0.0; co * k]);
    }
    if l < PER_SAMPLE_MIN_L {
        let (mut owned_x, mut owned_dy) = (Vec::new(), Vec::new());
        let (x, dy) = (x.whole(&mut owned_x), dy.whole(&mut owned_dy));
        return backward_channel_major(geo, x, w, dy, want);
    }
    let in_sample = geo.ci * geo.plane();
    let (per_task, threads) = geo.tasks();
    let taps = geo.g.taps();
    let wm = Mat::new(w, co, k);
    let kk = geo.kh * geo.kw;
    // Each task's samples: the output gradient read (or written) once, then the weight
    // gradient's product and, if wanted, the input gradient's, each of its planes written as the
    // columns are folded onto it (on the task's thread, while in cache).
    let task = |t: usize, dxs: &mut [MaybeUninit<f32>]| {
        let mut part = vec![0f32; co * k];
        let (mut cols, mut dcols, mut bufs, mut scratch) =
            (vec![0f32; k * l], Vec::new(), Bufs::default(), Vec::new());
        let samples = t * per_task..geo.b.min((t + 1) * per_task);
        for (j, i) in samples.enumerate() {
            geo.im2col(&taps, (x, i), &mut cols, &mut bufs);
            let dyb = Mat::new(dy.image(i, co * l, &mut scratch), co, l);
            let colst = Mat::new(&cols, k, l).t();
            matmul(MatMut::new(&mut part, co, k), dyb, colst, true, threads);
            if !want.dx {
                continue;
            }
            dcols.resize(k * l, 0.0);
            matmul(MatMut::new(&mut dcols, k, l), wm.t(), dyb, false, threads);
            let dxb = &mut dxs[j * in_sample..(j + 1) * in_sample];
            for (plane, rows) in dxb
                .chunks_exact_mut(geo.plane())
                .zip(dcols.chunks_exact(kk * l))
            {
                let buf = &mut bufs.phased;
                col2im_plane(&geo.g, &taps, (geo.kh, geo.kw), (rows, l), plane, buf);
            }
        }
        part
    };
    let tasks = geo.b.div_ceil(per_task);
    let mut parts = Vec::new();
    // SAFETY: with `want.dx`, the tasks' chunks cover every sample, and each sample's planes
    // are all written (`col2im_plane`); otherwise there are no slots.
    let dx = unsafe {
        written(if want.dx { x_len } else { 0 }, |dx| {
            parts = if want.dx {
                dx.par_chunks_mut(per_task * in_sample)
                    .enumerate()
                    .map(|(t, dxs)| task(t, dxs))
                    .collect()
            } else {
                (0..tasks)
                    .into_par_iter()
                    .map(|t| task(t, &mut []))
                    .collect()
            };
        })
    };
    // Added up in order, so that reruns are bit-identical.
    let dw = parts
        .into_iter()
        .reduce(|mut a, b| {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            a
        })
        .unwrap_or_else(|| vec![0.0; co * k]);
    (want.dx.then_some(dx), dw)
}

/// [`backward`] for small `L`: one product over the whole batch in channel-major layout.
fn backward_channel_major(
    geo: &Geometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    want: Wanted,
) -> (Option<Vec<f32>>, Vec<f32>) {
    let (k, l, co, kk) = (geo.k(), geo.l(), geo.co, geo.kh * geo.kw);
    let n = geo.b * l;
    let dycm = to_channel_major(dy, geo.b, co, l);
    let dycm = Mat::new(&dycm, co, n);
    let cols = match want.cols {
        Some(cols) if cols.len() == k * n => cols,
        _ => geo.im2col_channel_major(x),
    };
    let mut dw = vec![0f32; co * k];
    let colst = Mat::new(&cols, k, n).t();
    matmul(
        MatMut::new(&mut dw, co, k),
        dycm,
        colst,
        false,
        Threads::All,
    );
    if !want.dx {
        return (None, dw);
    }
    // The column buffer is reused for the column gradient.
    let mut dcols = cols;
    let wm = Mat::new(w, co, k);
    matmul(
        MatMut::new(&mut dcols, k, n),
        wm.t(),
        dycm,
        false,
        Threads::All,
    );
    let table = ColumnTable::new(&geo.g, geo.kh, n);
    // SAFETY: `fold` writes every pixel of every plane.
    let dx = unsafe {
        written(x.len(), |dx| {
            dx.par_chunks_mut(geo.ci * geo.plane())
                .enumerate()
                .for_each(|(bi, dxb)| {
                    for (c, plane) in dxb.chunks_exact_mut(geo.plane()).enumerate() {
                        table.fold(&dcols[c * kk * n + bi * l..], plane);
                    }
                })
        })
    };
    (Some(dx), dw)
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
                for (h, w) in [(7, 7), (8, 8), (9, 6), (2, 3), (26, 21)] {
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

    /// The backward gives the same bits with the forward's columns or without, and skips only
    /// the input gradient when it is not wanted; on both paths (small and large `L`).
    #[test]
    fn kept_columns_and_skipped_input_gradient_change_nothing_else() -> Result<()> {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
        for (h, w) in [(8, 8), (30, 30)] {
            let (xs, ws) = ([3, 4, h, w], [6, 4, 3, 3]);
            let x = crate::ops::testutil::uniform(&xs, &mut rng)?;
            let wt = crate::ops::testutil::uniform(&ws, &mut rng)?;
            let geo = Geometry::new(x.shape(), wt.shape(), 2, 1)?;
            let (xv, wv) = (
                x.flatten_all()?.to_vec1::<f32>()?,
                wt.flatten_all()?.to_vec1::<f32>()?,
            );
            let dy = crate::ops::testutil::uniform(&[3, 6, geo.g.oh, geo.g.ow], &mut rng)?;
            let dyv = dy.flatten_all()?.to_vec1::<f32>()?;
            let run = |dx, cols| {
                backward(
                    &geo,
                    Batch::Whole(&xv),
                    &wv,
                    Batch::Whole(&dyv),
                    Wanted { dx, cols },
                )
            };
            let (dx, dw) = run(true, None);
            let kept = geo.im2col_channel_major(&xv);
            let (dx2, dw2) = run(true, Some(kept));
            assert_eq!((&dx, &dw), (&dx2, &dw2), "{h}x{w}: kept columns");
            let (none, dw3) = run(false, None);
            assert!(none.is_none() && dx.is_some());
            assert_eq!(
                dw, dw3,
                "{h}x{w}: weight gradient without the input gradient"
            );
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
