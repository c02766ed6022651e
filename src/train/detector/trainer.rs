//! One detector training run: seeded, resumable after `kill -9` from its last epoch, evaluated
//! on validation (COCO mAP) every epoch; the best epoch by mAP50-95 is kept as `best.json`.
//!
//! With `train.ema_decay`, the weights are averaged as YOLO11 does (the decay ramped up over
//! about [`EMA_RAMP_UPDATES`] steps); the average is what is validated and what the checkpoint's
//! weights file holds, and the trained weights travel in its state file as `raw.*`.

use super::checkpoint::{read_detect_sidecar, save, sidecar_for, DetectSidecar};
use super::distill::Distiller;
use super::evaluate::{predict, MapAccumulator, PredictConfig};
use super::job::DetectTrainJob;
use super::metrics::{write_rows, DetectRow};
use crate::data::{DetectBatch, DetectLoader};
use crate::detect::assign::{AssignerConfig, Object};
use crate::detect::loss::{detection_loss, flatten_head};
use crate::detect::{DetectNet, LEVEL_STRIDES};
use crate::model::Mode;
use crate::train::ema::Ema;
use crate::train::epoch::Diverged;
use crate::train::optim::Optimizer;
use crate::train::schedule::CosineSchedule;
use anyhow::{ensure, Context, Result};
use candle_core::Tensor;
use std::collections::HashMap;
use std::time::Instant;

/// The EMA decay's ramp τ in optimizer steps: after u steps the decay is d·(1 − e^(−u/τ)).
pub const EMA_RAMP_UPDATES: f64 = 2000.0;

/// A run's trainable state: the network, its optimizer, the optional weight average and the
/// optional teacher with its adapters.
struct Learner<'a> {
    net: &'a DetectNet,
    opt: Optimizer,
    ema: Option<Ema<DetectNet>>,
    distiller: Option<Distiller<'a>>,
}

impl Learner<'_> {
    /// The network that is validated and saved: the average when there is one.
    fn evaluated(&self) -> &DetectNet {
        self.ema.as_ref().map_or(self.net, |e| &e.twin)
    }

    /// Optimizer moments, the distillation adapters (`adapter.*`), and the trained weights as
    /// `raw.*` when the weights file holds the average.
    fn state(&self) -> HashMap<String, Tensor> {
        let mut state = self.opt.state_tensors();
        state.extend(self.distiller.iter().flat_map(Distiller::state));
        if self.ema.is_some() {
            for (k, v) in self.net.params.tensors() {
                state.insert(format!("raw.{k}"), v);
            }
        }
        state
    }
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone)]
pub struct DetectSummary {
    pub rows: Vec<DetectRow>,
    pub best_epoch: usize,
    pub best_map: f64,
    pub best_map50: f64,
    pub wall_seconds: f64,
}

/// Options of a run that do not change its result.
#[derive(Debug, Clone, Copy, Default)]
pub struct DetectRunOptions {
    /// Continue from the run folder's `last.json`.
    pub resume: bool,
    /// Stop after this many epochs (checkpointed), as if interrupted.
    pub stop_after: Option<usize>,
}

