//! `mnv4-lab retrain REPORT_DIR`: the search's Pareto front and the MobileNetV4 presets trained
//! at the full budget over several seeds, distilled and not, tested once.

use crate::experiment::{apply_overrides, Experiment};
use crate::search::retrain::{front_members, preset_curve, retrain, RetrainPlan, Shard};
use crate::search::reuse::Reusable;
use crate::search::study::StudySpec;
use anyhow::{ensure, Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `mnv4-lab retrain`.
#[derive(Debug, Args)]
pub struct RetrainArgs {
    /// A search report folder (reports/<name>/) with pareto/ and study.json.
    pub report: PathBuf,
    /// Epochs of every run (the full budget); default: the recipe's, else 10.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// An experiment file whose [data], [train] and [distill] sections (and so its teacher)
    /// replace the study's, e.g. the fidelity study's reference budget
    /// experiments/fidelity_high.toml; default: the study's own, on the full training split.
    #[arg(long, value_name = "EXPERIMENT")]
    pub recipe: Option<PathBuf>,
    /// Train only every N-th run starting at K (`K/N`, K from 0), so that N processes share the
    /// work; the tables are written by the run that finds every result present (e.g. a last
    /// call without --shard).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// A folder of finished `train` / `distill` runs (e.g. runs/): a run there that trained the
    /// same architecture with the same data, recipe, distillation settings and seed is taken
    /// as it is instead of being trained again.
    #[arg(long, value_name = "RUNS_DIR")]
    pub reuse: Option<PathBuf>,
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
    match &args.recipe {
        Some(path) => {
            let exp = Experiment::load(path, &[])?;
            study.teacher = Some(
                exp.teacher_plan()
                    .with_context(|| format!("--recipe {}", path.display()))?,
            );
            study.data = exp.data;
            study.train = exp.train;
            study.distill = exp.distill;
        }
        None => {
            study.data.train_limit = 0;
            study.train.epochs = 10;
        }
    }
    if let Some(epochs) = args.epochs {
        study.train.epochs = epochs;
    }
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
        shard: args.shard.unwrap_or_default(),
        recipe: args.recipe.as_ref().map(|p| p.display().to_string()),
        reuse: match &args.reuse {
            Some(dir) => {
                let found = Reusable::scan(dir)?;
                tracing::info!("--reuse {}: {} finished runs", dir.display(), found.len());
                found
            }
            None => Reusable::default(),
        },
    };
    let left = retrain(&plan, &args.report)?;
    if left > 0 {
        println!("this shard is done; {left} runs are left to the other shards");
        return Ok(());
    }
    println!(
        "retrained {} front members and {} presets; table and plot in {}",
        plan.members.len(),
        plan.presets.curve.len() + plan.presets.references.len(),
        args.report.join("retrain").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A report folder holding the quick search's study.json.
    fn report_with_quick_study(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mnv4-retrain-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let study = Experiment::load(Path::new("experiments/quick.toml"), &[])
            .unwrap()
            .study()
            .unwrap();
        std::fs::write(
            dir.join("study.json"),
            serde_json::to_string(&study).unwrap(),
        )
        .unwrap();
        dir
    }

    fn args(report: PathBuf, recipe: Option<&str>, epochs: Option<usize>) -> RetrainArgs {
        RetrainArgs {
            report,
            epochs,
            recipe: recipe.map(PathBuf::from),
            shard: None,
            reuse: None,
            seeds: 3,
            widths: vec![0.5],
            sets: Vec::new(),
            quiet: true,
        }
    }

    #[test]
    fn a_recipe_replaces_data_train_and_distill_and_epochs_override_it() {
        let report = report_with_quick_study("recipe");
        let own = retrain_study(&args(report.clone(), None, None)).unwrap();
        assert_eq!((own.data.train_limit, own.train.epochs), (0, 10));
        let path = "experiments/fidelity_high.toml";
        let high = Experiment::load(Path::new(path), &[]).unwrap();
        let s = retrain_study(&args(report.clone(), Some(path), None)).unwrap();
        assert_eq!(s.train, high.train);
        assert_eq!(s.data, high.data);
        assert_eq!(s.distill, high.distill);
        assert_eq!(s.teacher, Some(high.teacher_plan().unwrap()));
        let s = retrain_study(&args(report.clone(), Some(path), Some(3))).unwrap();
        assert_eq!(s.train.epochs, 3);
        let err = retrain_study(&args(report.clone(), Some("experiments/nope.toml"), None));
        assert!(format!("{:#}", err.unwrap_err()).contains("experiments/nope.toml"));
        std::fs::remove_dir_all(report).unwrap();
    }

    #[test]
    fn shards_parse_as_k_of_n() {
        assert_eq!("1/2".parse::<Shard>().unwrap(), Shard { k: 1, n: 2 });
        for bad in ["2/2", "1", "a/2", "0/0"] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(err.contains("K/N"), "{bad}: {err}");
        }
    }
}
