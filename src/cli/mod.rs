//! The `mnv4-lab` command line: parses flags, loads the experiment, fetches data when asked,
//! hands narrow jobs to the layers below and prints.

pub mod bench;
pub mod bench_detect;
mod bench_timing;
pub mod data;
pub mod detect;
mod detect_predict;
pub mod distill;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod latency_rank;
mod memory;
pub mod retrain;
pub mod search;
pub mod train;
pub mod worker;

use crate::data::{build_splits, Splits};
use crate::experiment::Experiment;
use crate::fsutil::DirLock;
use crate::search::space::SearchSpace;
use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use std::path::Path;

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
    /// Train the waiting trials of a study in a database store until it is done.
    Worker(worker::WorkerArgs),
    /// Copy a search run's trials into another store (e.g. its trials.jsonl into SQLite or PostgreSQL).
    Import(search::ImportArgs),
    /// Per-layer table (shapes, params, MACs) and totals with roofline latency, from the spec alone.
    Inspect(inspect::InspectArgs),
    /// Time a training step or inference (images/s, ms/step, peak memory), or rank latency measures.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Train one model from an experiment file; writes runs/<name>/ (metrics, checkpoints, plots).
    Train(train::TrainArgs),
    /// Distill a student from a teacher (logit KD, feature KD, attention transfer, DKD).
    Distill(distill::DistillArgs),
    /// Accuracy of a checkpoint (ours or timm's) on the validation or test split.
    Eval(eval::EvalArgs),
    /// Write any model or checkpoint as an ONNX file (opset 17, BN folded, dynamic batch).
    Export(export::ExportArgs),
    /// Retrain a search's Pareto front and the presets at the full budget over seeds; writes REPORT_DIR/retrain/.
    Retrain(retrain::RetrainArgs),
    /// Datasets: `data fetch fashion-mnist`, `data make-detect`.
    Data(data::DataArgs),
    /// Object detection with YOLO11 and MobileNetV4 backbones: `detect train`, `detect map` (COCO box mAP).
    Detect(detect::DetectArgs),
}

impl Command {
    /// Whether the command trains networks (and so wants [`crate::ops::Arenas::One`]).
    pub fn trains(&self) -> bool {
        match self {
            Command::Search(_)
            | Command::Worker(_)
            | Command::Train(_)
            | Command::Distill(_)
            | Command::Retrain(_) => true,
            Command::Bench(b) => matches!(b, bench::BenchCommand::Train(_)),
            Command::Detect(d) => matches!(d.action, detect::DetectAction::Train { .. }),
            Command::Report(_)
            | Command::Import(_)
            | Command::Inspect(_)
            | Command::Eval(_)
            | Command::Export(_)
            | Command::Data(_) => false,
        }
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Search(a) => search::run_search(&a),
        Command::Report(a) => search::run_report(&a),
        Command::Worker(a) => worker::run(&a),
        Command::Import(a) => search::run_import(&a),
        Command::Inspect(a) => inspect::run(&a),
        Command::Train(a) => train::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Distill(a) => distill::run(&a),
        Command::Export(a) => export::run(&a),
        Command::Data(a) => data::run(&a),
        Command::Retrain(a) => retrain::run(&a),
        Command::Detect(a) => detect::run(&a),
    }
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

/// Which networks a command trains, for the memory check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trains {
    /// `[model]` (train).
    Model,
    /// `[model]` and the teacher (distill).
    ModelAndTeacher,
    /// The teacher and the search space's largest candidate (search).
    Study,
}

/// Loads and checks an experiment file, refuses one whose training cannot fit in memory, and
/// sets its thread count.
fn load_experiment(path: &Path, sets: &[String], trains: Trains) -> Result<Experiment> {
    let exp = Experiment::load(path, sets)?;
    check_memory(&exp, trains)?;
    set_threads(exp.train.threads);
    Ok(exp)
}

/// The memory check of every network the command will train (see [`memory::check_fits`]).
fn check_memory(exp: &Experiment, trains: Trains) -> Result<()> {
    let (size, ch) = (exp.data.augment.input_size, exp.data.augment.channels);
    let batch = exp.train.batch_size;
    if trains != Trains::Study {
        memory::check_fits(&exp.model.to_arch(ch, 10)?, "[model]", size, batch)?;
    }
    let d = &exp.distill;
    let study_teacher = exp.search.detect.is_none() || trains != Trains::Study;
    if trains != Trains::Model && study_teacher && d.uses_teacher() && d.teacher_weights.is_none() {
        let res = d.teacher_res.unwrap_or(size);
        memory::check_fits(&d.teacher.to_arch(ch, 10)?, "distill.teacher", res, batch)?;
    }
    if trains == Trains::Study {
        let corner = SearchSpace::load(&exp.search.space)?.corner(true);
        let what = "the search space's largest candidate";
        // A detection study checks the backbone at the detector's input (the neck is small).
        let (size, ch) = match &exp.search.detect {
            Some(d) => (d.data.imgsz, crate::search::detection::DETECT_CHANNELS),
            None => (size, ch),
        };
        memory::check_fits(&corner.with_io(ch, 10), what, size, batch)?;
    }
    Ok(())
}

/// The experiment's loaders, fetching the default dataset first when it is missing.
fn open_splits(exp: &Experiment) -> Result<Splits> {
    data::ensure_dataset(&exp.data)?;
    let t = &exp.train;
    build_splits(&exp.data, t.batch_size, t.eval_batch_size, exp.seed)
}

/// Locks the experiment's run folder for this process and refuses to start over a run that is
/// already there (unless resuming); then writes the resolved experiment to `config.toml`.
fn claim_run_dir(exp: &Experiment, resume: bool) -> Result<DirLock> {
    let dir = exp.run_dir();
    let lock = DirLock::acquire(&dir)?;
    if !resume && dir.join("checkpoints/last.json").exists() {
        bail!(
            "{} already holds a run: add --resume to continue it, or pick another name (--set name=\"...\")",
            dir.display()
        );
    }
    let config = toml::to_string(exp)?;
    crate::fsutil::atomic_write(&dir.join("config.toml"), config.as_bytes())?;
    Ok(lock)
}
