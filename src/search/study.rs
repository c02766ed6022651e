//! What a search study is given (its sections of the experiment), and what is fixed at its start
//! and recorded for its report (`search.json`).

use super::config::SearchConfig;
use super::objective::Objective;
use super::space::SearchSpace;
use crate::data::DataConfig;
use crate::distill::config::DistillConfig;
use crate::distill::teacher::{TeacherPlan, TeacherRequest};
use crate::train::recipe::TrainRecipe;
use crate::train::run_dir::OutputConfig;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The settings a study runs on: the candidates' data, recipe and distillation, and the search.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StudySpec {
    /// Study name: the run folder `output.dir/name` and the default report folder.
    pub name: String,
    /// Master seed: per-trial weight seeds, strategy streams, data order.
    pub seed: u64,
    pub data: DataConfig,
    /// The candidates' recipe (each stage sets the epochs).
    pub train: TrainRecipe,
    pub output: OutputConfig,
    pub distill: DistillConfig,
    pub search: SearchConfig,
    /// How the teacher is trained; absent in studies recorded before teachers had their own
    /// experiments (then: inline, from `distill`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teacher: Option<TeacherPlan>,
}

impl StudySpec {
    /// How the candidates' teacher is trained.
    pub fn teacher_plan(&self) -> TeacherPlan {
        self.teacher.clone().unwrap_or_else(|| {
            TeacherPlan::inline(
                &self.distill,
                &self.data,
                &self.train,
                self.seed,
                &self.output,
            )
        })
    }

    /// The request for the candidates' teacher as `plan` says.
    pub fn teacher_request<'a>(&'a self, plan: &'a TeacherPlan, quiet: bool) -> TeacherRequest<'a> {
        TeacherRequest::new(&self.distill, &self.data, self.seed, plan, quiet)
    }

    /// The run folder.
    pub fn run_dir(&self) -> PathBuf {
        self.output.dir.join(&self.name)
    }

    /// The report folder: `search.report_dir`, else `reports/<name>`.
    pub fn report_dir(&self) -> PathBuf {
        self.search
            .report_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("reports").join(&self.name))
    }

    /// The settings a trial store records for the study: this version and the spec, all a
    /// worker needs to train its candidates.
    pub fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "recipe_hash": self.recipe_hash(),
            "study": self,
        })
    }

    /// SHA-256 (first 16 hex digits) of the settings as this build writes them: a worker that
    /// reads a study's settings back into a different recipe (a field it drops or defaults
    /// differently) gets another hash.
    pub fn recipe_hash(&self) -> String {
        let text = serde_json::to_string(self).expect("a study's settings serialize");
        let digest = format!("{:x}", Sha256::digest(text.as_bytes()));
        digest[..16].to_string()
    }

    /// The spec from a store's settings, refused when another version of mnv4-lab wrote them
    /// (its recipe may train differently).
    pub fn from_settings(settings: &serde_json::Value, location: &str) -> Result<Self> {
        let version = settings["version"].as_str().unwrap_or("unknown");
        if version != env!("CARGO_PKG_VERSION") {
            bail!(
                "{location}: the study was created by mnv4-lab {version}, this is {}: run workers of the same version",
                env!("CARGO_PKG_VERSION")
            );
        }
        let spec: Self = serde_json::from_value(settings["study"].clone())
            .with_context(|| format!("{location}: the study's settings are malformed"))?;
        if let Some(recorded) = settings["recipe_hash"].as_str() {
            let mine = spec.recipe_hash();
            if mine != recorded {
                bail!(
                    "{location}: this build reads the study's recipe differently (recipe hash \
                     {mine}, the study's {recorded}): run workers built from the same source \
                     as the search"
                );
            }
        }
        Ok(spec)
    }
}

/// What is fixed at the start of a search and recorded for its report (`search.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchState {
    /// The study's settings (`experiment` in files written by earlier versions).
    #[serde(alias = "experiment")]
    pub study: StudySpec,
    pub space: SearchSpace,
    /// Hypervolume reference point in objective space (1 − val_top1, then each cost), fixed
    /// before the first trial: error 1 and 1.1 × each cost of the space's largest corner.
    pub hv_reference: Vec<f64>,
    pub input_size: usize,
    pub teacher: Option<String>,
    /// The teacher's top-1 on the candidates' validation split.
    #[serde(default)]
    pub teacher_val_top1: Option<f64>,
    pub teacher_test_top1: Option<f64>,
    /// Seconds the first invocation spent finding or training the teacher.
    #[serde(default)]
    pub teacher_seconds: Option<f64>,
    /// CPU model and cores of the machine the search started on (its latencies and times).
    #[serde(default)]
    pub machine: Option<String>,
    /// The trial store's URL (absent: `trials.jsonl` in the run folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Trials were proposed a generation at a time and trained by workers (`search --workers`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generations: bool,
}

impl SearchState {
    /// Reads `run_dir/search.json`.
    pub fn read(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join("search.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is malformed", path.display()))
    }

    /// Writes `run_dir/search.json` atomically.
    pub fn write(&self, run_dir: &Path) -> Result<()> {
        crate::fsutil::atomic_write(
            &run_dir.join("search.json"),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }

    /// The objectives the study ranks on.
    pub fn objectives(&self) -> &[Objective] {
        &self.study.search.objectives
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> StudySpec {
        let exp = concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/quick.toml");
        crate::experiment::Experiment::load(exp.as_ref(), &[])
            .unwrap()
            .study()
            .unwrap()
    }

    #[test]
    fn settings_round_trip_and_another_reading_of_the_recipe_is_refused() {
        let s = spec();
        let settings = s.settings();
        let back = StudySpec::from_settings(&settings, "db").unwrap();
        assert_eq!(back.recipe_hash(), s.recipe_hash());
        assert_eq!(settings["recipe_hash"], s.recipe_hash());
        // As if the study had been written by a build that knows a field this one drops.
        let mut other = settings.clone();
        other["study"]["train"]["lr"] = serde_json::json!(0.5);
        let e = StudySpec::from_settings(&other, "db")
            .unwrap_err()
            .to_string();
        assert!(e.contains("recipe hash") && e.starts_with("db:"), "{e}");
        let mut old = settings;
        old["version"] = serde_json::json!("0.0.1");
        let e = StudySpec::from_settings(&old, "db")
            .unwrap_err()
            .to_string();
        assert!(e.contains("0.0.1"), "{e}");
    }
}
