//! `mnv4-lab bench latency-rank`: Spearman's ρ between latency measures (candle, the tract ONNX
//! runtime, MACs, every roofline profile) over architectures sampled from a search space.

use crate::cost::load_profiles;
use crate::report::table::{frame, write_csv_parquet, Col};
use crate::search::latency_rank::{measure_space, RankSettings, RankTable};
use crate::search::space::SearchSpace;
use anyhow::{ensure, Result};
use clap::Args;
use std::fmt::Write;
use std::path::PathBuf;

/// Arguments of `mnv4-lab bench latency-rank`.
#[derive(Debug, Args)]
pub struct LatencyRankArgs {
    /// Search space to sample from.
    #[arg(long, default_value = "search_spaces/small.toml")]
    pub space: PathBuf,
    /// Architectures to sample.
    #[arg(long, default_value_t = 40)]
    pub samples: usize,
    /// Input resolution (square).
    #[arg(long, default_value_t = 32)]
    pub res: usize,
    /// Input channels.
    #[arg(long, default_value_t = 3)]
    pub in_chans: usize,
    /// Number of classes.
    #[arg(long, default_value_t = 10)]
    pub num_classes: usize,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Timed runs per latency measurement (the median is kept).
    #[arg(long, default_value_t = 10)]
    pub repeats: usize,
    /// Hardware profiles file (default: the built-in ones).
    #[arg(long)]
    pub profiles: Option<PathBuf>,
    /// Worker threads for candle (0 = all cores); the tract runtime runs on one thread.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Write `latency_rank_values.csv` (every measure per architecture) and
    /// `latency_rank_rho.csv` (the ρ table) here, with Parquet copies.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: &LatencyRankArgs) -> Result<()> {
    ensure!(
        args.threads <= crate::train::recipe::MAX_THREADS,
        "--threads {} is more than {} (0 = all cores)",
        args.threads,
        crate::train::recipe::MAX_THREADS
    );
    ensure!(
        args.in_chans > 0 && args.num_classes > 0,
        "--in-chans and --num-classes must be positive"
    );
    super::set_threads(args.threads);
    let space = SearchSpace::load(&args.space)?;
    let profiles = load_profiles(args.profiles.as_deref())?;
    let settings = RankSettings {
        samples: args.samples,
        size: args.res,
        in_chans: args.in_chans,
        num_classes: args.num_classes,
        seed: args.seed,
        repeats: args.repeats,
    };
    let table = measure_space(&space, &profiles, &settings, |i, _, row| {
        tracing::info!(
            "sample {}/{}: candle {:.3} ms, ONNX runtime {:.3} ms",
            i + 1,
            args.samples,
            row[0],
            row[1]
        );
    })?;
    let rho = table.correlations()?;
    print!("{}", rho_markdown(&table.measures, &rho)?);
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        write_csv_parquet(&mut frame(value_cols(&table))?, dir, "latency_rank_values")?;
        write_csv_parquet(
            &mut frame(rho_cols(&table.measures, &rho))?,
            dir,
            "latency_rank_rho",
        )?;
        println!(
            "\nwrote {}/latency_rank_{{values,rho}}.{{csv,parquet}}",
            dir.display()
        );
    }
    Ok(())
}

/// The ρ table as Markdown, one row and one column per measure.
fn rho_markdown(measures: &[String], rho: &[Vec<f64>]) -> Result<String> {
    let mut md = String::new();
    let heads: String = measures.iter().map(|m| format!(" {m} |")).collect();
    writeln!(md, "| Spearman ρ |{heads}")?;
    writeln!(md, "|---|{}", "---:|".repeat(measures.len()))?;
    for (m, row) in measures.iter().zip(rho) {
        let cells: String = row.iter().map(|v| format!(" {v:.3} |")).collect();
        writeln!(md, "| {m} |{cells}")?;
    }
    Ok(md)
}

/// One row per architecture: its block string and every measure.
fn value_cols(table: &RankTable) -> Vec<Col> {
    let mut cols = vec![Col::text("arch", table.archs.clone())];
    for (m, name) in table.measures.iter().enumerate() {
        cols.push(Col::float(name, table.column(m)));
    }
    cols
}

/// The ρ table: a `measure` column, then one column per measure.
fn rho_cols(measures: &[String], rho: &[Vec<f64>]) -> Vec<Col> {
    let mut cols = vec![Col::text("measure", measures.to_vec())];
    for (j, name) in measures.iter().enumerate() {
        cols.push(Col::float(name, rho.iter().map(|row| row[j]).collect()));
    }
    cols
}
