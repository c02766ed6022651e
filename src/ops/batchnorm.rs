//! Train-mode batch normalization over channel dim 1, fused with an activation, as one candle
//! custom op with its own backward.
//!
//! Forward: one pass for the per-channel mean and (biased) variance, one pass for
//! `y = act(x̂ · weight + bias)`, `x̂ = (x − mean) / √(var + eps)`. Backward, with
//! `dz = dy · act'(z)` recomputed from `x`: one pass for `Σ dz` and `Σ dz · x̂` (the bias and
//! weight gradients), one pass for
//! `dx = weight / √(var + eps) · (dz − (Σ dz + x̂ · Σ dz · x̂) / m)`, `m = N · H · W`.

use std::sync::{Arc, OnceLock};

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use rayon::prelude::*;

use super::act::{
    channel_geometry, grad_sums, image_channel_sums, per_image, rows_per_task, spread, Act,
    Activated, InputGrad,
};
use super::conv_op::ImageDone;
use super::cpu::{f32_slice, read_f32};
use super::images::ImageSource;
use super::simd::multiversion;

/// Per-channel statistics of one training batch.
#[derive(Clone, Debug)]
pub struct BatchStats {
    /// Mean over every dim but the channel one.
    pub mean: Vec<f32>,
    /// Biased variance (divided by `count`).
    pub var: Vec<f32>,
    /// Elements per channel, `N · H · W`.
    pub count: usize,
}

/// Batch norm of `x: [N, C, ...]` with batch statistics, then `act`: returns `y` (same shape)
/// and the statistics, for the caller's running averages.
///
/// CPU and f32 only. Differentiable with respect to `x`, `weight: [C]` and `bias: [C]`.
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    act: Act,
) -> Result<(Tensor, BatchStats)> {
    let op = BatchNormTrain::new(eps, act);
    let stats = op.stats();
    let y = x
        .contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    Ok((y, stats.get()?))
}

/// Where a [`BatchNormTrain`] op leaves its batch statistics, readable after it ran.
pub(super) struct StatsCell(Arc<OnceLock<Saved>>);

impl StatsCell {
    /// The statistics of the op's forward pass.
    pub(super) fn get(&self) -> Result<BatchStats> {
        match self.0.get() {
            Some(s) => Ok(s.stats.clone()),
            None => bail!("batch norm: forward did not record its statistics"),
        }
    }
}

/// What the forward pass leaves for the backward one.
struct Saved {
    stats: BatchStats,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

pub(super) struct BatchNormTrain {
    eps: f64,
    act: Act,
    saved: Arc<OnceLock<Saved>>,
}

impl BatchNormTrain {
    /// The op for `eps` and `act`, to be applied once.
    pub(super) fn new(eps: f64, act: Act) -> Self {
        Self {
            eps,
            act,
            saved: Arc::new(OnceLock::new()),
        }
    }

