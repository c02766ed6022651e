//! The training loop shared by `train`, `distill` and every search candidate: seeded, resumable,
//! evaluated on validation every epoch, tested once at the end with the best-on-validation weights.

use super::checkpoint::{self, Sidecar};
use super::config::Experiment;
use super::loss::{correct_topk, cross_entropy};
use super::optim::Optimizer;
use super::schedule::CosineSchedule;
use super::splits::Splits;
use crate::data::{derive_seed, DataLoader};
use crate::model::{Mode, Network, ParamKind};
use crate::report::plot::{write_png_svg, Chart, Series};
use crate::report::table::{frame, write_csv_parquet, Col};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor, Var};
use indicatif::{ProgressBar, ProgressStyle};
use plotters::style::RGBColor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The loss of one training batch. The default is cross-entropy; distillation plugs in its own.
pub trait BatchLoss: Send {
    /// Returns (loss to minimize, student logits) for one batch; `batch` is the batch's position
    /// in the epoch (for caches keyed by sample).
    fn loss(
        &mut self,
        net: &Network,
        images: &Tensor,
        labels: &Tensor,
        epoch: usize,
        batch: usize,
    ) -> Result<(Tensor, Tensor)>;

    /// Extra trainable tensors the loss owns (e.g. feature adapters), optimized with the model.
    fn extra_params(&self) -> Vec<(String, Var, ParamKind)> {
        Vec::new()
    }

    /// Called after the last batch of every epoch (e.g. to flush a cache).
    fn end_epoch(&mut self, _epoch: usize) -> Result<()> {
        Ok(())
    }
}

/// Plain cross-entropy with label smoothing.
pub struct CrossEntropy {
    pub smoothing: f64,
}

impl BatchLoss for CrossEntropy {
    fn loss(
        &mut self,
        net: &Network,
        images: &Tensor,
        labels: &Tensor,
        _: usize,
        _: usize,
    ) -> Result<(Tensor, Tensor)> {
        let logits = net.forward(images, Mode::Train)?;
        Ok((cross_entropy(&logits, labels, self.smoothing)?, logits))
    }
}

/// Loss, top-1 and top-5 (fractions) of a model on a loader.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvalMetrics {
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
}

/// Evaluates `net` in eval mode over every batch of `loader`.
pub fn evaluate(net: &Network, loader: &DataLoader) -> Result<EvalMetrics> {
    let (mut loss, mut c1, mut c5, mut n) = (0f64, 0usize, 0usize, 0usize);
    for batch in loader.epoch(0) {
        let (x, y) = batch?;
        let logits = net.forward(&x, Mode::Eval)?;
        let b = y.dims()[0];
        loss += cross_entropy(&logits, &y, 0.0)?.to_scalar::<f32>()? as f64 * b as f64;
        let labels = y.to_vec1::<u32>()?;
        c1 += correct_topk(&logits, &labels, 1)?;
        c5 += correct_topk(&logits, &labels, 5.min(net.arch.num_classes))?;
        n += b;
    }
    anyhow::ensure!(n > 0, "evaluation set is empty");
    Ok(EvalMetrics {
        loss: loss / n as f64,
        top1: c1 as f64 / n as f64,
        top5: c5 as f64 / n as f64,
    })
}

/// One epoch's row of `metrics.csv`.
#[derive(Debug, Clone, Default)]
pub struct EpochRow {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_top1: f64,
    pub val: EvalMetrics,
    pub ema_val_top1: Option<f64>,
    pub images_per_sec: f64,
    pub seconds: f64,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Summary {
    pub run_dir: PathBuf,
    pub best_epoch: usize,
    pub best_val_top1: f64,
    /// Test metrics of the best-on-validation checkpoint.
    pub test: EvalMetrics,
    pub params: usize,
    pub wall_seconds: f64,
    pub rows: Vec<EpochRow>,
}

/// Options of a run beyond the experiment file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub resume: bool,
    pub quiet: bool,
    /// Stop after this many epochs (checkpointed), as if interrupted; `--resume` continues.
    pub stop_after: Option<usize>,
    /// Skip the final test evaluation (search candidates are selected on validation only).
    pub skip_test: bool,
    /// Draw the epoch bars inside this group (under the search's overall bar).
    pub bars: Option<indicatif::MultiProgress>,
}

fn progress(opts: &RunOptions, len: u64, prefix: String) -> ProgressBar {
    if opts.quiet {
        return ProgressBar::hidden();
    }
    let pb = match &opts.bars {
        Some(m) => m.add(ProgressBar::new(len)),
        None => ProgressBar::new(len),
    };
    pb.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix);
    pb
}

/// EMA of all tensors (parameters and BN statistics), evaluated in a twin network.
struct Ema {
    decay: f64,
    twin: Network,
}

