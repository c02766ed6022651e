//! Depthwise convolution of small planes, with the batch as the innermost dimension.
//!
//! On a plane a few pixels wide, every kernel tap covers a run of a few pixels, and loop
//! overhead outweighs arithmetic. Here `[B, C, P]` is transposed to `[C, P, B]`, so each
//! (output pixel, tap) pair becomes one `axpy` (forward, input gradient) or one dot product
//! (weight gradient) over `B` contiguous values. A [`TapTable`] lists, for every output pixel,
//! the taps that land inside the input and the input pixel each reads.
//!
//! Channels run in parallel; within a channel the order of every sum is fixed, so reruns are
//! bit-identical.

use rayon::prelude::*;

use super::channel_major::transpose;
use super::depthwise_plane::TapLanes;
use super::uninit::{written, zeroed};
use super::vecmath::axpy;

/// The taps of a depthwise convolution (kernel `k`, stride `s`, padding `k / 2`) that fall
/// inside an `h x w` input, per output pixel.
pub(crate) struct TapTable {
    /// Output pixel `q` uses `taps[start[q]..start[q + 1]]`.
    start: Vec<usize>,
    /// `(tap index i * k + j, input pixel)`.
    taps: Vec<(usize, usize)>,
    in_pixels: usize,
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
        Self {
            start,
            taps,
            in_pixels: h * w,
            kk: k * k,
        }
    }

    fn out_pixels(&self) -> usize {
        self.start.len() - 1
    }

    /// The `(tap, input pixel)` pairs of output pixel `q`.
    fn of(&self, q: usize) -> &[(usize, usize)] {
        &self.taps[self.start[q]..self.start[q + 1]]
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
    let (p, q) = (t.in_pixels, t.out_pixels());
    let xt = transpose(x, b, c * p);
    // SAFETY: every channel's `q · b` slots are zeroed before the taps add into them.
    let yt = unsafe {
        written(c * q * b, |yt| {
            yt.par_chunks_mut(q * b).enumerate().for_each(|(ch, yc)| {
                let (xc, wc) = (
                    &xt[ch * p * b..(ch + 1) * p * b],
                    &w[ch * t.kk..(ch + 1) * t.kk],
                );
                for (qi, yq) in zeroed(yc).chunks_exact_mut(b).enumerate() {
                    for &(tap, ip) in t.of(qi) {
                        axpy(wc[tap], &xc[ip * b..(ip + 1) * b], yq);
                    }
                }
            })
        })
    };
    (transpose(&yt, c * q, b), xt)
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
    let (p, q, kk) = (t.in_pixels, t.out_pixels(), t.kk);
    let xt = match xt {
        Some(xt) if xt.len() == x.len() => xt,
        _ => transpose(x, b, c * p),
    };
    let dyt = transpose(dy, b, c * q);
    let mut dw = vec![0f32; c * kk];
    // SAFETY: every channel's `p · b` slots are zeroed before the taps add into them.
    let dxt = unsafe {
        written(c * p * b, |dxt| {
            dxt.par_chunks_mut(p * b)
                .zip(dw.par_chunks_mut(kk))
                .enumerate()
                .for_each_init(
                    || TapLanes::new(kk),
                    |acc, (ch, (dxc, dwc))| {
                        let dxc = zeroed(dxc);
                        let xc = &xt[ch * p * b..(ch + 1) * p * b];
                        let dyc = &dyt[ch * q * b..(ch + 1) * q * b];
                        let wc = &w[ch * kk..(ch + 1) * kk];
                        acc.clear();
                        for (qi, dyq) in dyc.chunks_exact(b).enumerate() {
                            for &(tap, ip) in t.of(qi) {
                                let xq = &xc[ip * b..(ip + 1) * b];
                                axpy(wc[tap], dyq, &mut dxc[ip * b..(ip + 1) * b]);
                                acc.add_dot(tap, dyq, xq);
                            }
                        }
                        for (d, a) in dwc.iter_mut().zip(acc.totals()) {
                            *d = a;
                        }
                    },
                )
        })
    };
    (transpose(&dxt, c * p, b), dw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_the_taps_inside_the_input() {
        // 3x3 kernel, stride 2, padding 1 on a 3x3 input: outputs 2x2. Output (0, 0) centers
        // on input (0, 0) and sees the 2x2 corner; output (1, 1) centers on (2, 2).
        let t = TapTable::new(3, 3, 3, 2, (2, 2));
        assert_eq!(t.out_pixels(), 4);
        assert_eq!(t.of(0), [(4, 0), (5, 1), (7, 3), (8, 4)]);
        assert_eq!(t.of(3), [(0, 4), (1, 5), (3, 7), (4, 8)]);
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