/// Trains `net` as `job` says on `train`, validating on `val`; with a `teacher` (and
/// `job.distill`), distils it into `net` as well.
pub fn train_detector(
    job: &DetectTrainJob,
    net: &DetectNet,
    teacher: Option<&DetectNet>,
    train: &DetectLoader,
    val: &DetectLoader,
    opts: DetectRunOptions,
) -> Result<DetectSummary> {
    let started = Instant::now();
    let dir = job.run_dir.join("checkpoints");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let r = &job.recipe;
    ensure!(
        teacher.is_some() == job.distill.is_some(),
        "a distillation job needs a teacher network, and a teacher needs distillation settings"
    );
    let distiller = match (teacher, &job.distill) {
        (Some(t), Some(d)) => Some(Distiller::new(t, net, d.weights, job.seed)?),
        _ => None,
    };
    let mut trainable = net.params.trainable();
    trainable.extend(distiller.iter().flat_map(|d| d.adapters.trainable()));
    let mut learner = Learner {
        net,
        opt: Optimizer::new(r.optimizer.clone(), trainable),
        ema: Ema::new(r.ema_decay, net, job.seed)?.map(|e| e.with_ramp(EMA_RAMP_UPDATES)),
        distiller,
    };
    let steps = train.len() as u64;
    ensure!(
        steps > 0,
        "the training set has fewer images than one batch of {}",
        r.batch_size
    );
    let schedule = CosineSchedule {
        base_lr: r.lr,
        min_lr: r.min_lr,
        warmup_steps: (r.warmup_epochs * steps as f64).round() as u64,
        total_steps: r.epochs as u64 * steps,
    };
    let (mut rows, mut best) = match opts.resume {
        true => restore(job, &mut learner)?,
        false => (Vec::new(), None),
    };
    let last = opts.stop_after.map_or(r.epochs, |n| n.min(r.epochs));
    for epoch in rows.len()..last {
        let t0 = Instant::now();
        let mut row = train_epoch(job, &mut learner, train, &schedule, epoch)?;
        let m = validate(learner.evaluated(), val, &job.predict, job.spec.num_classes)?;
        row.val_map = m.0;
        row.val_map50 = m.1;
        row.seconds = t0.elapsed().as_secs_f64();
        tracing::info!(
            "{} epoch {}/{}: loss box {:.4} cls {:.4} dfl {:.4} | val mAP50-95 {:.4} mAP50 {:.4} | {:.1}s",
            job.name, epoch + 1, r.epochs, row.box_loss, row.cls_loss, row.dfl_loss,
            row.val_map, row.val_map50, row.seconds
        );
        let is_best = best
            .as_ref()
            .is_none_or(|b: &DetectSidecar| row.val_map > b.best_map);
        let mut s = sidecar_for(job, epoch + 1, learner.opt.step);
        s.metrics = row.as_map();
        rows.push(row.clone());
        write_rows(&job.run_dir.join("metrics.csv"), &rows)?;
        (s.best_map, s.best_epoch) = match (&best, is_best) {
            (Some(b), false) => (b.best_map, b.best_epoch),
            _ => (row.val_map, epoch + 1),
        };
        save(
            &dir,
            &learner.evaluated().params,
            &learner.state(),
            &s,
            is_best,
        )?;
        if is_best {
            best = Some(s);
        }
    }
    let b = best.context("no epoch was trained")?;
    let best_row = &rows[b.best_epoch - 1];
    Ok(DetectSummary {
        best_map50: best_row.val_map50,
        rows,
        best_epoch: b.best_epoch,
        best_map: b.best_map,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

/// One epoch of optimizer steps; returns the epoch's row with mean loss parts.
fn train_epoch(
    job: &DetectTrainJob,
    learner: &mut Learner,
    loader: &DetectLoader,
    schedule: &CosineSchedule,
    epoch: usize,
) -> Result<DetectRow> {
    let (net, opt) = (learner.net, &mut learner.opt);
    let (mut parts, mut n, mut images) = ([0f64; 5], 0usize, 0usize);
    let bins = net.head_bins()?;
    let mut lr = 0.0;
    for (b, batch) in loader.epoch(epoch as u64).enumerate() {
        let batch = batch?;
        let (maps, levels) = net.forward_with_levels(&batch.images, Mode::Train)?;
        let head = flatten_head(&maps, &LEVEL_STRIDES, &bins)?;
        let l = detection_loss(
            &head,
            &objects(&batch),
            &job.gains,
            &AssignerConfig::default(),
        )?;
        let mut loss = l.total;
        if let Some(d) = &learner.distiller {
            // Scaled by the batch size, as YOLO11 scales its own loss.
            let t = d.terms(&batch.images, &levels, &head)?;
            loss = (loss + (t.total * batch.indices.len() as f64)?)?;
            parts[3] += f64::from(t.cls);
            parts[4] += f64::from(t.feature);
        }
        let total = loss.to_scalar::<f32>()?;
        if !total.is_finite() {
            let why = Diverged {
                loss: f64::from(total),
                epoch: epoch + 1,
                batch: b + 1,
            };
            return Err(anyhow::Error::new(why).context(job.name.clone()));
        }
        let grads = loss.backward()?;
        let norm = opt.grad_norm(&grads)?;
        let clip = job.recipe.grad_clip;
        let scale = if clip > 0.0 && norm > clip {
            clip / norm
        } else {
            1.0
        };
        lr = schedule.lr(opt.step);
        opt.step(&grads, lr, scale)?;
        if let Some(ema) = &learner.ema {
            ema.update(net)?;
        }
        parts[0] += f64::from(l.boxes);
        parts[1] += f64::from(l.cls);
        parts[2] += f64::from(l.dfl);
        n += 1;
        images += batch.indices.len();
    }
    let k = n.max(1) as f64;
    Ok(DetectRow {
        epoch: epoch + 1,
        lr,
        box_loss: parts[0] / k,
        cls_loss: parts[1] / k,
        dfl_loss: parts[2] / k,
        kd_cls_loss: parts[3] / k,
        kd_feature_loss: parts[4] / k,
        images,
        ..DetectRow::default()
    })
}

/// The batch's labels as the loss reads them.
fn objects(batch: &DetectBatch) -> Vec<Vec<Object>> {
    batch
        .objects
        .iter()
        .map(|o| {
            o.iter()
                .map(|b| Object {
                    class: b.class,
                    xyxy: b.xyxy,
                })
                .collect()
        })
        .collect()
}

/// mAP50-95 and mAP50 of `net` on `val` over `classes` classes (0 where none has labels).
pub fn validate(
    net: &DetectNet,
    val: &DetectLoader,
    cfg: &PredictConfig,
    classes: usize,
) -> Result<(f64, f64)> {
    let mut acc = MapAccumulator::default();
    for batch in val.epoch(0) {
        let batch = batch?;
        let dets = predict(net, &batch.images, cfg)?;
        for (objs, d) in batch.objects.iter().zip(&dets) {
            acc.add(objs, d);
        }
    }
    let m = acc.finish(classes);
    Ok((m.map.unwrap_or(0.0), m.map50.unwrap_or(0.0)))
}

/// Restores weights, optimizer and average from `last.json`; refuses a run made with other
/// settings.
fn restore(
    job: &DetectTrainJob,
    learner: &mut Learner,
) -> Result<(Vec<DetectRow>, Option<DetectSidecar>)> {
    let dir = job.run_dir.join("checkpoints");
    let last = dir.join("last.json");
    if !last.exists() {
        tracing::warn!(
            "--resume: no checkpoint in {}; starting fresh",
            dir.display()
        );
        return Ok((Vec::new(), None));
    }
    let s = read_detect_sidecar(&last)?;
    ensure!(
        s.spec == job.spec && s.settings == job.settings() && s.seed == job.seed,
        "cannot resume: {} was made with other settings (detector, recipe, data or seed)",
        last.display()
    );
    let state = candle_core::safetensors::load(dir.join(&s.state), &candle_core::Device::Cpu)
        .with_context(|| format!("reading {}", s.state))?;
    let weights = s.weights_path(&last);
    learner.evaluated().params.load_safetensors(&weights, &[])?;
    if let Some(ema) = &learner.ema {
        let raw: HashMap<String, Tensor> = state
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("raw.").map(|k| (k.to_string(), v.clone())))
            .collect();
        learner
            .net
            .params
            .load_map(&raw, &[], "the trained weights (raw.*)")?;
        ema.set_updates(s.optimizer_step);
    }
    if let Some(d) = &learner.distiller {
        d.load_state(&state)?;
    }
    learner.opt.load_state(&state, s.optimizer_step)?;
    let rows = super::metrics::read_rows(&job.run_dir.join("metrics.csv"), s.epoch)?;
    let best = read_detect_sidecar(&dir.join("best.json"))?;
    tracing::info!("resuming {} after epoch {}", job.name, s.epoch);
    Ok((rows, Some(best)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::{synthetic_detect_set, TempDir};
    use crate::data::{DetectLoaderConfig, DetectSet, DetectSplit};
    use crate::detect::loss::LossGains;
    use crate::detect::{DetectorSpec, Yolo11Scale};
    use crate::space::presets::preset;
    use crate::train::detector::evaluate::PredictConfig;
    use crate::train::detector::metrics::DetectRow;
    use crate::train::recipe::TrainRecipe;
    use candle_core::Device;

    fn job(dir: &std::path::Path, name: &str) -> DetectTrainJob {
        let arch = preset("conv-small", 0.25).unwrap();
        DetectTrainJob {
            name: name.into(),
            seed: 3,
            spec: DetectorSpec::mnv4(arch, Yolo11Scale::N, 10),
            recipe: TrainRecipe {
                epochs: 2,
                batch_size: 4,
                lr: 0.002,
                warmup_epochs: 0.5,
                optimizer: crate::train::optim::OptimizerConfig::Adamw {
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay: 5e-4,
                },
                ..TrainRecipe::default()
            },
            predict: PredictConfig::default(),
            gains: LossGains::default(),
            data: serde_json::json!({"imgsz": 64}),
            run_dir: dir.join(name),
            distill: None,
        }
    }

    fn run(j: &DetectTrainJob, yaml: &std::path::Path, opts: DetectRunOptions) -> DetectSummary {
        run_with(j, yaml, opts, None)
    }

    fn run_with(
        j: &DetectTrainJob,
        yaml: &std::path::Path,
        opts: DetectRunOptions,
        teacher: Option<&DetectNet>,
    ) -> DetectSummary {
        let net = DetectNet::new(&j.spec.lower().unwrap(), &Device::Cpu, j.seed).unwrap();
        let open = |s| DetectSet::open(yaml, s).unwrap();
        let train = DetectLoader::new(
            open(DetectSplit::Train),
            DetectLoaderConfig::train(64, 4, j.seed),
        )
        .unwrap();
        let val =
            DetectLoader::new(open(DetectSplit::Val), DetectLoaderConfig::val(64, 4)).unwrap();
        train_detector(j, &net, teacher, &train, &val, opts).unwrap()
    }

    fn weights(j: &DetectTrainJob) -> Vec<u8> {
        let dir = j.run_dir.join("checkpoints");
        let s = read_detect_sidecar(&dir.join("last.json")).unwrap();
        std::fs::read(dir.join(&s.weights)).unwrap()
    }

    #[test]
    fn a_resumed_detector_run_equals_an_uninterrupted_one() {
        let tmp = TempDir::new("detect-train");
        let yaml = synthetic_detect_set(tmp.path(), 8, 4);
        let a = job(tmp.path(), "a");
        let straight = run(&a, &yaml, DetectRunOptions::default());
        assert_eq!(straight.rows.len(), 2);
        assert!(straight
            .rows
            .iter()
            .all(|r| (0.0..=1.0).contains(&r.val_map)));
        assert!(straight.rows[1].box_loss.is_finite() && straight.rows[1].images == 8);
        let b = job(tmp.path(), "b");
        let stop = DetectRunOptions {
            stop_after: Some(1),
            ..Default::default()
        };
        assert_eq!(run(&b, &yaml, stop).rows.len(), 1);
        let resume = DetectRunOptions {
            resume: true,
            ..Default::default()
        };
        let resumed = run(&b, &yaml, resume);
        assert_eq!(resumed.rows[1].box_loss, straight.rows[1].box_loss);
        assert_eq!(weights(&b), weights(&a), "resumed weights differ");
        // Other settings are refused on resume.
        let mut other = job(tmp.path(), "b");
        other.recipe.lr = 0.01;
        let net = DetectNet::new(&other.spec.lower().unwrap(), &Device::Cpu, 3).unwrap();
        let set = |s| DetectSet::open(&yaml, s).unwrap();
        let l = DetectLoader::new(set(DetectSplit::Train), DetectLoaderConfig::train(64, 4, 3))
            .unwrap();
        let v = DetectLoader::new(set(DetectSplit::Val), DetectLoaderConfig::val(64, 4)).unwrap();
        let e = train_detector(&other, &net, None, &l, &v, resume)
            .err()
            .unwrap();
        assert!(e.to_string().contains("other settings"), "{e}");
    }

    #[test]
    fn an_averaged_run_saves_the_average_and_resumes_bit_for_bit() {
        let tmp = TempDir::new("detect-ema");
        let yaml = synthetic_detect_set(tmp.path(), 8, 4);
        let with_ema = |name: &str| {
            let mut j = job(tmp.path(), name);
            j.recipe.ema_decay = Some(0.9);
            j
        };
        let a = with_ema("a");
        let straight = run(&a, &yaml, DetectRunOptions::default());
        let b = with_ema("b");
        let stop = DetectRunOptions {
            stop_after: Some(1),
            ..Default::default()
        };
        run(&b, &yaml, stop);
        let resume = DetectRunOptions {
            resume: true,
            ..Default::default()
        };
        let resumed = run(&b, &yaml, resume);
        assert_eq!(resumed.rows[1].box_loss, straight.rows[1].box_loss);
        assert_eq!(resumed.rows[1].val_map, straight.rows[1].val_map);
        assert_eq!(weights(&b), weights(&a), "resumed averages differ");
        // The weights file holds the average, not the trained weights (kept as raw.*).
        let dir = a.run_dir.join("checkpoints");
        let s = read_detect_sidecar(&dir.join("last.json")).unwrap();
        let avg = candle_core::safetensors::load(dir.join(&s.weights), &Device::Cpu).unwrap();
        let state = candle_core::safetensors::load(dir.join(&s.state), &Device::Cpu).unwrap();
        let differs = avg.iter().any(|(k, v)| {
            let raw = &state[&format!("raw.{k}")];
            let d = (v - raw).unwrap().abs().unwrap().max_all().unwrap();
            d.to_scalar::<f32>().unwrap() > 0.0
        });
        assert!(differs, "the saved weights equal the trained ones");
    }

    #[test]
    fn a_distilled_run_keeps_its_teacher_bit_identical_and_resumes_bit_for_bit() {
        use crate::train::detector::distill::DetectDistillWeights;
        use crate::train::detector::job::DetectDistillJob;
        let tmp = TempDir::new("detect-kd");
        let yaml = synthetic_detect_set(tmp.path(), 8, 4);
        let spec = DetectorSpec::mnv4(preset("conv-small", 0.5).unwrap(), Yolo11Scale::N, 10);
        let teacher = DetectNet::new(&spec.lower().unwrap(), &Device::Cpu, 9).unwrap();
        let before = teacher.params.tensors();
        let distilled = |name: &str| {
            let mut j = job(tmp.path(), name);
            j.distill = Some(DetectDistillJob {
                weights: DetectDistillWeights::default(),
                teacher: "teacher.json".into(),
                teacher_weights_sha256: "0".repeat(64),
            });
            j
        };
        let a = distilled("a");
        let straight = run_with(&a, &yaml, DetectRunOptions::default(), Some(&teacher));
        assert!(straight
            .rows
            .iter()
            .all(|r| r.kd_cls_loss > 0.0 && r.kd_feature_loss > 0.0));
        let b = distilled("b");
        let stop = DetectRunOptions {
            stop_after: Some(1),
            ..Default::default()
        };
        run_with(&b, &yaml, stop, Some(&teacher));
        let resume = DetectRunOptions {
            resume: true,
            ..Default::default()
        };
        let resumed = run_with(&b, &yaml, resume, Some(&teacher));
        assert_eq!(
            resumed.rows[1],
            DetectRow {
                seconds: resumed.rows[1].seconds,
                ..straight.rows[1].clone()
            }
        );
        assert_eq!(weights(&b), weights(&a), "resumed weights differ");
        for (name, t) in teacher.params.tensors() {
            let d = (&t - &before[&name])
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert_eq!(
                d.to_scalar::<f32>().unwrap(),
                0.0,
                "teacher tensor {name} changed"
            );
        }
        // A teacher without settings, or settings without a teacher, is refused.
        let net = DetectNet::new(&a.spec.lower().unwrap(), &Device::Cpu, 3).unwrap();
        let set = |s| DetectSet::open(&yaml, s).unwrap();
        let l = DetectLoader::new(set(DetectSplit::Train), DetectLoaderConfig::train(64, 4, 3))
            .unwrap();
        let v = DetectLoader::new(set(DetectSplit::Val), DetectLoaderConfig::val(64, 4)).unwrap();
        let plain = job(tmp.path(), "c");
        let e = train_detector(
            &plain,
            &net,
            Some(&teacher),
            &l,
            &v,
            DetectRunOptions::default(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("needs a teacher"), "{e}");
    }
}
