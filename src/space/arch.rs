//! The architecture as a value: what the search samples, mutates, hashes, costs and writes out.

use serde::{Deserialize, Serialize};

/// Activation used throughout the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// max(0, x)
    Relu,
    /// Exact (erf) GELU, as in timm's `nn.GELU()`.
    Gelu,
}

impl Activation {
    /// Lower-case name used in TOML and block strings.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
        }
    }

    /// Parses `relu` or `gelu`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "relu" => Some(Activation::Relu),
            "gelu" => Some(Activation::Gelu),
            _ => None,
        }
    }
}

/// One block of a stage. Output widths are absolute channel counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Block {
    /// Full k×k convolution + BN + activation (timm `cn`). No residual.
    ConvBn { k: usize, stride: usize, out: usize },
    /// Fused inverted bottleneck (timm `er`): k×k conv expanding to `make_divisible(in·e)` + BN + act,
    /// then 1×1 linear projection + BN. Residual iff stride 1 and in == out.
    FusedIb {
        k: usize,
        stride: usize,
        expansion: f64,
        out: usize,
    },
    /// Universal inverted bottleneck (timm `uir`). `start_dw`/`mid_dw` are 0 (absent), 3 or 5.
    Uib {
        start_dw: usize,
        mid_dw: usize,
        stride: usize,
        expansion: f64,
        out: usize,
    },
    /// Mobile multi-query attention (timm `mqa`): one shared key head and one shared value head.
    /// Output width equals input width; `kv_stride` 2 downsamples K and V with a stride-2 depthwise conv.
    Mqa {
        heads: usize,
        key_dim: usize,
        value_dim: usize,
        kv_stride: usize,
        #[serde(default = "default_mqa_kernel")]
        kv_kernel: usize,
    },
}

fn default_mqa_kernel() -> usize {
    3
}

impl Block {
    /// Spatial stride of the block (MQA is always 1).
    pub fn stride(&self) -> usize {
        match *self {
            Block::ConvBn { stride, .. }
            | Block::FusedIb { stride, .. }
            | Block::Uib { stride, .. } => stride,
            Block::Mqa { .. } => 1,
        }
    }

    /// Output channels given the block's input channels.
    pub fn out_channels(&self, in_ch: usize) -> usize {
        self.width().unwrap_or(in_ch)
    }

    /// The output width the block sets; `None` for MQA, whose output width is its input's.
    pub fn width(&self) -> Option<usize> {
        match *self {
            Block::ConvBn { out, .. } | Block::FusedIb { out, .. } | Block::Uib { out, .. } => {
                Some(out)
            }
            Block::Mqa { .. } => None,
        }
    }

    /// The output width the block sets, to change it; `None` for MQA.
    pub fn width_mut(&mut self) -> Option<&mut usize> {
        match self {
            Block::ConvBn { out, .. } | Block::FusedIb { out, .. } | Block::Uib { out, .. } => {
                Some(out)
            }
            Block::Mqa { .. } => None,
        }
    }

    /// Whether this is a multi-query attention block.
    pub fn is_mqa(&self) -> bool {
        matches!(self, Block::Mqa { .. })
    }

    /// Short human name of the block kind (IB, ConvNext, ExtraDW, FFN for UIBs).
    pub fn kind_name(&self) -> &'static str {
        match *self {
            Block::ConvBn { .. } => "ConvBn",
            Block::FusedIb { .. } => "FusedIB",
            Block::Uib {
                start_dw, mid_dw, ..
            } => match (start_dw > 0, mid_dw > 0) {
                (false, true) => "IB",
                (true, false) => "ConvNext",
                (true, true) => "ExtraDW",
                (false, false) => "FFN",
            },
            Block::Mqa { .. } => "MQA",
        }
    }
}

/// A stage: a run of blocks. Multi-scale feature taps sit at stage ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub blocks: Vec<Block>,
}

impl Stage {
    /// Number of blocks other than MQA (the depth a search space counts).
    pub fn depth(&self) -> usize {
        self.blocks.iter().filter(|b| !b.is_mqa()).count()
    }

    /// The output width of the stage's first block other than MQA.
    pub fn width(&self) -> Option<usize> {
        self.blocks.iter().find_map(Block::width)
    }
}

/// A complete MobileNetV4-style network.
///
/// Layout (timm names in brackets): stem conv k×k + BN + act [`conv_stem`, `bn1`], the stages
/// [`blocks.S.B`], a 1×1 conv + BN + act to `features` channels [`blocks.N.0`, N = number of stages],
/// global average pool, 1×1 conv to `head` channels without bias [`conv_head`] + BN + act
/// [`norm_head`], dropout, linear classifier [`classifier`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arch {
    /// Optional display name (a preset name, or a search trial id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub in_chans: usize,
    pub num_classes: usize,
    pub act: Activation,
    /// Layer-scale init for UIB and MQA blocks (hybrids use 1e-5); absent = no layer scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_scale: Option<f64>,
    /// Stem output channels.
    pub stem: usize,
    /// Stem kernel size (3 in every preset).
    #[serde(default = "default_stem_kernel")]
    pub stem_kernel: usize,
    /// Stem stride (2 in every preset; 1 suits tiny inputs such as 28×28).
    #[serde(default = "default_stem_stride")]
    pub stem_stride: usize,
    pub stages: Vec<Stage>,
    /// Channels of the final 1×1 conv before pooling (960 in the presets).
    pub features: usize,
    /// Channels of the post-pool 1×1 conv (1280 in the presets).
    pub head: usize,
    /// Dropout before the classifier (train mode only).
    #[serde(default)]
    pub dropout: f64,
}

