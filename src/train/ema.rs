//! Exponential moving average of all weights (parameters and BN statistics), kept in a twin
//! network that is evaluated alongside (or instead of) the trained one.

use crate::detect::DetectNet;
use crate::model::{Network, ParamStore};
use anyhow::Result;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// A network whose weights can be averaged: its parameters, and a fresh network of the same
/// shape to hold the average.
pub trait Averaged: Sized {
    /// Every weight, BN statistics included.
    fn params(&self) -> &ParamStore;
    /// A network of the same architecture (its initial weights are overwritten).
    fn same_shape(&self, seed: u64) -> Result<Self>;
}

impl Averaged for Network {
    fn params(&self) -> &ParamStore {
        &self.params
    }
    fn same_shape(&self, seed: u64) -> Result<Self> {
        Network::new(&self.arch, &Device::Cpu, seed)
    }
}

impl Averaged for DetectNet {
    fn params(&self) -> &ParamStore {
        &self.params
    }
    fn same_shape(&self, seed: u64) -> Result<Self> {
        DetectNet::new(self.detector(), &Device::Cpu, seed)
    }
}

/// The EMA twin of a network.
pub struct Ema<N: Averaged = Network> {
    decay: f64,
    /// With a ramp τ, the decay after `u` updates is `decay · (1 − e^(−u/τ))` (YOLO's warm-up:
    /// early averages follow the fast-moving weights).
    ramp: Option<f64>,
    updates: AtomicU64,
    /// The averaged network.
    pub twin: N,
}

impl<N: Averaged> Ema<N> {
    /// A twin of `net` starting from its current weights; `None` without a decay.
    pub fn new(decay: Option<f64>, net: &N, seed: u64) -> Result<Option<Self>> {
        let Some(decay) = decay else {
            return Ok(None);
        };
        let twin = net.same_shape(seed)?;
        let weights: HashMap<String, Tensor> = net.params().tensors().into_iter().collect();
        twin.params().load_map(&weights, &[], "initial weights")?;
        Ok(Some(Self {
            decay,
            ramp: None,
            updates: AtomicU64::new(0),
            twin,
        }))
    }

    /// The same EMA with the decay ramped up over about `tau` updates.
    pub fn with_ramp(self, tau: f64) -> Self {
        Self {
            ramp: Some(tau),
            ..self
        }
    }

    /// The decay the next update uses.
    fn current_decay(&self) -> f64 {
        let u = (self.updates.load(Ordering::Relaxed) + 1) as f64;
        match self.ramp {
            Some(tau) => self.decay * (1.0 - (-u / tau).exp()),
            None => self.decay,
        }
    }

    /// `twin ← d · twin + (1 − d) · net`, with `d` the (ramped) decay.
    pub fn update(&self, net: &N) -> Result<()> {
        let d = self.current_decay();
        let src = net.params().tensors();
        for (name, t) in self.twin.params().tensors() {
            let v = ((t * d)? + (&src[&name] * (1.0 - d))?)?;
            self.twin.params().set(&name, &v)?;
        }
        self.updates.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sets how many updates were made (on resume, for the ramp).
    pub fn set_updates(&self, n: u64) {
        self.updates.store(n, Ordering::Relaxed);
    }

    /// The twin's tensors under the `ema.` prefix, for the checkpoint's state file.
    pub fn state(&self) -> impl Iterator<Item = (String, Tensor)> {
        self.twin
            .params()
            .tensors()
            .into_iter()
            .map(|(k, v)| (format!("ema.{k}"), v))
    }

    /// Restores the twin from a checkpoint's state file.
    pub fn load_state(&self, state: &HashMap<String, Tensor>) -> Result<()> {
        let w: HashMap<String, Tensor> = state
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("ema.").map(|k| (k.to_string(), v.clone())))
            .collect();
        self.twin.params().load_map(&w, &[], "EMA state")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::presets::preset;

    fn first(net: &Network) -> (String, f32) {
        let (name, t) = net.params.tensors().into_iter().next().unwrap();
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        (name, v)
    }

    #[test]
    fn an_update_mixes_the_twin_and_the_net_by_the_ramped_decay() {
        let arch = preset("conv-small", 0.25).unwrap().with_io(1, 10);
        let net = Network::new(&arch, &Device::Cpu, 1).unwrap();
        let ema = Ema::new(Some(0.9), &net, 1)
            .unwrap()
            .unwrap()
            .with_ramp(2.0);
        let (name, w0) = first(&net);
        assert_eq!(first(&ema.twin).1, w0);
        let moved = (net.params.tensors()[&name].clone() + 1.0).unwrap();
        net.params.set(&name, &moved).unwrap();
        ema.update(&net).unwrap();
        let d = 0.9 * (1.0 - (-0.5f64).exp());
        let want = d * w0 as f64 + (1.0 - d) * (w0 as f64 + 1.0);
        assert!((first(&ema.twin).1 as f64 - want).abs() < 1e-6);
        // Without a ramp the decay is the constant one.
        let flat = Ema::new(Some(0.9), &net, 1).unwrap().unwrap();
        assert_eq!(flat.current_decay(), 0.9);
        ema.set_updates(1_000_000);
        assert!((ema.current_decay() - 0.9).abs() < 1e-12);
    }
}