    /// Where this op's forward pass leaves its statistics.
    pub(super) fn stats(&self) -> StatsCell {
        StatsCell(self.saved.clone())
    }
}

multiversion! {
    /// `(Σ (x − k), Σ (x − k)²)` over one row, in 32 f32 lanes, returned in f64. With eight
    /// lanes each add waited for the one before it (one register's worth per add latency);
    /// 32 lanes are four independent chains, so the pass runs at memory speed.
    fn shifted_moments(x: &[f32], k: f32) -> (f64, f64) {
        const L: usize = 32;
        let (mut s, mut s2) = ([0f32; L], [0f32; L]);
        let chunks = x.chunks_exact(L);
        let rest = chunks.remainder();
        for xs in chunks {
            for i in 0..L {
                let d = xs[i] - k;
                s[i] += d;
                s2[i] += d * d;
            }
        }
        let sum = |v: [f32; L]| v.iter().map(|&v| f64::from(v)).sum::<f64>();
        let (mut a, mut b) = (sum(s), sum(s2));
        for &v in rest {
            let d = f64::from(v - k);
            a += d;
            b += d * d;
        }
        (a, b)
    }
}

multiversion! {
    /// Adds `x − k` and `(x − k)²` into `s1` and `s2`, element by element.
    fn add_moments(x: &[f32], k: &[f32], s1: &mut [f32], s2: &mut [f32]) {
        let n = x.len();
        let (k, s1, s2) = (&k[..n], &mut s1[..n], &mut s2[..n]);
        for j in 0..n {
            let d = x[j] - k[j];
            s1[j] += d;
            s2[j] += d * d;
        }
    }
}

/// One channel row's moments about its own first value `center`:
/// `(Σ (x − center), Σ (x − center)²)`.
#[derive(Clone, Copy, Debug)]
pub(super) struct RowMoment {
    sum: f64,
    squares: f64,
    center: f32,
}

impl RowMoment {
    /// The moments of `row` (not empty).
    fn of(row: &[f32]) -> Self {
        let center = row[0];
        let (sum, squares) = shifted_moments(row, center);
        Self {
            sum,
            squares,
            center,
        }
    }
}

/// Row moments of a convolution's output taken while each image is still in cache: the
/// convolution calls [`EarlyMoments::image`] as it completes an image, and the batch norm after
/// it uses what was recorded instead of reading the rows again. Small maps (walked image by
/// image) and batches of fewer images than threads record nothing.
pub(super) struct EarlyMoments {
    /// One slot per row, made when the first large image arrives: a small map never needs them.
    rows: OnceLock<Vec<OnceLock<RowMoment>>>,
    n: usize,
    c: usize,
}

impl EarlyMoments {
    /// Room for the rows of `n` images of `c` channels.
    pub(super) fn new(n: usize, c: usize) -> Self {
        Self {
            rows: OnceLock::new(),
            n,
            c,
        }
    }

    /// Records the row moments of image `i`, `y` being its `C · S` values.
    pub(super) fn image(&self, i: usize, y: &[f32]) {
        let s = y.len() / self.c.max(1);
        // With fewer images than threads, the rows are better taken in parallel afterwards.
        if s == 0 || per_image(s) || self.n < rayon::current_num_threads() {
            return;
        }
        let rows = self
            .rows
            .get_or_init(|| (0..self.n * self.c).map(|_| OnceLock::new()).collect());
        for (ch, row) in y.chunks_exact(s).enumerate() {
            if let Some(slot) = rows.get(i * self.c + ch) {
                let _ = slot.set(RowMoment::of(row));
            }
        }
    }

