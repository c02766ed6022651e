//! Depthwise 2-D convolution (`groups == channels`, weight `[C, 1, k, k]`, padding `k / 2`)
//! as a candle custom op with backward.
//!
//! Planes at least [`FLAT_MIN_OW`] outputs wide ([`TRAIN_FLAT_MIN_OW`] in training) are
//! copied into a zero-padded, phase-split buffer ([`Padded`]) in which every kernel tap reads
//! one contiguous run covering all output rows at once. Blocks of rows are then summed in
//! registers over all taps ([`super::depthwise_plane`]): the forward sums each output over its
//! taps; the input gradient spreads `dy` into a zero-bordered buffer and sums, for each input
//! pixel, the taps that read it; the weight gradient adds the products of that same buffer with
//! the plane's input into one set of dot-product lanes per tap, several taps per pass over the
//! run. Rows are `wq` wide (`wq ≥ OW`); the extra columns are dropped (forward) or zero
//! (backward). Narrower planes, where most taps read padding, go to
//! [`super::depthwise_small`], which puts the batch innermost.
//!
//! The forward runs in parallel over `batch x channel` planes, the backward over channels, each
//! channel's planes in batch order, its weight gradient's lanes reduced once at the end (reruns
//! are bit-identical).

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::Mutex;

use super::conv_op::{whole_grads, ConvOp, ImageDone, ReadsImages};
use super::cpu::{f32_slice, read_f32};
use super::depthwise_plane::{sum_rows, tap_dots, Placement, RowSums, TapLanes, SLACK};
use super::depthwise_small::{self, TapTable};
use super::images::Batch;
use super::uninit::{assume_written, written};
use super::vecmath::{deinterleave, interleave_uninit};
use super::Pass;

/// Output width from which a plane uses the flat layout in a forward pass alone.
const FLAT_MIN_OW: usize = 7;
/// The same where a backward follows. On 7-wide planes the batch-innermost kernels take
/// longer forward but much less backward: conv-small's depthwise share of a one-thread 224²
/// training step fell from 13.4 to 12.3 % (AMD EPYC, family 25 model 17).
const TRAIN_FLAT_MIN_OW: usize = 8;

/// Depthwise convolution of `x: [B, C, H, W]` with `w: [C, 1, k, k]`, padding `k / 2`.
///
/// Output is `[B, C, floor((H + 2p - k) / stride) + 1, ...]`. CPU and f32 only; inputs of any
/// layout are made contiguous first. Differentiable with respect to both `x` and `w`.
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    in_pass(x, w, stride, Pass::Forward)
}

