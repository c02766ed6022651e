//! The two block shapes of a lowered MobileNetV4 ([`crate::space::lower`]): conv chains (stem,
//! ConvBn, FusedIB, UIB, the final convs) and multi-query attention, under timm's names.

use super::layers::{scaled_softmax, BatchNorm, Conv, ConvInit, ConvNormAct, LayerScale, Mode};
use super::params::ParamStore;
use crate::ops;
use crate::space::lower::{ConvChain, KvSpec, LayerScaleSpec, MqaSpec};
use anyhow::Result;
use candle_core::Tensor;

/// Conv + BN units in order, then optional layer scale and residual: timm's `ConvBnAct`,
/// `EdgeResidual` (FusedIB) and `UniversalInvertedResidual`.
pub struct ChainBlock {
    convs: Vec<ConvNormAct>,
    layer_scale: Option<LayerScale>,
    residual: bool,
}

/// Key or value branch of MQA: optional stride-2 depthwise + BN, then a 1×1 projection.
struct KvBranch {
    down: Option<(Conv, BatchNorm)>,
    proj: Conv,
}

impl KvBranch {
    fn new(ps: &mut ParamStore, spec: &KvSpec) -> Result<Self> {
        let down = match &spec.down {
            Some(d) => Some((
                Conv::from_spec(ps, &d.conv, ConvInit::Xavier)?,
                BatchNorm::new(ps, &d.bn, d.conv.out_ch)?,
            )),
            None => None,
        };
        let proj = Conv::from_spec(ps, &spec.proj, ConvInit::Xavier)?;
        Ok(KvBranch { down, proj })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let x = match &self.down {
            Some((conv, bn)) => bn.after_conv(conv, x, mode, None)?,
            None => x.clone(),
        };
        self.proj.forward(&x)
    }
}

/// timm `MobileAttention` with `MultiQueryAttention2d`: `norm`, `attn.query/key/value/output`,
/// `layer_scale`. One shared key head and one shared value head serve every query head.
pub struct MqaBlock {
    norm: BatchNorm,
    query: Conv,
    key: KvBranch,
    value: KvBranch,
    output: Conv,
    layer_scale: Option<LayerScale>,
    heads: usize,
    key_dim: usize,
    value_dim: usize,
}

/// One built block.
pub enum BlockModule {
    Chain(ChainBlock),
    Mqa(Box<MqaBlock>),
}

fn layer_scale(
    ps: &mut ParamStore,
    spec: &Option<LayerScaleSpec>,
    channels: usize,
) -> Result<Option<LayerScale>> {
    spec.as_ref()
        .map(|ls| LayerScale::new(ps, &ls.name, channels, ls.init))
        .transpose()
}

impl BlockModule {
    /// Creates the lowered conv chain `spec` with `channels` output channels.
    pub fn chain(ps: &mut ParamStore, spec: &ConvChain, channels: usize) -> Result<Self> {
        let convs = spec
            .convs
            .iter()
            .map(|c| ConvNormAct::new(ps, c))
            .collect::<Result<Vec<_>>>()?;
        Ok(BlockModule::Chain(ChainBlock {
            convs,
            layer_scale: layer_scale(ps, &spec.layer_scale, channels)?,
            residual: spec.residual,
        }))
    }

    /// The conv chain this block is, if it is one.
    pub fn as_chain(&self) -> Option<&ChainBlock> {
        match self {
            BlockModule::Chain(b) => Some(b),
            BlockModule::Mqa(_) => None,
        }
    }

    /// Creates the lowered multi-query attention block `spec` on `channels` channels.
    pub fn mqa(ps: &mut ParamStore, spec: &MqaSpec, channels: usize) -> Result<Self> {
        Ok(BlockModule::Mqa(Box::new(MqaBlock {
            norm: BatchNorm::new(ps, &spec.norm, channels)?,
            query: Conv::from_spec(ps, &spec.query, ConvInit::Xavier)?,
            key: KvBranch::new(ps, &spec.key)?,
            value: KvBranch::new(ps, &spec.value)?,
            output: Conv::from_spec(ps, &spec.output, ConvInit::Xavier)?,
            layer_scale: layer_scale(ps, &spec.layer_scale, channels)?,
            heads: spec.heads,
            key_dim: spec.key_dim,
            value_dim: spec.value_dim,
        })))
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        match self {
            BlockModule::Chain(b) => {
                if mode == Mode::Train {
                    if let Some(y) = chain_run_train(&[b], x)? {
                        return Ok(y);
                    }
                }
                let mut y = x.clone();
                for c in &b.convs {
                    y = c.forward(&y, mode)?;
                }
                if let Some(ls) = &b.layer_scale {
                    y = ls.forward(&y)?;
                }
                Ok(if b.residual { (y + x)? } else { y })
            }
            BlockModule::Mqa(b) => b.forward(x, mode),
        }
    }
}

