//! The builder: any valid [`Arch`] becomes a candle network with timm's parameter names.

use super::blocks::{chain_run_train, BlockModule, ChainBlock};
use super::layers::{dropout, Linear, Mode};
use super::params::ParamStore;
use crate::space::lower::{tap_at, Op};
use crate::space::{check_tap_indices, lower, validate, Arch, LayerSpec};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Mutex;

/// A MobileNetV4 network built from an [`Arch`].
pub struct Network {
    pub arch: Arch,
    pub params: ParamStore,
    /// The lowered layers, built, in forward order.
    layers: Vec<BuiltLayer>,
    dropout_rng: Mutex<StdRng>,
}

/// What one lowered layer became.
enum Module {
    Block(BlockModule),
    Pool,
    Classifier { linear: Linear, dropout: f64 },
}

/// A built layer and the feature tap its output is, if any.
struct BuiltLayer {
    module: Module,
    /// `Some(after_stage)` (see [`crate::space::FeatureTap::after_stage`]) when the layer's
    /// output is a tap position: the stem, a stage's last block, the `features` conv.
    tap_at: Option<Option<usize>>,
}

/// Logits plus the requested multi-scale feature maps.
pub struct Output {
    pub logits: Tensor,
    /// Feature maps in the order of the requested tap indices.
    pub features: Vec<Tensor>,
}

fn build(ps: &mut ParamStore, layer: &LayerSpec) -> Result<Module> {
    Ok(match &layer.op {
        Op::Convs(c) => Module::Block(BlockModule::chain(ps, c, layer.out_ch)?),
        Op::Mqa(m) => Module::Block(BlockModule::mqa(ps, m, layer.in_ch)?),
        Op::Pool => Module::Pool,
        Op::Classifier { dropout } => Module::Classifier {
            linear: Linear::new(ps, &layer.name, layer.in_ch, layer.out_ch)?,
            dropout: *dropout,
        },
    })
}

impl Network {
    /// Builds the network; initial weights come from `seed` (same seed → same weights).
    pub fn new(arch: &Arch, device: &Device, seed: u64) -> Result<Self> {
        validate(arch)?;
        let mut ps = ParamStore::new(device, seed);
        let layers = lower(arch)
            .iter()
            .map(|l| {
                Ok(BuiltLayer {
                    module: build(&mut ps, l)?,
                    tap_at: tap_at(arch, l.role),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            arch: arch.clone(),
            params: ps,
            layers,
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
        check_tap_indices(taps, tap_specs.len()).map_err(anyhow::Error::msg)?;
        let mut found: Vec<Option<Tensor>> = vec![None; tap_specs.len()];
        let mut keep = |at: Option<usize>, t: &Tensor| {
            for (i, spec) in tap_specs.iter().enumerate() {
                if spec.after_stage == at && taps.contains(&i) {
                    found[i] = Some(t.clone());
                }
            }
        };
        let wanted = |layer: &BuiltLayer| match layer.tap_at {
            Some(at) => (tap_specs.iter().enumerate())
                .any(|(i, spec)| spec.after_stage == at && taps.contains(&i)),
            None => false,
        };
        let mut h = x.clone();
        let mut next = 0;
        while next < self.layers.len() {
            let run = match mode {
                Mode::Train => self.chain_run(next, &wanted),
                Mode::Eval => Vec::new(),
            };
            if !run.is_empty() {
                if let Some(y) = chain_run_train(&run, &h)? {
                    h = y;
                    next += run.len();
                    if let Some(at) = self.layers[next - 1].tap_at {
                        keep(at, &h);
                    }
                    continue;
                }
            }
            let layer = &self.layers[next];
            next += 1;
            h = match &layer.module {
                Module::Block(b) => b.forward(&h, mode)?,
                Module::Pool => h.mean_keepdim(3)?.mean_keepdim(2)?,
                Module::Classifier { linear, dropout } => {
                    self.classify(&h, linear, *dropout, mode)?
                }
            };
            if let Some(at) = layer.tap_at {
                keep(at, &h);
            }
        }
        let logits = h;
        let features = taps
            .iter()
            .map(|&i| found[i].clone().expect("every tap is visited"))
            .collect();
        Ok(Output { logits, features })
    }

    /// The conv chains from layer `first` on, up to the first layer that is no chain or whose
    /// output is `wanted` (that one included): the blocks that run as one train-mode op.
    fn chain_run(&self, first: usize, wanted: &dyn Fn(&BuiltLayer) -> bool) -> Vec<&ChainBlock> {
        let mut run = Vec::new();
        for layer in &self.layers[first..] {
            let Module::Block(b) = &layer.module else {
                break;
            };
            let Some(chain) = b.as_chain() else { break };
            run.push(chain);
            if wanted(layer) {
                break;
            }
        }
        run
    }

    /// Flatten, dropout in train mode, then the linear classifier.
    fn classify(&self, h: &Tensor, linear: &Linear, p: f64, mode: Mode) -> Result<Tensor> {
        let mut z = h.flatten_from(1)?;
        if mode == Mode::Train && p > 0.0 {
            let mut rng = self.dropout_rng.lock().expect("dropout rng");
            z = dropout(&z, p, &mut *rng)?;
        }
        linear.forward(&z)
    }
}