    /// Row `r`'s moments, if they were recorded.
    fn row(&self, r: usize) -> Option<&RowMoment> {
        self.rows.get()?.get(r)?.get()
    }
}

/// Per-channel `(Σ (x − center), Σ (x − center)²)` of an `[N, C, S]` tensor (`s > 0`) and the
/// `center` of each channel. Row by row, each about its own first value and combined in image
/// order about image 0's (rows recorded in `early` are taken from there); on small maps image
/// by image, about the first value of each channel.
fn moments(
    x: &[f32],
    (n, c, s): (usize, usize, usize),
    early: Option<&EarlyMoments>,
) -> (Vec<f32>, Vec<(f64, f64)>) {
    if !per_image(s) {
        let rows: Vec<RowMoment> = (0..n * c)
            .into_par_iter()
            .with_min_len(rows_per_task(s))
            .map(|r| match early.and_then(|e| e.row(r)) {
                Some(m) => *m,
                None => RowMoment::of(&x[r * s..(r + 1) * s]),
            })
            .collect();
        return combine_rows(&rows, c, s);
    }
    let center: Vec<f32> = (0..c).map(|ch| x[ch * s]).collect();
    let cs = c * s;
    let k = spread(&center, s);
    let sums = image_channel_sums((n, c, s), |i, s1, s2| {
        add_moments(&x[i * cs..(i + 1) * cs], &k, s1, s2)
    });
    (center, sums)
}

/// Row moments (rows in `[N, C]` order, `s` values each) moved to one center per channel,
/// image 0's row center, and added in image order.
fn combine_rows(rows: &[RowMoment], c: usize, s: usize) -> (Vec<f32>, Vec<(f64, f64)>) {
    let center: Vec<f32> = rows[..c].iter().map(|r| r.center).collect();
    let mut sums = vec![(0.0, 0.0); c];
    for (r, row) in rows.iter().enumerate() {
        let (ch, len) = (r % c, s as f64);
        let shift = f64::from(row.center) - f64::from(center[ch]);
        let sum = &mut sums[ch];
        sum.0 += row.sum + len * shift;
        sum.1 += row.squares + 2.0 * shift * row.sum + len * shift * shift;
    }
    (center, sums)
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward((s1, l1), (s2, l2), (s3, l3))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (n, c, s) = channel_geometry(x.shape(), self.name())?;
        let (dx, dw, db) = read_f32(x, |x| {
            read_f32(&dy, |dy| -> Result<_> {
                let grads = self.grads(x, dy, (n, c, s))?;
                let dx = self.input_grad(&grads, (x, dy), (c, s))?.all();
                Ok((dx, grads.weight, grads.bias))
            })
        })???;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dw, weight.shape(), x.device())?),
            Some(Tensor::from_vec(db, bias.shape(), x.device())?),
        ))
    }
}

type Operand<'a> = (&'a CpuStorage, &'a Layout);

/// A convolution, run with the hook it is given ([`ConvOp::forward_each`],
/// [`super::conv_op::ReadsImages::forward_images`]), then batch norm `bn` fitted to its output
/// with its parameters `(storage, weight layout, bias layout)`: the convolution's output and
/// its shape, for [`BatchNormTrain::output`]. The row moments are taken as the convolution
/// completes each of its `n` images of `c` channels.
pub(super) fn conv_then_fit(
    (n, c): (usize, usize),
    conv: impl FnOnce(ImageDone) -> Result<(CpuStorage, Shape)>,
    bn: &BatchNormTrain,
    (ps, gl, bl): (&CpuStorage, &Layout, &Layout),
) -> Result<(CpuStorage, Shape)> {
    let early = EarlyMoments::new(n, c);
    let (z, shape) = conv(&|i, y| early.image(i, y))?;
    bn.fit(
        (&z, &Layout::contiguous(&shape)),
        (ps, gl),
        (ps, bl),
        Some(&early),
    )?;
    Ok((z, shape))
}

impl BatchNormTrain {
    /// The forward of `x` with `weight` and `bias`.
    fn forward(&self, x: Operand, weight: Operand, bias: Operand) -> Result<(CpuStorage, Shape)> {
        self.fit(x, weight, bias, None)?;
        let y = self
            .output(f32_slice(x.0, x.1, self.name())?, x.1.shape())?
            .all();
        Ok((CpuStorage::F32(y), x.1.shape().clone()))
    }

    /// The output for the input `x` of shape `shape` that [`BatchNormTrain::fit`] saw, to be
    /// written whole or image by image.
    pub(super) fn output<'a>(&'a self, x: &'a [f32], shape: &Shape) -> Result<Activated<'a>> {
        let (_, c, s) = channel_geometry(shape, self.name())?;
        let sv = self.saved()?;
        if sv.scale.len() != c || x.len() != sv.stats.count * c {
            bail!(
                "{}: output for {shape:?}, fitted to another input",
                self.name()
            )
        }
        Ok(Activated::new(self.act, x, (c, s), [&sv.scale, &sv.shift]))
    }

