//! `mnv4-lab eval`: accuracy of any checkpoint, ours (sidecar JSON) or a bare safetensors file
//! (ours or timm's) together with `--model`.

use crate::data::{build_splits, DataConfig, DataLoader};
use crate::experiment::{apply_overrides, Experiment};
use crate::model::{Ensemble, Mode, Network};
use crate::space::Arch;
use crate::train::checkpoint::{read_sidecar, weights_path};
use crate::train::evaluate::evaluate;
use anyhow::{bail, ensure, Context, Result};
use candle_core::Device;
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

/// Which split `eval` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvalSplit {
    Test,
    Val,
    /// The training split, augmented as in the first epoch of seed 0.
    Train,
}

/// Arguments of `mnv4-lab eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A checkpoint sidecar (runs/<name>/checkpoints/best.json or last.json), or a .safetensors
    /// file. Several are evaluated as one ensemble (mean logits), as an ensemble teacher answers.
    #[arg(required = true, num_args = 1..)]
    pub checkpoints: Vec<PathBuf>,
    /// For a bare .safetensors: the architecture (preset, arch file or block string); its input
    /// channels and classes are read from the file's tensors.
    #[arg(long)]
    pub model: Option<String>,
    /// Width multiplier for --model.
    #[arg(long)]
    pub width: Option<f64>,
    /// Experiment file giving the data settings (default: the checkpoint's own data).
    #[arg(long)]
    pub experiment: Option<PathBuf>,
    /// Override data settings: --set data.dataset=mnist --set data.path=...
    #[arg(long = "set", value_name = "data.KEY=VALUE")]
    pub sets: Vec<String>,
    /// Which split.
    #[arg(long, value_enum, default_value = "test")]
    pub split: EvalSplit,
    /// Also report the mean softmax probability of the true class at this temperature, and the
    /// label smoothing that puts the same mass on the true class (a no-KD baseline matched to
    /// KD's soft targets).
    #[arg(long, value_name = "T")]
    pub temperature: Option<f64>,
}

/// The architecture and weights file a checkpoint argument names, and its own data settings:
/// a sidecar (`.json`, which names its architecture), or a bare `.safetensors` file together with
/// `model` (preset, arch file or block string) at `width`.
pub fn open_checkpoint(
    checkpoint: &Path,
    model: Option<&str>,
    width: Option<f64>,
) -> Result<(Arch, PathBuf, DataConfig)> {
    if checkpoint.extension().is_some_and(|e| e == "json") {
        ensure!(
            model.is_none() && width.is_none(),
            "{} is a sidecar that names its architecture; --model and --width apply to bare .safetensors files",
            checkpoint.display()
        );
        let s = read_sidecar(checkpoint)?;
        let w = weights_path(checkpoint, &s);
        return Ok((s.arch, w, s.data));
    }
    let Some(model) = model else {
        bail!(
            "{} is not a sidecar (.json); say which architecture it holds with --model",
            checkpoint.display()
        );
    };
    let arch = Arch::resolve(model, width.unwrap_or(1.0))?;
    let (chans, classes) = io_of(checkpoint)?;
    Ok((
        arch.with_io(chans, classes),
        checkpoint.to_path_buf(),
        DataConfig::default(),
    ))
}

/// Input channels and classes of a safetensors checkpoint, from its stem and classifier tensors.
fn io_of(path: &Path) -> Result<(usize, usize)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let dim = |name: &str, axis: usize| -> Result<usize> {
        let t = st
            .tensor(name)
            .with_context(|| format!("{}: no tensor {name}", path.display()))?;
        t.shape().get(axis).copied().with_context(|| {
            format!(
                "{}: tensor {name} has shape {:?}",
                path.display(),
                t.shape()
            )
        })
    };
    Ok((dim("conv_stem.weight", 1)?, dim("classifier.weight", 0)?))
}

