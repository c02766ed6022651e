//! Lowered layers ([`crate::space::lower`]) as ONNX nodes: convolutions with their batch norm
//! (folded or kept), activations, layer scales, residuals, pooling and the classifier. The
//! weights are read by their timm names from the network's parameters.

use super::fold::scale_outputs;
use super::graph::{Attr, Graph};
use super::weights::Weights;
use crate::model::layers::BN_EPS;
use crate::space::lower::{ConvBnSpec, ConvChain, ConvSpec, LayerScaleSpec};
use crate::space::Activation;
use anyhow::Result;
use candle_core::Tensor;
use std::collections::BTreeMap;

/// Spatial size after a convolution with kernel `k`, stride `s` and padding `k / 2`.
pub fn conv_out(size: usize, k: usize, s: usize) -> usize {
    (size + 2 * (k / 2) - k) / s + 1
}

/// Writes nodes into a [`Graph`], reading weights from a network's tensors.
pub struct Emitter {
    pub graph: Graph,
    weights: Weights,
    keep_bn: bool,
}

impl Emitter {
    /// An emitter over `tensors` (by timm name); `keep_bn` keeps `BatchNormalization` nodes.
    pub fn new(tensors: BTreeMap<String, Tensor>, keep_bn: bool) -> Self {
        Self {
            graph: Graph::default(),
            weights: Weights::new(tensors),
            keep_bn,
        }
    }

