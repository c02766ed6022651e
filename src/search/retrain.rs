//! Retraining a search's Pareto front at the full budget, next to the MobileNetV4 presets:
//! every member and preset × arm (distilled from the study's teacher, and not) × seed, each a
//! resumable run tested once on its best-on-validation weights; each member is then set against
//! the conv-small width curve at equal MACs and at equal latency ([`super::curve`]). Writes
//! `REPORT/retrain/`.

use super::curve::{self, Retrained};
use super::latency::{measure_latency, REFERENCE};
use super::reuse::Reusable;
use super::study::StudySpec;
use crate::cost::cost;
use crate::data::{build_splits, Splits};
use crate::distill::objective::DistillObjective;
use crate::distill::teacher::{cache_key_for_seed, prepare_teacher, ReadyTeacher};
use crate::model::Network;
use crate::report::plot::{write_png_svg, Chart, Series};
use crate::report::stats::mean_sd;
use crate::report::table::{frame, write_csv_parquet, Col};
use crate::space::{presets::preset, Arch};
use crate::train::objective::{BatchLoss, CrossEntropy};
use crate::train::trainer::{train_network, RunOptions, TrainJob};
use anyhow::{ensure, Context, Result};
use candle_core::Device;
use plotters::style::RGBColor;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// What to retrain and how long.
#[derive(Debug, Clone)]
pub struct RetrainPlan {
    /// The study's settings, with the full-budget recipe and data.
    pub study: StudySpec,
    /// Front members (label, arch) from the report.
    pub members: Vec<(String, Arch)>,
    /// The presets: the conv-small width curve and the study's other references.
    pub presets: Presets,
    /// Seeds per (model, arm).
    pub seeds: usize,
    pub quiet: bool,
    /// Which of the runs this process trains.
    pub shard: Shard,
    /// The experiment file the recipe came from, if not the study's own.
    pub recipe: Option<String>,
    /// Finished runs elsewhere that count as this plan's runs ([`Reusable::find`]).
    pub reuse: Reusable,
}

/// Presets (label, arch) retrained next to the front.
#[derive(Debug, Clone)]
pub struct Presets {
    /// conv-small at each width: the curve the members are compared with.
    pub curve: Vec<(String, Arch)>,
    /// The study's references that are not on the curve.
    pub references: Vec<(String, Arch)>,
}

/// What a retrained model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Searched,
    Curve,
    Reference,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Searched => "searched",
            Kind::Curve => "preset curve",
            Kind::Reference => "reference",
        }
    }
}

/// One finished run.
#[derive(Debug, Clone)]
struct Row {
    label: String,
    kind: Kind,
    distilled: bool,
    seed: u64,
    test_top1: f64,
    params: u64,
    macs: u64,
    /// [`Latency::ms`] of the model.
    latency_ms: f64,
    /// The model's latency over the reference network's, with its 95 % interval.
    latency_ratio: [f64; 3],
}

/// Timed pairs per model at least: a dozen models are measured once, so they can afford more
/// pairs than a search's candidates.
const LATENCY_PAIRS: usize = 40;

/// The front members named by `REPORT/pareto.csv` (their `pareto/tNNNN.toml` files).
pub fn front_members(report: &Path) -> Result<Vec<(String, Arch)>> {
    let dir = report.join("pareto");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {} (run `mnv4-lab report` first)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let label = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            Ok((label, Arch::resolve(&p.to_string_lossy(), 1.0)?))
        })
        .collect()
}

/// The conv-small width curve, and the study's references not on it, without repeats.
pub fn preset_curve(study: &StudySpec, widths: &[f64]) -> Result<Presets> {
    let mut curve: Vec<(String, Arch)> = Vec::new();
    for &w in widths {
        let arch = preset("conv-small", w)
            .map_err(anyhow::Error::msg)?
            .with_io(3, 10);
        if !curve.iter().any(|(_, a)| a.canonical() == arch.canonical()) {
            curve.push((format!("conv-small-{w}"), arch));
        }
    }
    let mut references: Vec<(String, Arch)> = Vec::new();
    for m in &study.search.reference {
        let a = m.to_arch(3, 10)?;
        let known = curve.iter().chain(&references);
        if !known
            .into_iter()
            .any(|(_, b)| b.canonical() == a.canonical())
        {
            references.push((a.name.clone().unwrap_or_else(|| m.arch.clone()), a));
        }
    }
    Ok(Presets { curve, references })
}