impl Ema {
    fn update(&self, net: &Network) -> Result<()> {
        let src = net.params.tensors();
        for (name, t) in self.twin.params.tensors() {
            let s = &src[&name];
            let v = ((t * self.decay)? + (s * (1.0 - self.decay))?)?;
            self.twin.params.set(&name, &v)?;
        }
        Ok(())
    }
}

/// Trains `net` on `splits` with `loss`, writing the run folder. Returns the summary.
pub fn train_network(
    exp: &Experiment,
    net: &Network,
    splits: &Splits,
    loss_fn: &mut dyn BatchLoss,
    opts: &RunOptions,
) -> Result<Summary> {
    let started = Instant::now();
    let t = &exp.train;
    let dir = exp.run_dir();
    let ckpt_dir = dir.join("checkpoints");
    std::fs::create_dir_all(&ckpt_dir)
        .with_context(|| format!("creating {}", ckpt_dir.display()))?;
    crate::fsutil::atomic_write(&dir.join("config.toml"), toml::to_string(exp)?.as_bytes())?;
    crate::fsutil::atomic_write(&dir.join("arch.toml"), net.arch.to_toml_string().as_bytes())?;

    let steps_per_epoch = splits.train.len() as u64;
    let schedule = CosineSchedule {
        base_lr: t.lr,
        min_lr: t.min_lr,
        warmup_steps: (t.warmup_epochs * steps_per_epoch as f64).round() as u64,
        total_steps: t.epochs as u64 * steps_per_epoch,
    };
    let extra = loss_fn.extra_params();
    let mut trainable = net.params.trainable();
    trainable.extend(extra.iter().cloned());
    let mut opt = Optimizer::new(t.optimizer.clone(), trainable);
    let ema = match t.ema_decay {
        Some(decay) => {
            let twin = Network::new(&net.arch, &Device::Cpu, exp.seed)?;
            twin.params.load_map(
                &net.params.tensors().into_iter().collect(),
                &[],
                "initial weights",
            )?;
            Some(Ema { decay, twin })
        }
        None => None,
    };

    let mut rows: Vec<EpochRow> = Vec::new();
    let mut start_epoch = 0;
    let (mut best_val, mut best_epoch) = (f64::NEG_INFINITY, 0);
    let last_path = ckpt_dir.join("last.json");
    if opts.resume && last_path.exists() {
        let s = checkpoint::read_sidecar(&last_path)?;
        anyhow::ensure!(
            s.arch == net.arch,
            "cannot resume: {} holds a different architecture",
            last_path.display()
        );
        net.params
            .load_safetensors(&checkpoint::weights_path(&last_path, &s), &[])?;
        let state = candle_core::safetensors::load(ckpt_dir.join(&s.state), &Device::Cpu)
            .with_context(|| format!("reading {}", s.state))?;
        opt.load_state(&state, s.optimizer_step)?;
        for (name, var, _) in &extra {
            let saved = state
                .get(&format!("loss.{name}"))
                .with_context(|| format!("{}: no saved value for {name}", s.state))?;
            var.set(saved)?;
        }
        if let Some(e) = &ema {
            let ema_w: std::collections::HashMap<String, Tensor> = state
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("ema.").map(|k| (k.to_string(), v.clone())))
                .collect();
            e.twin.params.load_map(&ema_w, &[], "EMA state")?;
        }
        start_epoch = s.epoch;
        best_val = s.best_val_top1;
        best_epoch = s.best_epoch;
        rows = read_rows(&dir.join("metrics.csv"), start_epoch)?;
        tracing::info!("resuming {} after epoch {}", exp.name, s.epoch);
    } else if opts.resume {
        tracing::warn!(
            "--resume: no checkpoint in {}; starting fresh",
            ckpt_dir.display()
        );
    }

    for epoch in start_epoch..t.epochs {
        if opts.stop_after.is_some_and(|n| epoch >= n) {
            tracing::info!("{}: stopping after epoch {epoch} as asked", exp.name);
            return Ok(Summary {
                run_dir: dir.clone(),
                best_epoch,
                best_val_top1: best_val,
                test: EvalMetrics::default(),
                params: net.params.num_params(),
                wall_seconds: started.elapsed().as_secs_f64(),
                rows,
            });
        }
        let t0 = Instant::now();
        net.seed_dropout(derive_seed(&[exp.seed, epoch as u64, 0xd50]));
        let pb = progress(
            opts,
            steps_per_epoch,
            format!("epoch {}/{}", epoch + 1, t.epochs),
        );
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        let mut lr = schedule.lr(opt.step);
        for (bi, batch) in splits.train.epoch(epoch as u64).enumerate() {
            let (x, y) = batch?;
            lr = schedule.lr(opt.step);
            // The whole step runs on the worker pool (see `ops::on_workers`).
            let (loss, logits) = crate::ops::on_workers(|| -> Result<(Tensor, Tensor)> {
                let (loss, logits) = loss_fn.loss(net, &x, &y, epoch, bi)?;
                let grads = loss.backward()?;
                let scale = if t.grad_clip > 0.0 {
                    let norm = opt.grad_norm(&grads)?;
                    if norm > t.grad_clip {
                        t.grad_clip / norm
                    } else {
                        1.0
                    }
                } else {
                    1.0
                };
                opt.step(&grads, lr, scale)?;
                if let Some(e) = &ema {
                    e.update(net)?;
                }
                Ok((loss, logits))
            })?;
            let b = y.dims()[0];
            let l = loss.to_scalar::<f32>()? as f64;
            anyhow::ensure!(
                l.is_finite(),
                "loss became {l} at epoch {} batch {bi}; lower train.lr",
                epoch + 1
            );
            loss_sum += l * b as f64;
            correct += correct_topk(&logits.detach(), &y.to_vec1::<u32>()?, 1)?;
            seen += b;
            pb.inc(1);
            pb.set_message(format!(
                "loss {:.4} acc {:.2}% {:.0} img/s",
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64,
                seen as f64 / t0.elapsed().as_secs_f64()
            ));
        }
        pb.finish_and_clear();
        loss_fn.end_epoch(epoch)?;
        let train_secs = t0.elapsed().as_secs_f64();
        let val = evaluate(net, &splits.val)?;
        let ema_val = match &ema {
            Some(e) => Some(evaluate(&e.twin, &splits.val)?.top1),
            None => None,
        };
        let row = EpochRow {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_top1: correct as f64 / seen.max(1) as f64,
            val,
            ema_val_top1: ema_val,
            images_per_sec: seen as f64 / train_secs,
            seconds: t0.elapsed().as_secs_f64(),
        };
        let msg = format!(
            "{} epoch {}/{}: train loss {:.4} acc {:.2}% | val loss {:.4} top1 {:.2}% top5 {:.2}%{} | {:.0} img/s, {:.1}s",
            exp.name,
            row.epoch,
            t.epochs,
            row.train_loss,
            100.0 * row.train_top1,
            val.loss,
            100.0 * val.top1,
            100.0 * val.top5,
            ema_val.map(|v| format!(" (EMA {:.2}%)", 100.0 * v)).unwrap_or_default(),
            row.images_per_sec,
            row.seconds
        );
        if opts.quiet {
            tracing::info!("{msg}");
        } else {
            eprintln!("{msg}");
        }
        rows.push(row.clone());
        write_metrics(&dir, &rows)?;

        let (wf, sf) = checkpoint::epoch_files(epoch + 1);
        let is_best = val.top1 > best_val;
        if is_best {
            best_val = val.top1;
            best_epoch = epoch + 1;
        }
        let last_epoch = epoch + 1 == t.epochs;
        let stopping = opts.stop_after == Some(epoch + 1);
        if is_best || last_epoch || stopping || (epoch + 1) % exp.output.checkpoint_every == 0 {
            net.params.save_safetensors(&ckpt_dir.join(&wf))?;
            let mut state = opt.state_tensors();
            for (name, var, _) in &extra {
                state.insert(format!("loss.{name}"), var.as_tensor().clone());
            }
            if let Some(e) = &ema {
                for (k, v) in e.twin.params.tensors() {
                    state.insert(format!("ema.{k}"), v);
                }
            }
            crate::fsutil::atomic_write_with(&ckpt_dir.join(&sf), |tmp| {
                candle_core::safetensors::save(&state, tmp).context("writing optimizer state")
            })?;
            let metrics: BTreeMap<String, f64> = [
                ("val_loss", val.loss),
                ("val_top1", val.top1),
                ("val_top5", val.top5),
                ("train_loss", row.train_loss),
                ("train_top1", row.train_top1),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let sidecar = Sidecar {
                format: checkpoint::FORMAT.into(),
                arch: net.arch.clone(),
                arch_string: net.arch.to_block_string(),
                experiment: exp.clone(),
                epoch: epoch + 1,
                optimizer_step: opt.step,
                weights: wf,
                state: sf,
                metrics,
                best_val_top1: best_val,
                best_epoch,
                rng: format!("derived from seed {} and epoch", exp.seed),
            };
            if is_best {
                checkpoint::write_sidecar(&ckpt_dir.join("best.json"), &sidecar)?;
            }
            checkpoint::write_sidecar(&last_path, &sidecar)?;
            let best = checkpoint::read_sidecar(&ckpt_dir.join("best.json"))?;
            checkpoint::prune(&ckpt_dir, &[&sidecar, &best])?;
        }
    }

    // Report on test with the weights selected on validation.
    let best_path = ckpt_dir.join("best.json");
    let best = checkpoint::read_sidecar(&best_path)?;
    let test = if opts.skip_test {
        EvalMetrics {
            loss: f64::NAN,
            top1: f64::NAN,
            top5: f64::NAN,
        }
    } else {
        let final_net = Network::new(&net.arch, &Device::Cpu, exp.seed)?;
        final_net
            .params
            .load_safetensors(&checkpoint::weights_path(&best_path, &best), &[])?;
        evaluate(&final_net, &splits.test)?
    };
    write_curves(&dir, &exp.name, &rows)?;
    let summary = Summary {
        run_dir: dir.clone(),
        best_epoch: best.best_epoch,
        best_val_top1: best.best_val_top1,
        test,
        params: net.params.num_params(),
        wall_seconds: started.elapsed().as_secs_f64(),
        rows,
    };
    let json = serde_json::json!({
        "name": exp.name,
        "arch": net.arch.to_block_string(),
        "params": summary.params,
        "epochs": t.epochs,
        "best_epoch": summary.best_epoch,
        "best_val_top1": summary.best_val_top1,
        "test_loss": test.loss,
        "test_top1": test.top1,
        "test_top5": test.top5,
        "wall_seconds_this_invocation": summary.wall_seconds,
    });
    crate::fsutil::atomic_write(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    Ok(summary)
}

fn write_metrics(dir: &Path, rows: &[EpochRow]) -> Result<()> {
    let mut df = frame(vec![
        Col::Int("epoch", rows.iter().map(|r| r.epoch as i64).collect()),
        Col::Float("lr", rows.iter().map(|r| r.lr).collect()),
        Col::Float("train_loss", rows.iter().map(|r| r.train_loss).collect()),
        Col::Float("train_top1", rows.iter().map(|r| r.train_top1).collect()),
        Col::Float("val_loss", rows.iter().map(|r| r.val.loss).collect()),
        Col::Float("val_top1", rows.iter().map(|r| r.val.top1).collect()),
        Col::Float("val_top5", rows.iter().map(|r| r.val.top5).collect()),
        Col::Float(
            "ema_val_top1",
            rows.iter()
                .map(|r| r.ema_val_top1.unwrap_or(f64::NAN))
                .collect(),
        ),
        Col::Float(
            "images_per_sec",
            rows.iter().map(|r| r.images_per_sec).collect(),
        ),
        Col::Float("seconds", rows.iter().map(|r| r.seconds).collect()),
    ])?;
    write_csv_parquet(&mut df, dir, "metrics")
}

/// Reads the first `epochs` rows of an existing `metrics.csv` (for resume).
fn read_rows(path: &Path, epochs: usize) -> Result<Vec<EpochRow>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().skip(1).enumerate().take(epochs) {
        let v: Vec<f64> = line
            .split(',')
            .map(|s| s.parse::<f64>().unwrap_or(f64::NAN))
            .collect();
        anyhow::ensure!(
            v.len() >= 10,
            "{} line {}: expected 10 columns",
            path.display(),
            i + 2
        );
        rows.push(EpochRow {
            epoch: v[0] as usize,
            lr: v[1],
            train_loss: v[2],
            train_top1: v[3],
            val: EvalMetrics {
                loss: v[4],
                top1: v[5],
                top5: v[6],
            },
            ema_val_top1: (!v[7].is_nan()).then_some(v[7]),
            images_per_sec: v[8],
            seconds: v[9],
        });
    }
    Ok(rows)
}

