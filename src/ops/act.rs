//! The activations fused into the per-channel ops ([`super::batch_norm_train`],
//! [`super::channel_affine`]), and the row kernels those ops share: `y = act(x · scale + shift)`
//! over one channel row, its gradient, and the per-channel gradient sums.
//!
//! Every kernel is generic over a zero-sized activation type, so the activation is resolved at
//! compile time and the row loops vectorize.

use std::mem::MaybeUninit;

use super::images::ImageSource;
use super::simd::multiversion;
use super::uninit::written;

use candle_core::cpu::erf::erf_f32;
use candle_core::{bail, Result, Shape};
use rayon::prelude::*;

/// Activation applied after the per-channel affine map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// No activation.
    Identity,
    /// `max(z, 0)`; the gradient passes where `z >= 0`, as in candle's `relu`.
    Relu,
    /// Exact (erf) GELU, as candle's `gelu_erf`.
    Gelu,
}

/// An activation as a type: its value and `dy · act'(z)`.
pub(crate) trait ActFn: Copy + Send + Sync {
    fn apply(z: f32) -> f32;
    fn grad(z: f32, dy: f32) -> f32;
}

#[derive(Clone, Copy)]
pub(crate) struct IdentityFn;
#[derive(Clone, Copy)]
pub(crate) struct ReluFn;
#[derive(Clone, Copy)]
pub(crate) struct GeluFn;

impl ActFn for IdentityFn {
    #[inline(always)]
    fn apply(z: f32) -> f32 {
        z
    }
    #[inline(always)]
    fn grad(_: f32, dy: f32) -> f32 {
        dy
    }
}

impl ActFn for ReluFn {
    #[inline(always)]
    fn apply(z: f32) -> f32 {
        z.max(0.0)
    }
    #[inline(always)]
    fn grad(z: f32, dy: f32) -> f32 {
        // A bit mask rather than a branch, so that the row loops vectorize.
        f32::from_bits(dy.to_bits() & 0u32.wrapping_sub(u32::from(z >= 0.0)))
    }
}

