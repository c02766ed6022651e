//! Depthwise convolution of small planes, with the batch as the innermost dimension.
//!
//! On a plane a few pixels wide, every kernel tap covers a run of a few pixels, and loop
//! overhead outweighs arithmetic. Here `[B, C, P]` is transposed to `[C, P, B]`, so each
//! output pixel is a sum over its taps of whole batch runs, kept in registers over all taps
//! and stored once (forward). The input gradient gathers the same way for each input pixel,
//! over the output pixels that read it (in output order), and the weight gradient adds each
//! (output pixel, tap) pair's products to that tap's dot-product lanes. A [`TapTable`] lists
//! the pairs both ways.
//!
//! Channels run in parallel; within a channel the order of every sum is fixed (the order of
//! one `axpy` per (output pixel, tap) pair into a zeroed output, and of one `dot_lanes` per
//! pair into each tap's lanes), so reruns are bit-identical and every SIMD level gives the same
//! bits.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::channel_major::transpose;
use super::depthwise_plane::TapLanes;
use super::images::Batch;
use super::simd::multiversion;
use super::uninit::written;

/// The taps of a depthwise convolution (kernel `k`, stride `s`, padding `k / 2`) that fall
/// inside an `h x w` input, per output pixel and per input pixel.
pub(crate) struct TapTable {
    /// Output pixel `q` uses `taps[start[q]..start[q + 1]]`.
    start: Vec<usize>,
    /// `(tap index i * k + j, input pixel)`.
    taps: Vec<(usize, usize)>,
    /// Input pixel `p` is read through `readers[by_input[p]..by_input[p + 1]]`.
    by_input: Vec<usize>,
    /// `(tap index, output pixel)`, each input pixel's in increasing output pixel order.
    readers: Vec<(usize, usize)>,
    kk: usize,
}

impl TapTable {
    /// The table for output size `oh x ow` (as computed by the caller from the same geometry).
    pub fn new(h: usize, w: usize, k: usize, s: usize, (oh, ow): (usize, usize)) -> Self {
        let p = k / 2;
        let mut start = Vec::with_capacity(oh * ow + 1);
        let mut taps = Vec::new();
        start.push(0);
        for o_row in 0..oh {
            for o_col in 0..ow {
                for i in 0..k {
                    for j in 0..k {
                        let (r, c) = (
                            (o_row * s + i).wrapping_sub(p),
                            (o_col * s + j).wrapping_sub(p),
                        );
                        if r < h && c < w {
                            taps.push((i * k + j, r * w + c));
                        }
                    }
                }
                start.push(taps.len());
            }
        }
        let (by_input, readers) = by_input(&start, &taps, h * w);
        Self {
            start,
            taps,
            by_input,
            readers,
            kk: k * k,
        }
    }

    /// Pixels of the input plane.
    pub(crate) fn in_pixels(&self) -> usize {
        self.by_input.len() - 1
    }

    /// Pixels of the output plane.
    pub(crate) fn out_pixels(&self) -> usize {
        self.start.len() - 1
    }

    /// Taps of the kernel, `k · k`.
    pub(crate) fn taps(&self) -> usize {
        self.kk
    }

    /// The `(tap, input pixel)` pairs of output pixel `q`.
    #[inline(always)]
    fn of(&self, q: usize) -> &[(usize, usize)] {
        &self.taps[self.start[q]..self.start[q + 1]]
    }

    /// The `(tap, output pixel)` pairs that read input pixel `p`, by increasing output pixel.
    #[inline(always)]
    fn readers_of(&self, p: usize) -> &[(usize, usize)] {
        &self.readers[self.by_input[p]..self.by_input[p + 1]]
    }
}