/// Which runs one process trains: those whose index is `k` modulo `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub k: usize,
    pub n: usize,
}

impl Default for Shard {
    /// Every run.
    fn default() -> Self {
        Self { k: 0, n: 1 }
    }
}

impl Shard {
    fn owns(self, index: usize) -> bool {
        index % self.n == self.k
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("'{s}': expected K/N with 0 <= K < N, e.g. 0/2");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        match k < n {
            true => Ok(Self { k, n }),
            false => Err(bad()),
        }
    }
}

/// Runs (or resumes) this shard's retraining runs; once every run has its result, writes the
/// tables and plot into `report/retrain/`. Returns how many runs are still left to other shards.
pub fn retrain(plan: &RetrainPlan, report: &Path) -> Result<usize> {
    let s = &plan.study;
    ensure!(
        s.search.detect.is_none(),
        "retrain trains classifiers; a detection study's front members are retrained as detectors with `mnv4-lab detect train` (model.backbone = the member's arch file)"
    );
    let t = &s.train;
    let splits = build_splits(&s.data, t.batch_size, t.eval_batch_size, s.seed)?;
    let teacher = match s.distill.uses_teacher() {
        true => {
            let t = s.teacher_plan();
            Some(prepare_teacher(
                &s.teacher_request(&t, plan.quiet),
                &splits,
            )?)
        }
        false => None,
    };
    let arms: &[bool] = if teacher.is_some() {
        &[true, false]
    } else {
        &[false]
    };
    let models = plan
        .members
        .iter()
        .map(|m| (m, Kind::Searched))
        .chain(plan.presets.curve.iter().map(|p| (p, Kind::Curve)))
        .chain(plan.presets.references.iter().map(|p| (p, Kind::Reference)));
    let root = runs_root(s)?;
    let mut rows = Vec::new();
    let (mut index, mut left, mut reused) = (0, 0, Vec::new());
    for ((label, arch), kind) in models {
        let arch = arch.clone().with_io(splits.channels, splits.num_classes);
        let c = cost(&arch, splits.input_size, splits.input_size, &[]);
        for &distilled in arms {
            for k in 0..plan.seeds as u64 {
                let run = RunRef {
                    root: &root,
                    label,
                    teacher: teacher.as_ref().filter(|_| distilled),
                    k,
                };
                let owned = plan.shard.owns(index);
                index += 1;
                let Some(test_top1) = result_of(plan, &splits, &run, &arch, owned, &mut reused)?
                else {
                    left += 1;
                    continue;
                };
                rows.push(Row {
                    label: label.clone(),
                    kind,
                    distilled,
                    seed: s.seed + k,
                    test_top1,
                    params: c.params,
                    macs: c.macs,
                    latency_ms: f64::NAN,
                    latency_ratio: [f64::NAN; 3],
                });
            }
        }
    }
    if left > 0 {
        return Ok(left);
    }
    measure_latencies(plan, &splits, &mut rows)?;
    write_outputs(
        &report.join("retrain"),
        plan,
        teacher.as_ref(),
        &rows,
        &reused,
    )?;
    Ok(0)
}

/// The folder of the study's retraining runs, named by a hash of everything they train with,
/// so that a run of another recipe is never taken for one of this recipe.
fn runs_root(s: &StudySpec) -> Result<PathBuf> {
    let recipe = serde_json::to_vec(&(&s.data, &s.train, &s.distill, &s.teacher))?;
    let hash = &crate::fsutil::bytes_sha256(&recipe)[..8];
    Ok(s.output.dir.join(format!("{}-retrain-{hash}", s.name)))
}

