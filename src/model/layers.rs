//! Leaf layers: convolution, batch norm, activation, layer scale, linear — each created in a
//! [`ParamStore`] under its timm name.

use super::params::{Init, ParamKind, ParamStore};
use crate::ops::{self, Act};
use crate::space::lower::{ConvBnSpec, ConvSpec};
use crate::space::Activation;
use anyhow::Result;
use candle_core::{DType, Tensor, Var, D};

/// BatchNorm momentum (PyTorch default) and epsilon (timm MobileNetV4).
pub const BN_MOMENTUM: f64 = 0.1;
pub const BN_EPS: f64 = 1e-5;

/// A batch norm's epsilon and running-statistics momentum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BnHyper {
    pub eps: f64,
    pub momentum: f64,
}

impl BnHyper {
    /// timm's MobileNetV4 values ([`BN_EPS`], [`BN_MOMENTUM`]).
    pub const TIMM: BnHyper = BnHyper {
        eps: BN_EPS,
        momentum: BN_MOMENTUM,
    };
}

/// Whether a forward pass trains (batch statistics, dropout) or evaluates (running statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// A bias-free 2-D convolution with symmetric padding k/2 (timm's default `''` padding).
pub struct Conv {
    pub weight: Var,
    pub stride: usize,
    pub groups: usize,
}

/// How a convolution weight is initialized.
#[derive(Clone, Copy)]
pub enum ConvInit {
    /// timm's EfficientNet init: Normal(0, sqrt(2 / fan_out)), fan_out = k·k·out / groups.
    FanOut,
    /// Xavier-uniform, which timm uses for the attention projections.
    Xavier,
    /// PyTorch's default (Kaiming-uniform with a = √5): Uniform(±1/sqrt(fan_in)).
    Torch,
}

impl Conv {
    /// Creates `{prefix}.weight` of shape [out, in/groups, k, k].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ps: &mut ParamStore,
        prefix: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
        init: ConvInit,
    ) -> Result<Self> {
        let fan_out = k * k * cout / groups;
        let fan_in = k * k * cin / groups;
        let init = match init {
            ConvInit::FanOut => Init::Normal((2.0 / fan_out as f64).sqrt()),
            ConvInit::Xavier => Init::Uniform((6.0 / (fan_in + fan_out) as f64).sqrt()),
            ConvInit::Torch => Init::Uniform(1.0 / (fan_in as f64).sqrt()),
        };
        let weight = ps.create(
            &format!("{prefix}.weight"),
            &[cout, cin / groups, k, k],
            init,
            ParamKind::Weight,
        )?;
        Ok(Self {
            weight,
            stride,
            groups,
        })
    }

    /// Creates the lowered conv `spec` (depthwise: one group per channel).
    pub fn from_spec(ps: &mut ParamStore, spec: &ConvSpec, init: ConvInit) -> Result<Self> {
        let groups = if spec.depthwise { spec.in_ch } else { 1 };
        let (cin, cout) = (spec.in_ch, spec.out_ch);
        Self::new(
            ps,
            &spec.weight,
            cin,
            cout,
            spec.kernel,
            spec.stride,
            groups,
            init,
        )
    }

    /// Stride, padding (k / 2) and groups, as the kernels take them.
    pub fn geometry(&self) -> ops::ConvGeometry {
        ops::ConvGeometry {
            stride: self.stride,
            padding: self.weight.dims()[2] / 2,
            groups: self.groups,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = self.geometry();
        Ok(ops::conv2d(
            x,
            self.weight.as_tensor(),
            g.stride,
            g.padding,
            g.groups,
        )?)
    }
}

/// BatchNorm over channel dim 1 of an NCHW (or NC) tensor.
pub struct BatchNorm {
    pub weight: Var,
    pub bias: Var,
    pub running_mean: Var,
    pub running_var: Var,
    pub hyper: BnHyper,
}

fn per_channel(t: &Tensor, x: &Tensor) -> Result<Tensor> {
    let c = t.dims()[0];
    let mut shape = vec![1usize; x.rank()];
    shape[1] = c;
    Ok(t.reshape(shape)?)
}

