//! The `mnv4-lab` command line.

pub mod bench;
pub mod distill;
pub mod eval;
pub mod inspect;
pub mod search;
pub mod train;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

/// Flags shared by the commands that run experiments (`train`, `distill`, `search`).
#[derive(Debug, Args)]
pub struct RunFlags {
    /// Override any experiment field: --set train.epochs=3 --set 'model.arch="hybrid-medium"'
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
    /// Continue from the last checkpoint / trial log; same seed → same result as uninterrupted.
    #[arg(long)]
    pub resume: bool,
    /// No progress bars; log lines only.
    #[arg(long)]
    pub quiet: bool,
}

/// MobileNetV4 research toolkit: architecture search over UIB choices and knowledge distillation.
#[derive(Debug, Parser)]
#[command(name = "mnv4-lab", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Coarse-to-fine architecture search with distillation; writes reports/<name>/ (Pareto plots, tables).
    Search(search::SearchArgs),
    /// Regenerate a search report from its run folder.
    Report(search::ReportArgs),
    /// Per-layer table (shapes, params, MACs) and totals with roofline latency, from the spec alone.
    Inspect(inspect::InspectArgs),
    /// Time a training step or inference (images/s, ms/step, peak memory).
    Bench(bench::BenchArgs),
    /// Train one model from an experiment file; writes runs/<name>/ (metrics, checkpoints, plots).
    Train(train::TrainArgs),
    /// Distill a student from a teacher (logit KD, feature KD, attention transfer, DKD).
    Distill(distill::DistillArgs),
    /// Accuracy of a checkpoint (ours or timm's) on the validation or test split.
    Eval(eval::EvalArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Search(a) => search::run_search(&a),
        Command::Report(a) => search::run_report(&a),
        Command::Inspect(a) => inspect::run(&a),
        Command::Train(a) => train::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Distill(a) => distill::run(&a),
    }
}