impl ActFn for GeluFn {
    #[inline(always)]
    fn apply(z: f32) -> f32 {
        (erf_f32(z * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * z
    }
    #[inline(always)]
    fn grad(z: f32, dy: f32) -> f32 {
        // Φ(z) + z φ(z), with φ the standard normal density.
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        let cdf = 0.5 * (1.0 + erf_f32(z * std::f32::consts::FRAC_1_SQRT_2));
        dy * (cdf + z * INV_SQRT_2PI * (-0.5 * z * z).exp())
    }
}

/// Runs `$body` with `$a` bound to the activation type of `$act`.
macro_rules! with_act {
    ($act:expr, $a:ident => $body:expr) => {
        match $act {
            $crate::ops::act::Act::Identity => {
                type $a = $crate::ops::act::IdentityFn;
                $body
            }
            $crate::ops::act::Act::Relu => {
                type $a = $crate::ops::act::ReluFn;
                $body
            }
            $crate::ops::act::Act::Gelu => {
                type $a = $crate::ops::act::GeluFn;
                $body
            }
        }
    };
}
pub(crate) use with_act;

multiversion! {
    /// `y = act(x · scale + shift)` over one channel row.
    fn affine_row(act: Act, x: &[f32], scale: f32, shift: f32, y: &mut [MaybeUninit<f32>]) {
        with_act!(act, A => {
            for (y, &x) in y.iter_mut().zip(x) {
                y.write(A::apply(x * scale + shift));
            }
        })
    }
}

multiversion! {
    /// `y = act(x · scale + shift)` element by element, over one image of a small map.
    fn affine_image(act: Act, x: &[f32], scale: &[f32], shift: &[f32], y: &mut [MaybeUninit<f32>]) {
        with_act!(act, A => {
            for (((y, &x), &a), &b) in y.iter_mut().zip(x).zip(scale).zip(shift) {
                y.write(A::apply(x * a + b));
            }
        })
    }
}

/// Maps of at most this many elements per channel run image by image, on rows of `C · S`
/// elements with the per-channel values spread over every element ([`spread`]): a channel
/// row of a few elements costs more in loop overhead than in arithmetic.
const PER_IMAGE_MAX_S: usize = 64;

/// Whether an `[N, C, S]` tensor is walked image by image rather than channel row by row.
pub(crate) fn per_image(s: usize) -> bool {
    s <= PER_IMAGE_MAX_S
}

/// Each of the `c` values of `v` repeated `s` times: a per-channel value for every element of
/// one image.
pub(crate) fn spread(v: &[f32], s: usize) -> Vec<f32> {
    v.iter().flat_map(|&x| std::iter::repeat_n(x, s)).collect()
}

/// `act(x · scale[ch] + shift[ch])` of an `[N, C, S]` tensor with `c` channels of `s` elements
/// (`s > 0`), into a new vector; parallel over rows (over images on small maps).
pub(crate) fn affine_act(
    x: &[f32],
    c: usize,
    s: usize,
    scale: &[f32],
    shift: &[f32],
    act: Act,
) -> Vec<f32> {
    Activated::new(act, x, (c, s), [scale, shift]).all()
}

/// All `len` values of `source`, parallel over images.
fn image_by_image(source: &impl ImageSource, len: usize) -> Vec<f32> {
    let cs = source.image_len();
    // SAFETY: the images of `cs` slots cover the vector, each written by `image`.
    unsafe {
        written(len, |v| {
            v.par_chunks_mut(cs)
                .enumerate()
                .with_min_len(rows_per_task(cs))
                .for_each(|(i, v)| source.image(i, v))
        })
    }
}

/// An activation and `K` per-channel coefficients of an `[N, C, S]` tensor with `c` channels
/// of `s` elements (`s > 0`), and on small maps the same spread over one image ([`spread`]).
struct ChannelCoef<'a, const K: usize> {
    act: Act,
    c: usize,
    s: usize,
    coef: [&'a [f32]; K],
    spread: Option<[Vec<f32>; K]>,
}

impl<'a, const K: usize> ChannelCoef<'a, K> {
    fn new(act: Act, (c, s): (usize, usize), coef: [&'a [f32]; K]) -> Self {
        let spread = per_image(s).then(|| coef.map(|v| spread(v, s)));
        Self {
            act,
            c,
            s,
            coef,
            spread,
        }
    }

    /// The `K` coefficients of channel `ch`.
    fn channel(&self, ch: usize) -> [f32; K] {
        self.coef.map(|v| v[ch])
    }
}

/// `act(x · scale[ch] + shift[ch])` of an `[N, C, S]` tensor with `c` channels of `s` elements
/// (`s > 0`): a per-channel op's output, written whole or one image at a time, with the same
/// bits either way.
pub(crate) struct Activated<'a> {
    x: &'a [f32],
    /// `[scale, shift]`.
    k: ChannelCoef<'a, 2>,
}

impl<'a> Activated<'a> {
    /// The output for `x`, with `coef = [scale, shift]`.
    pub fn new(act: Act, x: &'a [f32], (c, s): (usize, usize), coef: [&'a [f32]; 2]) -> Self {
        let k = ChannelCoef::new(act, (c, s), coef);
        Self { x, k }
    }
}

impl ImageSource for Activated<'_> {
    fn image_len(&self) -> usize {
        self.k.c * self.k.s
    }

    fn image(&self, i: usize, y: &mut [MaybeUninit<f32>]) {
        let (cs, k) = (self.image_len(), &self.k);
        let x = &self.x[i * cs..(i + 1) * cs];
        if let Some([scale, shift]) = &k.spread {
            return affine_image(k.act, x, scale, shift, &mut y[..cs]);
        }
        for (ch, (y, x)) in y[..cs].chunks_mut(k.s).zip(x.chunks(k.s)).enumerate() {
            let [scale, shift] = k.channel(ch);
            affine_row(k.act, x, scale, shift, y);
        }
    }

    fn row_len(&self) -> usize {
        self.k.s
    }

    fn row(&self, r: usize, y: &mut [MaybeUninit<f32>]) {
        let k = &self.k;
        let [scale, shift] = k.channel(r % k.c);
        affine_row(
            k.act,
            &self.x[r * k.s..(r + 1) * k.s],
            scale,
            shift,
            &mut y[..k.s],
        );
    }

