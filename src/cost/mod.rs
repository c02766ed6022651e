//! Costs from the spec alone: parameters, MACs, bytes and roofline latency of an `Arch`,
//! computed without building a single tensor, so a search can reject a candidate before training.

pub mod plan;

pub use plan::{plan, plan_layer, Layer};

use crate::space::Arch;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The built-in hardware profiles (see the file for where each number comes from).
pub const BUILTIN_PROFILES: &str = include_str!("profiles.toml");

/// A roofline hardware profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    /// Peak MACs per byte of memory traffic (the roofline's ridge point).
    pub ridge_macs_per_byte: f64,
    /// Memory bandwidth in GB/s (10^9 bytes per second).
    pub bandwidth_gb_s: f64,
    /// Bytes per weight / activation element (1 for int8 deployments, 4 for f32).
    pub bytes_per_element: u64,
    #[serde(default)]
    pub note: String,
}

impl Profile {
    /// Peak MACs per second.
    pub fn peak_macs_per_s(&self) -> f64 {
        self.ridge_macs_per_byte * self.bandwidth_gb_s * 1e9
    }

    /// Roofline latency of one layer, seconds: max(MACs / peak, bytes / bandwidth).
    pub fn layer_seconds(&self, layer: &Layer) -> f64 {
        let bytes = (layer.weight_elems + layer.act_elems) * self.bytes_per_element;
        (layer.macs as f64 / self.peak_macs_per_s()).max(bytes as f64 / (self.bandwidth_gb_s * 1e9))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    profile: Vec<Profile>,
}

/// Parses a profiles TOML document (`[[profile]]` tables).
pub fn parse_profiles(text: &str) -> Result<Vec<Profile>> {
    let f: ProfileFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    for p in &f.profile {
        anyhow::ensure!(
            p.ridge_macs_per_byte > 0.0 && p.bandwidth_gb_s > 0.0 && p.bytes_per_element > 0,
            "profile '{}': ridge_macs_per_byte, bandwidth_gb_s and bytes_per_element must be positive",
            p.name
        );
    }
    Ok(f.profile)
}

/// Loads profiles from `path`, or the built-in ones when `path` is `None`.
pub fn load_profiles(path: Option<&Path>) -> Result<Vec<Profile>> {
    match path {
        None => parse_profiles(BUILTIN_PROFILES),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading hardware profiles {}", p.display()))?;
            parse_profiles(&text).with_context(|| format!("in hardware profiles {}", p.display()))
        }
    }
}

/// Totals for one architecture at one input size (per image).
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    pub params: u64,
    pub macs: u64,
    /// Parameter (plus BN statistics) elements.
    pub weight_elems: u64,
    /// Activation elements read and written across all layers.
    pub act_elems: u64,
    /// Roofline latency in milliseconds per profile name.
    pub roofline_ms: Vec<(String, f64)>,
}

/// Saturating total of one count over the plan (see `plan`'s overflow rule).
fn total(layers: &[Layer], f: impl Fn(&Layer) -> u64) -> u64 {
    layers.iter().fold(0u64, |a, l| a.saturating_add(f(l)))
}

/// Bytes a training step holds at batch `batch`, estimated from the spec: every layer's input
/// and output activations (kept for the backward pass) and their gradients, plus weights,
/// gradients and two optimizer moments, all in f32. A lower bound, used to refuse
/// configurations that cannot fit in memory before any work.
pub fn training_bytes(c: &Cost, batch: usize) -> u64 {
    let acts = c.act_elems.saturating_mul(batch as u64).saturating_mul(2);
    let weights = c.weight_elems.saturating_mul(4);
    acts.saturating_add(weights).saturating_mul(4)
}

/// Computes the totals and the roofline latency for each profile.
pub fn cost(arch: &Arch, height: usize, width: usize, profiles: &[Profile]) -> Cost {
    totals(&plan(arch, height, width), profiles)
}

/// The totals and roofline latencies of any planned layers (a classifier's, a detector's).
pub fn totals(layers: &[Layer], profiles: &[Profile]) -> Cost {
    Cost {
        params: total(layers, |l| l.params),
        macs: total(layers, |l| l.macs),
        weight_elems: total(layers, |l| l.weight_elems),
        act_elems: total(layers, |l| l.act_elems),
        roofline_ms: profiles
            .iter()
            .map(|p| {
                let s: f64 = layers.iter().map(|l| p.layer_seconds(l)).sum();
                (p.name.clone(), s * 1e3)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_inputs_saturate_instead_of_wrapping() {
        let arch = crate::space::presets::preset("hybrid-large", 2.0).unwrap();
        let small = cost(&arch, 224, 224, &[]);
        let huge = cost(&arch, 1 << 28, 1 << 28, &[]);
        assert!(huge.macs >= small.macs && huge.act_elems >= small.act_elems);
        assert_eq!(huge.macs, u64::MAX, "the MQA attention alone is beyond u64");
        assert_eq!(training_bytes(&huge, 128), u64::MAX);
        assert!(training_bytes(&small, 1) > 0);
    }
}
