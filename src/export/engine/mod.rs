//! The native inference engine: a network compiled for eval mode and run on channels-last maps
//! by this crate's own kernels ([`crate::ops::nhwc`]). Batch norm and foldable layer scales are
//! folded into the convolutions at compile time, and each convolution's bias, activation and
//! residual run in its epilogue while its output block is still in cache. Layout conversions
//! happen only at the network's edges.
//!
//! The engine is compiled from the same lowered layers ([`crate::space::lower`]) and timm-named
//! weights as the ONNX export, and computes what [`Network::forward`] computes in eval mode.

mod compile;
mod conv;
mod mqa;
mod profile;

use crate::model::Network;
use crate::ops::nhwc::{global_average, Nhwc};
use crate::space::{check_tap_indices, FeatureTap};
use anyhow::{ensure, Result};
use conv::{Chain, Conv};
use mqa::Mqa;
pub use profile::{Entry, Profile};
use rayon::prelude::*;

/// One step of a compiled network.
enum Step {
    Chain(Chain),
    Mqa(Box<Mqa>),
    Pool,
    /// The classifier: a 1×1 convolution on the pooled `[batch, 1, 1, C]` map.
    Linear(Conv),
}

/// A network compiled for batch inference in eval mode.
pub struct Engine {
    in_chans: usize,
    num_classes: usize,
    steps: Vec<Step>,
    /// Per step, the feature-tap position of its output ([`crate::space::lower::tap_at`]).
    tap_at: Vec<Option<Option<usize>>>,
    taps: Vec<FeatureTap>,
}

/// A feature map the engine reports, in the layout [`Network::forward_with`] gives it.
pub struct FeatureMap {
    /// `[batch, C, H, W]` row-major.
    pub values: Vec<f32>,
    /// `[batch, C, H, W]`.
    pub dims: [usize; 4],
}

impl Engine {
    /// Compiles `net` (its current weights) for eval-mode inference.
    pub fn compile(net: &Network) -> Result<Self> {
        let (steps, tap_at) = compile::steps(net)?.into_iter().unzip();
        Ok(Self {
            in_chans: net.arch.in_chans,
            num_classes: net.arch.num_classes,
            steps,
            tap_at,
            taps: net.arch.feature_taps(),
        })
    }

    /// [`Self::run`] with the maps at feature taps `taps` (indices into
    /// [`crate::space::Arch::feature_taps`]), as [`Network::forward_with`] returns them in eval
    /// mode.
    pub fn run_with_taps(
        &self,
        input: &[f32],
        batch: usize,
        res: (usize, usize),
        taps: &[usize],
    ) -> Result<(Vec<f32>, Vec<FeatureMap>)> {
        check_tap_indices(taps, self.taps.len()).map_err(anyhow::Error::msg)?;
        self.pass(input, batch, res, taps, &mut Profile::default())
    }

    /// The logits `[batch, classes]` (row-major) of `input`, `[batch, C, H, W]` row-major.
    /// Runs on the kernels' worker pool ([`crate::ops::on_workers`]).
    pub fn run(&self, input: &[f32], batch: usize, res: (usize, usize)) -> Result<Vec<f32>> {
        self.run_profiled(input, batch, res, &mut Profile::default())
    }

    /// [`Self::run`], recording each kernel's time in `prof` when it records.
    pub fn run_profiled(
        &self,
        input: &[f32],
        batch: usize,
        res: (usize, usize),
        prof: &mut Profile,
    ) -> Result<Vec<f32>> {
        let (logits, _) = self.pass(input, batch, res, &[], prof)?;
        debug_assert_eq!(logits.len(), batch * self.num_classes);
        Ok(logits)
    }

    /// One pass over `input` (`[batch, C, H, W]`, checked against its length) on the worker
    /// pool: the layout change, then [`Self::forward`].
    fn pass(
        &self,
        input: &[f32],
        batch: usize,
        (h, w): (usize, usize),
        taps: &[usize],
        prof: &mut Profile,
    ) -> Result<(Vec<f32>, Vec<FeatureMap>)> {
        let c = self.in_chans;
        ensure!(
            batch > 0 && h > 0 && w > 0,
            "the batch and input size must be positive, got batch {batch} at {h}×{w}"
        );
        ensure!(
            input.len() == batch * c * h * w,
            "the input has {} values, expected batch {batch} × {c} channels × {h} × {w}",
            input.len()
        );
        let shape = Nhwc { batch, h, w, c };
        Ok(crate::ops::on_workers(|| {
            let x = prof.time(
                "layout",
                || format!("{h}×{w} {c}"),
                || to_channels_last(input, shape),
            );
            self.forward(x, shape, taps, prof)
        }))
    }