    fn all(&self) -> Vec<f32> {
        let (x, k) = (self.x, &self.k);
        if k.spread.is_some() {
            return image_by_image(self, x.len());
        }
        // SAFETY: the rows of `s` slots cover the vector, each written by `affine_row`.
        unsafe {
            written(x.len(), |y| {
                y.par_chunks_mut(k.s)
                    .zip(x.par_chunks(k.s))
                    .enumerate()
                    .with_min_len(rows_per_task(k.s))
                    .for_each(|(r, (y, x))| {
                        let [scale, shift] = k.channel(r % k.c);
                        affine_row(k.act, x, scale, shift, y)
                    })
            })
        }
    }
}

/// The input gradient of a per-channel op on an `[N, C, S]` tensor with `c` channels of `s`
/// elements (`s > 0`): `dx = p[ch] · dz + q[ch] · x + r[ch]`, where
/// `dz = dy · act'(x · scale[ch] + shift[ch])`. Written whole or one image at a time
/// ([`ImageSource`]), with the same bits either way.
pub(crate) struct InputGrad<'a> {
    x: &'a [f32],
    dy: &'a [f32],
    /// `[scale, shift, p, q, r]`.
    k: ChannelCoef<'a, 5>,
}

impl<'a> InputGrad<'a> {
    /// The gradient of `(x, dy)`, with `coef = [scale, shift, p, q, r]`.
    pub fn new(
        act: Act,
        (x, dy): (&'a [f32], &'a [f32]),
        (c, s): (usize, usize),
        coef: [&'a [f32]; 5],
    ) -> Self {
        let k = ChannelCoef::new(act, (c, s), coef);
        Self { x, dy, k }
    }
}

impl ImageSource for InputGrad<'_> {
    fn image_len(&self) -> usize {
        self.k.c * self.k.s
    }

    fn image(&self, i: usize, dx: &mut [MaybeUninit<f32>]) {
        let (cs, k) = (self.image_len(), &self.k);
        let range = i * cs..(i + 1) * cs;
        let (x, dy) = (&self.x[range.clone()], &self.dy[range]);
        if let Some(coef) = &k.spread {
            return input_grad_image(k.act, x, dy, coef, &mut dx[..cs]);
        }
        let s = k.s;
        for (ch, dx) in dx[..cs].chunks_mut(s).enumerate() {
            let row = ch * s..(ch + 1) * s;
            input_grad_row(k.act, &x[row.clone()], &dy[row], k.channel(ch), dx);
        }
    }

    fn row_len(&self) -> usize {
        self.k.s
    }

    fn row(&self, r: usize, dx: &mut [MaybeUninit<f32>]) {
        let k = &self.k;
        let row = r * k.s..(r + 1) * k.s;
        let (x, dy) = (&self.x[row.clone()], &self.dy[row]);
        input_grad_row(k.act, x, dy, k.channel(r % k.c), &mut dx[..k.s]);
    }

    fn all(&self) -> Vec<f32> {
        let (x, dy, k) = (self.x, self.dy, &self.k);
        if k.spread.is_some() {
            return image_by_image(self, x.len());
        }
        // SAFETY: the rows of `s` slots cover the vector, each written by `input_grad_row`.
        unsafe {
            written(x.len(), |dx| {
                dx.par_chunks_mut(k.s)
                    .zip(x.par_chunks(k.s).zip(dy.par_chunks(k.s)))
                    .enumerate()
                    .with_min_len(rows_per_task(k.s))
                    .for_each(|(row, (dx, (x, dy)))| {
                        input_grad_row(k.act, x, dy, k.channel(row % k.c), dx)
                    })
            })
        }
    }
}

multiversion! {
    /// `dx = p · dz + q · x + r` over one channel row, where `dz = dy · act'(x · scale + shift)`
    /// and `coef = [scale, shift, p, q, r]`.
    fn input_grad_row(act: Act, x: &[f32], dy: &[f32], coef: [f32; 5], dx: &mut [MaybeUninit<f32>]) {
        let [a, b, p, q, r] = coef;
        with_act!(act, A => {
            for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                dx.write(p * A::grad(x * a + b, dy) + q * x + r);
            }
        })
    }
}

multiversion! {
    /// The input gradient over one image of a small map, with the five coefficients of
    /// [`input_grad_row`] spread over its elements.
    fn input_grad_image(act: Act, x: &[f32], dy: &[f32], coef: &[Vec<f32>; 5], dx: &mut [MaybeUninit<f32>]) {
        let n = dx.len();
        let (x, dy) = (&x[..n], &dy[..n]);
        let [a, b, p, q, r] = coef.each_ref().map(|v| &v[..n]);
        with_act!(act, A => {
            for k in 0..n {
                dx[k].write(p[k] * A::grad(x[k] * a[k] + b[k], dy[k]) + q[k] * x[k] + r[k]);
            }
        })
    }
}