/// The pairs of `taps` regrouped by input pixel (a counting sort that keeps output order).
fn by_input(
    start: &[usize],
    taps: &[(usize, usize)],
    in_pixels: usize,
) -> (Vec<usize>, Vec<(usize, usize)>) {
    let mut first = vec![0usize; in_pixels + 1];
    for &(_, ip) in taps {
        first[ip + 1] += 1;
    }
    for p in 0..in_pixels {
        first[p + 1] += first[p];
    }
    let mut next = first.clone();
    let mut readers = vec![(0, 0); taps.len()];
    for q in 0..start.len() - 1 {
        for &(tap, ip) in &taps[start[q]..start[q + 1]] {
            readers[next[ip]] = (tap, q);
            next[ip] += 1;
        }
    }
    (first, readers)
}

/// `Σ a_t · runs_t`, term by term in `terms` order from zero, over the `N` batch values at
/// `j`: `(weight index, run index)` pairs, run `r` at `src[r · b ..]`.
#[inline(always)]
fn sum_runs<const N: usize>(
    terms: &[(usize, usize)],
    a: &[f32],
    src: &[f32],
    (b, j): (usize, usize),
    out: &mut [MaybeUninit<f32>],
) {
    let mut acc = [0f32; N];
    for &(t, r) in terms {
        let at = r * b + j;
        let run: &[f32; N] = src[at..at + N].try_into().expect("a batch run");
        let w = a[t];
        for l in 0..N {
            acc[l] += w * run[l];
        }
    }
    for (o, v) in out[..N].iter_mut().zip(acc) {
        o.write(v);
    }
}

/// [`sum_runs`] over all `b` batch values, in register-sized blocks.
#[inline(always)]
fn sum_batch(
    terms: &[(usize, usize)],
    a: &[f32],
    src: &[f32],
    b: usize,
    out: &mut [MaybeUninit<f32>],
) {
    let mut j = 0;
    while j + 32 <= b {
        sum_runs::<32>(terms, a, src, (b, j), &mut out[j..]);
        j += 32;
    }
    if j + 16 <= b {
        sum_runs::<16>(terms, a, src, (b, j), &mut out[j..]);
        j += 16;
    }
    if j + 8 <= b {
        sum_runs::<8>(terms, a, src, (b, j), &mut out[j..]);
        j += 8;
    }
    while j < b {
        sum_runs::<1>(terms, a, src, (b, j), &mut out[j..]);
        j += 1;
    }
}

multiversion! {
    /// One channel's forward: `yc [Q, B]` from `xc [P, B]` and the channel's weights.
    fn forward_channel(t: &TapTable, b: usize, xc: &[f32], wc: &[f32], yc: &mut [MaybeUninit<f32>]) {
        for (q, yq) in yc.chunks_exact_mut(b).enumerate() {
            sum_batch(t.of(q), wc, xc, b, yq);
        }
    }
}

multiversion! {
    /// One channel's backward: `dxc [P, B]` and the weight gradient's lanes in `acc`, from
    /// `xc [P, B]`, `dyc [Q, B]` and the channel's weights.
    fn backward_channel(
        t: &TapTable,
        b: usize,
        operands: (&[f32], &[f32], &[f32]),
        dxc: &mut [MaybeUninit<f32>],
        acc: &mut TapLanes,
    ) {
        let (xc, dyc, wc) = operands;
        for (p, dxp) in dxc.chunks_exact_mut(b).enumerate() {
            sum_batch(t.readers_of(p), wc, dyc, b, dxp);
        }
        for (q, dyq) in dyc.chunks_exact(b).enumerate() {
            for &(tap, ip) in t.of(q) {
                acc.add_dot(tap, dyq, &xc[ip * b..(ip + 1) * b]);
            }
        }
    }
}

/// `y [B, C, Q]` of `x [B, C, P]` and weights `w [C, k · k]`, and `x` transposed to
/// `[C, P, B]` (for the backward).
pub(crate) fn forward(
    t: &TapTable,
    (b, c): (usize, usize),
    x: &[f32],
    w: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let xt = transpose(x, b, c * t.in_pixels());
    let yt = forward_inner(t, (b, c), Batch::Whole(&xt), w);
    (transpose(&yt, c * t.out_pixels(), b), xt)
}

