//! From lowered layers and weights to engine steps: batch norm folded into each convolution,
//! layer scales folded where the convolution is linear, weights reordered for the kernels.

use super::conv::{Chain, Conv, Kernel};
use super::mqa::{Kv, Mqa};
use super::Step;
use crate::export::fold::scale_outputs;
use crate::export::weights::Weights;
use crate::model::Network;
use crate::ops::nhwc::{DenseWeight, Window};
use crate::ops::Act;
use crate::space::lower::{
    lower, tap_at, ConvBnSpec, ConvChain, ConvSpec, KvSpec, LayerScaleSpec, MqaSpec, Op,
};
use crate::space::Activation;
use anyhow::{ensure, Result};

/// The steps of `net` in forward order, each with the feature-tap position of its output
/// ([`tap_at`]).
pub fn steps(net: &Network) -> Result<Vec<(Step, Option<Option<usize>>)>> {
    let weights = Weights::new(net.params.tensors());
    lower(&net.arch)
        .into_iter()
        .map(|layer| {
            let at = tap_at(&net.arch, layer.role);
            let step = match &layer.op {
                Op::Convs(chain) => Step::Chain(self::chain(&weights, chain, layer.out_ch)?),
                Op::Mqa(spec) => Step::Mqa(Box::new(mqa(&weights, spec, layer.in_ch)?)),
                Op::Pool => Step::Pool,
                Op::Classifier { .. } => {
                    let (cin, cout) = (layer.in_ch, layer.out_ch);
                    let name = &layer.name;
                    let w = weights.values(&format!("{name}.weight"), cout * cin)?;
                    Step::Linear(Conv {
                        kernel: Kernel::Pointwise(DenseWeight::from_oihw(&w, cout, cin, 1)),
                        bias: weights.values(&format!("{name}.bias"), cout)?,
                        act: Act::Identity,
                        gamma: None,
                    })
                }
            };
            Ok((step, at))
        })
        .collect()
}

/// A conv chain over `c` output channels; a layer scale is folded into a linear last conv and
/// otherwise applied in its epilogue.
fn chain(weights: &Weights, chain: &ConvChain, c: usize) -> Result<Chain> {
    ensure!(!chain.convs.is_empty(), "a conv chain without convolutions");
    let gamma = layer_scale(weights, &chain.layer_scale, c)?;
    let last = chain.convs.len() - 1;
    let convs = chain
        .convs
        .iter()
        .enumerate()
        .map(|(i, spec)| conv_bn(weights, spec, gamma.as_deref().filter(|_| i == last)))
        .collect::<Result<_>>()?;
    Ok(Chain {
        convs,
        residual: chain.residual,
    })
}

/// The gamma of a layer scale over `c` channels, if there is one.
fn layer_scale(
    weights: &Weights,
    spec: &Option<LayerScaleSpec>,
    c: usize,
) -> Result<Option<Vec<f32>>> {
    spec.as_ref()
        .map(|ls| weights.values(&format!("{}.gamma", ls.name), c))
        .transpose()
}

/// A convolution with its batch norm folded in and its activation, then the per-channel
/// `gamma` of a layer scale when given: folded into the weight and bias of a linear convolution
/// (`γ·(W x + b) = (γW) x + γb`), applied in the epilogue after an activation.
fn conv_bn(weights: &Weights, spec: &ConvBnSpec, gamma: Option<&[f32]>) -> Result<Conv> {
    let (mut w, mut bias) = weights.conv_bn_folded(spec)?;
    let act = act(spec.act);
    let unfolded = match gamma {
        Some(g) if act == Act::Identity => {
            scale_outputs(&mut w, Some(&mut bias), g);
            None
        }
        other => other.map(<[f32]>::to_vec),
    };
    Ok(Conv {
        kernel: kernel(&spec.conv, &w),
        bias,
        act,
        gamma: unfolded,
    })
}

/// A bias-free convolution, with a layer scale's `gamma` folded in when given.
fn plain(weights: &Weights, spec: &ConvSpec, gamma: Option<&[f32]>) -> Result<Conv> {
    let mut w = weights.conv(spec)?;
    if let Some(g) = gamma {
        scale_outputs(&mut w, None, g);
    }
    Ok(Conv {
        kernel: kernel(spec, &w),
        bias: vec![0.0; spec.out_ch],
        act: Act::Identity,
        gamma: None,
    })
}

/// The kernel for `spec` with its weight `w` (`[out, in / groups, k, k]`) reordered.
fn kernel(spec: &ConvSpec, w: &[f32]) -> Kernel {
    let (k, s) = (spec.kernel, spec.stride);
    if spec.depthwise {
        let taps = k * k;
        let c = spec.out_ch;
        let mut weight = vec![0.0; w.len()];
        for ch in 0..c {
            for t in 0..taps {
                weight[t * c + ch] = w[ch * taps + t];
            }
        }
        let win = Window {
            kernel: k,
            stride: s,
        };
        return Kernel::Depthwise { weight, win };
    }
    let weight = DenseWeight::from_oihw(w, spec.out_ch, spec.in_ch, k);
    if (k, s) == (1, 1) {
        Kernel::Pointwise(weight)
    } else {
        Kernel::Dense { weight, stride: s }
    }
}

fn act(a: Option<Activation>) -> Act {
    match a {
        None => Act::Identity,
        Some(Activation::Relu) => Act::Relu,
        Some(Activation::Gelu) => Act::Gelu,
    }
}

/// A Mobile MQA block on `c` channels.
fn mqa(weights: &Weights, spec: &MqaSpec, c: usize) -> Result<Mqa> {
    let kv = |kv: &KvSpec| -> Result<Kv> {
        Ok(Kv {
            down: kv
                .down
                .as_ref()
                .map(|d| conv_bn(weights, d, None))
                .transpose()?,
            proj: plain(weights, &kv.proj, None)?,
        })
    };
    let gamma = layer_scale(weights, &spec.layer_scale, c)?;
    Ok(Mqa {
        norm: weights
            .bn(&spec.norm, c)?
            .affine(crate::model::layers::BN_EPS),
        heads: spec.heads,
        key_dim: spec.key_dim,
        value_dim: spec.value_dim,
        query: plain(weights, &spec.query, None)?,
        key: kv(&spec.key)?,
        value: kv(&spec.value)?,
        output: plain(weights, &spec.output, gamma.as_deref())?,
    })
}