/// Per-channel `(Σ dz, Σ dz · (x − center[ch]))` of an `[N, C, S]` tensor (`s > 0`), where
/// `dz = dy · act'(x · scale[ch] + shift[ch])`: the gradient sums of a per-channel op.
pub(crate) fn grad_sums(
    act: Act,
    (x, dy): (&[f32], &[f32]),
    (n, c, s): (usize, usize, usize),
    (scale, shift): (&[f32], &[f32]),
    center: &[f32],
) -> Vec<(f64, f64)> {
    if !per_image(s) {
        return channel_sums(n * c, c, s, |r| {
            let (ch, row) = (r % c, r * s..(r + 1) * s);
            let coef = [scale[ch], shift[ch], center[ch]];
            grad_sums_row(act, &x[row.clone()], &dy[row], coef)
        });
    }
    let cs = c * s;
    let coef = [scale, shift, center].map(|v| spread(v, s));
    image_channel_sums((n, c, s), |i, s1, s2| {
        let image = i * cs..(i + 1) * cs;
        grad_sums_image(act, &x[image.clone()], &dy[image], &coef, s1, s2)
    })
}

multiversion! {
    /// Adds one image's `dz` and `dz · (x − center)` into `s1` and `s2`, element by element,
    /// where `dz = dy · act'(x · scale + shift)` and `coef = [scale, shift, center]` spread
    /// over the image.
    fn grad_sums_image(act: Act, x: &[f32], dy: &[f32], coef: &[Vec<f32>; 3], s1: &mut [f32], s2: &mut [f32]) {
        let n = x.len();
        let (dy, s1, s2) = (&dy[..n], &mut s1[..n], &mut s2[..n]);
        let [a, b, k] = coef.each_ref().map(|v| &v[..n]);
        with_act!(act, A => {
            for j in 0..n {
                let dz = A::grad(x[j] * a[j] + b[j], dy[j]);
                s1[j] += dz;
                s2[j] += dz * (x[j] - k[j]);
            }
        })
    }
}

multiversion! {
    /// `(Σ dz, Σ dz · (x − center))` over one channel row, where `dz = dy · act'(x · scale +
    /// shift)` and `coef = [scale, shift, center]`. `dz` is computed a block at a time into a
    /// buffer on the stack, then summed in 32 f32 lanes: two simple loops vectorize where one
    /// fused loop does not, and 32 lanes are independent chains of adds where eight made each
    /// add wait for the one before it. Returned in f64.
    fn grad_sums_row(act: Act, x: &[f32], dy: &[f32], coef: [f32; 3]) -> (f64, f64) {
        const L: usize = 32;
        const BLOCK: usize = 4 * L;
        let [scale, shift, center] = coef;
        let (mut s, mut sx) = ([0f32; L], [0f32; L]);
        let mut dz = [0f32; BLOCK];
        let (xc, dc) = (x.chunks_exact(BLOCK), dy.chunks_exact(BLOCK));
        let (xr, dr) = (xc.remainder(), dc.remainder());
        with_act!(act, A => {
            for (xs, ds) in xc.zip(dc) {
                for ((dz, &x), &dy) in dz.iter_mut().zip(xs).zip(ds) {
                    *dz = A::grad(x * scale + shift, dy);
                }
                for (dzs, xs) in dz.chunks_exact(L).zip(xs.chunks_exact(L)) {
                    for i in 0..L {
                        s[i] += dzs[i];
                        sx[i] += dzs[i] * (xs[i] - center);
                    }
                }
            }
            let n = xr.len();
            for ((dz, &x), &dy) in dz[..n].iter_mut().zip(xr).zip(dr) {
                *dz = A::grad(x * scale + shift, dy);
            }
        });
        let n = xr.len();
        let (dzc, xrc) = (dz[..n].chunks_exact(L), xr.chunks_exact(L));
        let (dz_tail, x_tail) = (dzc.remainder(), xrc.remainder());
        for (dzs, xs) in dzc.zip(xrc) {
            for i in 0..L {
                s[i] += dzs[i];
                sx[i] += dzs[i] * (xs[i] - center);
            }
        }
        let sum = |v: [f32; L]| v.iter().map(|&v| f64::from(v)).sum::<f64>();
        let (mut s1, mut s2) = (sum(s), sum(sx));
        for (&dz, &x) in dz_tail.iter().zip(x_tail) {
            s1 += f64::from(dz);
            s2 += f64::from(dz * (x - center));
        }
        (s1, s2)
    }
}

