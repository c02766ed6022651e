//! The training run shared by `train`, `distill` and every search candidate: seeded, resumable,
//! evaluated on validation every epoch, tested once at the end with the best-on-validation
//! weights. It sees only a [`TrainJob`]: never the experiment, the search or the teacher.

use super::checkpoint::{self, Sidecar};
use super::ema::Ema;
use super::epoch::{train_epoch, EpochCtx, EpochStats};
use super::evaluate::{evaluate, EvalMetrics};
use super::history::EpochRow;
use super::objective::BatchLoss;
use super::optim::Optimizer;
use super::recipe::TrainRecipe;
use super::run_dir::RunDir;
use super::schedule::CosineSchedule;
use crate::data::{derive_seed, DataConfig, Splits};
use crate::model::Network;
use anyhow::{Context, Result};
use candle_core::{Device, Var};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Everything the trainer needs to know about one run.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// Run name, for logs, plots and the summary.
    pub name: String,
    /// Seed of the data order, augmentation and dropout (the weights come seeded already).
    pub seed: u64,
    pub recipe: TrainRecipe,
    /// The data the run trains on, recorded in its checkpoints.
    pub data: DataConfig,
    /// The run folder.
    pub run_dir: PathBuf,
    /// Save `last` every N epochs.
    pub checkpoint_every: usize,
}

/// Options of a run that do not change its result.
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

/// Where a run stands: the epochs done and the best validation accuracy so far.
struct Progress {
    rows: Vec<EpochRow>,
    best_val: f64,
    best_epoch: usize,
}

/// The mutable state of a run: optimizer, EMA twin and the objective's own parameters.
struct Learner {
    opt: Optimizer,
    ema: Option<Ema>,
    extra: Vec<(String, Var, crate::model::ParamKind)>,
}

/// Trains `net` on `splits` with `objective`, writing the run folder. Returns the summary.
pub fn train_network(
    job: &TrainJob,
    net: &Network,
    splits: &Splits,
    objective: &mut dyn BatchLoss,
    opts: &RunOptions,
) -> Result<Summary> {
    let started = Instant::now();
    let dir = RunDir::create(&job.run_dir)?;
    dir.write_arch(&net.arch)?;
    let r = &job.recipe;
    let mut learner = Learner::new(job, net, &*objective)?;
    let schedule = schedule(r, splits.train.len() as u64);
    let mut progress = match opts.resume {
        true => resume(&dir, job, net, &mut learner)?,
        false => Progress::fresh(),
    };
    for epoch in progress.rows.len()..r.epochs {
        if opts.stop_after.is_some_and(|n| epoch >= n) {
            tracing::info!("{}: stopping after epoch {epoch} as asked", job.name);
            let test = EvalMetrics::default();
            return Ok(progress.summary(&dir, net, test, started));
        }
        let t0 = Instant::now();
        net.seed_dropout(derive_seed(&[job.seed, epoch as u64, 0xd50]));
        let pb = progress_bar(opts, splits.train.len() as u64, epoch, r.epochs);
        let ctx = EpochCtx {
            net,
            loader: &splits.train,
            objective: &mut *objective,
            optimizer: &mut learner.opt,
            schedule: &schedule,
            ema: learner.ema.as_ref(),
            grad_clip: r.grad_clip,
        };
        let stats = train_epoch(ctx, epoch, &pb)?;
        pb.finish_and_clear();
        objective.end_epoch(epoch)?;
        let row = validate(net, splits, &learner, epoch, &stats, t0)?;
        log_epoch(&job.name, r.epochs, &row, opts.quiet);
        progress.rows.push(row);
        dir.write_metrics(&progress.rows)?;
        let is_best = progress.record(epoch + 1);
        let due = epoch + 1 == r.epochs
            || opts.stop_after == Some(epoch + 1)
            || (epoch + 1) % job.checkpoint_every == 0;
        if is_best || due {
            let sidecar = progress.sidecar(job, net, &learner);
            dir.save_checkpoint(&net.params, &learner.state(), sidecar, is_best)?;
        }
    }
    finish(&dir, job, net, splits, progress, opts, started)
}