    /// Takes the batch statistics of `x` and the per-channel affine map with `weight` and
    /// `bias`, taking the row moments that `early` recorded (see [`EarlyMoments`]).
    pub(super) fn fit(
        &self,
        (s1, l1): Operand,
        (s2, l2): Operand,
        (s3, l3): Operand,
        early: Option<&EarlyMoments>,
    ) -> Result<()> {
        let x = f32_slice(s1, l1, self.name())?;
        let (w, b) = (
            f32_slice(s2, l2, self.name())?,
            f32_slice(s3, l3, self.name())?,
        );
        let (n, c, s) = channel_geometry(l1.shape(), self.name())?;
        if w.len() != c || b.len() != c {
            bail!(
                "{}: weight {:?} / bias {:?} do not match {c} channels",
                self.name(),
                l2.shape(),
                l3.shape()
            )
        }
        let count = n * s;
        if count == 0 {
            bail!("{}: empty input {:?}", self.name(), l1.shape())
        }
        // Moments about values of each channel, which keeps the single pass accurate when the
        // mean is large against the spread.
        let (center, moments) = moments(x, (n, c, s), early);
        let m = count as f64;
        let (mut mean, mut var) = (Vec::with_capacity(c), Vec::with_capacity(c));
        let (mut inv_std, mut scale, mut shift) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
        for ch in 0..c {
            let (d, d2) = moments[ch];
            let mu = f64::from(center[ch]) + d / m;
            let v = (d2 / m - (d / m) * (d / m)).max(0.0);
            let is = 1.0 / (v + self.eps).sqrt();
            mean.push(mu as f32);
            var.push(v as f32);
            inv_std[ch] = is as f32;
            scale[ch] = (f64::from(w[ch]) * is) as f32;
            shift[ch] = (f64::from(b[ch]) - mu * f64::from(w[ch]) * is) as f32;
        }
        let saved = Saved {
            stats: BatchStats {
                mean: mean.clone(),
                var,
                count,
            },
            mean,
            inv_std,
            scale,
            shift,
        };
        if self.saved.set(saved).is_err() {
            bail!("{}: op applied twice", self.name())
        }
        Ok(())
    }
}

/// Batch norm's parameter gradients, and the per-channel coefficients of its input gradient
/// `dx = scale · dz + k_x · x + b_0`.
pub(super) struct Grads {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    k_x: Vec<f32>,
    b_0: Vec<f32>,
}

impl BatchNormTrain {
    /// The saved forward state, or an error before the forward ran.
    fn saved(&self) -> Result<&Saved> {
        match self.saved.get() {
            Some(sv) => Ok(sv),
            None => bail!("{}: backward before forward", self.name()),
        }
    }

    /// The gradients of the forward's input `x: [N, C, S]` and output gradient `dy`, one pass
    /// over both.
    pub(super) fn grads(
        &self,
        x: &[f32],
        dy: &[f32],
        (n, c, s): (usize, usize, usize),
    ) -> Result<Grads> {
        let sv = self.saved()?;
        let m = sv.stats.count as f64;
        let sums = grad_sums(
            self.act,
            (x, dy),
            (n, c, s),
            (&sv.scale, &sv.shift),
            &sv.mean,
        );
        let mut g = Grads {
            weight: vec![0f32; c],
            bias: vec![0f32; c],
            k_x: vec![0f32; c],
            b_0: vec![0f32; c],
        };
        // k = −scale · inv_std² · Σ dz (x − mean) / m, b0 = −scale · Σ dz / m − k · mean.
        for (ch, &(sum_dz, sum_dzc)) in sums.iter().enumerate() {
            let is = f64::from(sv.inv_std[ch]);
            let a = f64::from(sv.scale[ch]);
            g.bias[ch] = sum_dz as f32;
            g.weight[ch] = (sum_dzc * is) as f32;
            let k = -a * is * is * sum_dzc / m;
            g.k_x[ch] = k as f32;
            g.b_0[ch] = (-a * sum_dz / m - k * f64::from(sv.mean[ch])) as f32;
        }
        Ok(g)
    }

