//! YOLO11's modules as candle code, with the tensor names of Ultralytics' state dict
//! (`model.2.cv1.conv.weight`, `model.2.m.0.cv1.bn.running_mean`, …). Shapes follow the plan
//! in [`super::blocks`], whose per-module parameter counts they reproduce.

use super::sheet::{gcd, ConvUnit, Tail};
use crate::model::layers::{scaled_softmax, BatchNorm, BnHyper, Conv, ConvInit, Mode};
use crate::model::params::{Init, ParamKind};
use crate::model::ParamStore;
use anyhow::Result;
use candle_core::{Tensor, Var};

/// Ultralytics' batch norm: epsilon 1e-3, momentum 0.03.
pub const YOLO_BN: BnHyper = BnHyper {
    eps: 1e-3,
    momentum: 0.03,
};

/// What follows a [`YoloConv`]'s convolution.
enum After {
    /// Batch norm (`{name}.bn`), then SiLU when `silu`.
    Bn { bn: BatchNorm, silu: bool },
    /// A per-channel bias (`{name}.bias`).
    Bias(Var),
}

/// One [`ConvUnit`] built: Ultralytics' `Conv` (`{name}.conv`, `{name}.bn`) for the batch-norm
/// tails, a plain `Conv2d` (`{name}.weight`, `{name}.bias`) for [`Tail::Bias`].
pub struct YoloConv {
    conv: Conv,
    after: After,
}

impl YoloConv {
    /// Creates the conv of `unit` on `cin` channels under `name`, with PyTorch's default init;
    /// a bias starts at `bias_init`.
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        cin: usize,
        unit: ConvUnit,
        bias_init: f64,
    ) -> Result<Self> {
        let weight = match unit.tail {
            Tail::Bias => name.to_string(),
            Tail::BnSilu | Tail::Bn => format!("{name}.conv"),
        };
        let (out, k, groups) = (unit.out, unit.k, unit.groups.max(1));
        let conv = Conv::new(
            ps,
            &weight,
            cin,
            out,
            k,
            unit.stride,
            groups,
            ConvInit::Torch,
        )?;
        let after = match unit.tail {
            Tail::Bias => After::Bias(ps.create(
                &format!("{name}.bias"),
                &[out],
                Init::Const(bias_init),
                ParamKind::NoDecay,
            )?),
            tail => After::Bn {
                bn: BatchNorm::with_hyper(ps, &format!("{name}.bn"), out, YOLO_BN)?,
                silu: tail == Tail::BnSilu,
            },
        };
        Ok(YoloConv { conv, after })
    }

    /// Ultralytics' `Conv(cin, out, k)` at stride 1: batch norm and SiLU.
    pub fn bn_silu(
        ps: &mut ParamStore,
        name: &str,
        cin: usize,
        out: usize,
        k: usize,
    ) -> Result<Self> {
        Self::new(ps, name, cin, ConvUnit::conv(out, k, 1), 0.0)
    }

    /// The output for `x`, batch norms in `mode`.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        match &self.after {
            After::Bn { bn, silu } => {
                let y = bn.after_conv(&self.conv, x, mode, None)?;
                Ok(if *silu { y.silu()? } else { y })
            }
            After::Bias(b) => {
                let y = self.conv.forward(x)?;
                Ok(y.broadcast_add(&b.as_tensor().reshape((1, (), 1, 1))?)?)
            }
        }
    }
}

/// Two 3×3 convs through `int(c·e)` channels, added to the input (every bottleneck of YOLO11
/// keeps its width and is residual).
pub struct Bottleneck {
    cv1: YoloConv,
    cv2: YoloConv,
}

impl Bottleneck {
    /// Creates `{name}.cv1` and `{name}.cv2` on `c` channels at expansion `e`.
    pub fn new(ps: &mut ParamStore, name: &str, c: usize, e: f64) -> Result<Self> {
        let hidden = (c as f64 * e) as usize;
        Ok(Bottleneck {
            cv1: YoloConv::bn_silu(ps, &format!("{name}.cv1"), c, hidden, 3)?,
            cv2: YoloConv::bn_silu(ps, &format!("{name}.cv2"), hidden, c, 3)?,
        })
    }

    /// The output for `x`, batch norms in `mode`.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = self.cv2.forward(&self.cv1.forward(x, mode)?, mode)?;
        Ok((x + y)?)
    }
}

/// C3k at width `c`: `cv1` and `cv2` 1×1 to `c/2`, `n` bottlenecks (expansion 1) after `cv1`,
/// `cv3` 1×1 on both halves back to `c`.
pub struct C3k {
    cv1: YoloConv,
    cv2: YoloConv,
    cv3: YoloConv,
    m: Vec<Bottleneck>,
}