/// Linear warm-up then cosine decay over the recipe's epochs of `steps_per_epoch` steps.
fn schedule(r: &TrainRecipe, steps_per_epoch: u64) -> CosineSchedule {
    CosineSchedule {
        base_lr: r.lr,
        min_lr: r.min_lr,
        warmup_steps: (r.warmup_epochs * steps_per_epoch as f64).round() as u64,
        total_steps: r.epochs as u64 * steps_per_epoch,
    }
}

impl Learner {
    fn new(job: &TrainJob, net: &Network, objective: &dyn BatchLoss) -> Result<Self> {
        let extra = objective.extra_params();
        let mut trainable = net.params.trainable();
        trainable.extend(extra.iter().cloned());
        Ok(Self {
            opt: Optimizer::new(job.recipe.optimizer.clone(), trainable),
            ema: Ema::new(job.recipe.ema_decay, net, job.seed)?,
            extra,
        })
    }

    /// Optimizer moments, the objective's parameters (`loss.*`) and the EMA twin (`ema.*`).
    fn state(&self) -> std::collections::HashMap<String, candle_core::Tensor> {
        let mut state = self.opt.state_tensors();
        for (name, var, _) in &self.extra {
            state.insert(format!("loss.{name}"), var.as_tensor().clone());
        }
        state.extend(self.ema.iter().flat_map(Ema::state));
        state
    }
}

/// Restores weights, optimizer, objective and EMA from `last.json`, and the metrics history.
fn resume(dir: &RunDir, job: &TrainJob, net: &Network, l: &mut Learner) -> Result<Progress> {
    let last = dir.last_sidecar();
    if !last.exists() {
        tracing::warn!(
            "--resume: no checkpoint in {}; starting fresh",
            dir.path().display()
        );
        return Ok(Progress::fresh());
    }
    let s = checkpoint::read_sidecar(&last)?;
    anyhow::ensure!(
        s.arch == net.arch,
        "cannot resume: {} holds a different architecture",
        last.display()
    );
    net.params
        .load_safetensors(&checkpoint::weights_path(&last, &s), &[])?;
    let state = dir.read_state(&s)?;
    l.opt.load_state(&state, s.optimizer_step)?;
    for (name, var, _) in &l.extra {
        let saved = state
            .get(&format!("loss.{name}"))
            .with_context(|| format!("{}: no saved value for {name}", s.state))?;
        var.set(saved)?;
    }
    if let Some(e) = &l.ema {
        e.load_state(&state)?;
    }
    tracing::info!("resuming {} after epoch {}", job.name, s.epoch);
    Ok(Progress {
        rows: dir.read_metrics(s.epoch)?,
        best_val: s.best_val_top1,
        best_epoch: s.best_epoch,
    })
}

