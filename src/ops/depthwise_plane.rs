//! The per-plane sums of the depthwise convolution's flat layout ([`super::depthwise`]), with
//! each output summed in registers over all taps.
//!
//! One pass per tap over the plane (an `axpy` or a dot product per tap) reads and writes the
//! accumulator at every tap, and on the small planes of a network's last stages (runs of 7 to 14
//! values) spends most of its time in call overhead and scalar tails. Here a block of up to four
//! rows of 8 or 16 sums stays in registers while every tap is added. The operations and their
//! order per output are those of the per-tap passes (a multiply, then an add, tap after tap; the
//! same eight lanes per dot product), so the results are bit-identical to them.

use std::mem::MaybeUninit;

use super::simd::multiversion;
use super::vecmath::{dot_lanes, DOT_LANES};

/// Rows of sums over the taps: sum `(r, c)` is `Σ_t wts[t] · src[base + offs[t] + r·stride + c]`,
/// for `r < rows`, `c < cols`, taps in order, starting from zero.
///
/// `src` must extend at least 16 values past the last value a sum reads (blocks read whole
/// vectors and drop the lanes past `cols`).
pub(super) struct RowSums<'a> {
    pub src: &'a [f32],
    pub base: usize,
    pub stride: usize,
    pub rows: usize,
    pub cols: usize,
    pub offs: &'a [usize],
    pub wts: &'a [f32],
}

/// Where [`sum_rows`] writes sum `(r, c)`: `out[start + r·row_step + c·col_step]`.
#[derive(Clone, Copy)]
pub(super) struct Placement {
    pub start: usize,
    pub row_step: usize,
    pub col_step: usize,
}

impl Placement {
    /// Sum `(r, c)` at `start + r·row_step + c·col_step`.
    pub(super) fn new(start: usize, row_step: usize, col_step: usize) -> Self {
        Self {
            start,
            row_step,
            col_step,
        }
    }
}

/// Rows per block: four independent chains of adds hide the add latency.
const ROWS: usize = 4;
/// Slack that a source buffer needs past its last value read.
pub(super) const SLACK: usize = 16;

multiversion! {
    /// Computes every sum of `job` and writes it to `out` as `place` says.
    pub(super) fn sum_rows(job: &RowSums, out: &mut [MaybeUninit<f32>], place: Placement) {
        if job.cols <= 8 {
            rows_of::<8>(job, out, place);
        } else {
            rows_of::<16>(job, out, place);
        }
    }
}

/// [`sum_rows`] in blocks of [`ROWS`] rows by `L` columns.
#[inline(always)]
fn rows_of<const L: usize>(job: &RowSums, out: &mut [MaybeUninit<f32>], place: Placement) {
    // Rows that follow each other in `out` and fit one block: a short row may then be written
    // as a whole vector whose extra lanes land on the next row, written after it.
    let dense = place.col_step == 1 && place.row_step == job.cols && job.cols <= L;
    let spill_end = match dense {
        true => place.start + job.rows * job.cols,
        false => 0,
    };
    for r in (0..job.rows).step_by(ROWS) {
        for c in (0..job.cols).step_by(L) {
            let base = job.base + r * job.stride + c;
            let n = job.cols.min(c + L) - c;
            let at = place.start + r * place.row_step + c * place.col_step;
            match job.rows - r {
                1 => put(block::<1, L>(job, base), n, out, at, (place, spill_end)),
                2 => put(block::<2, L>(job, base), n, out, at, (place, spill_end)),
                3 => put(block::<3, L>(job, base), n, out, at, (place, spill_end)),
                _ => put(block::<ROWS, L>(job, base), n, out, at, (place, spill_end)),
            }
        }
    }
}

/// `R` rows of `L` sums starting at `src[base]`.
#[inline(always)]
fn block<const R: usize, const L: usize>(job: &RowSums, base: usize) -> [[f32; L]; R] {
    let mut acc = [[0f32; L]; R];
    let (offs, stride) = (job.offs, job.stride);
    // Every value the block reads, checked once, so that its loads need no check each.
    let max_off = offs.iter().copied().max().unwrap_or(0);
    let reach = (R - 1)
        .checked_mul(stride)
        .and_then(|v| v.checked_add(L + max_off))
        .expect("a block's extent fits in usize");
    let src = &job.src[base..base + reach];
    for (&off, &wv) in offs.iter().zip(job.wts) {
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `off + r·stride + L ≤ max_off + (R − 1)·stride + L = src.len()`, and
            // that sum did not overflow.
            let x = unsafe { &*src.as_ptr().add(off + r * stride).cast::<[f32; L]>() };
            for l in 0..L {
                acc[l] += wv * x[l];
            }
        }
    }
    acc
}

