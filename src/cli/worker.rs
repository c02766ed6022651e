//! `mnv4-lab worker`: trains the waiting trials of a study in a database store.

use crate::search::worker::{work, WorkerOptions};
use anyhow::Result;
use clap::Args;

/// Arguments of `mnv4-lab worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The study's store: sqlite:PATH or postgres://USER@HOST[:PORT]/DB.
    #[arg(long, value_name = "URL")]
    pub storage: String,
    /// The study's name (the experiment's `name`).
    #[arg(long)]
    pub study: String,
    /// Math threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Seconds without a heartbeat after which a running trial is retried.
    #[arg(long, default_value_t = 60.0)]
    pub stale_secs: f64,
    /// No progress bars; log lines only.
    #[arg(long)]
    pub quiet: bool,
    /// Stop claiming trials once the parent process is gone (set by `search --workers`).
    #[arg(long, hide = true)]
    pub exit_with_parent: bool,
}

/// Runs the worker until its study is closed and drained.
pub fn run(args: &WorkerArgs) -> Result<()> {
    anyhow::ensure!(
        args.stale_secs.is_finite() && args.stale_secs > 0.0,
        "--stale-secs must be a finite number > 0, got {}",
        args.stale_secs
    );
    super::set_threads(args.threads);
    let mut opts = WorkerOptions::new(&args.storage, &args.study);
    opts.quiet = args.quiet;
    opts.stale_secs = args.stale_secs;
    opts.exit_with_parent = args.exit_with_parent;
    opts.heartbeat_secs = opts.heartbeat_secs.min(args.stale_secs / 3.0);
    let trained = work(&opts)?;
    println!("{}: this worker trained {trained} trials", args.study);
    Ok(())
}
