//! `mnv4-lab search` and `mnv4-lab report`.

use super::load_experiment;
use crate::search::driver::{search, SearchOptions};
use crate::search::report::write_report;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `mnv4-lab search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Experiment file with a [search] section (e.g. experiments/quick.toml).
    pub experiment: PathBuf,
    /// Where trials live: sqlite:PATH, postgres://USER@HOST/DB or a .jsonl path (default: the
    /// one a resumed run recorded, else runs/<name>/trials.jsonl).
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
    /// Train through the store's work queue, a generation at a time, with N local worker
    /// processes (0: only workers started elsewhere, `mnv4-lab worker`). The decisions are the
    /// same for any N. Default store with workers: runs/<name>/trials.sqlite.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Math threads of each local worker (default: the cores divided among the workers).
    #[arg(long, value_name = "T", requires = "workers")]
    pub worker_threads: Option<usize>,
    #[command(flatten)]
    pub run: super::RunFlags,
}

/// Arguments of `mnv4-lab report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A search run folder (runs/<name>/).
    pub run_dir: PathBuf,
    /// Output folder (default: the experiment's report_dir, or reports/<name>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Read the trials from this store (default: the one the run recorded).
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
}

/// Arguments of `mnv4-lab import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A search run folder (runs/<name>/).
    pub run_dir: PathBuf,
    /// The store to copy its trials into: sqlite:PATH, postgres://USER@HOST/DB or a .jsonl path.
    #[arg(long, value_name = "URL")]
    pub storage: String,
}

pub fn run_import(args: &ImportArgs) -> Result<()> {
    let n = crate::search::store::import_run(&args.run_dir, &args.storage)?;
    println!(
        "{}: copied {n} trial records; report and search --resume now use {}",
        args.run_dir.display(),
        args.storage
    );
    Ok(())
}

pub fn run_search(args: &SearchArgs) -> Result<()> {
    let mut exp = load_experiment(&args.experiment, &args.run.sets, super::Trains::Study)?;
    let started = std::time::Instant::now();
    match &mut exp.search.detect {
        Some(d) => {
            super::detect::ensure_default_set(&d.data)?;
            if let Some(path) = d.teacher_experiment.take() {
                d.teacher = Some(super::detect::finished_run(&path)?);
            }
        }
        None => super::data::ensure_dataset(&exp.data)?,
    }
    let run_dir = search(
        &exp.study()?,
        &SearchOptions {
            resume: args.run.resume,
            quiet: args.run.quiet,
            storage: args.storage.clone(),
            workers: args.workers,
            worker_threads: args.worker_threads,
        },
    )?;
    let out = write_report(&run_dir, None, args.storage.as_deref())?;
    println!(
        "{}: search finished in {:.1} min; report in {} (README.md, pareto.png, trials.csv)",
        exp.name,
        started.elapsed().as_secs_f64() / 60.0,
        out.display()
    );
    Ok(())
}

pub fn run_report(args: &ReportArgs) -> Result<()> {
    let out = write_report(&args.run_dir, args.out.as_deref(), args.storage.as_deref())?;
    println!("report written to {}", out.display());
    Ok(())
}
