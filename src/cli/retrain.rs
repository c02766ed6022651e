//! `mnv4-lab retrain REPORT_DIR`: the search's Pareto front and the MobileNetV4 presets trained
//! at the full budget over several seeds, distilled and not, tested once.

use crate::experiment::apply_overrides;
use crate::search::retrain::{front_members, preset_curve, retrain, RetrainPlan};
use crate::search::study::StudySpec;
use anyhow::{ensure, Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `mnv4-lab retrain`.
#[derive(Debug, Args)]
pub struct RetrainArgs {
    /// A search report folder (reports/<name>/) with pareto/ and study.json.
    pub report: PathBuf,
    /// Epochs of every run (the full budget).
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Seeds per model and arm.
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    /// Widths of the conv-small preset curve.
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,0.75,1.0")]
    pub widths: Vec<f64>,
    /// Override the study's data, train, distill or output settings (default: the full training
    /// split): --set data.train_limit=4000 --set train.lr=0.01
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
    /// No progress bars; log lines only.
    #[arg(long)]
    pub quiet: bool,
}

/// The study's settings for retraining: the full training split, the given epochs, overrides.
fn retrain_study(args: &RetrainArgs) -> Result<StudySpec> {
    let path = args.report.join("study.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (regenerate the report with `mnv4-lab report RUN_DIR`)",
            path.display()
        )
    })?;
    let mut study: StudySpec =
        serde_json::from_str(&text).with_context(|| format!("{} is malformed", path.display()))?;
    study.data.train_limit = 0;
    study.train.epochs = args.epochs;
    for s in &args.sets {
        let ok = ["data.", "train.", "distill.", "output."]
            .iter()
            .any(|p| s.starts_with(p));
        ensure!(
            ok,
            "--set '{s}': retrain takes data.*, train.*, distill.* and output.* settings"
        );
    }
    let mut table = toml::Table::try_from(&study)?;
    apply_overrides(&mut table, &args.sets)?;
    let study: StudySpec = table
        .try_into()
        .map_err(|e| anyhow::anyhow!("--set: {e}"))?;
    study.data.check()?;
    study.train.check()?;
    study.distill.check()?;
    study.output.check()?;
    Ok(study)
}

pub fn run(args: &RetrainArgs) -> Result<()> {
    ensure!(args.seeds >= 1, "--seeds must be at least 1");
    let study = retrain_study(args)?;
    super::set_threads(study.train.threads);
    super::data::ensure_dataset(&study.data)?;
    let plan = RetrainPlan {
        members: front_members(&args.report)?,
        presets: preset_curve(&study, &args.widths)?,
        study,
        seeds: args.seeds,
        quiet: args.quiet,
    };
    retrain(&plan, &args.report)?;
    println!(
        "retrained {} front members and {} presets; table and plot in {}",
        plan.members.len(),
        plan.presets.curve.len() + plan.presets.references.len(),
        args.report.join("retrain").display()
    );
    Ok(())
}
