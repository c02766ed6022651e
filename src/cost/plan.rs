//! The layer plan: every layer of an `Arch` with its shapes, parameters, MACs and bytes, derived
//! from the spec alone (no tensors). The cost model, `inspect` and the roofline latency read it.

use crate::space::lower::{ConvBnSpec, ConvChain, ConvSpec, LayerScaleSpec, MqaSpec, Op};
use crate::space::{lower, Activation, Arch, LayerSpec};
use serde::Serialize;

/// Output size of a k×k convolution with symmetric padding k/2.
pub fn conv_out(size: usize, k: usize, stride: usize) -> usize {
    (size + 2 * (k / 2) - k) / stride + 1
}

/// One row of the plan. Shapes are (C, H, W) for one image.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    /// timm-style module name, e.g. `blocks.2.0.dw_start`.
    pub name: String,
    /// What the layer is, e.g. `dw5x5/s2+bn`, `conv1x1+bn+act`, `mqa-attn`.
    pub kind: String,
    pub in_shape: [usize; 3],
    pub out_shape: [usize; 3],
    /// Trainable parameters (conv/linear weights and biases, BN affine, layer-scale gammas).
    pub params: u64,
    /// Multiply-accumulates per image, counted like torch's FlopCounterMode / 2
    /// (convolutions, linear layers and the attention matmuls).
    pub macs: u64,
    /// Elements read as weights (parameters plus BN running statistics).
    pub weight_elems: u64,
    /// Activation elements read and written per image.
    pub act_elems: u64,
}

impl Layer {
    /// A convolution's row from its `[input, output]` shapes, its `weights` (kernel elements),
    /// its `extra` parameters (batch-norm affine or bias) and `stats` (batch-norm running
    /// statistics, read but not trained). MACs: one per weight per output position.
    pub fn conv(
        name: String,
        kind: String,
        [input, out]: [[usize; 3]; 2],
        weights: u64,
        extra: u64,
        stats: u64,
    ) -> Layer {
        Layer {
            name,
            kind,
            in_shape: input,
            out_shape: out,
            params: sum(&[weights, extra]),
            macs: prod(&[weights, out[1] as u64, out[2] as u64]),
            weight_elems: sum(&[weights, extra, stats]),
            act_elems: sum(&[numel(input), numel(out)]),
        }
    }
}

/// Saturating product: a count too large for `u64` stays at `u64::MAX` instead of wrapping, so
/// an absurd configuration is refused by its budgets instead of looking cheap.
pub(crate) fn prod(xs: &[u64]) -> u64 {
    xs.iter().fold(1u64, |a, &b| a.saturating_mul(b))
}

/// Saturating sum (see [`prod`]).
pub(crate) fn sum(xs: &[u64]) -> u64 {
    xs.iter().fold(0u64, |a, &b| a.saturating_add(b))
}

/// Elements of a (C, H, W) shape, saturating.
pub(crate) fn numel(s: [usize; 3]) -> u64 {
    prod(&s.map(|v| v as u64))
}

struct Planner {
    layers: Vec<Layer>,
}

impl Planner {
    /// A conv, with its batch norm (`bn`) and activation `act` when given.
    fn conv(
        &mut self,
        c: &ConvSpec,
        input: [usize; 3],
        bn: bool,
        act: Option<Activation>,
    ) -> [usize; 3] {
        let (k, stride) = (c.kernel, c.stride);
        let out = [
            c.out_ch,
            conv_out(input[1], k, stride),
            conv_out(input[2], k, stride),
        ];
        let cin_per_group = if c.depthwise { 1 } else { c.in_ch };
        let w = prod(&[c.out_ch as u64, cin_per_group as u64, k as u64, k as u64]);
        let bn_params = if bn { prod(&[2, c.out_ch as u64]) } else { 0 };
        let mut kind = if c.depthwise {
            format!("dw{k}x{k}")
        } else {
            format!("conv{k}x{k}")
        };
        if stride > 1 {
            kind.push_str(&format!("/s{stride}"));
        }
        if bn {
            kind.push_str("+bn");
        }
        if let Some(a) = act {
            kind.push('+');
            kind.push_str(a.name());
        }
        let row = Layer::conv(c.name.clone(), kind, [input, out], w, bn_params, bn_params);
        self.layers.push(row);
        out
    }

    fn conv_bn(&mut self, c: &ConvBnSpec, input: [usize; 3]) -> [usize; 3] {
        self.conv(&c.conv, input, true, c.act)
    }

