//! `mnv4-lab train`: one experiment file → one run folder.

use super::{claim_run_dir, load_experiment, open_splits};
use crate::model::Network;
use crate::train::objective::CrossEntropy;
use crate::train::trainer::{train_network, RunOptions};
use anyhow::Result;
use candle_core::Device;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `mnv4-lab train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Experiment file (see experiments/ and the README's "Experiment format").
    pub experiment: PathBuf,
    #[command(flatten)]
    pub run: super::RunFlags,
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let exp = load_experiment(&args.experiment, &args.run.sets, super::Trains::Model)?;
    let splits = open_splits(&exp)?;
    let arch = exp.model.to_arch(splits.channels, splits.num_classes)?;
    let net = Network::new(&arch, &Device::Cpu, exp.seed)?;
    let c = crate::cost::cost(&arch, splits.input_size, splits.input_size, &[]);
    tracing::info!(
        "{}: {} ({} params, {:.1} M MACs at {}²), {} train / {} val / {} test images",
        exp.name,
        arch.name.as_deref().unwrap_or("custom arch"),
        c.params,
        c.macs as f64 / 1e6,
        splits.input_size,
        splits.train.dataset().n,
        splits.val.dataset().n,
        splits.test.dataset().n
    );
    let mut loss = CrossEntropy {
        smoothing: exp.train.label_smoothing,
    };
    let opts = RunOptions {
        resume: args.run.resume,
        quiet: args.run.quiet,
        ..Default::default()
    };
    let _lock = claim_run_dir(&exp, args.run.resume)?;
    let s = train_network(&exp.train_job(), &net, &splits, &mut loss, &opts)?;
    println!(
        "{}: best val top-1 {:.2}% (epoch {}), test top-1 {:.2}% top-5 {:.2}%; {} params; run folder {}",
        exp.name,
        100.0 * s.best_val_top1,
        s.best_epoch,
        100.0 * s.test.top1,
        100.0 * s.test.top5,
        s.params,
        s.run_dir.display()
    );
    Ok(())
}