/// `y [C, Q, B]` of `x [C, P, B]` and weights `w [C, k · k]`: [`forward`] on operands whose
/// batch is already innermost. Channel `ch` of `x` is row `ch` of its batch (of `P · B` values),
/// read as the channel's turn comes.
pub(crate) fn forward_inner(t: &TapTable, (b, c): (usize, usize), x: Batch, w: &[f32]) -> Vec<f32> {
    let (p, q) = (t.in_pixels(), t.out_pixels());
    assert!(x.holds(1, c * p * b), "depthwise (small): input size");
    // SAFETY: `forward_channel` writes each of a channel's `q` output pixels' `b` slots.
    unsafe {
        written(c * q * b, |yt| {
            if b == 0 {
                return;
            }
            yt.par_chunks_mut(q * b)
                .enumerate()
                .for_each_init(Vec::new, |scratch, (ch, yc)| {
                    let xc = x.row(ch, p * b, scratch);
                    forward_channel(t, b, xc, &w[ch * t.kk..(ch + 1) * t.kk], yc)
                })
        })
    }
}

/// `(dx [B, C, P], dw [C, k · k])` from the forward inputs and `dy [B, C, Q]`; `xt` is the
/// forward's transposed input, if it was kept.
pub(crate) fn backward(
    t: &TapTable,
    (b, c): (usize, usize),
    (x, xt): (&[f32], Option<Vec<f32>>),
    w: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let (p, q) = (t.in_pixels(), t.out_pixels());
    let xt = match xt {
        Some(xt) if xt.len() == x.len() => xt,
        _ => transpose(x, b, c * p),
    };
    let dyt = transpose(dy, b, c * q);
    let (dxt, dw) = backward_inner(t, (b, c), Batch::Whole(&xt), w, Batch::Whole(&dyt));
    (transpose(&dxt, c * p, b), dw)
}

