//! `mnv4-lab detect …`: object detection with YOLO11 and MobileNetV4 backbones. `detect train`
//! trains a detector from a detection experiment; `detect map` scores COCO-format detections
//! against COCO-format ground truth, as pycocotools does.

use super::RunFlags;
use crate::data::synth_detect::SynthDetectConfig;
use crate::data::DetectDataSection;
use crate::data::{DetectLoader, DetectLoaderConfig, DetectSet, DetectSplit};
use crate::detect::coco::evaluate;
use crate::detect::coco_json::{read_ground_truth, read_results};
use crate::detect::loss::LossGains;
use crate::detect::DetectNet;
use crate::experiment::detect::DetectExperiment;
use crate::train::detector::checkpoint::{load_detector, LoadedDetector};
use crate::train::detector::inputs::{open_loaders, open_teacher, DetectLoaders};
use crate::train::detector::job::DetectTrainJob;
use crate::train::detector::trainer::{train_detector, validate, DetectRunOptions};
use anyhow::{Context, Result};
use candle_core::Device;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

/// Arguments of `mnv4-lab detect`.
#[derive(Debug, Args)]
pub struct DetectArgs {
    #[command(subcommand)]
    pub action: DetectAction,
}

/// What `mnv4-lab detect` does.
#[derive(Debug, Subcommand)]
pub enum DetectAction {
    /// Train a detector from a detection experiment (YOLO11's loss, COCO mAP on validation every
    /// epoch); writes runs/<name>/ (metrics.csv, checkpoints, summary.json).
    Train {
        /// The detection experiment file.
        experiment: PathBuf,
        #[command(flatten)]
        run: RunFlags,
    },
    /// COCO box mAP of a detector checkpoint on its dataset's validation (or test) split, with
    /// the thresholds it was trained with unless given.
    Eval {
        /// A detector checkpoint sidecar (runs/<name>/checkpoints/best.json or last.json).
        checkpoint: PathBuf,
        /// Another YOLO dataset file (default: the one the checkpoint trained on).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Which split.
        #[arg(long, value_enum, default_value = "val")]
        split: EvalSplitArg,
        /// Minimum class score of a detection (default: the checkpoint's).
        #[arg(long)]
        conf: Option<f32>,
        /// NMS IoU threshold (default: the checkpoint's).
        #[arg(long)]
        iou: Option<f32>,
    },
    /// A detector checkpoint's boxes on image files: PNG copies with the boxes drawn (one colour
    /// per class) and a COCO results file `predictions.json` (boxes in each image's pixels).
    Predict {
        /// A detector checkpoint sidecar (runs/<name>/checkpoints/best.json).
        checkpoint: PathBuf,
        /// Image files (PNG or JPEG, any size; letterboxed to the detector's input).
        #[arg(required = true, num_args = 1..)]
        images: Vec<PathBuf>,
        /// Output folder.
        #[arg(long, default_value = "predictions")]
        out: PathBuf,
        /// Minimum class score of a drawn box.
        #[arg(long, default_value_t = 0.25)]
        conf: f32,
        /// Draw on a copy enlarged this many times (nearest neighbour), for small images.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
        zoom: u32,
    },
    /// Box mAP50-95, mAP50 and mAP75 of a COCO results file against a COCO ground-truth file
    /// (101-point interpolation, up to 100 detections per image and class), per class too.
    Map {
        /// Ground truth: a COCO JSON file with `images`, `annotations` and `categories`.
        #[arg(long)]
        gt: PathBuf,
        /// Detections: a COCO results JSON list of `{image_id, category_id, bbox, score}`.
        #[arg(long)]
        pred: PathBuf,
        /// Print the metrics as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// The split `detect eval` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalSplitArg {
    Val,
    Test,
}

pub fn run(args: &DetectArgs) -> Result<()> {
    match &args.action {
        DetectAction::Train { experiment, run } => run_train(experiment, run),
        DetectAction::Eval {
            checkpoint,
            data,
            split,
            conf,
            iou,
        } => run_eval(checkpoint, data.as_deref(), *split, *conf, *iou),
        DetectAction::Predict {
            checkpoint,
            images,
            out,
            conf,
            zoom,
        } => super::detect_predict::run_predict(checkpoint, images, out, *conf, *zoom as usize),
        DetectAction::Map { gt, pred, json } => {
            let truth = read_ground_truth(gt)?;
            let dets = read_results(pred, &truth)?;
            let m = evaluate(&truth.boxes, &dets, &truth.images, &truth.categories);
            let show = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.6}"));
            if *json {
                let per: Vec<_> = m
                    .per_category
                    .iter()
                    .map(|(c, ap)| serde_json::json!({"category_id": c, "ap": ap}))
                    .collect();
                let out = serde_json::json!({
                    "map": m.map, "map50": m.map50, "map75": m.map75, "per_category": per,
                });
                println!("{out}");
                return Ok(());
            }
            println!(
                "{} images, {} objects, {} detections: mAP50-95 {} | mAP50 {} | mAP75 {}",
                truth.images.len(),
                truth.boxes.len(),
                dets.len(),
                show(m.map),
                show(m.map50),
                show(m.map75)
            );
            for (c, ap) in &m.per_category {
                let avg = ap.map(|a| a.iter().sum::<f64>() / 10.0);
                println!(
                    "  category {c}: AP50-95 {} AP50 {}",
                    show(avg),
                    show(ap.map(|a| a[0]))
                );
            }
            Ok(())
        }
    }
}

