//! The four block kinds of MobileNetV4, built from an [`space::Block`](crate::space::Block) with
//! timm's module names.

use super::layers::{BatchNorm, Conv, ConvInit, ConvNormAct, LayerScale, Mode};
use super::params::ParamStore;
use crate::space::arch::expanded_channels;
use crate::space::{Activation, Block};
use anyhow::Result;
use candle_core::{Tensor, D};

/// timm `ConvBnAct`: `conv`, `bn1`.
pub struct ConvBnBlock {
    cna: ConvNormAct,
}

/// timm `EdgeResidual` (FusedIB): `conv_exp`, `bn1`, `conv_pwl`, `bn2`.
pub struct FusedIbBlock {
    exp: ConvNormAct,
    pwl: ConvNormAct,
    skip: bool,
}

/// timm `UniversalInvertedResidual`: `dw_start`, `pw_exp`, `dw_mid`, `pw_proj`, `layer_scale`.
pub struct UibBlock {
    dw_start: Option<ConvNormAct>,
    pw_exp: ConvNormAct,
    dw_mid: Option<ConvNormAct>,
    pw_proj: ConvNormAct,
    layer_scale: Option<LayerScale>,
    skip: bool,
}

/// Key or value branch of MQA: optional stride-2 depthwise + BN, then a 1×1 projection.
struct KvBranch {
    down: Option<(Conv, BatchNorm)>,
    proj: Conv,
}

impl KvBranch {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let x = match &self.down {
            Some((conv, bn)) => bn.forward(&conv.forward(x)?, mode)?,
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
    ConvBn(ConvBnBlock),
    FusedIb(FusedIbBlock),
    Uib(UibBlock),
    Mqa(MqaBlock),
}

impl BlockModule {
    /// Creates block `spec` with input width `cin` under `prefix` (e.g. `blocks.2.1`).
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        spec: &Block,
        cin: usize,
        act: Activation,
        layer_scale: Option<f64>,
    ) -> Result<Self> {
        let p = |s: &str| format!("{prefix}.{s}");
        Ok(match *spec {
            Block::ConvBn { k, stride, out } => BlockModule::ConvBn(ConvBnBlock {
                cna: ConvNormAct::new(
                    ps,
                    &p("conv"),
                    &p("bn1"),
                    cin,
                    out,
                    k,
                    stride,
                    false,
                    Some(act),
                )?,
            }),
            Block::FusedIb {
                k,
                stride,
                expansion,
                out,
            } => {
                let mid = expanded_channels(cin, expansion);
                BlockModule::FusedIb(FusedIbBlock {
                    exp: ConvNormAct::new(
                        ps,
                        &p("conv_exp"),
                        &p("bn1"),
                        cin,
                        mid,
                        k,
                        stride,
                        false,
                        Some(act),
                    )?,
                    pwl: ConvNormAct::new(
                        ps,
                        &p("conv_pwl"),
                        &p("bn2"),
                        mid,
                        out,
                        1,
                        1,
                        false,
                        None,
                    )?,
                    skip: stride == 1 && cin == out,
                })
            }
            Block::Uib {
                start_dw,
                mid_dw,
                stride,
                expansion,
                out,
            } => {
                let mid = expanded_channels(cin, expansion);
                let start_stride = if mid_dw > 0 { 1 } else { stride };
                BlockModule::Uib(UibBlock {
                    dw_start: (start_dw > 0)
                        .then(|| {
                            ConvNormAct::timm(
                                ps,
                                &p("dw_start"),
                                cin,
                                cin,
                                start_dw,
                                start_stride,
                                true,
                                None,
                            )
                        })
                        .transpose()?,
                    pw_exp: ConvNormAct::timm(ps, &p("pw_exp"), cin, mid, 1, 1, false, Some(act))?,
                    dw_mid: (mid_dw > 0)
                        .then(|| {
                            ConvNormAct::timm(
                                ps,
                                &p("dw_mid"),
                                mid,
                                mid,
                                mid_dw,
                                stride,
                                true,
                                Some(act),
                            )
                        })
                        .transpose()?,
                    pw_proj: ConvNormAct::timm(ps, &p("pw_proj"), mid, out, 1, 1, false, None)?,
                    layer_scale: layer_scale
                        .map(|v| LayerScale::new(ps, &p("layer_scale"), out, v))
                        .transpose()?,
                    skip: stride == 1 && cin == out,
                })
            }
            Block::Mqa {
                heads,
                key_dim,
                value_dim,
                kv_stride,
                kv_kernel,
            } => {
                let norm = BatchNorm::new(ps, &p("norm"), cin)?;
                let query = Conv::new(
                    ps,
                    &p("attn.query.proj"),
                    cin,
                    heads * key_dim,
                    1,
                    1,
                    1,
                    ConvInit::Xavier,
                )?;
                let mut branch = |which: &str, dim: usize| -> Result<KvBranch> {
                    let down = if kv_stride > 1 {
                        Some((
                            Conv::new(
                                ps,
                                &p(&format!("attn.{which}.down_conv")),
                                cin,
                                cin,
                                kv_kernel,
                                kv_stride,
                                cin,
                                ConvInit::Xavier,
                            )?,
                            BatchNorm::new(ps, &p(&format!("attn.{which}.norm")), cin)?,
                        ))
                    } else {
                        None
                    };
                    let proj = Conv::new(
                        ps,
                        &p(&format!("attn.{which}.proj")),
                        cin,
                        dim,
                        1,
                        1,
                        1,
                        ConvInit::Xavier,
                    )?;
                    Ok(KvBranch { down, proj })
                };
                let key = branch("key", key_dim)?;
                let value = branch("value", value_dim)?;
                let output = Conv::new(
                    ps,
                    &p("attn.output.proj"),
                    heads * value_dim,
                    cin,
                    1,
                    1,
                    1,
                    ConvInit::Xavier,
                )?;
                BlockModule::Mqa(MqaBlock {
                    norm,
                    query,
                    key,
                    value,
                    output,
                    layer_scale: layer_scale
                        .map(|v| LayerScale::new(ps, &p("layer_scale"), cin, v))
                        .transpose()?,
                    heads,
                    key_dim,
                    value_dim,
                })
            }
        })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        match self {
            BlockModule::ConvBn(b) => b.cna.forward(x, mode),
            BlockModule::FusedIb(b) => {
                let y = b.pwl.forward(&b.exp.forward(x, mode)?, mode)?;
                Ok(if b.skip { (y + x)? } else { y })
            }
            BlockModule::Uib(b) => {
                let mut y = x.clone();
                if let Some(d) = &b.dw_start {
                    y = d.forward(&y, mode)?;
                }
                y = b.pw_exp.forward(&y, mode)?;
                if let Some(d) = &b.dw_mid {
                    y = d.forward(&y, mode)?;
                }
                y = b.pw_proj.forward(&y, mode)?;
                if let Some(ls) = &b.layer_scale {
                    y = ls.forward(&y)?;
                }
                Ok(if b.skip { (y + x)? } else { y })
            }
            BlockModule::Mqa(b) => b.forward(x, mode),
        }
    }
}

impl MqaBlock {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
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
        let attn = (q.contiguous()?.matmul(&k.contiguous()?)? * scale)?;
        let attn = candle_nn::ops::softmax(&attn, D::Minus1)?;
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
