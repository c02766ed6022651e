//! The layer plan: every layer of an `Arch` with its shapes, parameters, MACs and bytes, derived
//! from the spec alone (no tensors). The cost model, `inspect` and the roofline latency read it.

use crate::space::arch::expanded_channels;
use crate::space::{Arch, Block};
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

fn numel(s: [usize; 3]) -> u64 {
    (s[0] * s[1] * s[2]) as u64
}

struct Planner {
    layers: Vec<Layer>,
    act: &'static str,
}

impl Planner {
    /// A conv (+ BN (+ act)) unit. `groups` = 1 or = channels (depthwise).
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: String,
        input: [usize; 3],
        out_ch: usize,
        k: usize,
        stride: usize,
        depthwise: bool,
        bn: bool,
        act: bool,
    ) -> [usize; 3] {
        let out = [
            out_ch,
            conv_out(input[1], k, stride),
            conv_out(input[2], k, stride),
        ];
        let cin_per_group = if depthwise { 1 } else { input[0] };
        let w = (out_ch * cin_per_group * k * k) as u64;
        let bn_params = if bn { 2 * out_ch as u64 } else { 0 };
        let mut kind = if depthwise {
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
        if act {
            kind.push('+');
            kind.push_str(self.act);
        }
        self.layers.push(Layer {
            name,
            kind,
            in_shape: input,
            out_shape: out,
            params: w + bn_params,
            macs: w * (out[1] * out[2]) as u64,
            weight_elems: w + 2 * bn_params,
            act_elems: numel(input) + numel(out),
        });
        out
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
            act_elems: 2 * numel(shape),
        });
    }

    fn block(&mut self, p: &str, arch: &Arch, block: &Block, x: [usize; 3]) -> [usize; 3] {
        let ls = arch.layer_scale.is_some();
        match *block {
            Block::ConvBn { k, stride, out } => {
                self.conv(format!("{p}.conv"), x, out, k, stride, false, true, true)
            }
            Block::FusedIb {
                k,
                stride,
                expansion,
                out,
            } => {
                let mid = expanded_channels(x[0], expansion);
                let y = self.conv(
                    format!("{p}.conv_exp"),
                    x,
                    mid,
                    k,
                    stride,
                    false,
                    true,
                    true,
                );
                self.conv(format!("{p}.conv_pwl"), y, out, 1, 1, false, true, false)
            }
            Block::Uib {
                start_dw,
                mid_dw,
                stride,
                expansion,
                out,
            } => {
                let mut y = x;
                if start_dw > 0 {
                    let s = if mid_dw > 0 { 1 } else { stride };
                    y = self.conv(
                        format!("{p}.dw_start"),
                        y,
                        x[0],
                        start_dw,
                        s,
                        true,
                        true,
                        false,
                    );
                }
                let mid = expanded_channels(x[0], expansion);
                y = self.conv(format!("{p}.pw_exp"), y, mid, 1, 1, false, true, true);
                if mid_dw > 0 {
                    y = self.conv(
                        format!("{p}.dw_mid"),
                        y,
                        mid,
                        mid_dw,
                        stride,
                        true,
                        true,
                        true,
                    );
                }
                y = self.conv(format!("{p}.pw_proj"), y, out, 1, 1, false, true, false);
                if ls {
                    self.simple(
                        format!("{p}.layer_scale"),
                        "layer-scale",
                        y,
                        out as u64,
                        out as u64,
                    );
                }
                y
            }
            Block::Mqa {
                heads,
                key_dim,
                value_dim,
                kv_stride,
                kv_kernel,
            } => {
                let c = x[0];
                self.simple(format!("{p}.norm"), "bn", x, 2 * c as u64, 4 * c as u64);
                let q = self.conv(
                    format!("{p}.attn.query.proj"),
                    x,
                    heads * key_dim,
                    1,
                    1,
                    false,
                    false,
                    false,
                );
                let mut kv_in = [x; 2];
                if kv_stride > 1 {
                    for (i, which) in ["key", "value"].iter().enumerate() {
                        kv_in[i] = self.conv(
                            format!("{p}.attn.{which}.down_conv"),
                            x,
                            c,
                            kv_kernel,
                            kv_stride,
                            true,
                            true,
                            false,
                        );
                    }
                }
                let k = self.conv(
                    format!("{p}.attn.key.proj"),
                    kv_in[0],
                    key_dim,
                    1,
                    1,
                    false,
                    false,
                    false,
                );
                self.conv(
                    format!("{p}.attn.value.proj"),
                    kv_in[1],
                    value_dim,
                    1,
                    1,
                    false,
                    false,
                    false,
                );
                let l = (q[1] * q[2]) as u64;
                let pk = (k[1] * k[2]) as u64;
                let h = heads as u64;
                self.layers.push(Layer {
                    name: format!("{p}.attn"),
                    kind: format!("mqa h{heads} q{}→kv{}", l, pk),
                    in_shape: q,
                    out_shape: [heads * value_dim, q[1], q[2]],
                    params: 0,
                    macs: h * l * pk * (key_dim + value_dim) as u64,
                    weight_elems: 0,
                    act_elems: h * l * key_dim as u64
                        + pk * (key_dim + value_dim) as u64
                        + 2 * h * l * pk
                        + h * l * value_dim as u64,
                });
                let o = self.conv(
                    format!("{p}.attn.output.proj"),
                    [heads * value_dim, q[1], q[2]],
                    c,
                    1,
                    1,
                    false,
                    false,
                    false,
                );
                if ls {
                    self.simple(
                        format!("{p}.layer_scale"),
                        "layer-scale",
                        o,
                        c as u64,
                        c as u64,
                    );
                }
                o
            }
        }
    }
}

/// Plans every layer of `arch` for one `height`×`width` input image.
pub fn plan(arch: &Arch, height: usize, width: usize) -> Vec<Layer> {
    let mut p = Planner {
        layers: Vec::new(),
        act: arch.act.name(),
    };
    let x = [arch.in_chans, height, width];
    let mut x = p.conv(
        "conv_stem".into(),
        x,
        arch.stem,
        arch.stem_kernel,
        arch.stem_stride,
        false,
        true,
        true,
    );
    for (s, b, _, block) in arch.walk() {
        x = p.block(&format!("blocks.{s}.{b}"), arch, block, x);
    }
    let n = arch.stages.len();
    x = p.conv(
        format!("blocks.{n}.0.conv"),
        x,
        arch.features,
        1,
        1,
        false,
        true,
        true,
    );
    p.layers.push(Layer {
        name: "global_pool".into(),
        kind: "avgpool".into(),
        in_shape: x,
        out_shape: [x[0], 1, 1],
        params: 0,
        macs: 0,
        weight_elems: 0,
        act_elems: numel(x) + x[0] as u64,
    });
    x = p.conv(
        "conv_head".into(),
        [x[0], 1, 1],
        arch.head,
        1,
        1,
        false,
        true,
        true,
    );
    let (c, nc) = (x[0] as u64, arch.num_classes as u64);
    p.layers.push(Layer {
        name: "classifier".into(),
        kind: "linear".into(),
        in_shape: x,
        out_shape: [arch.num_classes, 1, 1],
        params: c * nc + nc,
        macs: c * nc,
        weight_elems: c * nc + nc,
        act_elems: c + nc,
    });
    p.layers
}
