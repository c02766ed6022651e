//! `mnv4-lab eval`: accuracy of any checkpoint, ours (sidecar JSON) or a bare safetensors file
//! (ours or timm's) together with `--model`.

use crate::model::Network;
use crate::train::checkpoint::{read_sidecar, weights_path};
use crate::train::config::Experiment;
use crate::train::splits::build_splits;
use crate::train::trainer::evaluate;
use anyhow::{bail, Result};
use candle_core::Device;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `mnv4-lab eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A checkpoint sidecar (runs/<name>/checkpoints/best.json or last.json), or a .safetensors file.
    pub checkpoint: PathBuf,
    /// For a bare .safetensors: the architecture (preset, arch file or block string).
    #[arg(long)]
    pub model: Option<String>,
    /// Width multiplier for --model.
    #[arg(long, default_value_t = 1.0)]
    pub width: f64,
    /// Experiment file giving the data settings (default: the checkpoint's own experiment).
    #[arg(long)]
    pub experiment: Option<PathBuf>,
    /// Override data settings: --set data.dataset=mnist --set data.path=...
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
    /// Which split: test (default) or val.
    #[arg(long, default_value = "test")]
    pub split: String,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let is_sidecar = args.checkpoint.extension().is_some_and(|e| e == "json");
    let (arch, weights, mut exp) = if is_sidecar {
        let s = read_sidecar(&args.checkpoint)?;
        let w = weights_path(&args.checkpoint, &s);
        (s.arch, w, s.experiment)
    } else {
        let Some(model) = &args.model else {
            bail!(
                "{} is not a sidecar (.json); say which architecture it holds with --model",
                args.checkpoint.display()
            );
        };
        (
            crate::space::Arch::resolve(model, args.width)?,
            args.checkpoint.clone(),
            Experiment::default(),
        )
    };
    if let Some(p) = &args.experiment {
        exp = Experiment::load(p, &[])?;
    }
    if !args.sets.is_empty() {
        let text = toml::to_string(&exp)?;
        exp = Experiment::from_toml(&text, &args.sets, &exp.name.clone(), "--set")?;
    }
    let splits = build_splits(
        &exp.data,
        exp.train.batch_size.min(64),
        exp.train.eval_batch_size,
        exp.seed,
    )?;
    if arch.num_classes != splits.num_classes || arch.in_chans != splits.channels {
        bail!(
            "the checkpoint's model takes {} channels and predicts {} classes, but the data has {} channels and {} classes",
            arch.in_chans, arch.num_classes, splits.channels, splits.num_classes
        );
    }
    let net = Network::new(&arch, &Device::Cpu, 0)?;
    net.params.load_safetensors(&weights, &[])?;
    let loader = match args.split.as_str() {
        "test" => &splits.test,
        "val" => &splits.val,
        other => bail!("--split '{other}': use test or val"),
    };
    let m = evaluate(&net, loader)?;
    println!(
        "{} on {} {} ({} images): loss {:.4}, top-1 {:.2}%, top-5 {:.2}%",
        args.checkpoint.display(),
        exp.data.dataset,
        args.split,
        loader.dataset().n,
        m.loss,
        100.0 * m.top1,
        100.0 * m.top5
    );
    Ok(())
}
