//! Optimizers with PyTorch semantics: SGD with momentum / Nesterov and coupled weight decay, and
//! AdamW with decoupled weight decay. Weight decay skips BN affine parameters, biases and
//! layer-scale gammas ([`ParamKind::NoDecay`]). State can be saved and restored for `--resume`.

use crate::model::ParamKind;
use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
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
    m: Option<Tensor>,
    /// Adam second moment.
    v: Option<Tensor>,
}

/// An optimizer over a fixed list of named parameters.
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
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        Ok(sq.sqrt())
    }

    /// Applies one update with learning rate `lr`; gradients are first scaled by `grad_scale`
    /// (used for global-norm clipping).
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        for s in &mut self.slots {
            let Some(g) = grads.get(&s.var) else { continue };
            let mut g = if grad_scale != 1.0 {
                (g * grad_scale)?
            } else {
                g.clone()
            };
            let p = s.var.as_tensor();
            match self.config {
                OptimizerConfig::Sgd {
                    momentum,
                    nesterov,
                    weight_decay,
                } => {
                    if s.decay && weight_decay > 0.0 {
                        g = (g + (p * weight_decay)?)?;
                    }
                    if momentum > 0.0 {
                        let buf = match &s.m {
                            Some(b) => ((b * momentum)? + &g)?,
                            None => g.clone(),
                        };
                        g = if nesterov {
                            (g + (&buf * momentum)?)?
                        } else {
                            buf.clone()
                        };
                        s.m = Some(buf);
                    }
                    s.var.set(&(p - (g * lr)?)?)?;
                }
                OptimizerConfig::Adamw {
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let m = match &s.m {
                        Some(m) => ((m * beta1)? + (&g * (1.0 - beta1))?)?,
                        None => (&g * (1.0 - beta1))?,
                    };
                    let v = match &s.v {
                        Some(v) => ((v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?,
                        None => (g.sqr()? * (1.0 - beta2))?,
                    };
                    let mhat = (&m / (1.0 - beta1.powi(t)))?;
                    let vhat = (&v / (1.0 - beta2.powi(t)))?;
                    let mut p2 = if s.decay && weight_decay > 0.0 {
                        (p * (1.0 - lr * weight_decay))?
                    } else {
                        p.clone()
                    };
                    p2 = (p2 - ((mhat / (vhat.sqrt()? + eps)?)? * lr)?)?;
                    s.var.set(&p2)?;
                    s.m = Some(m);
                    s.v = Some(v);
                }
            }
        }
        Ok(())
    }

    /// The optimizer state as named tensors (`NAME.m`, `NAME.v`) for a checkpoint.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for s in &self.slots {
            if let Some(m) = &s.m {
                out.insert(format!("{}.m", s.name), m.clone());
            }
            if let Some(v) = &s.v {
                out.insert(format!("{}.v", s.name), v.clone());
            }
        }
        out
    }

    /// Restores state saved by [`Optimizer::state_tensors`] and the step count.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for s in &mut self.slots {
            let dev = s.var.device().clone();
            let fetch = |key: String| -> Result<Option<Tensor>> {
                tensors
                    .get(&key)
                    .map(|t| {
                        anyhow::ensure!(
                            t.dims() == s.var.dims(),
                            "optimizer state {key}: shape {:?}, parameter {:?}",
                            t.dims(),
                            s.var.dims()
                        );
                        t.to_device(&dev).context("moving optimizer state")
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
