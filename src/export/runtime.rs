//! Deployment latency: an architecture exported to ONNX in memory and timed in the tract ONNX
//! runtime on this machine, batch 1, as a deployed model would run.
//!
//! The weights are the builder's initial ones: latency does not depend on their values. The
//! input shape is fixed to `[1, C, size, size]` before tract optimizes the graph, so every shape
//! is concrete when it plans the kernels. tract runs the graph on one thread.

use super::{export_onnx, ExportOptions};
use crate::model::Network;
use crate::space::Arch;
use anyhow::{ensure, Context, Result};
use candle_core::Device;
use std::time::Instant;
use tract_onnx::prelude::*;

/// Untimed runs before the timed ones.
pub const WARMUP_RUNS: usize = 3;

/// Batch-1 latency of `arch` at `size`×`size` in the tract ONNX runtime: the median of `repeats`
/// runs (at least one) after [`WARMUP_RUNS`] warm-up runs, in milliseconds.
pub fn runtime_latency(arch: &Arch, size: usize, repeats: usize) -> Result<f64> {
    ensure!(size > 0, "the input size must be positive, got {size}");
    let what = || format!("runtime latency of {}", arch.to_block_string());
    let net = Network::new(arch, &Device::Cpu, 0)
        .context("building the network")
        .with_context(what)?;
    let mut model = RuntimeModel::new(&net, 1, (size, size)).with_context(what)?;
    let mut times = Vec::with_capacity(repeats.max(1));
    for i in 0..repeats.max(1) + WARMUP_RUNS {
        let t0 = Instant::now();
        model.run().with_context(what)?;
        if i >= WARMUP_RUNS {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(median(&mut times))
}

/// A network exported to ONNX and planned by tract for one fixed input shape, with a zero input
/// ready to run.
pub struct RuntimeModel {
    state: TypedSimpleState,
    input: TValue,
}

impl RuntimeModel {
    /// `net` exported at `res` = (H, W) and planned for a `[batch, C, H, W]` input.
    pub fn new(net: &Network, batch: usize, res: (usize, usize)) -> Result<Self> {
        ensure!(
            batch > 0 && res.0 > 0 && res.1 > 0,
            "the batch and input size must be positive, got batch {batch} at {}×{}",
            res.0,
            res.1
        );
        let chans = net.arch.in_chans;
        let bytes = export_onnx(net, res, &ExportOptions::default())?;
        let shape = tvec![batch, chans, res.0, res.1];
        let model = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .context("reading the exported model in tract")?
            .with_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))?
            .into_optimized()
            .context("optimizing the model in tract")?
            .into_runnable()
            .context("planning the model in tract")?;
        let input: Tensor =
            tract_ndarray::Array4::<f32>::zeros((batch, chans, res.0, res.1)).into();
        Ok(Self {
            state: model.spawn()?,
            input: input.into_tvalue(),
        })
    }

    /// One forward pass.
    pub fn run(&mut self) -> Result<()> {
        self.state.run(tvec![self.input.clone()])?;
        Ok(())
    }
}

/// The median of a non-empty sample (the upper one of an even count), sorting it.
fn median(times: &mut [f64]) -> f64 {
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::presets::preset;

    #[test]
    fn conv_small_runs_in_a_finite_positive_time() {
        let arch = preset("conv-small", 1.0).unwrap().with_io(3, 10);
        let ms = runtime_latency(&arch, 32, 3).unwrap();
        assert!(ms.is_finite() && ms > 0.0, "{ms}");
    }

    #[test]
    fn a_planned_model_runs_a_batch_at_a_rectangular_size_and_refuses_an_empty_batch() {
        let arch = preset("conv-small", 0.5).unwrap().with_io(1, 7);
        let net = Network::new(&arch, &Device::Cpu, 0).unwrap();
        let mut model = RuntimeModel::new(&net, 2, (40, 56)).unwrap();
        model.run().unwrap();
        let e = RuntimeModel::new(&net, 0, (40, 56)).err().unwrap();
        assert!(e.to_string().contains("must be positive"), "{e}");
    }

    #[test]
    fn a_zero_size_is_an_error() {
        let arch = preset("conv-small", 1.0).unwrap();
        let e = runtime_latency(&arch, 0, 3).unwrap_err();
        assert!(e.to_string().contains("must be positive"), "{e}");
    }
}