impl BatchNorm {
    /// Creates `{prefix}.weight/.bias/.running_mean/.running_var` with timm's epsilon and momentum.
    pub fn new(ps: &mut ParamStore, prefix: &str, c: usize) -> Result<Self> {
        Self::with_hyper(ps, prefix, c, BnHyper::TIMM)
    }

    /// [`BatchNorm::new`] with another epsilon and momentum.
    pub fn with_hyper(ps: &mut ParamStore, prefix: &str, c: usize, hyper: BnHyper) -> Result<Self> {
        Ok(Self {
            weight: ps.create(
                &format!("{prefix}.weight"),
                &[c],
                Init::Const(1.0),
                ParamKind::NoDecay,
            )?,
            bias: ps.create(
                &format!("{prefix}.bias"),
                &[c],
                Init::Const(0.0),
                ParamKind::NoDecay,
            )?,
            running_mean: ps.create(
                &format!("{prefix}.running_mean"),
                &[c],
                Init::Const(0.0),
                ParamKind::Buffer,
            )?,
            running_var: ps.create(
                &format!("{prefix}.running_var"),
                &[c],
                Init::Const(1.0),
                ParamKind::Buffer,
            )?,
            hyper,
        })
    }

    /// Train: normalize with batch statistics and update the running ones (unbiased variance,
    /// the configured momentum, as PyTorch). Eval: normalize with the running statistics.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_act(x, mode, None)
    }

    /// [`BatchNorm::forward`] followed by the activation `act`. For f32 tensors on the CPU, both
    /// modes run as one fused kernel ([`ops::batch_norm_train`], [`ops::channel_affine`]).
    pub fn forward_act(&self, x: &Tensor, mode: Mode, act: Option<Activation>) -> Result<Tensor> {
        if !(x.device().is_cpu() && x.dtype() == DType::F32) {
            let y = self.forward_generic(x, mode)?;
            return match act {
                Some(a) => activate(&y, a),
                None => Ok(y),
            };
        }
        let act = kernel_act(act);
        match mode {
            Mode::Eval => {
                let (scale, shift) = self.eval_affine()?;
                Ok(ops::channel_affine(x, &scale, &shift, act)?)
            }
            Mode::Train => {
                let (y, stats) = ops::batch_norm_train(
                    x,
                    self.weight.as_tensor(),
                    self.bias.as_tensor(),
                    self.hyper.eps,
                    act,
                )?;
                self.record(&stats)?;
                Ok(y)
            }
        }
    }

    /// `act(self(conv(x)))`. In train mode, where the convolution has a kernel of ours, it and
    /// the batch norm run as one op ([`ops::conv_bn_train`]): the same values and gradients,
    /// without a gradient buffer for the convolution's output.
    pub fn after_conv(
        &self,
        conv: &Conv,
        x: &Tensor,
        mode: Mode,
        act: Option<Activation>,
    ) -> Result<Tensor> {
        if mode == Mode::Train {
            let norm = self.norm_act(act);
            if let Some((y, stats)) =
                ops::conv_bn_train(x, conv.weight.as_tensor(), conv.geometry(), norm)?
            {
                self.record(&stats)?;
                return Ok(y);
            }
        }
        self.forward_act(&conv.forward(x)?, mode, act)
    }

    /// The parameters and settings the fused train-mode kernels take, with activation `act`.
    pub(crate) fn norm_act(&self, act: Option<Activation>) -> ops::NormAct<'_> {
        ops::NormAct {
            weight: self.weight.as_tensor(),
            bias: self.bias.as_tensor(),
            eps: self.hyper.eps,
            act: kernel_act(act),
        }
    }

    /// Folds one training batch's statistics into the running ones.
    pub(crate) fn record(&self, stats: &ops::BatchStats) -> Result<()> {
        let n = stats.count;
        self.update_running(&stats.mean, &stats.var, n as f64 / (n.max(2) - 1) as f64)
    }

    /// `(scale, shift)` of eval mode: `weight / √(running_var + eps)`, `bias − running_mean · scale`.
    fn eval_affine(&self) -> Result<(Tensor, Tensor)> {
        let eps = self.hyper.eps;
        let scale = (self.weight.as_tensor() / (self.running_var.as_tensor() + eps)?.sqrt()?)?;
        let shift = (self.bias.as_tensor() - (self.running_mean.as_tensor() * &scale)?)?;
        Ok((scale, shift))
    }

    /// `running ← (1 − momentum) · running + momentum · batch`, the variance scaled by
    /// `var_factor` (n / (n − 1), for the unbiased estimate). Outside autograd.
    fn update_running(&self, mean: &[f32], var: &[f32], var_factor: f64) -> Result<()> {
        let m = self.hyper.momentum;
        for (running, batch, factor) in [
            (&self.running_mean, mean, 1.0),
            (&self.running_var, var, var_factor),
        ] {
            let batch = Tensor::from_slice(batch, batch.len(), running.device())?;
            ops::update_f32(running, &batch, |r, b| {
                for (r, &b) in r.iter_mut().zip(b) {
                    *r = (f64::from(*r) * (1.0 - m) + f64::from(b) * factor * m) as f32;
                }
            })?;
        }
        Ok(())
    }

    /// The composition of candle ops, for devices and dtypes without a fused kernel.
    fn forward_generic(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        match mode {
            Mode::Eval => {
                let (scale, shift) = self.eval_affine()?;
                Ok(x.broadcast_mul(&per_channel(&scale, x)?)?
                    .broadcast_add(&per_channel(&shift, x)?)?)
            }
            Mode::Train => {
                let c = x.dims()[1];
                let n = x.elem_count() / c;
                // Reduce over every dim but the channel one.
                let xt = x.transpose(0, 1)?.reshape((c, n))?;
                let mean = xt.mean(D::Minus1)?;
                let centered = xt.broadcast_sub(&mean.unsqueeze(1)?)?;
                let var = centered.sqr()?.mean(D::Minus1)?;
                let inv_std = (var.clone() + self.hyper.eps)?.sqrt()?.recip()?;
                let scale = (self.weight.as_tensor() * &inv_std)?;
                let shift = (self.bias.as_tensor() - (&mean * &scale)?)?;
                let y = x
                    .broadcast_mul(&per_channel(&scale, x)?)?
                    .broadcast_add(&per_channel(&shift, x)?)?;
                let m = self.hyper.momentum;
                let unbiased = (var.detach() * (n as f64 / (n.max(2) - 1) as f64))?;
                self.running_mean
                    .set(&((self.running_mean.as_tensor() * (1.0 - m))? + (mean.detach() * m)?)?)?;
                self.running_var
                    .set(&((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)?;
                Ok(y)
            }
        }
    }
}

/// The kernels' form of an optional activation.
fn kernel_act(act: Option<Activation>) -> Act {
    match act {
        None => Act::Identity,
        Some(Activation::Relu) => Act::Relu,
        Some(Activation::Gelu) => Act::Gelu,
    }
}

/// Applies the activation.
pub fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    Ok(match act {
        Activation::Relu => x.relu()?,
        Activation::Gelu => x.gelu_erf()?,
    })
}