/// One (model, arm, seed) run of the plan.
struct RunRef<'a> {
    /// The folder of all the plan's runs ([`runs_root`]).
    root: &'a Path,
    label: &'a str,
    /// The teacher of the distilled arm; `None` for cross-entropy only.
    teacher: Option<&'a ReadyTeacher>,
    /// Seed offset from the study's seed.
    k: u64,
}

impl RunRef<'_> {
    fn dir(&self, s: &StudySpec) -> PathBuf {
        let arm = if self.teacher.is_some() { "kd" } else { "ce" };
        self.root
            .join(format!("{}-{arm}-s{}", self.label, s.seed + self.k))
    }
}

/// Every model's latency, measured once all training is done (so no training disturbs it): each
/// model timed in pairs with the reference network ([`measure_latency`]), and put in milliseconds
/// as its median ratio times the reference's median time over all the models' pairs, so a host
/// that slows down while one model is measured moves that model's pairs, not its place.
fn measure_latencies(plan: &RetrainPlan, splits: &Splits, rows: &mut [Row]) -> Result<()> {
    let models = plan
        .members
        .iter()
        .chain(&plan.presets.curve)
        .chain(&plan.presets.references);
    let pairs = plan.study.search.latency_repeats.max(LATENCY_PAIRS);
    let mut measured = Vec::new();
    for (label, arch) in models {
        let arch = arch.clone().with_io(splits.channels, splits.num_classes);
        measured.push((label, measure_latency(&arch, splits.input_size, pairs)?));
    }
    let mut reference: Vec<f64> = measured.iter().map(|(_, m)| m.reference_ms).collect();
    reference.sort_by(f64::total_cmp);
    let reference_ms = reference[reference.len() / 2];
    for (label, m) in measured {
        rows.iter_mut().filter(|r| &r.label == label).for_each(|r| {
            r.latency_ms = m.ratio * reference_ms;
            r.latency_ratio = [m.ratio, m.ratio_ci[0], m.ratio_ci[1]];
        });
    }
    Ok(())
}

/// The test top-1 of one planned run: its own earlier result, an equivalent finished run's
/// (its folder added to `reused`), or a fresh training when this shard `owned` it; `None` when
/// it is left to another shard.
fn result_of(
    plan: &RetrainPlan,
    splits: &Splits,
    run: &RunRef,
    arch: &Arch,
    owned: bool,
    reused: &mut Vec<String>,
) -> Result<Option<f64>> {
    if let Some(top1) = finished(plan, run)? {
        return Ok(Some(top1));
    }
    let (s, distilled) = (&plan.study, run.teacher.is_some());
    if let Some((dir, top1)) = plan.reuse.find(s, arch, s.seed + run.k, distilled) {
        reused.push(dir.display().to_string());
        return Ok(Some(top1));
    }
    match owned {
        true => Ok(Some(train_one(plan, splits, run, arch)?)),
        false => Ok(None),
    }
}

