//! The experiment file (`experiments/*.toml`): one root composed of the sections owned by the
//! modules that use them — `[data]` (data), `[model]` (space), `[train]` and `[output]` (train),
//! `[distill]` (distill), `[search]` (search). Every field has a default, unknown keys are
//! rejected by name, `--set section.key=value` overrides any field, and every section is checked
//! when the file loads, before any work. The commands turn it into the narrow jobs the layers
//! below take ([`TrainJob`], [`TeacherRequest`], [`StudySpec`]); nothing below reads it.

pub mod detect;
mod overrides;

pub use overrides::apply_overrides;

use crate::data::DataConfig;
use crate::distill::config::DistillConfig;
use crate::distill::teacher::{TeacherPlan, TeacherRequest};
use crate::search::config::SearchConfig;
use crate::search::study::StudySpec;
use crate::space::ModelSpec;
use crate::train::recipe::TrainRecipe;
use crate::train::run_dir::OutputConfig;
use crate::train::trainer::TrainJob;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A whole experiment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Experiment {
    /// Run name; default: the experiment file's stem.
    pub name: String,
    /// Master seed: weights, data order, augmentation, dropout.
    pub seed: u64,
    pub data: DataConfig,
    pub model: ModelSpec,
    pub train: TrainRecipe,
    pub output: OutputConfig,
    /// `[distill]`, read by `mnv4-lab distill` and the search.
    pub distill: DistillConfig,
    /// `[search]`, read by `mnv4-lab search`.
    pub search: SearchConfig,
}