/// `detect train`: builds the loaders, the detector and the job, trains, prints the summary.
fn run_train(path: &Path, flags: &RunFlags) -> Result<()> {
    let exp = DetectExperiment::load(path, &flags.sets)?;
    super::set_threads(exp.train.threads);
    train_experiment(&exp, flags.resume)
}

/// The best checkpoint of detection experiment `path`'s run, training it first when the run has
/// not finished (resuming it when it has a last checkpoint): the teacher of a detection study
/// (`search.detect.teacher_experiment`).
pub(super) fn finished_run(path: &Path) -> Result<PathBuf> {
    let exp = DetectExperiment::load(path, &[])?;
    let run = exp.run_dir();
    if !run.join("summary.json").exists() {
        tracing::info!(
            "training the detection study's teacher {} first",
            path.display()
        );
        let resume = run.join("checkpoints/last.json").exists();
        train_experiment(&exp, resume).with_context(|| format!("training {}", path.display()))?;
    }
    Ok(run.join("checkpoints/best.json"))
}

/// Trains (or resumes) a detection experiment and writes its summary.
fn train_experiment(exp: &DetectExperiment, resume: bool) -> Result<()> {
    ensure_default_set(&exp.data)?;
    let r = &exp.train;
    let DetectLoaders {
        train,
        val,
        classes,
    } = open_loaders(&exp.data, r, exp.seed, "data.dataset")?;
    let spec = exp.model.to_spec(classes)?;
    let net = DetectNet::new(&spec.lower()?, &Device::Cpu, exp.seed)?;
    let (teacher, distill) = match &exp.distill.teacher {
        None => (None, None),
        Some(path) => {
            let (net, job) = open_teacher(path, exp.distill.weights())
                .with_context(|| format!("distill.teacher = {}", path.display()))?;
            (Some(net), Some(job))
        }
    };
    let job = DetectTrainJob {
        name: exp.name.clone(),
        seed: exp.seed,
        spec,
        recipe: exp.train.clone(),
        predict: exp.predict,
        gains: LossGains::default(),
        data: serde_json::to_value(&exp.data)?,
        run_dir: exp.run_dir(),
        distill,
    };
    let opts = DetectRunOptions {
        resume,
        stop_after: None,
    };
    let s = train_detector(&job, &net, teacher.as_ref(), &train, &val, opts)?;
    let summary = serde_json::json!({
        "name": job.name,
        "detector": job.spec.name(),
        "params": job.spec.params()?,
        "best_epoch": s.best_epoch,
        "val_map50_95": s.best_map,
        "val_map50": s.best_map50,
        "teacher": job.distill.as_ref().map(|d| d.teacher.display().to_string()),
        "wall_seconds_this_invocation": s.wall_seconds,
        "machine": crate::report::machine::describe(),
    });
    crate::fsutil::atomic_write(
        &job.run_dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    println!(
        "{}: {} | best epoch {} of {}: val mAP50-95 {:.4}, mAP50 {:.4} | {:.0} s | {}",
        job.name,
        job.spec.name(),
        s.best_epoch,
        r.epochs,
        s.best_map,
        s.best_map50,
        s.wall_seconds,
        job.run_dir.display()
    );
    Ok(())
}

/// Makes the default detection set when the experiment names it and it is not there yet; refuses
/// a default set made before it had a test split (its validation items were drawn differently).
pub(super) fn ensure_default_set(data: &DetectDataSection) -> Result<()> {
    let default = DetectDataSection::default().dataset;
    if data.dataset != default {
        return Ok(());
    }
    if data.dataset.exists() {
        let has_test = data.dataset.with_file_name("images").join("test").is_dir();
        anyhow::ensure!(
            has_test,
            "{} was made by an earlier mnv4-lab, without a test split and with other validation items: delete its folder and it is made again",
            data.dataset.display()
        );
        return Ok(());
    }
    let out = default
        .parent()
        .context("the default dataset path has no folder")?;
    tracing::info!("making the default detection set in {}", out.display());
    super::data::make_detection_set(&SynthDetectConfig::default(), out)
}

/// `detect eval`: the checkpoint's detector and weights, scored on a split of its dataset.
fn run_eval(
    sidecar: &Path,
    data: Option<&Path>,
    split: EvalSplitArg,
    conf: Option<f32>,
    iou: Option<f32>,
) -> Result<()> {
    let LoadedDetector {
        sidecar: s,
        data: recorded,
        mut predict,
        net,
    } = load_detector(sidecar)?;
    predict.conf = conf.unwrap_or(predict.conf);
    predict.iou = iou.unwrap_or(predict.iou);
    predict.check()?;
    let dataset = data.map_or(recorded.dataset.clone(), Path::to_path_buf);
    let which = match split {
        EvalSplitArg::Val => DetectSplit::Val,
        EvalSplitArg::Test => DetectSplit::Test,
    };
    let set = DetectSet::open(&dataset, which)?;
    anyhow::ensure!(
        set.names().len() == s.spec.num_classes,
        "{} has {} classes, the detector {}",
        dataset.display(),
        set.names().len(),
        s.spec.num_classes
    );
    let n = set.len();
    let loader = DetectLoader::new(set, DetectLoaderConfig::val(recorded.imgsz, 50))?;
    let (map, map50) = validate(&net, &loader, &predict, s.spec.num_classes)?;
    println!(
        "{} ({}, epoch {}) on {} {} ({n} images): mAP50-95 {map:.4}, mAP50 {map50:.4}",
        sidecar.display(),
        s.spec.name(),
        s.epoch,
        dataset.display(),
        which.key()
    );
    Ok(())
}
