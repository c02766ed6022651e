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
    let model = load(arch, size).with_context(what)?;
    let input: Tensor = tract_ndarray::Array4::<f32>::zeros((1, arch.in_chans, size, size)).into();
    let input = input.into_tvalue();
    let mut state = model.spawn().with_context(what)?;
    let mut times = Vec::with_capacity(repeats.max(1));
    for i in 0..repeats.max(1) + WARMUP_RUNS {
        let t0 = Instant::now();
        state.run(tvec![input.clone()]).with_context(what)?;
        if i >= WARMUP_RUNS {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(median(&mut times))
}

/// `arch` exported at `size`×`size` and planned by tract for a batch-1 input.
fn load(arch: &Arch, size: usize) -> Result<Arc<TypedRunnableModel>> {
    let net = Network::new(arch, &Device::Cpu, 0).context("building the network")?;
    let bytes = export_onnx(&net, (size, size), &ExportOptions::default())?;
    let shape = tvec![1, arch.in_chans, size, size];
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .context("reading the exported model in tract")?
        .with_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape))?
        .into_optimized()
        .context("optimizing the model in tract")?
        .into_runnable()
        .context("planning the model in tract")?;
    Ok(model)
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
    fn a_zero_size_is_an_error() {
        let arch = preset("conv-small", 1.0).unwrap();
        let e = runtime_latency(&arch, 0, 3).unwrap_err();
        assert!(e.to_string().contains("must be positive"), "{e}");
    }
}
