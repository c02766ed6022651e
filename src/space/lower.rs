//! Lowering: an [`Arch`] turned once into the list of its layers, with timm's names, channels,
//! kernels, strides and activations. The builder and the cost model both read this list, so the
//! block rules (which depthwise conv carries a UIB's stride, expanded widths, residuals) live
//! here and nowhere else.

use super::arch::{expanded_channels, Activation, Arch, Block};

/// One convolution, bias-free, with symmetric padding `kernel / 2`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvSpec {
    /// Layer name (timm module path), e.g. `blocks.2.0.dw_start` or `conv_stem`.
    pub name: String,
    /// Prefix of the weight tensor (`{weight}.weight`), e.g. `blocks.2.0.dw_start.conv`.
    pub weight: String,
    pub in_ch: usize,
    pub out_ch: usize,
    pub kernel: usize,
    pub stride: usize,
    /// One group per channel instead of a dense convolution.
    pub depthwise: bool,
}

/// A convolution followed by batch norm and an optional activation.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvBnSpec {
    pub conv: ConvSpec,
    /// Prefix of the batch-norm tensors, e.g. `bn1` or `blocks.2.0.dw_start.bn`.
    pub bn: String,
    pub act: Option<Activation>,
}

/// A per-channel learnable scale (`{name}.gamma`) over the layer's output channels.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerScaleSpec {
    pub name: String,
    pub init: f64,
}

/// Conv + BN units applied in order, then an optional layer scale and residual.
/// The stem, ConvBn, FusedIB, UIB, the final `features` conv and `conv_head` are all chains.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvChain {
    pub convs: Vec<ConvBnSpec>,
    pub layer_scale: Option<LayerScaleSpec>,
    /// Whether the chain's input is added to its output.
    pub residual: bool,
}

/// The key or value branch of multi-query attention.
#[derive(Debug, Clone, PartialEq)]
pub struct KvSpec {
    /// Depthwise down-sampling conv + BN (no activation), when `kv_stride` > 1.
    pub down: Option<ConvBnSpec>,
    /// The 1×1 projection to the single shared head.
    pub proj: ConvSpec,
}

/// Mobile multi-query attention: BN, query / key / value / output projections, layer scale;
/// always residual.
#[derive(Debug, Clone, PartialEq)]
pub struct MqaSpec {
    /// Prefix of the input batch norm.
    pub norm: String,
    /// Name of the attention module (`blocks.S.B.attn`), where the attention matmuls run.
    pub attn: String,
    pub heads: usize,
    pub key_dim: usize,
    pub value_dim: usize,
    pub query: ConvSpec,
    pub key: KvSpec,
    pub value: KvSpec,
    pub output: ConvSpec,
    pub layer_scale: Option<LayerScaleSpec>,
}

/// What a layer computes.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Convs(ConvChain),
    Mqa(Box<MqaSpec>),
    /// Global average pooling to 1×1.
    Pool,
    /// Flatten, dropout (train mode only), linear classifier with bias.
    Classifier {
        dropout: f64,
    },
}

/// Where a layer sits in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Stem,
    /// Block `index` of stage `stage`.
    Block {
        stage: usize,
        index: usize,
    },
    /// The final 1×1 conv to `features` channels (`blocks.N.0`).
    Features,
    /// Pooling, `conv_head` and the classifier.
    Head,
}

/// One layer of the lowered network. Each layer's `in_ch` is the previous one's `out_ch`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    /// timm module name: `conv_stem`, `blocks.2.0`, `global_pool`, `conv_head`, `classifier`.
    pub name: String,
    pub role: Role,
    pub in_ch: usize,
    pub out_ch: usize,
    pub op: Op,
}

