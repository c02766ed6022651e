//! Named parameters in timm's state-dict scheme: seeded initialization, strict loading that
//! reports missing / unexpected / mis-shaped tensors by name, and atomic safetensors saving.

use crate::fsutil::atomic_write_with;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// How the optimizer treats a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Conv / linear weights: trained, with weight decay.
    Weight,
    /// BN affine parameters, biases, layer-scale gammas: trained, no weight decay.
    NoDecay,
    /// BN running statistics: saved and loaded, never trained.
    Buffer,
}

/// How a new tensor is filled.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Const(f64),
    /// Normal(0, std).
    Normal(f64),
    /// Uniform(-bound, bound).
    Uniform(f64),
}

/// All tensors of a network, by timm name.
pub struct ParamStore {
    entries: BTreeMap<String, (Var, ParamKind)>,
    device: Device,
    rng: StdRng,
    /// Prepended to every name created (see [`ParamStore::scoped`]).
    prefix: String,
}

impl ParamStore {
    /// An empty store whose initial values come from `seed` (same seed → same weights).
    pub fn new(device: &Device, seed: u64) -> Self {
        Self {
            entries: BTreeMap::new(),
            device: device.clone(),
            rng: StdRng::seed_from_u64(seed),
            prefix: String::new(),
        }
    }

    /// Runs `build` with every name it creates prefixed by `{prefix}.` (nested scopes stack).
    pub fn scoped<R>(&mut self, prefix: &str, build: impl FnOnce(&mut Self) -> R) -> R {
        let outer = self.prefix.clone();
        self.prefix = format!("{outer}{prefix}.");
        let built = build(self);
        self.prefix = outer;
        built
    }

    /// The device tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn sample(&mut self, n: usize, init: Init) -> Vec<f32> {
        match init {
            Init::Const(v) => vec![v as f32; n],
            Init::Uniform(b) => (0..n)
                .map(|_| self.rng.random_range(-b..b) as f32)
                .collect(),
            Init::Normal(std) => (0..n)
                .map(|_| {
                    // Box–Muller on our own seeded generator.
                    let u1: f64 = self.rng.random_range(f64::EPSILON..1.0);
                    let u2: f64 = self.rng.random();
                    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
                })
                .collect(),
        }
    }

    /// Creates the tensor `name` (under the current [`ParamStore::scoped`] prefix) with `shape`,
    /// filled by `init`.
    pub fn create(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        kind: ParamKind,
    ) -> Result<Var> {
        let name = format!("{}{name}", self.prefix);
        if self.entries.contains_key(&name) {
            bail!("parameter '{name}' defined twice");
        }
        let n = shape.iter().product();
        let data = self.sample(n, init);
        let var = Var::from_vec(data, shape, &self.device)?;
        self.entries.insert(name, (var.clone(), kind));
        Ok(var)
    }

    /// Every tensor by name, including buffers.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.entries
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// Overwrites the value of tensor `name` (same shape).
    pub fn set(&self, name: &str, value: &Tensor) -> Result<()> {
        let (var, _) = self
            .entries
            .get(name)
            .with_context(|| format!("no parameter named '{name}'"))?;
        var.set(value)?;
        Ok(())
    }

    /// The trainable tensors with their kinds (no buffers), in name order.
    pub fn trainable(&self) -> Vec<(String, Var, ParamKind)> {
        self.entries
            .iter()
            .filter(|(_, (_, k))| *k != ParamKind::Buffer)
            .map(|(n, (v, k))| (n.clone(), v.clone(), *k))
            .collect()
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.trainable()
            .iter()
            .map(|(_, v, _)| v.elem_count())
            .sum()
    }

    /// Copies values from `tensors` into the store. Every store entry must be present with the same
    /// shape, and every given tensor must be known, except names listed in `skip` (which keep their
    /// initial values) and timm's `num_batches_tracked` counters. Any dtype is cast to f32.
    pub fn load_map(
        &self,
        tensors: &HashMap<String, Tensor>,
        skip: &[&str],
        origin: &str,
    ) -> Result<()> {
        let mut missing = Vec::new();
        let mut misshaped = Vec::new();
        for (name, (var, _)) in &self.entries {
            if skip.iter().any(|s| name.starts_with(s)) {
                continue;
            }
            match tensors.get(name) {
                None => missing.push(name.clone()),
                Some(t) if t.dims() != var.dims() => misshaped.push(format!(
                    "{name}: checkpoint {:?}, model {:?}",
                    t.dims(),
                    var.dims()
                )),
                Some(_) => {}
            }
        }
        let unexpected: Vec<&String> = tensors
            .keys()
            .filter(|k| !k.ends_with("num_batches_tracked"))
            .filter(|k| !skip.iter().any(|s| k.starts_with(s)))
            .filter(|k| !self.entries.contains_key(*k))
            .collect();
        if !(missing.is_empty() && misshaped.is_empty() && unexpected.is_empty()) {
            let list = |v: Vec<String>| {
                let n = v.len();
                let mut s = v.into_iter().take(12).collect::<Vec<_>>().join(", ");
                if n > 12 {
                    s.push_str(&format!(", … ({n} in all)"));
                }
                s
            };
            let mut msg = format!("checkpoint {origin} does not match the model:");
            if !missing.is_empty() {
                msg.push_str(&format!("\n  missing: {}", list(missing)));
            }
            if !unexpected.is_empty() {
                msg.push_str(&format!(
                    "\n  unexpected: {}",
                    list(unexpected.into_iter().cloned().collect())
                ));
            }
            if !misshaped.is_empty() {
                msg.push_str(&format!("\n  wrong shape: {}", list(misshaped)));
            }
            bail!(msg);
        }
        for (name, (var, _)) in &self.entries {
            if let Some(t) = tensors.get(name) {
                var.set(&t.to_dtype(DType::F32)?.to_device(&self.device)?)?;
            }
        }
        Ok(())
    }

    /// Loads a safetensors file (f16, bf16 or f32; timm names). See [`ParamStore::load_map`].
    pub fn load_safetensors(&self, path: &Path, skip: &[&str]) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .with_context(|| format!("reading safetensors checkpoint {}", path.display()))?;
        self.load_map(&tensors, skip, &path.display().to_string())
    }

    /// Writes every tensor (f32, timm names) atomically: a crash never leaves a partial file.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let tensors: HashMap<String, Tensor> = self.tensors().into_iter().collect();
        atomic_write_with(path, |tmp| {
            candle_core::safetensors::save(&tensors, tmp)
                .with_context(|| format!("writing {}", tmp.display()))
        })
    }
}