fn default_stem_kernel() -> usize {
    3
}

fn default_stem_stride() -> usize {
    2
}

/// One multi-scale feature tap: where it is taken and what it looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureTap {
    /// Index of the stage after whose last block the tap sits; `None` = stem output.
    /// `Some(stages.len())` is the final `features`-channel conv.
    pub after_stage: Option<usize>,
    pub channels: usize,
    /// Total stride relative to the input.
    pub reduction: usize,
}

/// An error naming the first index in `taps` that is not one of `count` feature taps.
pub fn check_tap_indices(taps: &[usize], count: usize) -> Result<(), String> {
    match taps.iter().find(|&&t| t >= count) {
        Some(bad) => Err(format!(
            "feature index {bad} out of range (this model has {count} taps)"
        )),
        None => Ok(()),
    }
}

impl Arch {
    /// Input channels of every block, in order, paired with the block (stage, index, in_ch, block).
    pub fn walk(&self) -> Vec<(usize, usize, usize, &Block)> {
        let mut out = Vec::new();
        let mut ch = self.stem;
        for (s, stage) in self.stages.iter().enumerate() {
            for (b, block) in stage.blocks.iter().enumerate() {
                out.push((s, b, ch, block));
                ch = block.out_channels(ch);
            }
        }
        out
    }

    /// The feature taps, following timm's rule: the stem output when the first block downsamples,
    /// the end of every stage followed by a downsampling stage, and the final `features` conv.
    /// For the presets these are the five maps at strides 2, 4, 8, 16, 32.
    pub fn feature_taps(&self) -> Vec<FeatureTap> {
        let mut taps = Vec::new();
        let mut reduction = self.stem_stride;
        let first_stride = self
            .stages
            .first()
            .and_then(|s| s.blocks.first())
            .map(|b| b.stride())
            .unwrap_or(1);
        if first_stride > 1 {
            taps.push(FeatureTap {
                after_stage: None,
                channels: self.stem,
                reduction,
            });
        }
        let mut ch = self.stem;
        for (s, stage) in self.stages.iter().enumerate() {
            for b in &stage.blocks {
                reduction *= b.stride();
                ch = b.out_channels(ch);
            }
            let next_downsamples = self
                .stages
                .get(s + 1)
                .and_then(|n| n.blocks.first())
                .map(|b| b.stride() > 1)
                .unwrap_or(false);
            if next_downsamples {
                taps.push(FeatureTap {
                    after_stage: Some(s),
                    channels: ch,
                    reduction,
                });
            }
        }
        taps.push(FeatureTap {
            after_stage: Some(self.stages.len()),
            channels: self.features,
            reduction,
        });
        taps
    }

    /// Total downsampling factor of the network.
    pub fn total_stride(&self) -> usize {
        self.stem_stride
            * self
                .stages
                .iter()
                .flat_map(|s| &s.blocks)
                .map(|b| b.stride())
                .product::<usize>()
    }
}

/// timm's `make_divisible`: round to the nearest multiple of `divisor` (at least `divisor`), and
/// step up one multiple when rounding down lost more than `1 - round_limit` of the value.
pub fn make_divisible(v: f64, divisor: usize, round_limit: f64) -> usize {
    let d = divisor as f64;
    let mut new_v = (((v + d / 2.0) as usize) / divisor * divisor).max(divisor);
    if (new_v as f64) < round_limit * v {
        new_v += divisor;
    }
    new_v
}

/// Expanded width of a UIB / FusedIB with input `in_ch` and expansion `e`: `make_divisible(in·e, 8)`.
pub fn expanded_channels(in_ch: usize, e: f64) -> usize {
    make_divisible(in_ch as f64 * e, 8, 0.9)
}

/// timm's `round_channels`: scale by a width multiplier and make divisible by 8 with the 10% guard.
pub fn round_channels(ch: usize, multiplier: f64) -> usize {
    if multiplier == 1.0 {
        return ch;
    }
    make_divisible(ch as f64 * multiplier, 8, 0.9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_indices_are_checked_against_the_count() {
        assert_eq!(check_tap_indices(&[0, 4, 2], 5), Ok(()));
        assert_eq!(check_tap_indices(&[], 0), Ok(()));
        assert_eq!(
            check_tap_indices(&[1, 5, 7], 5),
            Err("feature index 5 out of range (this model has 5 taps)".to_string())
        );
    }
}
