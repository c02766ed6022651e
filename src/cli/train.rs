//! `mnv4-lab train`: one experiment file → one run folder.

use crate::model::Network;
use crate::train::config::Experiment;
use crate::train::splits::experiment_splits;
use crate::train::trainer::{train_network, CrossEntropy, RunOptions};
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

/// Sets the math thread count (0 = all cores) once per process.
pub fn set_threads(n: usize) {
    if n > 0 {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let exp = Experiment::load(&args.experiment, &args.run.sets)?;
    set_threads(exp.train.threads);
    let splits = experiment_splits(&exp)?;
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
    let s = train_network(&exp, &net, &splits, &mut loss, &opts)?;
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