    fn simple(&mut self, name: String, kind: &str, shape: [usize; 3], params: u64, weights: u64) {
        self.layers.push(Layer {
            name,
            kind: kind.to_string(),
            in_shape: shape,
            out_shape: shape,
            params,
            macs: 0,
            weight_elems: weights,
            act_elems: prod(&[2, numel(shape)]),
        });
    }

    fn layer_scale(&mut self, ls: &Option<LayerScaleSpec>, shape: [usize; 3]) {
        if let Some(ls) = ls {
            let c = shape[0] as u64;
            self.simple(ls.name.clone(), "layer-scale", shape, c, c);
        }
    }

    fn chain(&mut self, chain: &ConvChain, x: [usize; 3]) -> [usize; 3] {
        let y = chain.convs.iter().fold(x, |y, c| self.conv_bn(c, y));
        self.layer_scale(&chain.layer_scale, y);
        y
    }

    fn mqa(&mut self, m: &MqaSpec, x: [usize; 3]) -> [usize; 3] {
        let c = x[0] as u64;
        self.simple(m.norm.clone(), "bn", x, prod(&[2, c]), prod(&[4, c]));
        let q = self.conv(&m.query, x, false, None);
        let kv_in = [&m.key, &m.value].map(|kv| match &kv.down {
            Some(d) => self.conv_bn(d, x),
            None => x,
        });
        let k = self.conv(&m.key.proj, kv_in[0], false, None);
        self.conv(&m.value.proj, kv_in[1], false, None);
        let (heads, key_dim, value_dim) = (m.heads, m.key_dim as u64, m.value_dim as u64);
        let l = prod(&[q[1] as u64, q[2] as u64]);
        let pk = prod(&[k[1] as u64, k[2] as u64]);
        let h = heads as u64;
        let attn_out = [heads.saturating_mul(m.value_dim), q[1], q[2]];
        self.layers.push(Layer {
            name: m.attn.clone(),
            kind: format!("mqa h{heads} q{l}→kv{pk}"),
            in_shape: q,
            out_shape: attn_out,
            params: 0,
            macs: prod(&[h, l, pk, sum(&[key_dim, value_dim])]),
            weight_elems: 0,
            act_elems: sum(&[
                prod(&[h, l, key_dim]),
                prod(&[pk, sum(&[key_dim, value_dim])]),
                prod(&[2, h, l, pk]),
                prod(&[h, l, value_dim]),
            ]),
        });
        let o = self.conv(&m.output, attn_out, false, None);
        self.layer_scale(&m.layer_scale, o);
        o
    }

    fn layer(&mut self, layer: &LayerSpec, x: [usize; 3]) -> [usize; 3] {
        match &layer.op {
            Op::Convs(chain) => self.chain(chain, x),
            Op::Mqa(m) => self.mqa(m, x),
            Op::Pool => {
                let out = [x[0], 1, 1];
                self.layers.push(Layer {
                    name: layer.name.clone(),
                    kind: "avgpool".into(),
                    in_shape: x,
                    out_shape: out,
                    params: 0,
                    macs: 0,
                    weight_elems: 0,
                    act_elems: sum(&[numel(x), x[0] as u64]),
                });
                out
            }
            Op::Classifier { .. } => {
                let (c, nc) = (x[0] as u64, layer.out_ch as u64);
                let out = [layer.out_ch, 1, 1];
                self.layers.push(Layer {
                    name: layer.name.clone(),
                    kind: "linear".into(),
                    in_shape: x,
                    out_shape: out,
                    params: sum(&[prod(&[c, nc]), nc]),
                    macs: prod(&[c, nc]),
                    weight_elems: sum(&[prod(&[c, nc]), nc]),
                    act_elems: sum(&[c, nc]),
                });
                out
            }
        }
    }
}

/// Plans one lowered layer for an input of shape `input`: its rows and its output shape.
pub fn plan_layer(layer: &LayerSpec, input: [usize; 3]) -> (Vec<Layer>, [usize; 3]) {
    let mut p = Planner { layers: Vec::new() };
    let out = p.layer(layer, input);
    (p.layers, out)
}

/// Plans every layer of `arch` for one `height`×`width` input image.
pub fn plan(arch: &Arch, height: usize, width: usize) -> Vec<Layer> {
    let mut p = Planner { layers: Vec::new() };
    let mut x = [arch.in_chans, height, width];
    for layer in lower(arch) {
        x = p.layer(&layer, x);
    }
    p.layers
}
