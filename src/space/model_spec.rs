//! The `[model]` section of an experiment: which architecture to train and how to adapt it
//! (width, stem stride, dropped downsamplings, dropout) — resolved into an [`Arch`].

use super::{validate, Arch, Block};
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// `[model]`: a preset with a width, or an arch file / block string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSpec {
    /// Preset name, arch TOML path, or block string (default `conv-small`).
    pub arch: String,
    /// Width multiplier applied to the arch (default 1.0).
    pub width: f64,
    /// Override the stem stride (1 keeps more resolution for 28–32 px inputs).
    pub stem_stride: Option<usize>,
    /// Turn the first N stride-2 blocks into stride 1 (a CIFAR-style small-input variant).
    pub drop_downsamples: usize,
    /// Classifier dropout (default 0.0).
    pub dropout: f64,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            arch: "conv-small".into(),
            width: 1.0,
            stem_stride: None,
            drop_downsamples: 0,
            dropout: 0.0,
        }
    }
}

impl ModelSpec {
    /// The architecture to train: the arch at its width, with the data's channels and classes,
    /// the stem stride, dropped downsamplings and dropout applied, validated.
    pub fn to_arch(&self, channels: usize, num_classes: usize) -> Result<Arch> {
        let m = self;
        let mut arch = Arch::resolve(&m.arch, m.width)?.with_io(channels, num_classes);
        if let Some(s) = m.stem_stride {
            arch.stem_stride = s;
        }
        let mut left = m.drop_downsamples;
        for block in arch.stages.iter_mut().flat_map(|s| s.blocks.iter_mut()) {
            if left == 0 {
                break;
            }
            use Block::*;
            match block {
                ConvBn { stride, .. } | FusedIb { stride, .. } | Uib { stride, .. }
                    if *stride == 2 =>
                {
                    *stride = 1;
                    left -= 1;
                }
                _ => {}
            }
        }
        if left > 0 {
            anyhow::bail!(
                "model.drop_downsamples = {} but {} has only {} stride-2 blocks",
                m.drop_downsamples,
                m.arch,
                m.drop_downsamples - left
            );
        }
        if !(0.0..1.0).contains(&m.dropout) {
            anyhow::bail!("model.dropout must be in [0, 1), got {}", m.dropout);
        }
        arch.dropout = m.dropout;
        validate(&arch)?;
        Ok(arch)
    }
}