/// [`depthwise_conv2d`] with the layout `pass` picks.
fn in_pass(x: &Tensor, w: &Tensor, stride: usize, pass: Pass) -> Result<Tensor> {
    let op = DepthwiseConv2d::new(stride, pass);
    x.contiguous()?.apply_op2(&w.contiguous()?, op)
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

    /// Start of the run of every tap, in tap order (`i * k + j`).
    fn taps(&self) -> Vec<usize> {
        (0..self.k * self.k)
            .map(|t| self.tap(t / self.k, t % self.k))
            .collect()
    }

    /// The input pixels of each phase, as the blocks of the buffer that hold them.
    fn phases(&self) -> Vec<Phase> {
        let (s, k) = (self.s, self.k);
        let first = |phase: usize, n: usize| {
            let start = (phase + s - self.p % s) % s;
            (start, n.saturating_sub(start).div_ceil(s))
        };
        let phases = (0..s * s).filter_map(|ph| {
            let ((row0, rows), (col0, cols)) = (first(ph / s, self.h), first(ph % s, self.w));
            (rows > 0 && cols > 0).then(|| Phase {
                taps: (0..k * k)
                    .filter(|t| ((t / k) % s, (t % k) % s) == (ph / s, ph % s))
                    .collect(),
                at: self.at(row0, col0),
                rows,
                cols,
                place: Placement::new(row0 * self.w + col0, s * self.w, s),
            })
        });
        phases.collect()
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
            if self.s == 2 && self.w >= 2 {
                let (even, odd) = (self.w.div_ceil(2), self.w / 2);
                let (a, b) = (self.at(row, 0), self.at(row, 1));
                let (even, odd) = two_runs(buf, (a, even), (b, odd));
                deinterleave(xr, even, odd);
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

    /// Where sums that start at buffer position `at` go in the buffer's own layout.
    fn in_layout(&self, at: usize) -> Placement {
        Placement::new(at, self.wq, 1)
    }

    /// The inverse of [`Padded::fill`] for stride 2 on planes at least two wide: writes plane
    /// `x` from `buf`, interleaving each row's two column phases.
    fn interleave_into(&self, buf: &[f32], x: &mut [MaybeUninit<f32>]) {
        let (even, odd) = (self.w.div_ceil(2), self.w / 2);
        for (row, xr) in x.chunks_exact_mut(self.w).enumerate() {
            let (a, b) = (self.at(row, 0), self.at(row, 1));
            interleave_uninit(&buf[a..a + even], &buf[b..b + odd], xr);
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

/// The disjoint runs `buf[a..a + na]` and `buf[b..b + nb]`.
fn two_runs(
    buf: &mut [f32],
    (a, na): (usize, usize),
    (b, nb): (usize, usize),
) -> (&mut [f32], &mut [f32]) {
    if a < b {
        let (lo, hi) = buf.split_at_mut(b);
        (&mut lo[a..a + na], &mut hi[..nb])
    } else {
        let (lo, hi) = buf.split_at_mut(a);
        (&mut hi[..na], &mut lo[b..b + nb])
    }
}

/// The input pixels of one phase of [`Padded`]'s layout: plane rows `row0, row0 + s, …` and
/// columns `col0, col0 + s, …`, at consecutive rows (`wq` apart) and columns from `at`.
struct Phase {
    /// The taps that read these pixels (`i * k + j`, in order).
    taps: Vec<usize>,
    at: usize,
    rows: usize,
    cols: usize,
    /// Where these pixels lie in the plane.
    place: Placement,
}

/// The tap table of a plane too narrow for the flat layout.
fn small_table(g: &Padded) -> TapTable {
    TapTable::new(g.h, g.w, g.k, g.s, (g.oh, g.ow))
}

/// Forward op: `(x [B, C, H, W], w [C, 1, k, k]) -> y [B, C, OH, OW]`.
pub(super) struct DepthwiseConv2d {
    stride: usize,
    /// Output width from which planes take the flat layout.
    flat_min_ow: usize,
    /// The forward's batch-innermost input (small planes only), taken by the backward.
    xt: Mutex<Option<Vec<f32>>>,
}

impl DepthwiseConv2d {
    /// The op for `stride` in a `pass`; the forward checks the weight against the input.
    pub(super) fn new(stride: usize, pass: Pass) -> Self {
        Self {
            stride,
            flat_min_ow: match pass {
                Pass::Forward => FLAT_MIN_OW,
                Pass::Training => TRAIN_FLAT_MIN_OW,
            },
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
        self.forward_batch((Batch::Whole(x), xl.shape()), (ws, wl))
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

impl DepthwiseConv2d {
    /// The forward on the input `x = (values, shape)`.
    fn forward_batch(
        &self,
        (x, x_shape): (Batch, &Shape),
        (ws, wl): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let wt = f32_slice(ws, wl, self.name())?;
        let (b, c, h, w) = x_shape.dims4()?;
        let k = kernel_size(wl.shape(), c)?;
        let g = Padded::new(h, w, k, self.stride)?;
        let (plane, out_plane) = (h * w, g.oh * g.ow);
        if g.ow < self.flat_min_ow {
            let mut owned = Vec::new();
            let x = x.whole(&mut owned);
            let (y, xt) = depthwise_small::forward(&small_table(&g), (b, c), x, wt);
            *self.xt.lock().unwrap_or_else(|e| e.into_inner()) = Some(xt);
            return Ok((CpuStorage::F32(y), Shape::from((b, c, g.oh, g.ow))));
        }
        let taps = g.taps();
        let place = Placement::new(0, g.ow, 1);
        let write = |y: &mut [MaybeUninit<f32>]| {
            if y.is_empty() {
                return;
            }
            y.par_chunks_mut(out_plane).enumerate().for_each_init(
                || (vec![0f32; g.len() + SLACK], Vec::new()),
                |(buf, scratch), (bc, yp)| {
                    g.fill(x.row(bc, plane, scratch), buf);
                    let job = RowSums {
                        src: buf,
                        base: 0,
                        stride: g.wq,
                        rows: g.oh,
                        cols: g.ow,
                        offs: &taps,
                        wts: &wt[(bc % c) * k * k..(bc % c + 1) * k * k],
                    };
                    sum_rows(&job, yp, place);
                },
            );
        };
        // SAFETY: `sum_rows` writes every output of the plane, `oh` rows of `ow`.
        let y = unsafe { written(b * c * out_plane, write) };
        Ok((CpuStorage::F32(y), Shape::from((b, c, g.oh, g.ow))))
    }

    /// `(dx, dw)` on the input `x = (values, shape)` for the output gradient `dy`.
    fn grads_batch(
        &self,
        (x, x_shape): (Batch, &Shape),
        w: &Tensor,
        dy: Batch,
    ) -> Result<(Tensor, Tensor)> {
        let (b, c, h, wd) = x_shape.dims4()?;
        let k = kernel_size(w.shape(), c)?;
        let g = Padded::new(h, wd, k, self.stride)?;
        let kept = self.xt.lock().unwrap_or_else(|e| e.into_inner()).take();
        if !dy.holds(b, c * g.oh * g.ow) {
            bail!(
                "{}: the output gradient does not match the output [{b}, {c}, {}, {}] of {x_shape:?}",
                self.name(),
                g.oh,
                g.ow,
            )
        }
        let (dx, dw) = read_f32(w, |wt| {
            if g.ow < self.flat_min_ow {
                let (mut owned_x, mut owned_dy) = (Vec::new(), Vec::new());
                let (x, dy) = (x.whole(&mut owned_x), dy.whole(&mut owned_dy));
                depthwise_small::backward(&small_table(&g), (b, c), (x, kept), wt, dy)
            } else {
                backward(&g, (b, c), x, dy, wt)
            }
        })?;
        Ok((
            Tensor::from_vec(dx, x_shape, w.device())?,
            Tensor::from_vec(dw, w.shape(), w.device())?,
        ))
    }
}

impl ConvOp for DepthwiseConv2d {
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: Batch,
        _want_dx: bool,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = read_f32(x, |xv| {
            self.grads_batch((Batch::Whole(xv), x.shape()), w, dy)
        })??;
        Ok((Some(dx), Some(dw)))
    }

    fn image_reader(&self) -> Option<&dyn ReadsImages> {
        Some(self)
    }
}

impl ReadsImages for DepthwiseConv2d {
    fn reads_images(&self, x: &Shape, w: &Shape) -> bool {
        let Ok((_, c, h, wd)) = x.dims4() else {
            return false;
        };
        let plane = kernel_size(w, c).and_then(|k| Padded::new(h, wd, k, self.stride));
        plane.is_ok_and(|g| g.ow >= self.flat_min_ow)
    }

    fn forward_images(
        &self,
        x: (Batch, &Shape),
        w: (&CpuStorage, &Layout),
        _done: ImageDone,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward_batch(x, w)
    }

    fn grads_images(&self, x: (Batch, &Shape), w: &Tensor, dy: Batch) -> Result<(Tensor, Tensor)> {
        self.grads_batch(x, w, dy)
    }
}

/// `(dx, dw)`, channel by channel and, within one, image by image: each plane's `dy` is
/// spread once into a zero-bordered buffer that both gradients read.
///
/// `dx`: every `dy[oh, ow] · w[i, j]` added onto the pixel tap `(i, j)` read. Each input pixel
/// gathers the taps of its phase (the taps that read it), in tap order: the sums of the per-tap
/// transposed passes.
///
/// `dw[c, i, j] = Σ_b Σ dy · x` under tap `(i, j)`: one dot product per tap whose lanes run on
/// over the channel's planes, image after image, and are reduced once (reruns are
/// bit-identical).
fn backward(
    g: &Padded,
    (b, c): (usize, usize),
    x: Batch,
    dy: Batch,
    wt: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let (k, kk, plane, out_plane) = (g.k, g.k * g.k, g.h * g.w, g.oh * g.ow);
    let taps = g.taps();
    // The zero border ahead of `dy`: the largest start of a tap's run.
    let lead = taps.iter().copied().max().unwrap_or(0);
    let phases = g.phases();
    let offs: Vec<Vec<usize>> = phases
        .iter()
        .map(|ph| ph.taps.iter().map(|&t| lead - taps[t]).collect())
        .collect();
    // Stride 2 sums each phase in the padded layout, then interleaves the phases' columns
    // into the plane's rows; other strides write each sum straight to its pixel.
    let interleaved = g.s == 2 && g.w >= 2;
    let mut dw = vec![0f32; c * kk];
    let write = |dx: &mut [MaybeUninit<f32>]| {
        if dx.is_empty() {
            return;
        }
        let scratch = || {
            let dyz = vec![0f32; lead + g.len() + SLACK];
            let sums = vec![MaybeUninit::new(0f32); if interleaved { g.len() } else { 0 }];
            let wts = Vec::with_capacity(k * k);
            let rows = (Vec::new(), Vec::new());
            (dyz, sums, wts, vec![0f32; g.len()], TapLanes::new(kk), rows)
        };
        let mut by_channel: Vec<Vec<_>> = (0..c).map(|_| Vec::with_capacity(b)).collect();
        for (i, dxp) in dx.chunks_mut(plane).enumerate() {
            by_channel[i % c].push(dxp);
        }
        by_channel
            .into_par_iter()
            .zip(dw.par_chunks_mut(kk))
            .enumerate()
            .for_each_init(
                scratch,
                |(dyz, sums, wts, buf, lanes, (x_row, dy_row)), (ch, (planes, dw))| {
                    let wk = &wt[ch * kk..(ch + 1) * kk];
                    lanes.clear();
                    for (bi, dxp) in planes.into_iter().enumerate() {
                        let bc = bi * c + ch;
                        g.spread(dy.row(bc, out_plane, dy_row), &mut dyz[lead..]);
                        for (phase, offs) in phases.iter().zip(&offs) {
                            wts.clear();
                            wts.extend(phase.taps.iter().map(|&t| wk[t]));
                            let job = RowSums {
                                src: dyz,
                                base: phase.at,
                                stride: g.wq,
                                rows: phase.rows,
                                cols: phase.cols,
                                offs,
                                wts,
                            };
                            match interleaved {
                                true => sum_rows(&job, sums, g.in_layout(phase.at)),
                                false => sum_rows(&job, dxp, phase.place),
                            }
                        }
                        if interleaved {
                            // SAFETY: `sums` was made of zeros, and `sum_rows` only writes values.
                            g.interleave_into(unsafe { assume_written(sums) }, dxp);
                        }
                        g.fill(x.row(bc, plane, x_row), buf);
                        tap_dots(&dyz[lead..lead + g.run()], buf, &taps, lanes);
                    }
                    for (d, v) in dw.iter_mut().zip(lanes.totals()) {
                        *d = v;
                    }
                },
            );
    };
    // SAFETY: each input pixel lies in exactly one phase, whose rows and columns `sum_rows`
    // writes in full (an empty plane or an output without pixels writes nothing and needs
    // nothing).
    let dx = unsafe { written(b * c * plane, write) };
    (dx, dw)
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
                    for ((b, c), pass) in [(1, 1), (3, 4), (1, 6), (3, 8), (13, 5)]
                        .into_iter()
                        .flat_map(|bc| [(bc, Pass::Forward), (bc, Pass::Training)])
                    {
                        seed += 1;
                        let conv = |x: &Tensor, wt: &Tensor| in_pass(x, wt, stride, pass);
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

    /// The two passes split 7-wide planes between the layouts.
    #[test]
    fn passes_split_seven_wide_planes() {
        let op = |pass| DepthwiseConv2d::new(1, pass).flat_min_ow;
        assert!(op(Pass::Forward) <= 7 && op(Pass::Training) > 7);
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