/// Writes the first `n` sums of each row of a block; a row whose whole vector ends by
/// `spill_end` (rows back to back, zero otherwise) is written as that vector.
#[inline(always)]
fn put<const R: usize, const L: usize>(
    sums: [[f32; L]; R],
    n: usize,
    out: &mut [MaybeUninit<f32>],
    at: usize,
    (place, spill_end): (Placement, usize),
) {
    for (r, row) in sums.iter().enumerate() {
        let start = at + r * place.row_step;
        if place.col_step == 1 && (n == L || start + L <= spill_end) {
            let dst: &mut [MaybeUninit<f32>; L] =
                (&mut out[start..start + L]).try_into().expect("L slots");
            for (d, &v) in dst.iter_mut().zip(row) {
                d.write(v);
            }
        } else {
            for (l, &v) in row[..n].iter().enumerate() {
                out[start + l * place.col_step].write(v);
            }
        }
    }
}

/// Lanes of one dot product, as in [`dot_lanes`].
const LANES: usize = DOT_LANES;
/// The most taps whose dot products share one pass over the run.
const TAPS_PER_PASS: usize = 8;

/// One dot product per tap, accumulated over several runs (the planes of one channel) before
/// a single reduction: eight lanes and a scalar tail per tap.
pub(super) struct TapLanes {
    lanes: Vec<[f32; LANES]>,
    tails: Vec<f32>,
}

impl TapLanes {
    /// Zeroed lanes for `taps` taps.
    pub(super) fn new(taps: usize) -> Self {
        Self {
            lanes: vec![[0.0; LANES]; taps],
            tails: vec![0.0; taps],
        }
    }

    /// Sets every tap's lanes back to zero.
    pub(super) fn clear(&mut self) {
        self.lanes.fill([0.0; LANES]);
        self.tails.fill(0.0);
    }

    /// Adds the products of `a` and `b` to tap `t`'s lanes, as [`dot_lanes`] takes them.
    /// Inlined, to be compiled at the calling kernel's SIMD level.
    #[inline(always)]
    pub(super) fn add_dot(&mut self, t: usize, a: &[f32], b: &[f32]) {
        self.tails[t] += dot_lanes(a, b, &mut self.lanes[t]);
    }

    /// Each tap's dot product: its lanes summed in order, then its tail.
    pub(super) fn totals(&self) -> impl Iterator<Item = f32> + '_ {
        let lanes = self.lanes.iter().map(|l| l.iter().sum::<f32>());
        lanes.zip(&self.tails).map(|(l, t)| l + t)
    }
}

multiversion! {
    /// Adds to the lanes of every tap `t` the products of `flat` with the run of `buf`
    /// starting at `taps[t]` (as long as `flat`), eight lanes as [`dot_lanes`]
    /// takes them.
    pub(super) fn tap_dots(flat: &[f32], buf: &[f32], taps: &[usize], acc: &mut TapLanes) {
        // Passes of equal size: 25 taps as 7 + 6 + 6 + 6, not 8 + 8 + 8 + 1.
        let passes = taps.len().div_ceil(TAPS_PER_PASS).max(1);
        let per_pass = taps.len().div_ceil(passes).max(1);
        let lanes = acc.lanes.chunks_mut(per_pass).zip(acc.tails.chunks_mut(per_pass));
        for (taps, acc) in taps.chunks(per_pass).zip(lanes) {
            match taps.len() {
                TAPS_PER_PASS => dots_of::<TAPS_PER_PASS>(flat, buf, taps, acc),
                1 => dots_of::<1>(flat, buf, taps, acc),
                2 => dots_of::<2>(flat, buf, taps, acc),
                3 => dots_of::<3>(flat, buf, taps, acc),
                4 => dots_of::<4>(flat, buf, taps, acc),
                5 => dots_of::<5>(flat, buf, taps, acc),
                6 => dots_of::<6>(flat, buf, taps, acc),
                _ => dots_of::<7>(flat, buf, taps, acc),
            }
        }
    }
}