/// At most this many ranges of images per [`image_channel_sums`]: each range's folding costs as
/// much as adding one image, so a range of one image per task would double the work.
const IMAGE_SUM_RANGES: usize = 8;

/// Per-channel sums of two per-element quantities over the images of an `[N, C, S]` tensor:
/// `add(image, s1, s2)` adds one image's quantities into `C · S` f32 accumulators. Images run
/// in fixed ranges in parallel (at most [`IMAGE_SUM_RANGES`], set by `N` and `C · S` alone);
/// each range's accumulators are folded per channel in f64 and the ranges added up in order,
/// so a rerun gives bit-identical sums on any number of threads.
pub(crate) fn image_channel_sums(
    (n, c, s): (usize, usize, usize),
    add: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) -> Vec<(f64, f64)> {
    let cs = c * s;
    let per_task = rows_per_task(cs).max(n.div_ceil(IMAGE_SUM_RANGES));
    let partials: Vec<Vec<(f64, f64)>> = (0..n.div_ceil(per_task))
        .into_par_iter()
        .map(|task| {
            let (mut s1, mut s2) = (vec![0f32; cs], vec![0f32; cs]);
            for i in task * per_task..n.min((task + 1) * per_task) {
                add(i, &mut s1, &mut s2);
            }
            let (t1, t2) = (row_totals(&s1, s), row_totals(&s2, s));
            t1.into_iter().zip(t2).collect()
        })
        .collect();
    add_in_order(partials, c)
}

/// The f64 total of each row of `s` values in `v`, each row added in order as
/// `row.iter().map(f64::from).sum()` adds it, with the same bits. Eight rows run side by side,
/// so that each addition does not wait for the one before it.
fn row_totals(v: &[f32], s: usize) -> Vec<f64> {
    const ROWS: usize = 8;
    let rows = v.len().checked_div(s).unwrap_or(0);
    let mut totals = Vec::with_capacity(rows);
    let blocks = v.chunks_exact(ROWS * s.max(1));
    let rest = blocks.remainder();
    for block in blocks {
        let rows: [&[f32]; ROWS] = std::array::from_fn(|r| &block[r * s..(r + 1) * s]);
        // `Sum` for floats starts from −0.0.
        let mut acc = [-0.0f64; ROWS];
        // `i` is a column of all eight rows, not an index into `rows`: the lint misreads it.
        #[allow(clippy::needless_range_loop)]
        for i in 0..s {
            let column: [f32; ROWS] = std::array::from_fn(|r| rows[r][i]);
            acc = std::array::from_fn(|r| acc[r] + f64::from(column[r]));
        }
        totals.extend_from_slice(&acc);
    }
    for row in rest.chunks_exact(s.max(1)) {
        totals.push(row.iter().map(|&v| f64::from(v)).sum::<f64>());
    }
    totals
}

/// Rows of `len` elements per parallel work unit: about 16k elements, at least one row.
pub(crate) fn rows_per_task(len: usize) -> usize {
    (1 << 14) / len.max(1) + 1
}

/// Per-channel sums of `row_sums(row)` over the `n * c` rows of an `[N, C, S]` tensor (row `r`
/// belongs to channel `r % c`).
///
/// Rows are split into fixed ranges that run in parallel and are added up in order, so the
/// result does not depend on scheduling: a rerun gives bit-identical sums.
pub(crate) fn channel_sums(
    rows: usize,
    c: usize,
    row_len: usize,
    row_sums: impl Fn(usize) -> (f64, f64) + Sync,
) -> Vec<(f64, f64)> {
    let per_task = rows_per_task(row_len);
    let partials: Vec<Vec<(f64, f64)>> = (0..rows.div_ceil(per_task))
        .into_par_iter()
        .map(|task| {
            let mut acc = vec![(0.0, 0.0); c];
            for r in task * per_task..rows.min((task + 1) * per_task) {
                let (a, b) = row_sums(r);
                acc[r % c].0 += a;
                acc[r % c].1 += b;
            }
            acc
        })
        .collect();
    add_in_order(partials, c)
}

