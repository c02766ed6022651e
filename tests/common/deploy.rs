//! Shared by the deployment tests (ONNX export, native engine): random batch-norm statistics
//! so that folding matters, the error measure, and search-space samples varied beyond what
//! `small.toml` draws.

use candle_core::{Device, Tensor};
use mnv4_lab::model::Network;
use mnv4_lab::space::{Activation, Arch, Block};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The largest relative error a deployed network may show against candle.
pub const TOLERANCE: f32 = 1e-4;

/// `worst`, after asserting it within [`TOLERANCE`] (the message names `arch` and `res`).
pub fn within_tolerance(worst: f32, arch: &Arch, res: (usize, usize)) -> f32 {
    assert!(
        worst <= TOLERANCE,
        "{}: relative error {worst:.2e} at {res:?}",
        arch.to_block_string()
    );
    worst
}

/// Random BN statistics and affine parameters, layer-scale gammas and classifier bias.
pub fn randomize_stats(net: &Network, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let tensors = net.params.tensors();
    for (name, t) in &tensors {
        let is_bn = |s: &str| {
            name.strip_suffix(s)
                .is_some_and(|p| tensors.contains_key(&format!("{p}.running_mean")))
        };
        let range = if name.ends_with(".running_mean") {
            -0.5..0.5
        } else if name.ends_with(".running_var") {
            0.3..2.0
        } else if is_bn(".weight") || name.ends_with(".gamma") {
            0.5..1.5
        } else if is_bn(".bias") || name == "classifier.bias" {
            -0.3..0.3
        } else {
            continue;
        };
        let v: Vec<f32> = (0..t.elem_count())
            .map(|_| rng.random_range(range.clone()))
            .collect();
        let value = Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap();
        net.params.set(name, &value).unwrap();
    }
}

/// max |a − b| / max |b|.
pub fn rel_err(onnx: &[f32], ours: &[f32]) -> f32 {
    assert_eq!(onnx.len(), ours.len(), "output sizes differ");
    let scale = ours.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let diff = onnx
        .iter()
        .zip(ours)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

/// A search-space sample varied beyond what `small.toml` draws: GELU, layer scale, 1 input
/// channel, and stride-2 key/value down-sampling in MQA blocks.
pub fn vary(mut arch: Arch, i: usize) -> Arch {
    if i.is_multiple_of(3) {
        arch.act = Activation::Gelu;
    }
    if i.is_multiple_of(2) {
        arch.layer_scale = Some(1e-5);
    }
    arch.in_chans = if i % 4 == 1 { 1 } else { 3 };
    for block in arch.stages.iter_mut().flat_map(|s| s.blocks.iter_mut()) {
        if let Block::Mqa {
            kv_stride,
            kv_kernel,
            ..
        } = block
        {
            if i % 2 == 1 {
                *kv_stride = 2;
                *kv_kernel = 3;
            }
        }
    }
    arch
}
