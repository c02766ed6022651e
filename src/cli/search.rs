//! `mnv4-lab search` and `mnv4-lab report`.

use super::train::set_threads;
use crate::search::driver::{search, SearchOptions};
use crate::search::report::write_report;
use crate::train::config::Experiment;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `mnv4-lab search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Experiment file with a [search] section (e.g. experiments/quick.toml).
    pub experiment: PathBuf,
    /// Override any field: --set search.strategy=evolution --set search.coarse.trials=20
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
    /// Continue an interrupted search: finished trials are kept, none is retrained, and the
    /// same seed makes the same decisions as an uninterrupted run.
    #[arg(long)]
    pub resume: bool,
    /// No progress bars; one log line per trial and epoch.
    #[arg(long)]
    pub quiet: bool,
}

/// Arguments of `mnv4-lab report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A search run folder (runs/<name>/).
    pub run_dir: PathBuf,
    /// Output folder (default: the experiment's report_dir, or reports/<name>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run_search(args: &SearchArgs) -> Result<()> {
    let exp = Experiment::load(&args.experiment, &args.sets)?;
    set_threads(exp.train.threads);
    let started = std::time::Instant::now();
    let run_dir = search(&exp, &SearchOptions { resume: args.resume, quiet: args.quiet })?;
    let out = write_report(&run_dir, None)?;
    println!(
        "{}: search finished in {:.1} min; report in {} (README.md, pareto.png, trials.csv)",
        exp.name,
        started.elapsed().as_secs_f64() / 60.0,
        out.display()
    );
    Ok(())
}

pub fn run_report(args: &ReportArgs) -> Result<()> {
    let out = write_report(&args.run_dir, args.out.as_deref())?;
    println!("report written to {}", out.display());
    Ok(())
}
