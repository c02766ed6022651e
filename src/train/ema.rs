//! Exponential moving average of all weights (parameters and BN statistics), kept in a twin
//! network that is evaluated alongside the trained one.

use crate::model::Network;
use anyhow::Result;
use candle_core::{Device, Tensor};
use std::collections::HashMap;

/// The EMA twin of a network.
pub struct Ema {
    decay: f64,
    /// The averaged network.
    pub twin: Network,
}

impl Ema {
    /// A twin of `net` starting from its current weights; `None` without a decay.
    pub fn new(decay: Option<f64>, net: &Network, seed: u64) -> Result<Option<Self>> {
        let Some(decay) = decay else {
            return Ok(None);
        };
        let twin = Network::new(&net.arch, &Device::Cpu, seed)?;
        let weights: HashMap<String, Tensor> = net.params.tensors().into_iter().collect();
        twin.params.load_map(&weights, &[], "initial weights")?;
        Ok(Some(Self { decay, twin }))
    }

    /// `twin ← decay · twin + (1 − decay) · net`.
    pub fn update(&self, net: &Network) -> Result<()> {
        let src = net.params.tensors();
        for (name, t) in self.twin.params.tensors() {
            let v = ((t * self.decay)? + (&src[&name] * (1.0 - self.decay))?)?;
            self.twin.params.set(&name, &v)?;
        }
        Ok(())
    }

    /// The twin's tensors under the `ema.` prefix, for the checkpoint's state file.
    pub fn state(&self) -> impl Iterator<Item = (String, Tensor)> {
        self.twin
            .params
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
        self.twin.params.load_map(&w, &[], "EMA state")
    }
}