    /// The logits, and the maps at `taps` (validated indices) as each passes by.
    fn forward(
        &self,
        mut x: Vec<f32>,
        mut shape: Nhwc,
        taps: &[usize],
        prof: &mut Profile,
    ) -> (Vec<f32>, Vec<FeatureMap>) {
        let mut found: Vec<Option<FeatureMap>> = taps.iter().map(|_| None).collect();
        for (step, at) in self.steps.iter().zip(&self.tap_at) {
            (x, shape) = Self::step(step, &x, shape, prof);
            for (slot, &i) in found.iter_mut().zip(taps) {
                if Some(self.taps[i].after_stage) == *at {
                    *slot = Some(to_channels_first(&x, shape));
                }
            }
        }
        let maps = found
            .into_iter()
            .map(|m| m.expect("every tap is visited"))
            .collect();
        (x, maps)
    }

    /// One step on `x`: its output and the output's shape.
    fn step(step: &Step, x: &[f32], shape: Nhwc, prof: &mut Profile) -> (Vec<f32>, Nhwc) {
        match step {
            Step::Chain(chain) => chain.run(x, shape, prof),
            Step::Mqa(mqa) => mqa.run(x, shape, prof),
            Step::Pool => {
                let describe = || format!("{}×{} {}", shape.h, shape.w, shape.c);
                let pooled = prof.time("pool", describe, || global_average(x, shape));
                (
                    pooled,
                    Nhwc {
                        h: 1,
                        w: 1,
                        ..shape
                    },
                )
            }
            Step::Linear(linear) => linear.run(x, shape, None, prof),
        }
    }
}

/// `[batch, H, W, C]` → `[batch, C, H, W]`, with its dims.
fn to_channels_first(x: &[f32], s: Nhwc) -> FeatureMap {
    let hw = s.h * s.w;
    let mut y = vec![0.0; x.len()];
    for (image, src) in y.chunks_exact_mut(s.c * hw).zip(x.chunks_exact(s.c * hw)) {
        for (p, pixel) in src.chunks_exact(s.c).enumerate() {
            for (ch, &v) in pixel.iter().enumerate() {
                image[ch * hw + p] = v;
            }
        }
    }
    FeatureMap {
        values: y,
        dims: [s.batch, s.c, s.h, s.w],
    }
}

/// `[batch, C, H, W]` → `[batch, H, W, C]`, written pixel after pixel, a block of image rows per
/// task.
fn to_channels_last(x: &[f32], s: Nhwc) -> Vec<f32> {
    let hw = s.h * s.w;
    let block = 8 * s.w;
    let mut y = vec![0.0; x.len()];
    y.par_chunks_mut(s.c * hw)
        .zip(x.par_chunks(s.c * hw))
        .for_each(|(image, src)| {
            image
                .par_chunks_mut(block * s.c)
                .enumerate()
                .for_each(|(i, dst)| {
                    for (p, pixel) in (i * block..).zip(dst.chunks_exact_mut(s.c)) {
                        for (ch, v) in pixel.iter_mut().enumerate() {
                            *v = src[ch * hw + p];
                        }
                    }
                })
        });
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_last_moves_every_value_to_its_place() {
        // 19 rows: two whole blocks of eight rows and a short one, in each of two images.
        let s = Nhwc {
            batch: 2,
            h: 19,
            w: 5,
            c: 3,
        };
        let x: Vec<f32> = (0..s.len()).map(|i| i as f32).collect();
        let y = to_channels_last(&x, s);
        for (b, iy, ix, ch) in (0..s.batch).flat_map(|b| {
            (0..s.h).flat_map(move |iy| {
                (0..s.w).flat_map(move |ix| (0..s.c).map(move |ch| (b, iy, ix, ch)))
            })
        }) {
            let nchw = ((b * s.c + ch) * s.h + iy) * s.w + ix;
            let nhwc = ((b * s.h + iy) * s.w + ix) * s.c + ch;
            assert_eq!(
                y[nhwc], x[nchw],
                "image {b}, pixel ({iy}, {ix}), channel {ch}"
            );
        }
    }
}