/// The feature-tap position of the output of a layer with `role`: `Some(after_stage)` (see
/// [`super::FeatureTap::after_stage`]) for the stem, a stage's last block and the
/// `features` conv; `None` for the head.
pub fn tap_at(arch: &Arch, role: Role) -> Option<Option<usize>> {
    match role {
        Role::Stem => Some(None),
        Role::Block { stage, index, .. } => {
            (index + 1 == arch.stages[stage].blocks.len()).then_some(Some(stage))
        }
        Role::Features => Some(Some(arch.stages.len())),
        Role::Head => None,
    }
}

/// A UIB's depthwise convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UibDw {
    Start,
    Mid,
}

/// Which depthwise conv carries a UIB's stride: the middle one when present, else the start
/// one (timm's rule); `None` when the UIB has neither, so it cannot downsample.
pub fn uib_stride_carrier(start_dw: usize, mid_dw: usize) -> Option<UibDw> {
    if mid_dw > 0 {
        Some(UibDw::Mid)
    } else if start_dw > 0 {
        Some(UibDw::Start)
    } else {
        None
    }
}

impl ConvSpec {
    /// A dense conv whose weight sits under its layer name.
    fn new(name: String, in_ch: usize, out_ch: usize, kernel: usize, stride: usize) -> Self {
        ConvSpec {
            weight: name.clone(),
            name,
            in_ch,
            out_ch,
            kernel,
            stride,
            depthwise: false,
        }
    }

    /// timm's `ConvNormAct` module `name`: weight `{name}.conv`, batch norm `{name}.bn`.
    fn timm(name: String, in_ch: usize, out_ch: usize, kernel: usize, stride: usize) -> Self {
        ConvSpec {
            weight: format!("{name}.conv"),
            ..ConvSpec::new(name, in_ch, out_ch, kernel, stride)
        }
    }

    fn depthwise(self) -> Self {
        ConvSpec {
            depthwise: true,
            ..self
        }
    }

    /// Followed by batch norm under `bn` and the activation `act`.
    fn bn(self, bn: String, act: Option<Activation>) -> ConvBnSpec {
        ConvBnSpec {
            conv: self,
            bn,
            act,
        }
    }

    /// Followed by timm's `{name}.bn` and the activation `act`.
    fn timm_bn(self, act: Option<Activation>) -> ConvBnSpec {
        let bn = format!("{}.bn", self.name);
        self.bn(bn, act)
    }
}

impl ConvChain {
    /// A lone conv + BN, no layer scale, no residual.
    fn single(conv: ConvBnSpec) -> Self {
        ConvChain {
            convs: vec![conv],
            layer_scale: None,
            residual: false,
        }
    }
}

/// A layer made of one conv + BN unit.
fn conv_layer(name: &str, role: Role, conv: ConvBnSpec) -> LayerSpec {
    LayerSpec {
        name: name.into(),
        role,
        in_ch: conv.conv.in_ch,
        out_ch: conv.conv.out_ch,
        op: Op::Convs(ConvChain::single(conv)),
    }
}

/// Lowers `arch` into its layers, in forward order: stem, every block, the `features` conv,
/// pooling, `conv_head`, classifier. Meant for an `Arch` that passed
/// [`validate`](super::validate).
pub fn lower(arch: &Arch) -> Vec<LayerSpec> {
    let act = Some(arch.act);
    let stem = ConvSpec::new(
        "conv_stem".into(),
        arch.in_chans,
        arch.stem,
        arch.stem_kernel,
        arch.stem_stride,
    )
    .bn("bn1".into(), act);
    let mut layers = vec![conv_layer("conv_stem", Role::Stem, stem)];
    for (stage, index, in_ch, block) in arch.walk() {
        let b = BlockLowering {
            prefix: format!("blocks.{stage}.{index}"),
            in_ch,
            act: arch.act,
            layer_scale: arch.layer_scale,
        };
        layers.push(LayerSpec {
            op: b.op(block),
            name: b.prefix,
            role: Role::Block { stage, index },
            in_ch,
            out_ch: block.out_channels(in_ch),
        });
    }
    let last = layers.last().expect("the stem is there").out_ch;
    let p = format!("blocks.{}.0", arch.stages.len());
    let features =
        ConvSpec::new(format!("{p}.conv"), last, arch.features, 1, 1).bn(format!("{p}.bn1"), act);
    layers.push(conv_layer(&p, Role::Features, features));
    layers.push(LayerSpec {
        name: "global_pool".into(),
        role: Role::Head,
        in_ch: arch.features,
        out_ch: arch.features,
        op: Op::Pool,
    });
    let head = ConvSpec::new("conv_head".into(), arch.features, arch.head, 1, 1)
        .bn("norm_head".into(), act);
    layers.push(conv_layer("conv_head", Role::Head, head));
    layers.push(LayerSpec {
        name: "classifier".into(),
        role: Role::Head,
        in_ch: arch.head,
        out_ch: arch.num_classes,
        op: Op::Classifier {
            dropout: arch.dropout,
        },
    });
    layers
}

