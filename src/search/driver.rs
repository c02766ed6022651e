//! The search driver: coarse stage (widths, depths; fixed IB), fine stage (UIB choices, MQA
//! placement) seeded by the coarse front, optional successive halving, reference presets.
//! It owns budgets, storage and resume: every finished trial is in `trials.jsonl` before the
//! next starts, and a resumed run replays the log through the same seeded strategy, so it
//! retrains nothing and makes the same decisions as an uninterrupted run.

use super::config::SearchConfig;
use super::pareto::{ranks, Point};
use super::space::SearchSpace;
use super::strategy::{make_strategy, StageMode, Strategy, StrategyKind};
use super::trials::{self, Trial};
use crate::cost::{cost, load_profiles, Profile};
use crate::data::derive_seed;
use crate::distill::objective::DistillObjective;
use crate::distill::teacher::resolve_teacher;
use crate::fsutil::atomic_write;
use crate::model::{Mode, Network};
use crate::space::Arch;
use crate::train::config::Experiment;
use crate::train::splits::{experiment_splits, Splits};
use crate::train::trainer::{train_network, BatchLoss, CrossEntropy, RunOptions};
use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What is fixed at the start of a search and recorded for its report (`search.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchState {
    pub experiment: Experiment,
    pub space: SearchSpace,
    /// Hypervolume reference point in objective space (1 − val_top1, then each cost), fixed
    /// before the first trial: error 1 and 1.1 × each cost of the space's largest corner.
    pub hv_reference: Vec<f64>,
    pub input_size: usize,
    pub teacher: Option<String>,
    pub teacher_test_top1: Option<f64>,
}

/// Options of a search invocation.
#[derive(Debug, Clone, Default)]
pub struct SearchOptions {
    pub resume: bool,
    pub quiet: bool,
}

/// Measured latency: batch 1, eval mode, median of `repeats` after 3 warm-up runs, in ms.
pub fn measure_latency(arch: &Arch, size: usize, repeats: usize) -> Result<f64> {
    let net = Network::new(arch, &Device::Cpu, 0)?;
    let x = Tensor::zeros(
        (1, arch.in_chans, size, size),
        candle_core::DType::F32,
        &Device::Cpu,
    )?;
    let mut times = Vec::with_capacity(repeats);
    for i in 0..repeats.max(1) + 3 {
        let t0 = Instant::now();
        net.forward(&x, Mode::Eval)?.sum_all()?.to_scalar::<f32>()?;
        if i >= 3 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

/// The value of objective `name` for a trial (minimized form: val_top1 becomes the error).
pub fn objective_value(t: &Trial, name: &str) -> Result<f64> {
    Ok(match name {
        "val_top1" => 1.0 - t.val_top1.unwrap_or(0.0),
        "params" => t.params as f64,
        "macs" => t.macs as f64,
        "latency_ms" => t.latency_ms,
        other => match other.strip_prefix("roofline:") {
            Some(p) => *t
                .roofline_ms
                .get(p)
                .with_context(|| format!("no roofline profile '{p}' (objectives)"))?,
            None => bail!("unknown objective '{other}' (val_top1, params, macs, latency_ms, roofline:<profile>)"),
        },
    })
}

/// The ranking point of a trial under the experiment's objectives.
pub fn trial_point(t: &Trial, objectives: &[String]) -> Result<Point> {
    Ok(Point {
        objectives: objectives
            .iter()
            .map(|o| objective_value(t, o))
            .collect::<Result<_>>()?,
        violation: t.violation,
    })
}

struct Ctx<'a> {
    exp: &'a Experiment,
    cfg: &'a SearchConfig,
    run_dir: PathBuf,
    splits: Splits,
    profiles: Vec<Profile>,
    teacher: Option<(Arc<Network>, Option<String>)>,
    bars: Option<MultiProgress>,
    quiet: bool,
}

impl Ctx<'_> {
    fn violation(&self, params: u64, macs: u64, latency: f64) -> f64 {
        let over = |v: f64, max: Option<f64>| max.map(|m| ((v - m) / m).max(0.0)).unwrap_or(0.0);
        over(params as f64, self.cfg.max_params.map(|m| m as f64))
            + over(macs as f64, self.cfg.max_macs.map(|m| m as f64))
            + over(latency, self.cfg.max_latency_ms)
    }

    /// Costs, budgets, then (when feasible) training: one finished trial.
    fn evaluate(
        &self,
        index: usize,
        stage: &str,
        label: &str,
        arch: &Arch,
        epochs: usize,
    ) -> Result<Trial> {
        let started = Instant::now();
        let size = self.splits.input_size;
        let arch = arch
            .clone()
            .with_io(self.splits.channels, self.splits.num_classes);
        let c = cost(&arch, size, size, &self.profiles);
        let latency = measure_latency(&arch, size, self.cfg.latency_repeats)?;
        let violation = self.violation(c.params, c.macs, latency);
        let seed = derive_seed(&[self.exp.seed, index as u64]);
        let mut trial = Trial {
            index,
            stage: stage.into(),
            strategy: strategy_name(self.cfg.strategy).into(),
            label: label.into(),
            arch: arch.to_block_string(),
            hash: arch.hash_hex(),
            feasible: violation <= 0.0,
            violation,
            duplicate_of: None,
            val_top1: None,
            stage_val_top1: None,
            params: c.params,
            macs: c.macs,
            latency_ms: latency,
            roofline_ms: c.roofline_ms.into_iter().collect(),
            epochs: 0,
            seed,
            wall_seconds: 0.0,
        };
        if trial.feasible {
            trial.val_top1 = Some(self.train(index, &arch, epochs, seed)?);
            trial.stage_val_top1 = trial.val_top1;
            trial.epochs = epochs;
        }
        trial.wall_seconds = started.elapsed().as_secs_f64();
        Ok(trial)
    }

    /// Trains (or resumes) candidate `index` for `epochs`; returns its best validation top-1.
    fn train(&self, index: usize, arch: &Arch, epochs: usize, seed: u64) -> Result<f64> {
        let mut exp = self.exp.clone();
        exp.name = format!("t{index:04}");
        exp.output.dir = self.run_dir.join("trials");
        exp.train.epochs = epochs;
        let net = Network::new(arch, &Device::Cpu, seed)?;
        let resume = exp.run_dir().join("checkpoints/last.json").exists();
        let opts = RunOptions {
            resume,
            quiet: self.quiet,
            skip_test: true,
            bars: self.bars.clone(),
            ..Default::default()
        };
        let mut loss: Box<dyn BatchLoss> = match &self.teacher {
            Some((teacher, key)) => Box::new(DistillObjective::new(
                &exp.distill,
                exp.train.label_smoothing,
                &net,
                Arc::clone(teacher),
                self.splits.train.clone(),
                key.clone(),
                exp.seed,
            )?),
            None => Box::new(CrossEntropy {
                smoothing: exp.train.label_smoothing,
            }),
        };
        let s = train_network(&exp, &net, &self.splits, loss.as_mut(), &opts)?;
        Ok(s.best_val_top1)
    }
}

fn strategy_name(k: StrategyKind) -> &'static str {
    match k {
        StrategyKind::Random => "random",
        StrategyKind::Evolution => "evolution",
        StrategyKind::Nsga2 => "nsga2",
    }
}

/// Whether distillation is on (any teacher term weighted).
fn uses_teacher(exp: &Experiment) -> bool {
    let d = &exp.distill;
    d.kd_weight > 0.0 || d.dkd_weight > 0.0 || d.feature_weight > 0.0 || d.at_weight > 0.0
}

/// Runs (or resumes) the search of `exp`; returns the run folder.
pub fn search(exp: &Experiment, opts: &SearchOptions) -> Result<PathBuf> {
    let cfg = &exp.search;
    ensure!(
        (2..=3).contains(&cfg.objectives.len()),
        "search.objectives needs val_top1 and one or two costs"
    );
    ensure!(
        cfg.objectives[0] == "val_top1",
        "search.objectives must start with val_top1"
    );
    ensure!(
        cfg.population >= 2 && cfg.tournament >= 1,
        "search.population must be >= 2 and search.tournament >= 1"
    );
    let space = SearchSpace::load(&cfg.space)?;
    let run_dir = exp.run_dir();
    let log = run_dir.join("trials.jsonl");
    let recorded = trials::load(&log)?;
    if !recorded.is_empty() && !opts.resume {
        bail!(
            "{} already holds {} trials: add --resume to continue, or pick another name",
            run_dir.display(),
            recorded.len()
        );
    }
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let splits = experiment_splits(exp)?;
    let profiles = load_profiles(cfg.profiles.as_deref())?;
    for o in &cfg.objectives[1..] {
        if let Some(p) = o.strip_prefix("roofline:") {
            ensure!(
                profiles.iter().any(|q| q.name == p),
                "objective {o}: no such hardware profile"
            );
        } else {
            ensure!(
                ["params", "macs", "latency_ms"].contains(&o.as_str()),
                "unknown objective '{o}'"
            );
        }
    }
    let bars = (!opts.quiet).then(MultiProgress::new);
    let state_path = run_dir.join("search.json");
    let (teacher, mut state) = {
        let teacher = if uses_teacher(exp) {
            let t = resolve_teacher(exp, &splits, opts.quiet)?;
            let test = crate::train::trainer::evaluate(&t.net, &splits.test)?.top1;
            let key = crate::distill::teacher_cache_key(exp, &t.weights)?;
            Some((Arc::new(t.net), key, t.source, test))
        } else {
            None
        };
        let state = if state_path.exists() && opts.resume {
            serde_json::from_str::<SearchState>(&std::fs::read_to_string(&state_path)?)
                .with_context(|| format!("reading {}", state_path.display()))?
        } else {
            let corner = space
                .corner(true)
                .with_io(splits.channels, splits.num_classes);
            let size = splits.input_size;
            let c = cost(&corner, size, size, &profiles);
            let proto = Trial {
                val_top1: Some(0.0),
                params: c.params,
                macs: c.macs,
                latency_ms: measure_latency(&corner, size, cfg.latency_repeats)?,
                roofline_ms: c.roofline_ms.into_iter().collect(),
                ..Trial::default()
            };
            SearchState {
                experiment: exp.clone(),
                space: space.clone(),
                hv_reference: std::iter::once(Ok(1.0))
                    .chain(
                        cfg.objectives[1..]
                            .iter()
                            .map(|o| Ok(1.1 * objective_value(&proto, o)?)),
                    )
                    .collect::<Result<_>>()?,
                input_size: size,
                teacher: teacher.as_ref().map(|t| t.2.clone()),
                teacher_test_top1: teacher.as_ref().map(|t| t.3),
            }
        };
        (teacher.map(|t| (t.0, t.1)), state)
    };
    state.experiment = exp.clone();
    atomic_write(
        &state_path,
        serde_json::to_string_pretty(&state)?.as_bytes(),
    )?;

    let ctx = Ctx {
        exp,
        cfg,
        run_dir: run_dir.clone(),
        splits,
        profiles,
        teacher,
        bars: bars.clone(),
        quiet: opts.quiet,
    };
    let planned = cfg.coarse.trials + cfg.fine.trials + cfg.reference.len();
    let overall = match &bars {
        Some(m) => {
            let pb = m.add(ProgressBar::new(planned as u64));
            pb.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {pos}/{len} trials, {msg} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            pb.set_prefix("search");
            pb
        }
        None => ProgressBar::hidden(),
    };

    let mut done: Vec<Trial> = Vec::new();
    let by_index: HashMap<usize, Trial> = recorded.into_iter().map(|t| (t.index, t)).collect();
    let mut next_index = 0usize;
    let t_start = Instant::now();

    let run_stage = |stage: &str,
                     mode: StageMode,
                     budget_trials: usize,
                     epochs: usize,
                     done: &mut Vec<Trial>,
                     next_index: &mut usize|
     -> Result<()> {
        let stage_id = if stage == "coarse" { 1 } else { 2 };
        let mut rng = StdRng::seed_from_u64(derive_seed(&[exp.seed, 0x5ea7c4, stage_id]));
        let mut strategy: Box<dyn Strategy> = make_strategy(
            cfg.strategy,
            space.clone(),
            mode,
            cfg.population,
            cfg.tournament,
        );
        for _ in 0..budget_trials {
            let index = *next_index;
            *next_index += 1;
            // Ask until the candidate is new (identical architectures are never trained twice).
            let mut arch = strategy.ask(&mut rng);
            for _ in 0..20 {
                if !done.iter().any(|t| {
                    t.hash
                        == arch
                            .clone()
                            .with_io(ctx.splits.channels, ctx.splits.num_classes)
                            .hash_hex()
                }) {
                    break;
                }
                arch = strategy.ask(&mut rng);
            }
            let arch_io = arch
                .clone()
                .with_io(ctx.splits.channels, ctx.splits.num_classes);
            let trial = if let Some(t) = by_index.get(&index) {
                ensure!(
                    t.hash == arch_io.hash_hex(),
                    "resume: trial {index} in the log is {} but this run proposes {} — the experiment or space changed since the log was written",
                    t.arch,
                    arch_io.to_block_string()
                );
                t.clone()
            } else if let Some(prev) = done.iter().find(|t| t.hash == arch_io.hash_hex()) {
                let mut t = prev.clone();
                t.index = index;
                t.stage = stage.into();
                t.duplicate_of = Some(prev.index);
                t.wall_seconds = 0.0;
                trials::append(&log, &t)?;
                t
            } else {
                let t = ctx.evaluate(index, stage, "", &arch_io, epochs)?;
                trials::append(&log, &t)?;
                t
            };
            // The strategy sees the accuracy at the stage's budget (before any promotion), so a
            // replay after an interruption tells it exactly what the original run told it.
            let mut seen = trial.clone();
            seen.val_top1 = trial.stage_val_top1;
            strategy.tell(arch, trial_point(&seen, &cfg.objectives)?);
            let msg = format!(
                "{stage} #{index}: {} val {:.2}% {} {:.3}",
                if trial.feasible { "" } else { "INFEASIBLE" },
                100.0 * trial.val_top1.unwrap_or(0.0),
                cfg.objectives[1],
                objective_value(&trial, &cfg.objectives[1])?
            );
            if opts.quiet {
                tracing::info!("{msg}");
            }
            done.push(trial);
            let points: Vec<Point> = done
                .iter()
                .map(|t| trial_point(t, &cfg.objectives))
                .collect::<Result<_>>()?;
            let front = ranks(&points).iter().filter(|&&r| r == 0).count();
            overall.set_message(format!("front {front}"));
            overall.inc(1);
        }
        Ok(())
    };

    run_stage(
        "coarse",
        StageMode::Coarse,
        cfg.coarse.trials,
        cfg.coarse.epochs,
        &mut done,
        &mut next_index,
    )?;
    halving(&ctx, &log, &mut done, "coarse", &cfg.coarse)?;
    if cfg.fine.trials > 0 {
        let seeds = front_archs(&done, &cfg.objectives)?;
        let seeds = if seeds.is_empty() {
            vec![space.corner(false)]
        } else {
            seeds
        };
        run_stage(
            "fine",
            StageMode::Fine(seeds),
            cfg.fine.trials,
            cfg.fine.epochs,
            &mut done,
            &mut next_index,
        )?;
        halving(&ctx, &log, &mut done, "fine", &cfg.fine)?;
    }
    for m in &cfg.reference {
        let index = next_index;
        next_index += 1;
        let arch = m.to_arch(ctx.splits.channels, ctx.splits.num_classes)?;
        let label = arch.name.clone().unwrap_or_else(|| m.arch.clone());
        let t = match by_index.get(&index) {
            Some(t) => t.clone(),
            None => {
                let t = ctx.evaluate(
                    index,
                    "reference",
                    &label,
                    &arch,
                    cfg.fine.epochs.max(cfg.coarse.epochs),
                )?;
                trials::append(&log, &t)?;
                t
            }
        };
        done.push(t);
        overall.inc(1);
    }
    overall.finish_and_clear();
    tracing::info!(
        "{}: {} trials in {:.0}s",
        exp.name,
        done.len(),
        t_start.elapsed().as_secs_f64()
    );
    Ok(run_dir)
}

/// Architectures on the first front of the feasible, trained trials so far.
fn front_archs(done: &[Trial], objectives: &[String]) -> Result<Vec<Arch>> {
    let trained: Vec<&Trial> = done
        .iter()
        .filter(|t| t.feasible && t.val_top1.is_some() && t.stage != "reference")
        .collect();
    let points: Vec<Point> = trained
        .iter()
        .map(|t| trial_point(t, objectives))
        .collect::<Result<_>>()?;
    let r = ranks(&points);
    trained
        .iter()
        .zip(r)
        .filter(|(_, r)| *r == 0)
        .map(|(t, _)| Arch::from_block_string(&t.arch))
        .collect()
}

/// Successive halving: the best `keep` fraction of the stage continues to `halving_epochs`.
fn halving(
    ctx: &Ctx,
    log: &Path,
    done: &mut [Trial],
    stage: &str,
    budget: &super::config::StageBudget,
) -> Result<()> {
    if budget.halving_keep <= 0.0 || budget.halving_epochs <= budget.epochs {
        return Ok(());
    }
    let mut idx: Vec<usize> = (0..done.len())
        .filter(|&i| done[i].stage == stage && done[i].feasible && done[i].duplicate_of.is_none())
        .collect();
    idx.sort_by(|&a, &b| {
        done[b]
            .val_top1
            .unwrap_or(0.0)
            .total_cmp(&done[a].val_top1.unwrap_or(0.0))
    });
    let keep = ((idx.len() as f64 * budget.halving_keep).ceil() as usize)
        .max(1)
        .min(idx.len());
    for &i in &idx[..keep] {
        if done[i].epochs >= budget.halving_epochs {
            continue; // promoted before an interruption
        }
        let started = Instant::now();
        let arch = Arch::from_block_string(&done[i].arch)?;
        let acc = ctx.train(done[i].index, &arch, budget.halving_epochs, done[i].seed)?;
        done[i].val_top1 = Some(acc);
        done[i].epochs = budget.halving_epochs;
        done[i].wall_seconds += started.elapsed().as_secs_f64();
        trials::append(log, &done[i])?;
    }
    Ok(())
}
