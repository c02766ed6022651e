//! A network's tensors by timm name, read as flat f32 values for deployment: length-checked,
//! with batch norms gathered into [`BnParams`] and folded into the convolution before them.

use super::fold::{fold_into_conv, BnParams};
use crate::model::layers::BN_EPS;
use crate::space::lower::{ConvBnSpec, ConvSpec};
use anyhow::{ensure, Context, Result};
use candle_core::Tensor;
use std::collections::BTreeMap;

/// The tensors of one network.
pub struct Weights {
    tensors: BTreeMap<String, Tensor>,
}

impl Weights {
    /// Over `tensors`, keyed by timm name.
    pub fn new(tensors: BTreeMap<String, Tensor>) -> Self {
        Self { tensors }
    }

    /// The values of tensor `name`, checked to hold `len` of them.
    pub fn values(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let t = self
            .tensors
            .get(name)
            .with_context(|| format!("the network has no tensor '{name}'"))?;
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        ensure!(
            v.len() == len,
            "tensor '{name}' has {} values, expected {len}",
            v.len()
        );
        Ok(v)
    }

    /// The batch norm with tensors under `prefix`, over `c` channels.
    pub fn bn(&self, prefix: &str, c: usize) -> Result<BnParams> {
        let get = |s: &str| self.values(&format!("{prefix}.{s}"), c);
        Ok(BnParams {
            weight: get("weight")?,
            bias: get("bias")?,
            running_mean: get("running_mean")?,
            running_var: get("running_var")?,
        })
    }

    /// The weight of convolution `spec` (`[out, in / groups, k, k]`).
    pub fn conv(&self, spec: &ConvSpec) -> Result<Vec<f32>> {
        self.values(&format!("{}.weight", spec.weight), conv_len(spec))
    }

    /// The weight and bias of `spec`'s convolution with its batch norm folded in.
    pub fn conv_bn_folded(&self, spec: &ConvBnSpec) -> Result<(Vec<f32>, Vec<f32>)> {
        let w = self.conv(&spec.conv)?;
        Ok(fold_into_conv(
            &w,
            &self.bn(&spec.bn, spec.conv.out_ch)?,
            BN_EPS,
        ))
    }
}

/// Number of weights of a lowered convolution.
fn conv_len(spec: &ConvSpec) -> usize {
    let groups = if spec.depthwise { spec.in_ch } else { 1 };
    spec.out_ch * (spec.in_ch / groups) * spec.kernel * spec.kernel
}