impl Experiment {
    /// Parses TOML text plus overrides; `default_name` fills an empty `name`.
    pub fn from_toml(
        text: &str,
        sets: &[String],
        default_name: &str,
        origin: &str,
    ) -> Result<Self> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        apply_overrides(&mut table, sets)?;
        let mut exp: Experiment = toml::Value::Table(table)
            .try_into()
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        if exp.name.is_empty() {
            exp.name = default_name.to_string();
        }
        exp.check().with_context(|| format!("in {origin}"))?;
        Ok(exp)
    }

    /// Reads an experiment file; the run name defaults to the file stem.
    pub fn load(path: &Path, sets: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading experiment {}", path.display()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        Self::from_toml(&text, sets, &stem, &path.display().to_string())
    }

    /// Checks every section, then the rules that span sections.
    pub fn check(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
            bail!(
                "name '{}' must be non-empty and contain no path separators",
                self.name
            );
        }
        self.data.check()?;
        self.train.check()?;
        self.output.check()?;
        self.distill.check()?;
        self.search.check()?;
        if self.search.detect.is_some() {
            ensure!(
                self.distill == DistillConfig::default(),
                "[distill] has no effect in a detection study ([search.detect]): its candidates learn from a teacher detector named by search.detect.teacher; remove [distill]"
            );
        }
        let channels = self.data.augment.channels;
        self.model.to_arch(channels, 2).context("in [model]")?;
        if self.search.detect.is_none()
            && self.distill.uses_teacher()
            && self.distill.teacher_weights.is_none()
        {
            let plan = self.teacher_plan()?;
            let files = self.distill.teacher_experiment.as_ref();
            for (i, member) in plan.members().into_iter().enumerate() {
                let at = match files.and_then(|t| t.paths().get(i)) {
                    Some(p) => format!("in the teacher experiment {}", p.display()),
                    None => "in distill.teacher".into(),
                };
                member
                    .model
                    .to_arch(member.data.augment.channels, 2)
                    .context(at)?;
            }
        }
        Ok(())
    }

    /// The run folder: `output.dir/name`.
    pub fn run_dir(&self) -> PathBuf {
        self.output.dir.join(&self.name)
    }

    /// The training job of this experiment's model.
    pub fn train_job(&self) -> TrainJob {
        TrainJob {
            name: self.name.clone(),
            seed: self.seed,
            recipe: self.train.clone(),
            data: self.data.clone(),
            run_dir: self.run_dir(),
            checkpoint_every: self.output.checkpoint_every,
        }
    }

    /// How this experiment's teacher is trained: by `distill.teacher_experiment` (each file
    /// checked to hold out the students' validation images and to see their inputs; several
    /// make an ensemble), else inline.
    pub fn teacher_plan(&self) -> Result<TeacherPlan> {
        let d = &self.distill;
        let Some(files) = &d.teacher_experiment else {
            let (data, train, seed) = (&self.data, &self.train, self.seed);
            return Ok(TeacherPlan::inline(d, data, train, seed, &self.output));
        };
        let mut plans = files
            .paths()
            .iter()
            .map(|p| self.member_plan(p))
            .collect::<Result<Vec<_>>>()?
            .into_iter();
        let mut plan = plans
            .next()
            .context("distill.teacher_experiment is empty")?;
        plan.ensemble = plans.collect();
        Ok(plan)
    }

    /// The plan of one teacher experiment file.
    fn member_plan(&self, path: &Path) -> Result<TeacherPlan> {
        let at = || format!("distill.teacher_experiment = {}", path.display());
        let t = Experiment::load(path, &[]).with_context(at)?;
        if t.distill.teacher_experiment.is_some() {
            bail!(
                "{}: a teacher experiment cannot name a teacher experiment of its own",
                at()
            );
        }
        let plan = TeacherPlan {
            model: t.model,
            data: t.data,
            recipe: t.train,
            seed: t.seed,
            runs_dir: t.output.dir,
            name: Some(t.name),
            checkpoint_every: t.output.checkpoint_every,
            ensemble: Vec::new(),
        };
        plan.check_against(&self.data, self.distill.teacher_res)
            .with_context(at)?;
        Ok(plan)
    }

    /// What finding or training this experiment's teacher (as `plan` says) needs.
    pub fn teacher_request<'a>(&'a self, plan: &'a TeacherPlan, quiet: bool) -> TeacherRequest<'a> {
        TeacherRequest::new(&self.distill, &self.data, self.seed, plan, quiet)
    }

    /// The search study of this experiment.
    pub fn study(&self) -> Result<StudySpec> {
        Ok(StudySpec {
            name: self.name.clone(),
            seed: self.seed,
            data: self.data.clone(),
            train: self.train.clone(),
            output: self.output.clone(),
            distill: self.distill.clone(),
            search: self.search.clone(),
            teacher: Some(self.teacher_plan()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetKind;
    use crate::search::objective::Objective;

    #[test]
    fn defaults_and_overrides_apply() {
        let e = Experiment::from_toml(
            "[train]\nepochs = 3\n",
            &[
                "train.lr=0.05".into(),
                "model.arch=hybrid-medium".into(),
                "data.augment.flip=false".into(),
                "search.objectives=[\"val_top1\", \"roofline:host\"]".into(),
            ],
            "x",
            "test",
        )
        .unwrap();
        assert_eq!(e.name, "x");
        assert_eq!(e.train.epochs, 3);
        assert_eq!(e.train.lr, 0.05);
        assert_eq!(e.model.arch, "hybrid-medium");
        assert!(!e.data.augment.flip);
        assert_eq!(e.data.val_size, 5000);
        assert_eq!(e.data.dataset, DatasetKind::FashionMnist);
        assert_eq!(e.search.objectives[1], Objective::Roofline("host".into()));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Experiment::from_toml("[train]\nepocs = 3\n", &[], "x", "exp.toml").unwrap_err();
        assert!(format!("{e:#}").contains("epocs"), "{e:#}");
        let e = Experiment::from_toml("", &["trian.epochs=3".into()], "x", "exp.toml").unwrap_err();
        assert!(format!("{e:#}").contains("trian"), "{e:#}");
    }

    #[test]
    fn bad_values_are_rejected_with_the_field() {
        let bad = |text: &str, sets: &[&str], want: &str| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            let e = Experiment::from_toml(text, &sets, "x", "exp.toml").unwrap_err();
            assert!(format!("{e:#}").contains(want), "{want}: {e:#}");
        };
        bad("[train]\nepochs = 0\n", &[], "train.epochs");
        bad("[data]\ndataset = \"imagenet\"\n", &[], "imagenet");
        bad("[data]\ndataset = \"cifar10\"\n", &[], "data.path");
        bad(
            "",
            &["search.objectives=[\"val_top1\", \"latency\"]"],
            "latency",
        );
        bad(
            "",
            &["search.objectives=[\"val_top1\", \"macs\", \"macs\"]"],
            "twice",
        );
        bad(
            "",
            &["search.objectives=[\"val_top1\", \"roofline:nope\"]"],
            "nope",
        );
        bad(
            "",
            &["search.reference=[{ arch = \"conv-smal\" }]"],
            "search.reference[0]",
        );
        bad(
            "",
            &["train.optimizer={ kind = \"sgd\", momentum = -0.5 }"],
            "momentum",
        );
        bad("", &["train.warmup_epochs=nan"], "warmup_epochs");
        bad("", &["distill.temperature=0"], "temperature");
        bad("", &["search.fine.halving_keep=1.5"], "halving_keep");
        bad("", &["train.threads=10000"], "train.threads");
        bad(
            "",
            &["model.arch=\"conv-small\"", "model.width=0"],
            "[model]",
        );
        bad("", &["distill.teacher_experiment=[]"], "empty list");
        bad(
            "",
            &["distill.teacher_experiment=3"],
            "a list of experiment files",
        );
    }

    #[test]
    fn a_list_of_teacher_experiments_makes_an_ensemble_teacher() {
        let path = Path::new("experiments/distill_fashion_mnist.toml");
        let e = Experiment::load(path, &[]).unwrap();
        let plan = e.teacher_plan().unwrap();
        let names: Vec<_> = plan.members().iter().map(|m| m.name.clone()).collect();
        assert_eq!(
            names,
            [
                Some("teacher_fashion_mnist".to_string()),
                Some("teacher_fashion_mnist_erase".to_string())
            ]
        );
        // One file stays written as one path, as studies recorded before ensembles have it.
        let one = ["distill.teacher_experiment=\"experiments/teacher_fashion_mnist.toml\"".into()];
        let e = Experiment::load(path, &one).unwrap();
        let json = serde_json::to_value(&e.distill).unwrap();
        assert_eq!(
            json["teacher_experiment"],
            "experiments/teacher_fashion_mnist.toml"
        );
        assert!(e.teacher_plan().unwrap().ensemble.is_empty());
        // A member that does not exist is named.
        let missing = ["distill.teacher_experiment=[\"experiments/teacher_fashion_mnist.toml\", \"nope.toml\"]".into()];
        let err = Experiment::load(path, &missing).unwrap_err();
        assert!(format!("{err:#}").contains("nope.toml"), "{err:#}");
    }
}