/// Validation (and EMA validation) after an epoch, as its metrics row.
fn validate(
    net: &Network,
    splits: &Splits,
    l: &Learner,
    epoch: usize,
    stats: &EpochStats,
    t0: Instant,
) -> Result<EpochRow> {
    let train_secs = t0.elapsed().as_secs_f64();
    let val = evaluate(net, &splits.val)?;
    let ema_val_top1 = match &l.ema {
        Some(e) => Some(evaluate(&e.twin, &splits.val)?.top1),
        None => None,
    };
    Ok(EpochRow {
        epoch: epoch + 1,
        lr: stats.lr,
        train_loss: stats.loss,
        train_top1: stats.top1,
        val,
        ema_val_top1,
        images_per_sec: stats.images as f64 / train_secs,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

impl Progress {
    fn fresh() -> Self {
        Self {
            rows: Vec::new(),
            best_val: f64::NEG_INFINITY,
            best_epoch: 0,
        }
    }

    /// Records the last row's validation accuracy; true when it is the best so far.
    fn record(&mut self, epoch: usize) -> bool {
        let top1 = self.rows.last().map_or(f64::NEG_INFINITY, |r| r.val.top1);
        let best = top1 > self.best_val;
        if best {
            (self.best_val, self.best_epoch) = (top1, epoch);
        }
        best
    }

    /// The sidecar of a checkpoint taken now (file names are filled in by [`RunDir`]).
    fn sidecar(&self, job: &TrainJob, net: &Network, l: &Learner) -> Sidecar {
        let row = self.rows.last().cloned().unwrap_or_default();
        let metrics: BTreeMap<String, f64> = [
            ("val_loss", row.val.loss),
            ("val_top1", row.val.top1),
            ("val_top5", row.val.top5),
            ("train_loss", row.train_loss),
            ("train_top1", row.train_top1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Sidecar {
            format: checkpoint::FORMAT.into(),
            arch: net.arch.clone(),
            arch_string: net.arch.to_block_string(),
            seed: job.seed,
            data: job.data.clone(),
            recipe: job.recipe.clone(),
            epoch: row.epoch,
            optimizer_step: l.opt.step,
            weights: String::new(),
            state: String::new(),
            metrics,
            best_val_top1: self.best_val,
            best_epoch: self.best_epoch,
            rng: format!("derived from seed {} and epoch", job.seed),
        }
    }

    fn summary(self, dir: &RunDir, net: &Network, test: EvalMetrics, t0: Instant) -> Summary {
        Summary {
            run_dir: dir.path().to_path_buf(),
            best_epoch: self.best_epoch,
            best_val_top1: self.best_val,
            test,
            params: net.params.num_params(),
            wall_seconds: t0.elapsed().as_secs_f64(),
            rows: self.rows,
        }
    }
}

/// Tests the best-on-validation weights (unless skipped), draws the curves, writes the summary.
fn finish(
    dir: &RunDir,
    job: &TrainJob,
    net: &Network,
    splits: &Splits,
    mut progress: Progress,
    opts: &RunOptions,
    started: Instant,
) -> Result<Summary> {
    let best_path = dir.best_sidecar();
    let best = checkpoint::read_sidecar(&best_path)?;
    let test = if opts.skip_test {
        EvalMetrics::not_measured()
    } else {
        let final_net = Network::new(&net.arch, &Device::Cpu, job.seed)?;
        let weights = checkpoint::weights_path(&best_path, &best);
        final_net.params.load_safetensors(&weights, &[])?;
        evaluate(&final_net, &splits.test)?
    };
    dir.write_curves(&job.name, &progress.rows)?;
    (progress.best_epoch, progress.best_val) = (best.best_epoch, best.best_val_top1);
    let s = progress.summary(dir, net, test, started);
    dir.write_summary(&serde_json::json!({
        "name": job.name,
        "arch": net.arch.to_block_string(),
        "params": s.params,
        "epochs": job.recipe.epochs,
        "best_epoch": s.best_epoch,
        "best_val_top1": s.best_val_top1,
        "test_loss": test.loss,
        "test_top1": test.top1,
        "test_top5": test.top5,
        "wall_seconds_this_invocation": s.wall_seconds,
    }))?;
    Ok(s)
}

fn progress_bar(opts: &RunOptions, len: u64, epoch: usize, epochs: usize) -> ProgressBar {
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
    pb.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
    pb
}

/// One line per epoch: to the log when quiet, else under the progress bars.
fn log_epoch(name: &str, epochs: usize, row: &EpochRow, quiet: bool) {
    let v = &row.val;
    let msg = format!(
        "{name} epoch {}/{epochs}: train loss {:.4} acc {:.2}% | val loss {:.4} top1 {:.2}% top5 {:.2}%{} | {:.0} img/s, {:.1}s",
        row.epoch,
        row.train_loss,
        100.0 * row.train_top1,
        v.loss,
        100.0 * v.top1,
        100.0 * v.top5,
        row.ema_val_top1.map(|e| format!(" (EMA {:.2}%)", 100.0 * e)).unwrap_or_default(),
        row.images_per_sec,
        row.seconds
    );
    if quiet {
        tracing::info!("{msg}");
    } else {
        eprintln!("{msg}");
    }
}
