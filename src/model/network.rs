//! The builder: any valid [`Arch`] becomes a candle network with timm's parameter names.

use super::blocks::BlockModule;
use super::layers::{dropout, ConvNormAct, Linear, Mode};
use super::params::ParamStore;
use crate::space::{validate, Arch};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Mutex;

/// A MobileNetV4 network built from an [`Arch`].
pub struct Network {
    pub arch: Arch,
    pub params: ParamStore,
    stem: ConvNormAct,
    /// `blocks[s][b]`; the last entry is the `features`-channel 1×1 conv stage.
    blocks: Vec<Vec<BlockModule>>,
    final_conv: ConvNormAct,
    conv_head: ConvNormAct,
    classifier: Linear,
    dropout_rng: Mutex<StdRng>,
}

/// Logits plus the requested multi-scale feature maps.
pub struct Output {
    pub logits: Tensor,
    /// Feature maps in the order of the requested tap indices.
    pub features: Vec<Tensor>,
}

impl Network {
    /// Builds the network; initial weights come from `seed` (same seed → same weights).
    pub fn new(arch: &Arch, device: &Device, seed: u64) -> Result<Self> {
        validate(arch)?;
        let mut ps = ParamStore::new(device, seed);
        let act = arch.act;
        let stem = ConvNormAct::new(
            &mut ps,
            "conv_stem",
            "bn1",
            arch.in_chans,
            arch.stem,
            arch.stem_kernel,
            arch.stem_stride,
            false,
            Some(act),
        )?;
        let mut blocks: Vec<Vec<BlockModule>> = arch.stages.iter().map(|_| Vec::new()).collect();
        for (s, b, cin, spec) in arch.walk() {
            let m = BlockModule::new(
                &mut ps,
                &format!("blocks.{s}.{b}"),
                spec,
                cin,
                act,
                arch.layer_scale,
            )?;
            blocks[s].push(m);
        }
        let n = arch.stages.len();
        let final_conv = ConvNormAct::new(
            &mut ps,
            &format!("blocks.{n}.0.conv"),
            &format!("blocks.{n}.0.bn1"),
            arch.last_stage_channels(),
            arch.features,
            1,
            1,
            false,
            Some(act),
        )?;
        let conv_head = ConvNormAct::new(
            &mut ps,
            "conv_head",
            "norm_head",
            arch.features,
            arch.head,
            1,
            1,
            false,
            Some(act),
        )?;
        let classifier = Linear::new(&mut ps, "classifier", arch.head, arch.num_classes)?;
        Ok(Self {
            arch: arch.clone(),
            params: ps,
            stem,
            blocks,
            final_conv,
            conv_head,
            classifier,
            dropout_rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x5eed_d409)),
        })
    }

    /// Re-seeds the dropout generator (e.g. per epoch, for reproducible resumes).
    pub fn seed_dropout(&self, seed: u64) {
        *self.dropout_rng.lock().expect("dropout rng") = StdRng::seed_from_u64(seed);
    }

    /// Logits for a batch [B, C, H, W].
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        Ok(self.forward_with(x, mode, &[])?.logits)
    }

    /// Logits and the feature maps at the given tap indices (see [`Arch::feature_taps`]; for the
    /// presets 0…4 are strides 2, 4, 8, 16, 32).
    /// The pass runs on the kernels' worker pool ([`crate::ops::on_workers`]).
    pub fn forward_with(&self, x: &Tensor, mode: Mode, taps: &[usize]) -> Result<Output> {
        crate::ops::on_workers(|| self.forward_inner(x, mode, taps))
    }

    fn forward_inner(&self, x: &Tensor, mode: Mode, taps: &[usize]) -> Result<Output> {
        let (_, c, _, _) = x.dims4()?;
        if c != self.arch.in_chans {
            bail!(
                "input has {c} channels but the model expects {}",
                self.arch.in_chans
            );
        }
        let tap_specs = self.arch.feature_taps();
        if let Some(&bad) = taps.iter().find(|&&t| t >= tap_specs.len()) {
            bail!(
                "feature index {bad} out of range (this model has {} taps)",
                tap_specs.len()
            );
        }
        let mut found: Vec<Option<Tensor>> = vec![None; tap_specs.len()];
        let mut keep = |at: Option<usize>, t: &Tensor| {
            for (i, spec) in tap_specs.iter().enumerate() {
                if spec.after_stage == at && taps.contains(&i) {
                    found[i] = Some(t.clone());
                }
            }
        };
        let mut h = self.stem.forward(x, mode)?;
        keep(None, &h);
        for (s, stage) in self.blocks.iter().enumerate() {
            for block in stage {
                h = block.forward(&h, mode)?;
            }
            keep(Some(s), &h);
        }
        h = self.final_conv.forward(&h, mode)?;
        keep(Some(self.blocks.len()), &h);
        let pooled = h.mean_keepdim(3)?.mean_keepdim(2)?;
        let mut z = self.conv_head.forward(&pooled, mode)?.flatten_from(1)?;
        if mode == Mode::Train && self.arch.dropout > 0.0 {
            let mut rng = self.dropout_rng.lock().expect("dropout rng");
            z = dropout(&z, self.arch.dropout, &mut *rng)?;
        }
        let logits = self.classifier.forward(&z)?;
        let features = taps
            .iter()
            .map(|&i| found[i].clone().expect("every tap is visited"))
            .collect();
        Ok(Output { logits, features })
    }
}