impl ChainBlock {
    /// The block as the train-mode run op takes it.
    fn op_args(&self) -> ops::ChainBlock<'_> {
        ops::ChainBlock {
            units: self.convs.iter().map(ConvNormAct::chain_unit).collect(),
            layer_scale: self.layer_scale.as_ref().map(|ls| ls.gamma.as_tensor()),
            residual: self.residual,
        }
    }
}

/// `blocks` in train mode as one op ([`ops::chain_train`]), their batch statistics recorded;
/// `None` where a convolution has no kernel of ours.
pub fn chain_run_train(blocks: &[&ChainBlock], x: &Tensor) -> Result<Option<Tensor>> {
    let args: Vec<_> = blocks.iter().map(|b| b.op_args()).collect();
    let Some((y, stats)) = ops::chain_train(x, &args)? else {
        return Ok(None);
    };
    for (block, stats) in blocks.iter().zip(&stats) {
        for (unit, stats) in block.convs.iter().zip(stats) {
            unit.bn.record(stats)?;
        }
    }
    Ok(Some(y))
}

impl KvBranch {
    /// The branch as the train-mode attention op takes it.
    fn op_args(&self) -> ops::KvArgs<'_> {
        ops::KvArgs {
            down: self.down.as_ref().map(|(conv, bn)| ops::ChainUnit {
                weight: conv.weight.as_tensor(),
                geo: conv.geometry(),
                norm: bn.norm_act(None),
            }),
            proj: self.proj.weight.as_tensor(),
        }
    }
}

impl MqaBlock {
    /// The whole block as one train-mode op ([`ops::mqa_train`]), its batch statistics
    /// recorded; `None` where a convolution has no kernel of ours.
    fn forward_train(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let args = ops::MqaArgs {
            norm: self.norm.norm_act(None),
            query: self.query.weight.as_tensor(),
            key: self.key.op_args(),
            value: self.value.op_args(),
            output: self.output.weight.as_tensor(),
            layer_scale: self.layer_scale.as_ref().map(|ls| ls.gamma.as_tensor()),
            heads: self.heads,
            key_dim: self.key_dim,
            value_dim: self.value_dim,
        };
        let Some((y, stats)) = ops::mqa_train(x, &args)? else {
            return Ok(None);
        };
        let downs = [&self.key, &self.value].map(|b| b.down.as_ref().map(|(_, bn)| bn));
        let norms = std::iter::once(&self.norm).chain(downs.into_iter().flatten());
        for (bn, stats) in norms.zip(&stats) {
            bn.record(stats)?;
        }
        Ok(Some(y))
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        if mode == Mode::Train {
            if let Some(y) = self.forward_train(x)? {
                return Ok(y);
            }
        }
        let (bsz, _c, h, w) = x.dims4()?;
        let xn = self.norm.forward(x, mode)?;
        let l = h * w;
        // q: [B, heads·kd, H, W] → [B, heads·L, kd] (query channel = head·kd + d).
        let q = self
            .query
            .forward(&xn)?
            .reshape((bsz, self.heads, self.key_dim, l))?
            .transpose(2, 3)?
            .reshape((bsz, self.heads * l, self.key_dim))?;
        // k: [B, kd, P] (one shared head), v: [B, P, vd].
        let k = self.key.forward(&xn, mode)?.flatten_from(2)?;
        let v = self
            .value
            .forward(&xn, mode)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let scale = 1.0 / (self.key_dim as f64).sqrt();
        let attn = scaled_softmax(&q.contiguous()?.matmul(&k.contiguous()?)?, scale)?;
        // [B, heads·L, vd] → [B, heads, L, vd] → [B, heads, vd, L] → [B, heads·vd, H, W].
        let o = attn
            .matmul(&v.contiguous()?)?
            .reshape((bsz, self.heads, l, self.value_dim))?
            .transpose(2, 3)?
            .reshape((bsz, self.heads * self.value_dim, h, w))?;
        let mut y = self.output.forward(&o)?;
        if let Some(ls) = &self.layer_scale {
            y = ls.forward(&y)?;
        }
        Ok((y + x)?)
    }
}
