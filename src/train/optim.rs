//! Optimizers with PyTorch semantics: SGD with momentum / Nesterov and coupled weight decay, and
//! AdamW with decoupled weight decay. Weight decay skips BN affine parameters, biases and
//! layer-scale gammas ([`ParamKind::NoDecay`]). State can be saved and restored for `--resume`.

use crate::model::ParamKind;
use crate::ops::{read_f32, update_f32};
use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Which optimizer, with its hyper-parameters (learning rate comes from the schedule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// SGD; `momentum` 0 disables the buffer.
    Sgd {
        #[serde(default = "default_momentum")]
        momentum: f64,
        #[serde(default = "default_true")]
        nesterov: bool,
        #[serde(default)]
        weight_decay: f64,
    },
    /// AdamW (Loshchilov & Hutter).
    Adamw {
        #[serde(default = "default_beta1")]
        beta1: f64,
        #[serde(default = "default_beta2")]
        beta2: f64,
        #[serde(default = "default_eps")]
        eps: f64,
        #[serde(default)]
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    /// Range checks; errors name the field and the valid range.
    pub fn check(&self) -> anyhow::Result<()> {
        let unit = |name: &str, v: f64| -> anyhow::Result<()> {
            anyhow::ensure!(
                (0.0..1.0).contains(&v),
                "train.optimizer.{name} must be in [0, 1), got {v}"
            );
            Ok(())
        };
        let weight_decay = match *self {
            OptimizerConfig::Sgd {
                momentum,
                weight_decay,
                ..
            } => {
                unit("momentum", momentum)?;
                weight_decay
            }
            OptimizerConfig::Adamw {
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                unit("beta1", beta1)?;
                unit("beta2", beta2)?;
                anyhow::ensure!(
                    eps > 0.0 && eps.is_finite(),
                    "train.optimizer.eps must be positive and finite, got {eps}"
                );
                weight_decay
            }
        };
        anyhow::ensure!(
            weight_decay >= 0.0 && weight_decay.is_finite(),
            "train.optimizer.weight_decay must be a finite number >= 0, got {weight_decay}"
        );
        Ok(())
    }
}

fn default_momentum() -> f64 {
    0.9
}
fn default_true() -> bool {
    true
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

struct Slot {
    name: String,
    var: Var,
    decay: bool,
    /// SGD momentum buffer or Adam first moment.
    m: Option<Vec<f32>>,
    /// Adam second moment.
    v: Option<Vec<f32>>,
}

/// Elements per parallel work unit of the update loops.
const CHUNK: usize = 1 << 15;

/// SGD hyper-parameters of one update, as f32 (the precision of the parameters).
#[derive(Clone, Copy)]
struct Sgd {
    lr: f32,
    scale: Option<f32>,
    weight_decay: Option<f32>,
    momentum: Option<f32>,
    nesterov: bool,
}

impl Sgd {
    /// The scaled, decayed gradient `scale·g (+ wd·p)`.
    #[inline(always)]
    fn grad(&self, p: f32, g: f32) -> f32 {
        let g = self.scale.map_or(g, |s| g * s);
        self.weight_decay.map_or(g, |wd| g + p * wd)
    }

    /// Without momentum: `p ← p − lr·g`.
    fn update_plain(&self, p: &mut [f32], g: &[f32]) {
        for (p, &g) in p.iter_mut().zip(g) {
            *p -= self.grad(*p, g) * self.lr;
        }
    }

    /// With momentum `mu`: `buf ← g` (first step) or `mu·buf + g`; `g ← g + mu·buf` (Nesterov)
    /// or `buf`; `p ← p − lr·g`.
    fn update(&self, mu: f32, p: &mut [f32], g: &[f32], buf: &mut [f32], first: bool) {
        for ((p, &g), b) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
            let d = self.grad(*p, g);
            *b = if first { d } else { *b * mu + d };
            let d = if self.nesterov { d + *b * mu } else { *b };
            *p -= d * self.lr;
        }
    }
}

/// AdamW hyper-parameters of one update, with the bias corrections of its step.
#[derive(Clone, Copy)]
struct Adam {
    lr: f32,
    scale: Option<f32>,
    beta1: f32,
    beta2: f32,
    eps: f32,
    /// `1 / (1 − beta1^t)` and `1 / (1 − beta2^t)`.
    correct1: f32,
    correct2: f32,
    /// `1 − lr·wd`, for decayed parameters.
    decay: Option<f32>,
}

impl Adam {
    /// `m ← beta1·m + (1 − beta1)·g`, `v ← beta2·v + (1 − beta2)·g²` (from zero on the first
    /// step); `p ← (1 − lr·wd)·p − lr·m̂ / (√v̂ + eps)`.
    fn update(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], first: bool) {
        let (b1, b2) = (self.beta1, self.beta2);
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = self.scale.map_or(g, |s| g * s);
            *m = if first {
                g * (1.0 - b1)
            } else {
                *m * b1 + g * (1.0 - b1)
            };
            *v = if first {
                g * g * (1.0 - b2)
            } else {
                *v * b2 + g * g * (1.0 - b2)
            };
            let step = *m * self.correct1 / ((*v * self.correct2).sqrt() + self.eps) * self.lr;
            *p = self.decay.map_or(*p, |d| *p * d) - step;
        }
    }
}