/// What lowering one block needs to know besides the block.
struct BlockLowering {
    /// `blocks.S.B`.
    prefix: String,
    in_ch: usize,
    act: Activation,
    layer_scale: Option<f64>,
}

impl BlockLowering {
    fn name(&self, part: &str) -> String {
        format!("{}.{part}", self.prefix)
    }

    fn layer_scale(&self) -> Option<LayerScaleSpec> {
        self.layer_scale.map(|init| LayerScaleSpec {
            name: self.name("layer_scale"),
            init,
        })
    }

    fn op(&self, block: &Block) -> Op {
        let (cin, act) = (self.in_ch, Some(self.act));
        match *block {
            Block::ConvBn { k, stride, out } => Op::Convs(ConvChain::single(
                ConvSpec::new(self.name("conv"), cin, out, k, stride).bn(self.name("bn1"), act),
            )),
            Block::FusedIb {
                k,
                stride,
                expansion,
                out,
            } => {
                let mid = expanded_channels(cin, expansion);
                Op::Convs(ConvChain {
                    convs: vec![
                        ConvSpec::new(self.name("conv_exp"), cin, mid, k, stride)
                            .bn(self.name("bn1"), act),
                        ConvSpec::new(self.name("conv_pwl"), mid, out, 1, 1)
                            .bn(self.name("bn2"), None),
                    ],
                    layer_scale: None,
                    residual: stride == 1 && cin == out,
                })
            }
            Block::Uib {
                start_dw,
                mid_dw,
                stride,
                expansion,
                out,
            } => Op::Convs(self.uib(start_dw, mid_dw, stride, expansion, out)),
            Block::Mqa {
                heads,
                key_dim,
                value_dim,
                kv_stride,
                kv_kernel,
            } => Op::Mqa(Box::new(
                self.mqa(heads, key_dim, value_dim, kv_stride, kv_kernel),
            )),
        }
    }

    /// `dw_start` (optional, no activation), `pw_exp`, `dw_mid` (optional), `pw_proj` (linear).
    fn uib(&self, start_dw: usize, mid_dw: usize, stride: usize, e: f64, out: usize) -> ConvChain {
        let (cin, act) = (self.in_ch, Some(self.act));
        let mid = expanded_channels(cin, e);
        let carrier = uib_stride_carrier(start_dw, mid_dw);
        let stride_of = |dw| if carrier == Some(dw) { stride } else { 1 };
        let mut convs = Vec::new();
        if start_dw > 0 {
            let s = stride_of(UibDw::Start);
            let c = ConvSpec::timm(self.name("dw_start"), cin, cin, start_dw, s).depthwise();
            convs.push(c.timm_bn(None));
        }
        convs.push(ConvSpec::timm(self.name("pw_exp"), cin, mid, 1, 1).timm_bn(act));
        if mid_dw > 0 {
            let s = stride_of(UibDw::Mid);
            let c = ConvSpec::timm(self.name("dw_mid"), mid, mid, mid_dw, s).depthwise();
            convs.push(c.timm_bn(act));
        }
        convs.push(ConvSpec::timm(self.name("pw_proj"), mid, out, 1, 1).timm_bn(None));
        ConvChain {
            convs,
            layer_scale: self.layer_scale(),
            residual: stride == 1 && cin == out,
        }
    }