/// `(dx [C, P, B], dw [C, k · k])` from `x [C, P, B]`, `w` and `dy [C, Q, B]`: [`backward`] on
/// operands whose batch is already innermost, their channels read as rows, as in
/// [`forward_inner`].
pub(crate) fn backward_inner(
    t: &TapTable,
    (b, c): (usize, usize),
    x: Batch,
    w: &[f32],
    dy: Batch,
) -> (Vec<f32>, Vec<f32>) {
    let (p, q, kk) = (t.in_pixels(), t.out_pixels(), t.kk);
    assert!(x.holds(1, c * p * b), "depthwise (small): input size");
    assert!(
        dy.holds(1, c * q * b),
        "depthwise (small): output gradient size"
    );
    let mut dw = vec![0f32; c * kk];
    // SAFETY: `backward_channel` writes each of a channel's `p` input pixels' `b` slots.
    let dxt = unsafe {
        written(c * p * b, |dxt| {
            if b == 0 {
                return;
            }
            dxt.par_chunks_mut(p * b)
                .zip(dw.par_chunks_mut(kk))
                .enumerate()
                .for_each_init(
                    || (TapLanes::new(kk), Vec::new(), Vec::new()),
                    |(acc, x_scratch, dy_scratch), (ch, (dxc, dwc))| {
                        let xc = x.row(ch, p * b, x_scratch);
                        let dyc = dy.row(ch, q * b, dy_scratch);
                        acc.clear();
                        backward_channel(t, b, (xc, dyc, &w[ch * kk..(ch + 1) * kk]), dxc, acc);
                        for (d, a) in dwc.iter_mut().zip(acc.totals()) {
                            *d = a;
                        }
                    },
                )
        })
    };
    (dxt, dw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::simd::{capped, ALL};
    use crate::ops::vecmath::axpy;

    #[test]
    fn table_lists_the_taps_inside_the_input() {
        // 3x3 kernel, stride 2, padding 1 on a 3x3 input: outputs 2x2. Output (0, 0) centers
        // on input (0, 0) and sees the 2x2 corner; output (1, 1) centers on (2, 2).
        let t = TapTable::new(3, 3, 3, 2, (2, 2));
        assert_eq!(t.out_pixels(), 4);
        assert_eq!(t.of(0), [(4, 0), (5, 1), (7, 3), (8, 4)]);
        assert_eq!(t.of(3), [(0, 4), (1, 5), (3, 7), (4, 8)]);
    }

    /// One `axpy` per (output pixel, tap) pair into zeroed outputs, and one dot product per pair
    /// into that tap's lanes: the order the kernels' sums must reproduce.
    fn reference(
        t: &TapTable,
        (b, c): (usize, usize),
        (x, w, dy): (&[f32], &[f32], &[f32]),
    ) -> [Vec<f32>; 3] {
        let (p, q, kk) = (t.in_pixels(), t.out_pixels(), t.kk);
        let (xt, dyt) = (transpose(x, b, c * p), transpose(dy, b, c * q));
        let (mut yt, mut dxt, mut dw) = (vec![0.0; c * q * b], vec![0.0; c * p * b], vec![]);
        for ch in 0..c {
            let (xc, dyc) = (&xt[ch * p * b..], &dyt[ch * q * b..]);
            let wc = &w[ch * kk..(ch + 1) * kk];
            let mut acc = TapLanes::new(kk);
            for qi in 0..q {
                let (yq, dyq) = (ch * q * b + qi * b, &dyc[qi * b..(qi + 1) * b]);
                for &(tap, ip) in t.of(qi) {
                    let xq = &xc[ip * b..(ip + 1) * b];
                    axpy(wc[tap], xq, &mut yt[yq..yq + b]);
                    let at = ch * p * b + ip * b;
                    axpy(wc[tap], dyq, &mut dxt[at..at + b]);
                    acc.add_dot(tap, dyq, xq);
                }
            }
            dw.extend(acc.totals());
        }
        [transpose(&yt, c * q, b), transpose(&dxt, c * p, b), dw]
    }

    /// Output, input gradient and weight gradient equal the reference bit for bit on every SIMD
    /// level, for batches that use every block size of the register sums and their tail.
    #[test]
    fn matches_one_axpy_and_dot_per_pair() {
        let cases = [
            (32, 3, (7, 7), 5, 1),
            (59, 2, (7, 7), 3, 1),
            (5, 4, (14, 14), 3, 2),
            (9, 3, (5, 4), 5, 2),
            (1, 2, (3, 3), 3, 1),
        ];
        for (b, c, (h, wd), k, s) in cases {
            let (oh, ow) = ((h - 1) / s + 1, (wd - 1) / s + 1);
            let t = TapTable::new(h, wd, k, s, (oh, ow));
            let x: Vec<f32> = (0..b * c * h * wd)
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let w: Vec<f32> = (0..c * k * k).map(|i| (i as f32 * 0.11).cos()).collect();
            let dy: Vec<f32> = (0..b * c * oh * ow)
                .map(|i| (i as f32 * 0.23).cos())
                .collect();
            let want = reference(&t, (b, c), (&x, &w, &dy));
            for level in ALL {
                let got = capped(level, || {
                    let (y, xt) = forward(&t, (b, c), &x, &w);
                    let (dx, dw) = backward(&t, (b, c), (&x, Some(xt)), &w, &dy);
                    [y, dx, dw]
                });
                assert_eq!(got, want, "b {b} c {c} {h}x{wd} k {k} s {s} {level:?}");
            }
        }
    }

    /// The backward gives the same bits with the forward's transposed input or without.
    #[test]
    fn kept_input_changes_nothing() {
        let (b, c) = (5, 3);
        let t = TapTable::new(3, 3, 3, 1, (3, 3));
        let x: Vec<f32> = (0..b * c * 9).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..c * 9).map(|i| (i as f32 * 0.11).cos()).collect();
        let dy: Vec<f32> = (0..b * c * 9).map(|i| (i as f32 * 0.23).cos()).collect();
        let (_, xt) = forward(&t, (b, c), &x, &w);
        let without = backward(&t, (b, c), (&x, None), &w, &dy);
        assert_eq!(without, backward(&t, (b, c), (&x, Some(xt)), &w, &dy));
    }
}