fn write_curves(dir: &Path, name: &str, rows: &[EpochRow]) -> Result<()> {
    let pts = |f: &dyn Fn(&EpochRow) -> f64| {
        rows.iter()
            .map(|r| (r.epoch as f64, f(r)))
            .collect::<Vec<_>>()
    };
    let series = |label: &str, points, color| Series {
        label: label.into(),
        points,
        color,
        line: true,
        marker: 3,
    };
    let title = format!("{name}: accuracy");
    let chart = Chart {
        title: &title,
        x_label: "epoch",
        y_label: "top-1 accuracy (%)",
        series: vec![
            series(
                "train (augmented)",
                pts(&|r| 100.0 * r.train_top1),
                RGBColor(31, 119, 180),
            ),
            series(
                "validation",
                pts(&|r| 100.0 * r.val.top1),
                RGBColor(214, 39, 40),
            ),
        ],
        annotations: vec![],
        log_x: false,
    };
    write_png_svg(&chart, dir, "accuracy")?;
    let title = format!("{name}: loss");
    let chart = Chart {
        title: &title,
        x_label: "epoch",
        y_label: "cross-entropy",
        series: vec![
            series("train", pts(&|r| r.train_loss), RGBColor(31, 119, 180)),
            series("validation", pts(&|r| r.val.loss), RGBColor(214, 39, 40)),
        ],
        annotations: vec![],
        log_x: false,
    };
    write_png_svg(&chart, dir, "loss")
}