impl C3k {
    /// Creates the C3k `name` on `c` channels with `n` bottlenecks.
    pub fn new(ps: &mut ParamStore, name: &str, c: usize, n: usize) -> Result<Self> {
        let half = c / 2;
        Ok(C3k {
            cv1: YoloConv::bn_silu(ps, &format!("{name}.cv1"), c, half, 1)?,
            cv2: YoloConv::bn_silu(ps, &format!("{name}.cv2"), c, half, 1)?,
            cv3: YoloConv::bn_silu(ps, &format!("{name}.cv3"), 2 * half, c, 1)?,
            m: (0..n)
                .map(|j| Bottleneck::new(ps, &format!("{name}.m.{j}"), half, 1.0))
                .collect::<Result<_>>()?,
        })
    }

    /// The output for `x`, batch norms in `mode`.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut y = self.cv1.forward(x, mode)?;
        for b in &self.m {
            y = b.forward(&y, mode)?;
        }
        let both = Tensor::cat(&[y, self.cv2.forward(x, mode)?], 1)?;
        self.cv3.forward(&both, mode)
    }
}

/// One inner block of a C3k2.
enum Inner {
    Bottleneck(Bottleneck),
    C3k(C3k),
}

/// C3k2: `cv1` 1×1 to two halves of `int(out·e)` channels, `n` inner blocks chained on the
/// second half, every map concatenated and fused by `cv2` 1×1.
pub struct C3k2 {
    cv1: YoloConv,
    cv2: YoloConv,
    m: Vec<Inner>,
    hidden: usize,
}

impl C3k2 {
    /// Creates the C3k2 `name` from `cin` to `out` channels with `n` inner blocks at expansion
    /// `e`; `c3k` nests two-bottleneck C3ks instead of bottlenecks at expansion 0.5.
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        cin: usize,
        out: usize,
        n: usize,
        c3k: bool,
        e: f64,
    ) -> Result<Self> {
        let hidden = (out as f64 * e) as usize;
        let m = (0..n)
            .map(|j| {
                let inner = format!("{name}.m.{j}");
                Ok(match c3k {
                    true => Inner::C3k(C3k::new(ps, &inner, hidden, 2)?),
                    false => Inner::Bottleneck(Bottleneck::new(ps, &inner, hidden, 0.5)?),
                })
            })
            .collect::<Result<_>>()?;
        Ok(C3k2 {
            cv1: YoloConv::bn_silu(ps, &format!("{name}.cv1"), cin, 2 * hidden, 1)?,
            cv2: YoloConv::bn_silu(ps, &format!("{name}.cv2"), (2 + n) * hidden, out, 1)?,
            m,
            hidden,
        })
    }

    /// The output for `x`, batch norms in `mode`.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = self.cv1.forward(x, mode)?;
        let mut parts = vec![
            y.narrow(1, 0, self.hidden)?,
            y.narrow(1, self.hidden, self.hidden)?,
        ];
        for inner in &self.m {
            let last = parts.last().expect("two halves at least");
            let next = match inner {
                Inner::Bottleneck(b) => b.forward(last, mode)?,
                Inner::C3k(c) => c.forward(last, mode)?,
            };
            parts.push(next);
        }
        self.cv2.forward(&Tensor::cat(&parts, 1)?, mode)
    }
}

/// SPPF: `cv1` 1×1 to half the input, three chained k×k stride-1 max pools, the four maps
/// concatenated and fused by `cv2` 1×1.
pub struct Sppf {
    cv1: YoloConv,
    cv2: YoloConv,
    k: usize,
}

impl Sppf {
    /// Creates the SPPF `name` from `cin` to `out` channels with `k`×`k` pools.
    pub fn new(ps: &mut ParamStore, name: &str, cin: usize, out: usize, k: usize) -> Result<Self> {
        let half = cin / 2;
        Ok(Sppf {
            cv1: YoloConv::bn_silu(ps, &format!("{name}.cv1"), cin, half, 1)?,
            cv2: YoloConv::bn_silu(ps, &format!("{name}.cv2"), 4 * half, out, 1)?,
            k,
        })
    }

    /// The output for `x`, batch norms in `mode`.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut maps = vec![self.cv1.forward(x, mode)?];
        for _ in 0..3 {
            let last = maps.last().expect("cv1's map");
            maps.push(max_pool_same(last, self.k)?);
        }
        self.cv2.forward(&Tensor::cat(&maps, 1)?, mode)
    }
}

/// k×k max pooling with stride 1 and padding k/2 (the padding never wins, as in PyTorch),
/// as a row pass and a column pass of element-wise maxima, so that it is differentiable.
pub fn max_pool_same(x: &Tensor, k: usize) -> Result<Tensor> {
    let mut y = x.clone();
    for dim in [2, 3] {
        let len = y.dim(dim)?;
        let mut pad_shape = y.dims().to_vec();
        pad_shape[dim] = k / 2;
        let pad = Tensor::full(f32::NEG_INFINITY, pad_shape, y.device())?.to_dtype(y.dtype())?;
        let padded = Tensor::cat(&[&pad, &y, &pad], dim)?;
        let mut m = padded.narrow(dim, 0, len)?;
        for shift in 1..k {
            m = m.maximum(&padded.narrow(dim, shift, len)?)?;
        }
        y = m;
    }
    Ok(y)
}