/// Conv + BN (+ activation), as lowered ([`ConvBnSpec`]): timm's `ConvNormAct` or a conv/BN
/// pair with custom names.
pub struct ConvNormAct {
    pub conv: Conv,
    pub bn: BatchNorm,
    pub act: Option<Activation>,
}

impl ConvNormAct {
    /// Creates the conv and the BN under the spec's names, the conv with timm's fan-out init.
    pub fn new(ps: &mut ParamStore, spec: &ConvBnSpec) -> Result<Self> {
        Ok(Self {
            conv: Conv::from_spec(ps, &spec.conv, ConvInit::FanOut)?,
            bn: BatchNorm::new(ps, &spec.bn, spec.conv.out_ch)?,
            act: spec.act,
        })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.bn.after_conv(&self.conv, x, mode, self.act)
    }

    /// This unit as the train-mode block op takes it ([`ops::chain_train`]).
    pub fn chain_unit(&self) -> ops::ChainUnit<'_> {
        ops::ChainUnit {
            weight: self.conv.weight.as_tensor(),
            geo: self.conv.geometry(),
            norm: self.bn.norm_act(self.act),
        }
    }
}

/// Per-channel learnable scale (`{prefix}.gamma`).
pub struct LayerScale {
    pub gamma: Var,
}

impl LayerScale {
    pub fn new(ps: &mut ParamStore, prefix: &str, c: usize, init: f64) -> Result<Self> {
        Ok(Self {
            gamma: ps.create(
                &format!("{prefix}.gamma"),
                &[c],
                Init::Const(init),
                ParamKind::NoDecay,
            )?,
        })
    }