/// The test top-1 of a run that finished before, if it did.
fn finished(plan: &RetrainPlan, run: &RunRef) -> Result<Option<f64>> {
    let summary = run.dir(&plan.study).join("summary.json");
    let Ok(text) = std::fs::read_to_string(&summary) else {
        return Ok(None);
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is malformed", summary.display()))?;
    Ok(v["test_top1"].as_f64())
}

/// Trains (or resumes) one run and returns its test top-1. The run's seed drives its weights,
/// data order and augmentation, as in `mnv4-lab train`.
fn train_one(plan: &RetrainPlan, splits: &Splits, run: &RunRef, arch: &Arch) -> Result<f64> {
    let s = &plan.study;
    let seed = s.seed + run.k;
    let splits = &splits.with_train_seed(seed);
    let run_dir = run.dir(s);
    let job = TrainJob {
        name: run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        seed,
        recipe: s.train.clone(),
        data: s.data.clone(),
        run_dir: run_dir.clone(),
        checkpoint_every: s.output.checkpoint_every,
    };
    let net = Network::new(arch, &Device::Cpu, seed)?;
    let smoothing = s.train.label_smoothing;
    let mut objective: Box<dyn BatchLoss> = match run.teacher {
        Some(t) => Box::new(DistillObjective::new(
            &s.distill,
            smoothing,
            &net,
            t.net.clone(),
            splits.train.dataset().n,
            t.cache_key
                .as_deref()
                .map(|k| cache_key_for_seed(k, s.seed, seed)),
            seed,
        )?),
        None => Box::new(CrossEntropy { smoothing }),
    };
    let opts = RunOptions {
        resume: run_dir.join("checkpoints/last.json").exists(),
        quiet: plan.quiet,
        ..Default::default()
    };
    Ok(
        train_network(&job, &net, splits, objective.as_mut(), &opts)?
            .test
            .top1,
    )
}

/// `retrain.csv|parquet` (every run), `README.md` (mean ± std per model and arm) and the plot.
fn write_outputs(
    dir: &Path,
    plan: &RetrainPlan,
    teacher: Option<&ReadyTeacher>,
    rows: &[Row],
    reused: &[String],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let arm = |r: &Row| if r.distilled { "kd" } else { "ce" }.to_string();
    let ratio = |i: usize| rows.iter().map(|r| r.latency_ratio[i]).collect();
    write_csv_parquet(
        &mut frame(vec![
            Col::text("model", rows.iter().map(|r| r.label.clone()).collect()),
            Col::text(
                "kind",
                rows.iter().map(|r| r.kind.name().to_string()).collect(),
            ),
            Col::text("arm", rows.iter().map(arm).collect()),
            Col::int("seed", rows.iter().map(|r| r.seed as i64).collect()),
            Col::float("test_top1", rows.iter().map(|r| r.test_top1).collect()),
            Col::int("params", rows.iter().map(|r| r.params as i64).collect()),
            Col::int("macs", rows.iter().map(|r| r.macs as i64).collect()),
            Col::float("latency_ms", rows.iter().map(|r| r.latency_ms).collect()),
            Col::float("latency_ratio", ratio(0)),
            Col::float("latency_ratio_lo", ratio(1)),
            Col::float("latency_ratio_hi", ratio(2)),
        ])?,
        dir,
        "retrain",
    )?;
    let groups = group(rows);
    let s = &plan.study;
    let mut md = String::new();
    writeln!(md, "# Retrained front: {}\n", s.name)?;
    let recipe = match &plan.recipe {
        Some(path) => format!("the recipe of `{path}`"),
        None => "the search's recipe".to_string(),
    };
    writeln!(md, "Every Pareto member and preset trained with {recipe} for {} epochs on {} training images (data.train_limit {}; 0 = the whole training split), {} seed(s) each (a seed sets the weights, the data order and the augmentation), tested once on the best-on-validation weights.", s.train.epochs, s.data.dataset, s.data.train_limit, plan.seeds)?;
    if !reused.is_empty() {
        writeln!(md, "{} of the runs had been trained before with the same architecture, data, recipe, distillation and seed, and were taken as they were: {}.", reused.len(), reused.join(", "))?;
    }
    match teacher {
        Some(t) => writeln!(
            md,
            "Arm `kd`: distilled from {} (test top-1 {:.2}%); arm `ce`: cross-entropy only.\n",
            t.source,
            100.0 * t.test.top1
        )?,
        None => writeln!(md, "No teacher in the study: cross-entropy only.\n")?,
    }
    let pairs = s.search.latency_repeats.max(LATENCY_PAIRS);
    writeln!(md, "Latency: a batch-1 eval-mode forward at the training input size, measured after all training in {pairs} pairs with {} ×{} (the first of each pair alternating); each model's median ratio to it, with a distribution-free 95 % interval, and in milliseconds that ratio times the reference's median time over all the pairs.\n", REFERENCE.0, REFERENCE.1)?;
    writeln!(
        md,
        "| model | kind | arm | test top-1 (mean ± std) | seeds | params | MACs | latency (ms) | latency / {} ×{} [95 % CI] |",
        REFERENCE.0, REFERENCE.1
    )?;
    writeln!(md, "|---|---|---|---:|---:|---:|---:|---:|---:|")?;
    for g in &groups {
        let (m, sd) = mean_sd(&g.1);
        let r = g.0;
        let kind = r.kind.name();
        writeln!(
            md,
            "| {} | {kind} | {} | {:.2} ± {:.2}% | {} | {} | {:.2} M | {:.3} | {:.3} [{:.3}, {:.3}] |",
            r.label,
            arm(r),
            100.0 * m,
            100.0 * sd,
            g.1.len(),
            r.params,
            r.macs as f64 / 1e6,
            r.latency_ms,
            r.latency_ratio[0],
            r.latency_ratio[1],
            r.latency_ratio[2]
        )?;
    }
    md.push_str(&versus_section(&groups));
    let flags = match &plan.recipe {
        Some(path) => format!(" --recipe {path}"),
        None => String::new(),
    };
    writeln!(md, "\n![retrained front](retrain.png)\n\nRegenerate with `mnv4-lab retrain REPORT_DIR --epochs {} --seeds {}{flags}` (finished runs are reused).", s.train.epochs, plan.seeds)?;
    crate::fsutil::atomic_write(&dir.join("README.md"), md.as_bytes())?;
    plot(dir, &s.name, &groups)
}

/// The members against the preset curve ([`curve::markdown`]).
fn versus_section(groups: &[(&Row, Vec<f64>)]) -> String {
    let models: Vec<Retrained> = groups
        .iter()
        .map(|(r, top1)| Retrained {
            label: &r.label,
            searched: r.kind == Kind::Searched,
            on_curve: r.kind == Kind::Curve,
            arm: if r.distilled { "kd" } else { "ce" },
            macs: r.macs as f64,
            latency_ms: r.latency_ms,
            top1,
        })
        .collect();
    curve::markdown(&models)
}

/// Rows grouped by (model, arm), in first-seen order, with their test accuracies.
fn group(rows: &[Row]) -> Vec<(&Row, Vec<f64>)> {
    let mut groups: Vec<(&Row, Vec<f64>)> = Vec::new();
    for r in rows {
        match groups
            .iter_mut()
            .find(|g| g.0.label == r.label && g.0.distilled == r.distilled)
        {
            Some(g) => g.1.push(r.test_top1),
            None => groups.push((r, vec![r.test_top1])),
        }
    }
    groups
}

/// Test top-1 against MACs: searched members and presets, per arm.
fn plot(dir: &Path, name: &str, groups: &[(&Row, Vec<f64>)]) -> Result<()> {
    let series = |searched: bool, distilled: bool, label: &str, color: RGBColor| {
        let mut points: Vec<(f64, f64)> = groups
            .iter()
            .filter(|g| (g.0.kind == Kind::Searched) == searched && g.0.distilled == distilled)
            .map(|g| (g.0.macs as f64 / 1e6, 100.0 * mean_sd(&g.1).0))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        Series {
            label: label.into(),
            points,
            color,
            line: true,
            marker: 4,
        }
    };
    let title = format!("{name}: retrained front vs presets");
    let chart = Chart {
        title: &title,
        x_label: "MACs per image (millions)",
        y_label: "test top-1 (%), mean over seeds",
        series: vec![
            series(true, true, "searched, distilled", RGBColor(214, 39, 40)),
            series(false, true, "presets, distilled", RGBColor(20, 20, 20)),
            series(true, false, "searched, no KD", RGBColor(255, 152, 150)),
            series(false, false, "presets, no KD", RGBColor(150, 150, 150)),
        ]
        .into_iter()
        .filter(|s| !s.points.is_empty())
        .collect(),
        annotations: vec![],
        log_x: false,
    };
    write_png_svg(&chart, dir, "retrain")
}