    /// The input gradient of `(x, dy)` with the coefficients of `grads`, to be written whole or
    /// image by image.
    pub(super) fn input_grad<'a>(
        &'a self,
        grads: &'a Grads,
        (x, dy): (&'a [f32], &'a [f32]),
        (c, s): (usize, usize),
    ) -> Result<InputGrad<'a>> {
        let sv = self.saved()?;
        let coef = [
            sv.scale.as_slice(),
            &sv.shift,
            &sv.scale,
            &grads.k_x,
            &grads.b_0,
        ];
        Ok(InputGrad::new(self.act, (x, dy), (c, s), coef))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testutil::{assert_close, uniform};
    use candle_core::{Var, D};
    use rand::{rngs::StdRng, SeedableRng};

    const EPS: f64 = 1e-5;

    /// The generic composition of candle ops: batch statistics, normalize, activation.
    fn reference(x: &Tensor, w: &Tensor, b: &Tensor, act: Act) -> Result<Tensor> {
        let c = x.dim(1)?;
        let n = x.elem_count() / c;
        let mut shape = vec![1; x.rank()];
        shape[1] = c;
        let xt = x.transpose(0, 1)?.reshape((c, n))?;
        let mean = xt.mean(D::Minus1)?;
        let var = xt
            .broadcast_sub(&mean.unsqueeze(1)?)?
            .sqr()?
            .mean(D::Minus1)?;
        let xhat = x
            .broadcast_sub(&mean.reshape(shape.as_slice())?)?
            .broadcast_div(&(var + EPS)?.sqrt()?.reshape(shape.as_slice())?)?;
        let z = xhat
            .broadcast_mul(&w.reshape(shape.as_slice())?)?
            .broadcast_add(&b.reshape(shape.as_slice())?)?;
        match act {
            Act::Identity => Ok(z),
            Act::Relu => z.relu(),
            Act::Gelu => z.gelu_erf(),
        }
    }

    /// `(y, dx, dw, db)` of `sum(f(x, w, b) * r)`.
    fn grads(
        f: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        r: &Tensor,
    ) -> Result<[Tensor; 4]> {
        let (xv, wv, bv) = (
            Var::from_tensor(x)?,
            Var::from_tensor(w)?,
            Var::from_tensor(b)?,
        );
        let y = f(xv.as_tensor(), wv.as_tensor(), bv.as_tensor())?;
        let g = (&y * r)?.sum_all()?.backward()?;
        let take = |v: &Var| g.get(v.as_tensor()).cloned().expect("gradient missing");
        Ok([y, take(&xv), take(&wv), take(&bv)])
    }

    fn inputs(shape: &[usize], seed: u64, offset: f64) -> Result<[Tensor; 4]> {
        let mut rng = StdRng::seed_from_u64(seed);
        let c = shape[1];
        let x = (uniform(shape, &mut rng)? * 2.0)?.affine(1.0, offset)?;
        let w = uniform(&[c], &mut rng)?.affine(0.5, 1.0)?;
        let b = uniform(&[c], &mut rng)?;
        let r = uniform(shape, &mut rng)?;
        Ok([x, w, b, r])
    }

    #[test]
    fn matches_generic_composition() -> Result<()> {
        // Small maps run image by image, larger ones (17 × 9) channel row by channel row;
        // 70 images of 2 × 2 × 128 are summed in three ranges.
        let shapes: [&[usize]; 6] = [
            &[4, 3, 5, 6],
            // Two samples per channel would leave only rounding noise in the input gradient.
            &[6, 8, 1, 1],
            &[16, 5],
            &[3, 4, 17, 9],
            &[1, 2, 3, 3],
            &[70, 128, 2, 2],
        ];
        for (seed, shape) in (0u64..).zip(shapes) {
            for act in [Act::Identity, Act::Relu, Act::Gelu] {
                // An offset mean checks the single-pass variance.
                let offset = if seed % 2 == 0 { 0.0 } else { 30.0 };
                let [x, w, b, r] = inputs(shape, seed, offset)?;
                let fused =
                    |x: &Tensor, w: &Tensor, b: &Tensor| Ok(batch_norm_train(x, w, b, EPS, act)?.0);
                let generic = |x: &Tensor, w: &Tensor, b: &Tensor| reference(x, w, b, act);
                let got = grads(&fused, &x, &w, &b, &r)?;
                let want = grads(&generic, &x, &w, &b, &r)?;
                for (i, what) in ["forward", "input grad", "weight grad", "bias grad"]
                    .iter()
                    .enumerate()
                {
                    assert_close(&got[i], &want[i], &format!("{shape:?} {act:?}: {what}"))?;
                }
            }
        }
        Ok(())
    }

    #[test]
    fn statistics() -> Result<()> {
        let [x, w, b, _] = inputs(&[3, 2, 4, 5], 9, 3.0)?;
        let (_, stats) = batch_norm_train(&x, &w, &b, EPS, Act::Relu)?;
        let xt = x.transpose(0, 1)?.reshape((2, 60))?;
        let mean = xt.mean(D::Minus1)?;
        let var = xt
            .broadcast_sub(&mean.unsqueeze(1)?)?
            .sqr()?
            .mean(D::Minus1)?;
        assert_eq!(stats.count, 60);
        assert_close(
            &Tensor::new(stats.mean.as_slice(), x.device())?,
            &mean,
            "mean",
        )?;
        assert_close(&Tensor::new(stats.var.as_slice(), x.device())?, &var, "var")
    }

    /// Central differences of `sum(y * r)` in f64 against the analytic gradients.
    #[test]
    fn finite_differences() -> Result<()> {
        for act in [Act::Identity, Act::Relu, Act::Gelu] {
            let [x, w, b, r] = inputs(&[3, 2, 2, 2], 4, 0.5)?;
            let f = |x: &Tensor, w: &Tensor, b: &Tensor| Ok(batch_norm_train(x, w, b, EPS, act)?.0);
            let [_, dx, dw, db] = grads(&f, &x, &w, &b, &r)?;
            let rv = r.flatten_all()?.to_vec1::<f32>()?;
            let loss = |x: &Tensor, w: &Tensor, b: &Tensor| -> Result<f64> {
                let y = f(x, w, b)?.flatten_all()?.to_vec1::<f32>()?;
                Ok(y.iter()
                    .zip(&rv)
                    .map(|(&y, &r)| f64::from(y) * f64::from(r))
                    .sum())
            };
            let h = 1e-2f32;
            for (which, grad) in [(0, &dx), (1, &dw), (2, &db)] {
                let g = grad.flatten_all()?.to_vec1::<f32>()?;
                for (i, &gi) in g.iter().enumerate() {
                    let mut args = [x.clone(), w.clone(), b.clone()];
                    let base = args[which].flatten_all()?.to_vec1::<f32>()?;
                    let mut nudged = |d: f32| -> Result<f64> {
                        let mut v = base.clone();
                        v[i] += d;
                        args[which] = Tensor::from_vec(v, args[which].shape(), x.device())?;
                        loss(&args[0], &args[1], &args[2])
                    };
                    let fd = (nudged(h)? - nudged(-h)?) / (2.0 * f64::from(h));
                    assert!(
                        (fd - f64::from(gi)).abs() < 2e-2 * (1.0 + fd.abs()),
                        "{act:?} arg {which} [{i}]: analytic {gi}, finite difference {fd}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn rejects_mismatched_parameters() -> Result<()> {
        let [x, w, b, _] = inputs(&[2, 3, 2, 2], 1, 0.0)?;
        let w2 = w.narrow(0, 0, 2)?;
        assert!(batch_norm_train(&x, &w2, &b, EPS, Act::Relu).is_err());
        assert!(batch_norm_train(&x.flatten_all()?, &w, &b, EPS, Act::Relu).is_err());
        Ok(())
    }
}