/// [`tap_dots`] for `T` taps in one pass, their lanes in registers.
#[inline(always)]
fn dots_of<const T: usize>(
    flat: &[f32],
    buf: &[f32],
    taps: &[usize],
    (lanes_out, tails): (&mut [[f32; LANES]], &mut [f32]),
) {
    let n = flat.len();
    let runs: [&[f32]; T] = std::array::from_fn(|t| &buf[taps[t]..taps[t] + n]);
    let mut lanes: [[f32; LANES]; T] = std::array::from_fn(|t| lanes_out[t]);
    let full = n - n % LANES;
    for at in (0..full).step_by(LANES) {
        let f: &[f32; LANES] = flat[at..at + LANES].try_into().expect("a lane's values");
        for (lanes, run) in lanes.iter_mut().zip(&runs) {
            let x: &[f32; LANES] = run[at..at + LANES].try_into().expect("a lane's values");
            for i in 0..LANES {
                lanes[i] += f[i] * x[i];
            }
        }
    }
    lanes_out[..T].copy_from_slice(&lanes);
    for (run, tail) in runs.iter().zip(tails.iter_mut()) {
        let products = flat[full..].iter().zip(&run[full..]).map(|(f, x)| f * x);
        *tail += products.sum::<f32>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::simd::{capped, ALL};
    use crate::ops::uninit::written;
    use crate::ops::vecmath::{axpy, dot};

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.731).sin()).collect()
    }

    /// The sums equal one `axpy` per tap into a zeroed accumulator, bit for bit, on every
    /// SIMD level, for block shapes with partial rows and columns and a strided placement.
    #[test]
    fn sums_match_one_axpy_per_tap() {
        let src = values(600, 1.0);
        let (offs, wts) = ([0usize, 1, 2, 13, 14, 15, 30], values(7, 9.0));
        // Gap 0 gives rows back to back, which short rows write as whole vectors.
        for (rows, cols, col_step, gap) in [
            (7, 7, 1, 1),
            (7, 7, 1, 0),
            (11, 5, 1, 1),
            (11, 5, 1, 0),
            (5, 14, 1, 1),
            (5, 14, 1, 0),
            (6, 20, 1, 0),
            (3, 20, 2, 1),
            (1, 1, 1, 0),
            (6, 9, 3, 1),
        ] {
            let stride = 23;
            let place = Placement::new(2, cols * col_step + gap, col_step);
            // Slots past the last sum must keep their values.
            let len = place.start + rows * place.row_step + SLACK;
            let mut want = vec![f32::NAN; len];
            for r in 0..rows {
                let mut acc = vec![0f32; cols];
                for (&o, &w) in offs.iter().zip(&wts) {
                    let at = 5 + o + r * stride;
                    axpy(w, &src[at..at + cols], &mut acc);
                }
                for (c, v) in acc.into_iter().enumerate() {
                    want[place.start + r * place.row_step + c * col_step] = v;
                }
            }
            let job = RowSums {
                src: &src,
                base: 5,
                stride,
                rows,
                cols,
                offs: &offs,
                wts: &wts,
            };
            for limit in ALL {
                // SAFETY: every slot is written first (NaN), then the sums overwrite theirs.
                let got = unsafe {
                    written(len, |out| {
                        out.fill(MaybeUninit::new(f32::NAN));
                        capped(limit, || sum_rows(&job, out, place));
                    })
                };
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{rows}x{cols} step {col_step} gap {gap} {limit:?}"
                );
            }
        }
    }

    /// Every tap's lanes over one run give the product `dot` gives, and over several runs
    /// the products of the runs laid end to end; on every SIMD level alike.
    #[test]
    fn dots_match_one_dot_per_tap() {
        let buf = values(400, 3.0);
        for (n, ntaps) in [(64, 9), (200, 8), (77, 25), (5, 3), (31, 17)] {
            let flats = [values(n, 7.0), values(n, 2.0)];
            let taps: Vec<usize> = (0..ntaps).map(|t| (t * 7) % 150).collect();
            let one: Vec<f32> = taps
                .iter()
                .map(|&t| dot(&flats[0], &buf[t..t + n]))
                .collect();
            let both: Vec<f64> = taps
                .iter()
                .map(|&t| {
                    let pairs = flats.iter().flat_map(|f| f.iter().zip(&buf[t..t + n]));
                    pairs.map(|(&f, &x)| f64::from(f) * f64::from(x)).sum()
                })
                .collect();
            let mut first = None;
            for limit in ALL {
                let mut acc = TapLanes::new(ntaps);
                capped(limit, || tap_dots(&flats[0], &buf, &taps, &mut acc));
                assert_eq!(acc.totals().collect::<Vec<_>>(), one, "run {n} {limit:?}");
                capped(limit, || tap_dots(&flats[1], &buf, &taps, &mut acc));
                let got: Vec<f32> = acc.totals().collect();
                for (g, w) in got.iter().zip(&both) {
                    assert!(
                        (f64::from(*g) - w).abs() < 1e-4 * (1.0 + w.abs()),
                        "{g} vs {w}"
                    );
                }
                let bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                assert_eq!(*first.get_or_insert(bits.clone()), bits, "{limit:?}");
                acc.clear();
                assert!(acc.totals().all(|v| v == 0.0));
            }
        }
    }
}