/// The sum of per-task per-channel partial sums, added in task order.
fn add_in_order(partials: Vec<Vec<(f64, f64)>>, c: usize) -> Vec<(f64, f64)> {
    let mut total = vec![(0.0, 0.0); c];
    for part in partials {
        for (t, p) in total.iter_mut().zip(part) {
            t.0 += p.0;
            t.1 += p.1;
        }
    }
    total
}

/// `[N, C, S]` view of a tensor shape with channels on dim 1: `(N, C, S)`, `S` the product of
/// the trailing dims (1 for `[N, C]`).
pub(crate) fn channel_geometry(shape: &Shape, op: &str) -> Result<(usize, usize, usize)> {
    let dims = shape.dims();
    if dims.len() < 2 {
        bail!("{op}: expected at least [N, C], got {shape:?}")
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every SIMD level gives the baseline's bits, on small maps (image by image) and larger
    /// ones (channel row by channel row), for every activation.
    #[test]
    fn every_level_gives_the_same_bits() {
        use crate::ops::simd::{capped, Level, ALL};
        for (n, c, s) in [(5, 7, 4), (3, 2, 81)] {
            let len = n * c * s;
            let wave = |f: f32| (0..len).map(|i| (i as f32 * f).sin()).collect::<Vec<f32>>();
            let (x, dy) = (wave(0.37), wave(0.11));
            let per_channel = |f: f32| {
                (0..c)
                    .map(|i| 1.0 + (i as f32 * f).cos())
                    .collect::<Vec<f32>>()
            };
            let (scale, shift, p) = (per_channel(0.5), per_channel(0.9), per_channel(1.3));
            for act in [Act::Identity, Act::Relu, Act::Gelu] {
                let run = |limit| {
                    capped(limit, || {
                        let xy = (x.as_slice(), dy.as_slice());
                        (
                            affine_act(&x, c, s, &scale, &shift, act),
                            InputGrad::new(act, xy, (c, s), [&scale, &shift, &p, &shift, &scale])
                                .all(),
                            grad_sums(act, xy, (n, c, s), (&scale, &shift), &p),
                        )
                    })
                };
                let base = run(Level::Base);
                for limit in ALL {
                    assert!(run(limit) == base, "{act:?} {limit:?} on {n}×{c}×{s}");
                }
            }
        }
    }

    /// Row totals side by side equal the iterator's sum of each row, bit for bit, with
    /// signed zeros, and for a count of rows that is not a multiple of eight.
    #[test]
    fn row_totals_match_the_sum_of_each_row() {
        for (rows, s) in [(19, 5), (8, 1), (3, 7), (0, 4)] {
            let mut v: Vec<f32> = (0..rows * s)
                .map(|i| (i as f32 * 0.37).sin() * 1e3)
                .collect();
            if rows > 2 {
                v[s..2 * s].fill(-0.0);
            }
            let want: Vec<f64> = v
                .chunks_exact(s)
                .map(|row| row.iter().map(|&v| f64::from(v)).sum::<f64>())
                .collect();
            let got = row_totals(&v, s);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.to_bits(), w.to_bits(), "{rows} rows of {s}");
            }
        }
    }

    /// Each activation matches candle's op and a central difference of itself.
    #[test]
    fn values_and_derivatives() -> candle_core::Result<()> {
        let zs = [-3.0f32, -1.2, -0.3, 0.4, 1.0, 2.5];
        let t = candle_core::Tensor::new(&zs, &candle_core::Device::Cpu)?;
        for (act, want) in [
            (Act::Relu, t.relu()?.to_vec1::<f32>()?),
            (Act::Gelu, t.gelu_erf()?.to_vec1::<f32>()?),
            (Act::Identity, zs.to_vec()),
        ] {
            for (&z, &w) in zs.iter().zip(&want) {
                let (v, d) = with_act!(act, A => (A::apply(z), A::grad(z, 1.0)));
                assert!((v - w).abs() < 1e-6, "{act:?}({z}) = {v}, candle {w}");
                let h = 1e-3f32;
                let fd = with_act!(act, A => (A::apply(z + h) - A::apply(z - h)) / (2.0 * h));
                assert!(
                    (d - fd).abs() < 1e-3,
                    "{act:?}'({z}) = {d}, difference {fd}"
                );
            }
        }
        Ok(())
    }
}