/// A zeroed state buffer if `state` is empty (reporting whether it was), else the buffer.
fn state_buffer(state: &mut Option<Vec<f32>>, n: usize) -> (&mut Vec<f32>, bool) {
    let first = state.is_none();
    (state.get_or_insert_with(|| vec![0.0; n]), first)
}

/// An optimizer over a fixed list of named parameters.
///
/// Updates run in place on the CPU parameters' storage, outside autograd; the state buffers are
/// plain vectors, so no computation graph outlives a step.
pub struct Optimizer {
    config: OptimizerConfig,
    slots: Vec<Slot>,
    /// Number of updates applied so far.
    pub step: u64,
}

impl Optimizer {
    /// Creates the optimizer for `params` (name, variable, kind) as returned by `ParamStore::trainable`.
    pub fn new(config: OptimizerConfig, params: Vec<(String, Var, ParamKind)>) -> Self {
        let slots = params
            .into_iter()
            .map(|(name, var, kind)| Slot {
                name,
                var,
                decay: kind == ParamKind::Weight,
                m: None,
                v: None,
            })
            .collect();
        Self {
            config,
            slots,
            step: 0,
        }
    }

    /// Global L2 norm of the gradients.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sq = 0f64;
        for s in &self.slots {
            if let Some(g) = grads.get(&s.var) {
                let g = g.contiguous()?;
                sq += read_f32(&g, |g| g.iter().map(|&v| f64::from(v * v)).sum::<f64>())?;
            }
        }
        Ok(sq.sqrt())
    }

    /// Applies one update with learning rate `lr`; gradients are first scaled by `grad_scale`
    /// (used for global-norm clipping).
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let scale = (grad_scale != 1.0).then_some(grad_scale as f32);
        for s in &mut self.slots {
            let Some(g) = grads.get(&s.var) else { continue };
            let g = g.contiguous()?;
            let n = s.var.elem_count();
            match self.config {
                OptimizerConfig::Sgd {
                    momentum,
                    nesterov,
                    weight_decay,
                } => {
                    let h = Sgd {
                        lr: lr as f32,
                        scale,
                        weight_decay: (s.decay && weight_decay > 0.0)
                            .then_some(weight_decay as f32),
                        momentum: (momentum > 0.0).then_some(momentum as f32),
                        nesterov,
                    };
                    if let Some(mu) = h.momentum {
                        let (buf, first) = state_buffer(&mut s.m, n);
                        update_f32(s.var.as_tensor(), &g, |p, g| {
                            p.par_chunks_mut(CHUNK)
                                .zip(g.par_chunks(CHUNK))
                                .zip(buf.par_chunks_mut(CHUNK))
                                .for_each(|((p, g), b)| h.update(mu, p, g, b, first));
                        })?;
                    } else {
                        update_f32(s.var.as_tensor(), &g, |p, g| {
                            p.par_chunks_mut(CHUNK)
                                .zip(g.par_chunks(CHUNK))
                                .for_each(|(p, g)| h.update_plain(p, g));
                        })?;
                    }
                }
                OptimizerConfig::Adamw {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let h = Adam {
                        lr: lr as f32,
                        scale,
                        beta1: beta1 as f32,
                        beta2: beta2 as f32,
                        eps: eps as f32,
                        correct1: (1.0 / (1.0 - beta1.powi(t))) as f32,
                        correct2: (1.0 / (1.0 - beta2.powi(t))) as f32,
                        decay: (s.decay && weight_decay > 0.0)
                            .then_some((1.0 - lr * weight_decay) as f32),
                    };
                    let (m, first) = state_buffer(&mut s.m, n);
                    let (v, _) = state_buffer(&mut s.v, n);
                    update_f32(s.var.as_tensor(), &g, |p, g| {
                        p.par_chunks_mut(CHUNK)
                            .zip(g.par_chunks(CHUNK))
                            .zip(m.par_chunks_mut(CHUNK))
                            .zip(v.par_chunks_mut(CHUNK))
                            .for_each(|(((p, g), m), v)| h.update(p, g, m, v, first));
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The optimizer state as named tensors (`NAME.m`, `NAME.v`) for a checkpoint.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for s in &self.slots {
            let tensor = |buf: &[f32]| Tensor::from_slice(buf, s.var.shape(), s.var.device());
            for (suffix, state) in [("m", &s.m), ("v", &s.v)] {
                if let Some(buf) = state {
                    // Built from a slice of the right length, so this cannot fail.
                    if let Ok(t) = tensor(buf) {
                        out.insert(format!("{}.{suffix}", s.name), t);
                    }
                }
            }
        }
        out
    }

    /// Restores state saved by [`Optimizer::state_tensors`] and the step count.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for s in &mut self.slots {
            let fetch = |key: String| -> Result<Option<Vec<f32>>> {
                tensors
                    .get(&key)
                    .map(|t| {
                        anyhow::ensure!(
                            t.dims() == s.var.dims(),
                            "optimizer state {key}: shape {:?}, parameter {:?}",
                            t.dims(),
                            s.var.dims()
                        );
                        t.to_dtype(DType::F32)?
                            .flatten_all()?
                            .to_vec1::<f32>()
                            .context("reading optimizer state")
                    })
                    .transpose()
            };
            s.m = fetch(format!("{}.m", s.name))?;
            s.v = fetch(format!("{}.v", s.name))?;
        }
        self.step = step;
        Ok(())
    }
}