    /// `x · gamma` per channel. For f32 tensors on the CPU it runs as the fused per-channel
    /// affine kernel ([`ops::channel_affine`], zero shift), whose backward sums `gamma`'s
    /// gradient in one pass instead of a strided reduction over the broadcast dims.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gamma = self.gamma.as_tensor();
        if !(x.device().is_cpu() && x.dtype() == DType::F32) {
            return Ok(x.broadcast_mul(&per_channel(gamma, x)?)?);
        }
        let shift = gamma.zeros_like()?;
        Ok(ops::channel_affine(x, gamma, &shift, Act::Identity)?)
    }
}

/// Fully connected layer (`{prefix}.weight` [out, in], `{prefix}.bias` [out]).
pub struct Linear {
    pub weight: Var,
    pub bias: Var,
}

impl Linear {
    /// PyTorch's default `nn.Linear` init for the weight, Uniform(±1/sqrt(in)), and a zero bias.
    /// (timm's EfficientNet init, Uniform(±1/sqrt(out)), gives 10-class heads logits of ±5 at
    /// the start, which slows training from scratch on small datasets.)
    pub fn new(ps: &mut ParamStore, prefix: &str, cin: usize, cout: usize) -> Result<Self> {
        Ok(Self {
            weight: ps.create(
                &format!("{prefix}.weight"),
                &[cout, cin],
                Init::Uniform(1.0 / (cin as f64).sqrt()),
                ParamKind::Weight,
            )?,
            bias: ps.create(
                &format!("{prefix}.bias"),
                &[cout],
                Init::Const(0.0),
                ParamKind::NoDecay,
            )?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())?)
    }
}

/// Inverted dropout with a mask drawn from the caller's seeded generator.
pub fn dropout(x: &Tensor, p: f64, rng: &mut impl rand::Rng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 - p;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| {
            if rng.random::<f64>() < keep {
                (1.0 / keep) as f32
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(DType::F32)?;
    Ok((x * mask)?)
}

/// `softmax(scores · scale)` over the last dimension, as attention takes it: one fused kernel
/// ([`ops::softmax_last_dim`]) for f32 on the CPU, candle's composition elsewhere.
pub fn scaled_softmax(scores: &Tensor, scale: f64) -> Result<Tensor> {
    if scores.device().is_cpu() && scores.dtype() == DType::F32 {
        Ok(ops::softmax_last_dim(scores, scale)?)
    } else {
        Ok(candle_nn::ops::softmax(&(scores * scale)?, D::Minus1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The fused layer scale gives the broadcast product's values and gradients.
    #[test]
    fn layer_scale_matches_the_broadcast_product() -> Result<()> {
        let dev = Device::Cpu;
        let mut ps = ParamStore::new(&dev, 3);
        let ls = LayerScale::new(&mut ps, "ls", 5, 0.5)?;
        let gamma = Tensor::new(&[0.5f32, -1.25, 2.0, 0.0, 3.5], &dev)?;
        ls.gamma.set(&gamma)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 5, 4, 2), &dev)?)?;
        let dy = Tensor::randn(0f32, 1.0, (3, 5, 4, 2), &dev)?;
        let fused = ls.forward(x.as_tensor())?;
        let plain = x.broadcast_mul(&per_channel(ls.gamma.as_tensor(), &x)?)?;
        assert_eq!(
            fused.flatten_all()?.to_vec1::<f32>()?,
            plain.flatten_all()?.to_vec1::<f32>()?
        );
        let grads = |y: &Tensor| -> Result<(Vec<f32>, Vec<f32>)> {
            let g = (y * &dy)?.sum_all()?.backward()?;
            let dx = g.get(x.as_tensor()).expect("x's gradient");
            let dg = g.get(ls.gamma.as_tensor()).expect("gamma's gradient");
            Ok((dx.flatten_all()?.to_vec1()?, dg.to_vec1()?))
        };
        let (fused, plain) = (grads(&fused)?, grads(&plain)?);
        assert_eq!(fused.0, plain.0, "input gradient");
        for (a, b) in fused.1.iter().zip(&plain.1) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "gamma: {a} vs {b}");
        }
        Ok(())
    }
}