/// The data settings: the checkpoint's, or an experiment's, with `data.*` overrides.
fn data_settings(args: &EvalArgs, own: DataConfig) -> Result<DataConfig> {
    let data = match &args.experiment {
        Some(p) => Experiment::load(p, &[])?.data,
        None => own,
    };
    if args.sets.is_empty() {
        return Ok(data);
    }
    let mut table = toml::Table::new();
    table.insert("data".into(), toml::Value::try_from(&data)?);
    apply_overrides(&mut table, &args.sets)?;
    let data: DataConfig = table
        .remove("data")
        .context("no data section")?
        .try_into()
        .map_err(|e| anyhow::anyhow!("--set: {e}"))?;
    data.check()?;
    Ok(data)
}

pub fn run(args: &EvalArgs) -> Result<()> {
    for s in &args.sets {
        ensure!(
            s.trim_start().starts_with("data."),
            "--set '{s}': eval reads only [data] settings (data.KEY=VALUE)"
        );
    }
    let mut opened = args
        .checkpoints
        .iter()
        .map(|c| open_checkpoint(c, args.model.as_deref(), args.width))
        .collect::<Result<Vec<_>>>()?;
    let own = opened[0].2.clone();
    let data = data_settings(args, own)?;
    super::data::ensure_dataset(&data)?;
    let splits = build_splits(&data, 250, 500, 0)?;
    let mut nets = Vec::new();
    for ((arch, weights, _), path) in opened.drain(..).zip(&args.checkpoints) {
        if arch.num_classes != splits.num_classes || arch.in_chans != splits.channels {
            bail!(
                "{}: the model takes {} channels and predicts {} classes, but the data has {} channels and {} classes",
                path.display(), arch.in_chans, arch.num_classes, splits.channels, splits.num_classes
            );
        }
        let net = Network::new(&arch, &Device::Cpu, 0)?;
        net.params
            .load_safetensors(&weights, &[])
            .with_context(|| format!("loading {}", weights.display()))?;
        nets.push(net);
    }
    let net = Ensemble::new(nets)?;
    let (loader, split) = match args.split {
        EvalSplit::Test => (&splits.test, "test"),
        EvalSplit::Val => (&splits.val, "val"),
        EvalSplit::Train => (&splits.train, "train"),
    };
    let m = evaluate(&net, loader)?;
    let names: Vec<String> = args
        .checkpoints
        .iter()
        .map(|c| c.display().to_string())
        .collect();
    println!(
        "{} on {} {split} ({} images): loss {:.4}, top-1 {:.2}%, top-5 {:.2}%",
        names.join(" + "),
        data.dataset,
        loader.dataset().n,
        m.loss,
        100.0 * m.top1,
        100.0 * m.top5
    );
    if let Some(t) = args.temperature {
        ensure!(
            t > 0.0 && t.is_finite(),
            "--temperature must be positive, got {t}"
        );
        let p = mean_target_probability(&net, loader, t)?;
        let k = net.num_classes() as f64;
        println!(
            "mean true-class probability at T={t}: {p:.4}; matched label smoothing: {:.4}",
            (1.0 - p) * k / (k - 1.0)
        );
    }
    Ok(())
}

/// Mean softmax probability of the true class at temperature `t` over `loader`.
fn mean_target_probability(net: &Ensemble, loader: &DataLoader, t: f64) -> Result<f64> {
    let (mut sum, mut n) = (0f64, 0usize);
    for batch in loader.epoch(0) {
        let batch = batch?;
        let logits = (net.forward(&batch.images, Mode::Eval)? / t)?;
        let probs = candle_nn::ops::softmax(&logits, 1)?.to_vec2::<f32>()?;
        for (row, y) in probs.iter().zip(batch.labels.to_vec1::<u32>()?) {
            sum += row[y as usize] as f64;
            n += 1;
        }
    }
    ensure!(n > 0, "the split is empty");
    Ok(sum / n as f64)
}