/// Multi-head self-attention over all positions: `qkv` 1×1 (per head: queries and keys
/// `key_dim` wide, values `head_dim` wide), softmax(qᵀk / √key_dim), plus a depthwise 3×3
/// positional conv `pe` on the values, then `proj` 1×1; no activations.
struct Attention {
    qkv: YoloConv,
    pe: YoloConv,
    proj: YoloConv,
    heads: usize,
    key_dim: usize,
}

impl Attention {
    fn new(ps: &mut ParamStore, name: &str, c: usize, heads: usize) -> Result<Self> {
        let key_dim = c / heads / 2;
        let linear = |out, k| ConvUnit::conv(out, k, 1).with(Tail::Bn);
        let qkv = linear(c + 2 * key_dim * heads, 1);
        Ok(Attention {
            qkv: YoloConv::new(ps, &format!("{name}.qkv"), c, qkv, 0.0)?,
            pe: YoloConv::new(ps, &format!("{name}.pe"), c, linear(c, 3).grouped(c), 0.0)?,
            proj: YoloConv::new(ps, &format!("{name}.proj"), c, linear(c, 1), 0.0)?,
            heads,
            key_dim,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let (kd, hd) = (self.key_dim, c / self.heads);
        let qkv = self
            .qkv
            .forward(x, mode)?
            .reshape((b, self.heads, 2 * kd + hd, h * w))?;
        let q = qkv.narrow(2, 0, kd)?.transpose(2, 3)?.contiguous()?;
        let k = qkv.narrow(2, kd, kd)?.contiguous()?;
        let v = qkv.narrow(2, 2 * kd, hd)?.contiguous()?;
        let attn = scaled_softmax(&q.matmul(&k)?, (kd as f64).powf(-0.5))?;
        let out = v.matmul(&attn.transpose(2, 3)?.contiguous()?)?;
        let v = v.reshape((b, c, h, w))?;
        let y = (out.reshape((b, c, h, w))? + self.pe.forward(&v, mode)?)?;
        self.proj.forward(&y, mode)
    }
}

/// Attention and a 2× feed-forward (`ffn.0` 1×1 with SiLU, `ffn.1` 1×1 without), both
/// residual.
struct PsaBlock {
    attn: Attention,
    ffn: [YoloConv; 2],
}

impl PsaBlock {
    fn new(ps: &mut ParamStore, name: &str, c: usize) -> Result<Self> {
        let back = ConvUnit::conv(c, 1, 1).with(Tail::Bn);
        Ok(PsaBlock {
            attn: Attention::new(ps, &format!("{name}.attn"), c, (c / 64).max(1))?,
            ffn: [
                YoloConv::bn_silu(ps, &format!("{name}.ffn.0"), c, 2 * c, 1)?,
                YoloConv::new(ps, &format!("{name}.ffn.1"), 2 * c, back, 0.0)?,
            ],
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let x = (x + self.attn.forward(x, mode)?)?;
        let h = self.ffn[0].forward(&x, mode)?;
        Ok((&x + self.ffn[1].forward(&h, mode)?)?)
    }
}

/// C2PSA: `cv1` 1×1 splits the input into halves a, b; `n` PSA blocks (one head per 64
/// channels, at least one) on b; `cv2` 1×1 on both back to the input width.
pub struct C2psa {
    cv1: YoloConv,
    cv2: YoloConv,
    m: Vec<PsaBlock>,
    half: usize,
}

impl C2psa {
    /// Creates the C2PSA `name` on `c` channels with `n` PSA blocks.
    pub fn new(ps: &mut ParamStore, name: &str, c: usize, n: usize) -> Result<Self> {
        let half = c / 2;
        Ok(C2psa {
            cv1: YoloConv::bn_silu(ps, &format!("{name}.cv1"), c, 2 * half, 1)?,
            cv2: YoloConv::bn_silu(ps, &format!("{name}.cv2"), 2 * half, c, 1)?,
            m: (0..n)
                .map(|j| PsaBlock::new(ps, &format!("{name}.m.{j}"), half))
                .collect::<Result<_>>()?,
            half,
        })
    }

    /// The output for `x`, batch norms in `mode`.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = self.cv1.forward(x, mode)?;
        let mut b = y.narrow(1, self.half, self.half)?;
        for block in &self.m {
            b = block.forward(&b, mode)?;
        }
        let a = y.narrow(1, 0, self.half)?;
        self.cv2.forward(&Tensor::cat(&[a, b], 1)?, mode)
    }
}

/// Ultralytics' `DWConv`: a 3×3 conv grouped by gcd(cin, out), batch norm, SiLU.
pub fn dw_conv(ps: &mut ParamStore, name: &str, cin: usize, out: usize) -> Result<YoloConv> {
    let unit = ConvUnit::conv(out, 3, 1).grouped(gcd(cin, out));
    YoloConv::new(ps, name, cin, unit, 0.0)
}