    /// timm's `MobileAttention` with `MultiQueryAttention2d`.
    fn mqa(
        &self,
        heads: usize,
        key_dim: usize,
        value_dim: usize,
        kv_stride: usize,
        kv_kernel: usize,
    ) -> MqaSpec {
        let c = self.in_ch;
        let proj = |which: &str, cin, cout| {
            ConvSpec::new(self.name(&format!("attn.{which}.proj")), cin, cout, 1, 1)
        };
        let kv = |which: &str, dim| KvSpec {
            down: (kv_stride > 1).then(|| {
                let name = self.name(&format!("attn.{which}.down_conv"));
                ConvSpec::new(name, c, c, kv_kernel, kv_stride)
                    .depthwise()
                    .bn(self.name(&format!("attn.{which}.norm")), None)
            }),
            proj: proj(which, c, dim),
        };
        MqaSpec {
            norm: self.name("norm"),
            attn: self.name("attn"),
            heads,
            key_dim,
            value_dim,
            query: proj("query", c, heads * key_dim),
            key: kv("key", key_dim),
            value: kv("value", value_dim),
            output: proj("output", heads * value_dim, c),
            layer_scale: self.layer_scale(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uib_convs(block: &str) -> Vec<(String, String, usize)> {
        let arch = Arch::from_block_string(&format!(
            "in3 nc10 relu stem16 feat32 head64 ls1e-5 | {block}"
        ))
        .unwrap();
        let layers = lower(&arch);
        let Op::Convs(chain) = &layers[1].op else {
            panic!("a UIB lowers to a conv chain")
        };
        assert_eq!(layers[1].name, "blocks.0.0");
        assert_eq!(
            chain.layer_scale.as_ref().unwrap().name,
            "blocks.0.0.layer_scale"
        );
        let convs = chain.convs.iter();
        convs
            .map(|c| (c.conv.name.clone(), c.conv.weight.clone(), c.conv.stride))
            .collect()
    }

    #[test]
    fn the_middle_depthwise_carries_a_uib_stride_else_the_start_one() {
        let extra_dw = uib_convs("uir_a5_k3_s2_e4_c24");
        let strides: Vec<usize> = extra_dw.iter().map(|c| c.2).collect();
        assert_eq!(strides, [1, 1, 2, 1]);
        assert_eq!(extra_dw[2].0, "blocks.0.0.dw_mid");
        assert_eq!(extra_dw[2].1, "blocks.0.0.dw_mid.conv");
        let conv_next = uib_convs("uir_a3_k0_s2_e4_c24");
        let strides: Vec<usize> = conv_next.iter().map(|c| c.2).collect();
        assert_eq!(strides, [2, 1, 1]);
        assert_eq!(conv_next[0].0, "blocks.0.0.dw_start");
        assert_eq!(uib_stride_carrier(0, 0), None);
    }

    #[test]
    fn layers_chain_their_channels_and_end_in_the_head() {
        let arch = crate::space::presets::preset("hybrid-medium", 1.0).unwrap();
        let layers = lower(&arch);
        for pair in layers.windows(2) {
            assert_eq!(
                pair[0].out_ch, pair[1].in_ch,
                "{} → {}",
                pair[0].name, pair[1].name
            );
        }
        let names: Vec<&str> = layers
            .iter()
            .rev()
            .take(4)
            .map(|l| l.name.as_str())
            .collect();
        let features = format!("blocks.{}.0", arch.stages.len());
        assert_eq!(names, ["classifier", "conv_head", "global_pool", &features]);
        assert!(layers.iter().any(|l| matches!(l.op, Op::Mqa(_))));
    }
}