    /// A convolution (grouped for depthwise), with `bias` when given.
    fn conv(&mut self, x: &str, spec: &ConvSpec, weight: &[f32], bias: Option<&[f32]>) -> String {
        let (k, s, p) = (
            spec.kernel as i64,
            spec.stride as i64,
            (spec.kernel / 2) as i64,
        );
        let groups = if spec.depthwise { spec.in_ch } else { 1 };
        let dims = [spec.out_ch, spec.in_ch / groups, spec.kernel, spec.kernel];
        let w = self
            .graph
            .constant(&format!("{}.weight", spec.weight), &dims, weight);
        let mut inputs = vec![x.to_string(), w];
        if let Some(b) = bias {
            let name = format!("{}.bias", spec.weight);
            inputs.push(self.graph.constant(&name, &[spec.out_ch], b));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let attrs = vec![
            ("kernel_shape", Attr::Ints(vec![k, k])),
            ("strides", Attr::Ints(vec![s, s])),
            ("pads", Attr::Ints(vec![p, p, p, p])),
            ("dilations", Attr::Ints(vec![1, 1])),
            ("group", Attr::Int(groups as i64)),
        ];
        self.graph.node("Conv", &spec.name, &inputs, attrs)
    }

    /// A bias-free convolution on its own (attention projections).
    pub fn plain_conv(&mut self, x: &str, spec: &ConvSpec) -> Result<String> {
        self.plain_conv_scaled(x, spec, None)
    }

    /// [`Self::plain_conv`] with a following layer scale's `gamma` folded into its weight.
    pub fn plain_conv_scaled(
        &mut self,
        x: &str,
        spec: &ConvSpec,
        gamma: Option<&[f32]>,
    ) -> Result<String> {
        let mut w = self.weights.conv(spec)?;
        if let Some(gamma) = gamma {
            scale_outputs(&mut w, None, gamma);
        }
        Ok(self.conv(x, spec, &w, None))
    }

    /// The gamma of `spec` when the export folds layer scales (every export but `keep_bn`).
    pub fn foldable_gamma(
        &self,
        spec: &Option<LayerScaleSpec>,
        c: usize,
    ) -> Result<Option<Vec<f32>>> {
        match spec {
            Some(ls) if !self.keep_bn => {
                Ok(Some(self.weights.values(&format!("{}.gamma", ls.name), c)?))
            }
            _ => Ok(None),
        }
    }

    /// Conv + BN (folded into the conv, or a `BatchNormalization` node) + activation.
    pub fn conv_bn(&mut self, x: &str, spec: &ConvBnSpec) -> Result<String> {
        self.conv_bn_scaled(x, spec, None)
    }

    /// [`Self::conv_bn`] with the per-channel `gamma` of a following layer scale folded into
    /// the conv's weight and bias (`γ·(W x + b) = (γW) x + γb`); only for a folded BN and no
    /// activation.
    fn conv_bn_scaled(
        &mut self,
        x: &str,
        spec: &ConvBnSpec,
        gamma: Option<&[f32]>,
    ) -> Result<String> {
        let c = &spec.conv;
        let y = if self.keep_bn {
            let w = self.weights.conv(c)?;
            let y = self.conv(x, c, &w, None);
            self.batch_norm(&y, &spec.bn, c.out_ch)?
        } else {
            let (mut w, mut b) = self.weights.conv_bn_folded(spec)?;
            if let Some(gamma) = gamma {
                scale_outputs(&mut w, Some(&mut b), gamma);
            }
            self.conv(x, c, &w, Some(&b))
        };
        Ok(match spec.act {
            Some(a) => self.activation(&y, a, &format!("{}.act", c.name)),
            None => y,
        })
    }

    /// A batch norm with no convolution before it: `BatchNormalization` with `keep_bn`, else
    /// its per-channel affine map as `Mul` + `Add`.
    pub fn batch_norm(&mut self, x: &str, prefix: &str, c: usize) -> Result<String> {
        let bn = self.weights.bn(prefix, c)?;
        let g = &mut self.graph;
        if self.keep_bn {
            let names = ["weight", "bias", "running_mean", "running_var"];
            let tensors = [&bn.weight, &bn.bias, &bn.running_mean, &bn.running_var];
            let inputs: Vec<String> = names
                .iter()
                .zip(tensors)
                .map(|(n, t)| g.constant(&format!("{prefix}.{n}"), &[c], t))
                .collect();
            let mut all = vec![x];
            all.extend(inputs.iter().map(String::as_str));
            let eps = vec![("epsilon", Attr::Float(BN_EPS as f32))];
            return Ok(g.node("BatchNormalization", prefix, &all, eps));
        }
        let (scale, shift) = bn.affine(BN_EPS);
        let s = g.constant(&format!("{prefix}.scale"), &[1, c, 1, 1], &scale);
        let t = g.constant(&format!("{prefix}.shift"), &[1, c, 1, 1], &shift);
        let y = g.node("Mul", &format!("{prefix}.mul"), &[x, &s], vec![]);
        Ok(g.node("Add", &format!("{prefix}.add"), &[&y, &t], vec![]))
    }

    /// ReLU, or GELU in its erf form `x · 0.5 · (1 + erf(x / √2))`.
    pub fn activation(&mut self, x: &str, act: Activation, name: &str) -> String {
        let g = &mut self.graph;
        match act {
            Activation::Relu => g.node("Relu", name, &[x], vec![]),
            Activation::Gelu => {
                let sqrt2 = g.scalar("gelu.sqrt2", std::f32::consts::SQRT_2);
                let one = g.scalar("gelu.one", 1.0);
                let half = g.scalar("gelu.half", 0.5);
                let d = g.node("Div", &format!("{name}.div"), &[x, &sqrt2], vec![]);
                let e = g.node("Erf", &format!("{name}.erf"), &[&d], vec![]);
                let a = g.node("Add", &format!("{name}.add"), &[&e, &one], vec![]);
                let m = g.node("Mul", &format!("{name}.mul"), &[x, &a], vec![]);
                g.node("Mul", name, &[&m, &half], vec![])
            }
        }
    }

    /// Multiplies by the per-channel `gamma` of a layer scale over `c` channels.
    pub fn layer_scale(&mut self, x: &str, spec: &LayerScaleSpec, c: usize) -> Result<String> {
        let gamma = self.weights.values(&format!("{}.gamma", spec.name), c)?;
        let g = &mut self.graph;
        let gamma = g.constant(&format!("{}.gamma", spec.name), &[1, c, 1, 1], &gamma);
        Ok(g.node("Mul", &spec.name, &[x, &gamma], vec![]))
    }

    /// A conv chain (`name`, `c` output channels): its convs, layer scale and residual.
    /// The layer scale is folded into the last conv when that conv has no activation.
    pub fn chain(&mut self, x: &str, chain: &ConvChain, name: &str, c: usize) -> Result<String> {
        let last_linear = chain.convs.last().is_some_and(|l| l.act.is_none());
        let gamma = match last_linear {
            true => self.foldable_gamma(&chain.layer_scale, c)?,
            false => None,
        };
        let mut y = x.to_string();
        for (i, conv) in chain.convs.iter().enumerate() {
            let g = gamma.as_deref().filter(|_| i + 1 == chain.convs.len());
            y = self.conv_bn_scaled(&y, conv, g)?;
        }
        if let (Some(ls), None) = (&chain.layer_scale, &gamma) {
            y = self.layer_scale(&y, ls, c)?;
        }
        if chain.residual {
            y = self
                .graph
                .node("Add", &format!("{name}.residual"), &[&y, x], vec![]);
        }
        Ok(y)
    }

    /// Global average pooling to 1×1.
    pub fn pool(&mut self, x: &str, name: &str) -> String {
        self.graph.node("GlobalAveragePool", name, &[x], vec![])
    }

    /// Flatten, then `Gemm` with the classifier's weight `[out, in]` (transposed) and bias.
    pub fn classifier(&mut self, x: &str, name: &str, cin: usize, cout: usize) -> Result<String> {
        let w = self.weights.values(&format!("{name}.weight"), cout * cin)?;
        let b = self.weights.values(&format!("{name}.bias"), cout)?;
        let g = &mut self.graph;
        let flat = g.node(
            "Flatten",
            &format!("{name}.flatten"),
            &[x],
            vec![("axis", Attr::Int(1))],
        );
        let w = g.constant(&format!("{name}.weight"), &[cout, cin], &w);
        let b = g.constant(&format!("{name}.bias"), &[cout], &b);
        Ok(g.node(
            "Gemm",
            name,
            &[&flat, &w, &b],
            vec![("transB", Attr::Int(1))],
        ))
    }
}
