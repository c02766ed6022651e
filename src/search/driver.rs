//! The search driver: coarse stage (widths, depths; fixed IB), fine stage (UIB choices, MQA
//! placement) seeded by the coarse front, optional successive halving, reference presets.
//! It owns budgets, storage and resume: every finished trial is in the trial store (by default
//! `trials.jsonl`) before the next starts, and a resumed run replays the store through the same seeded strategy, so it
//! retrains nothing and makes the same decisions as an uninterrupted run.

use super::config::StageBudget;
use super::evaluator::{diverged, measure_latency, Candidate, Evaluator};
use super::objective::{trial_point, Objective};
use super::pareto::ranks;
use super::space::SearchSpace;
use super::stage::StageRunner;
use super::store::{self, OpenStudy, TrialStore};
use super::strategy::StageMode;
use super::study::{SearchState, StudySpec};
use super::trials::{Stage, Trial};
use crate::cost::{cost, load_profiles};
use crate::data::build_splits;
use crate::distill::teacher::prepare_teacher;
use crate::fsutil::DirLock;
use crate::space::Arch;
use anyhow::{bail, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

/// Options of a search invocation.
#[derive(Debug, Clone, Default)]
pub struct SearchOptions {
    pub resume: bool,
    pub quiet: bool,
    /// Trial store URL (see [`store::StoreUrl`]); default: the one the run recorded, else
    /// `trials.jsonl` in the run folder.
    pub storage: Option<String>,
}

/// Runs (or resumes) the study; returns its run folder.
pub fn search(study: &StudySpec, opts: &SearchOptions) -> Result<PathBuf> {
    let cfg = &study.search;
    let space = SearchSpace::load(&cfg.space)?;
    let run_dir = study.run_dir();
    let _lock = DirLock::acquire(&run_dir)?;
    let url = storage_url(study, opts)?;
    let store = store::open(&url, &study.name, OpenStudy::Create(&study.settings()))?;
    let recorded = store.trials()?;
    if !recorded.is_empty() && !opts.resume {
        bail!(
            "{} already holds {} trials of {}: add --resume to continue, or pick another name",
            store.location(),
            recorded.len(),
            study.name
        );
    }
    let eval = evaluator(study, opts.quiet)?;
    let mut state = open_state(&eval, &space, opts.resume)?;
    state.storage = Some(url);
    state.write(&run_dir)?;
    let overall = overall_bar(
        &eval.bars,
        cfg.coarse.trials + cfg.fine.trials + cfg.reference.len(),
    );
    let recorded: HashMap<usize, Trial> = recorded.into_iter().map(|t| (t.index, t)).collect();
    let runner = StageRunner {
        eval: &eval,
        store: store.as_ref(),
        recorded: &recorded,
        space: &space,
        overall: &overall,
    };
    let t_start = Instant::now();
    let mut done: Vec<Trial> = Vec::new();
    runner.run(Stage::Coarse, StageMode::Coarse, &cfg.coarse, &mut done)?;
    halving(&eval, store.as_ref(), &mut done, Stage::Coarse, &cfg.coarse)?;
    if cfg.fine.trials > 0 {
        let seeds = front_archs(&done, &cfg.objectives)?;
        let seeds = match seeds.is_empty() {
            true => vec![space.corner(false)],
            false => seeds,
        };
        runner.run(Stage::Fine, StageMode::Fine(seeds), &cfg.fine, &mut done)?;
        halving(&eval, store.as_ref(), &mut done, Stage::Fine, &cfg.fine)?;
    }
    references(&eval, store.as_ref(), &recorded, &mut done, &overall)?;
    overall.finish_and_clear();
    let secs = t_start.elapsed().as_secs_f64();
    tracing::info!("{}: {} trials in {secs:.0}s", study.name, done.len());
    Ok(run_dir)
}

/// The trial store: `--storage`, else the one a resumed run recorded, else `trials.jsonl` in
/// the run folder.
fn storage_url(study: &StudySpec, opts: &SearchOptions) -> Result<String> {
    let run_dir = study.run_dir();
    if let Some(url) = &opts.storage {
        return Ok(url.clone());
    }
    if opts.resume && run_dir.join("search.json").exists() {
        if let Some(url) = SearchState::read(&run_dir)?.storage {
            return Ok(url);
        }
    }
    Ok(store::default_url(&run_dir))
}

/// The study's evaluator: data, hardware profiles and (when distilling) the teacher.
pub fn evaluator(study: &StudySpec, quiet: bool) -> Result<Evaluator<'_>> {
    let t = &study.train;
    let splits = build_splits(&study.data, t.batch_size, t.eval_batch_size, study.seed)?;
    let profiles = load_profiles(study.search.profiles.as_deref())?;
    let teacher = match study.distill.uses_teacher() {
        true => {
            let plan = study.teacher_plan();
            Some(prepare_teacher(
                &study.teacher_request(&plan, quiet),
                &splits,
            )?)
        }
        false => None,
    };
    Ok(Evaluator {
        study,
        splits,
        profiles,
        teacher,
        bars: (!quiet).then(MultiProgress::new),
        quiet,
    })
}

/// The recorded state of a resumed study, or a new one with the hypervolume reference point
/// fixed now; either way carrying the current settings.
fn open_state(eval: &Evaluator, space: &SearchSpace, resume: bool) -> Result<SearchState> {
    let run_dir = eval.study.run_dir();
    let mut state = match resume && run_dir.join("search.json").exists() {
        true => SearchState::read(&run_dir)?,
        false => SearchState {
            study: eval.study.clone(),
            space: space.clone(),
            hv_reference: hv_reference(eval, space)?,
            input_size: eval.splits.input_size,
            teacher: eval.teacher.as_ref().map(|t| t.source.clone()),
            teacher_test_top1: eval.teacher.as_ref().map(|t| t.test.top1),
            teacher_val_top1: eval.teacher.as_ref().map(|t| t.val.top1),
            teacher_seconds: eval.teacher.as_ref().map(|t| t.prepare_seconds),
            machine: Some(crate::report::machine::describe()),
            storage: None,
        },
    };
    state.study = eval.study.clone();
    Ok(state)
}

/// Error 1 and 1.1 × each cost of the space's largest corner.
fn hv_reference(eval: &Evaluator, space: &SearchSpace) -> Result<Vec<f64>> {
    let corner = eval.with_io(&space.corner(true));
    let size = eval.splits.input_size;
    let c = cost(&corner, size, size, &eval.profiles);
    let proto = Trial {
        val_top1: Some(0.0),
        params: c.params,
        macs: c.macs,
        latency_ms: measure_latency(&corner, size, eval.study.search.latency_repeats)?,
        runtime_latency_ms: eval.runtime_latency(&corner)?,
        roofline_ms: c.roofline_ms.into_iter().collect(),
        ..Trial::default()
    };
    let costs = eval.study.search.objectives[1..].iter();
    std::iter::once(Ok(1.0))
        .chain(costs.map(|o| Ok(1.1 * o.value(&proto)?)))
        .collect()
}

fn overall_bar(bars: &Option<MultiProgress>, planned: usize) -> ProgressBar {
    let Some(m) = bars else {
        return ProgressBar::hidden();
    };
    let pb = m.add(ProgressBar::new(planned as u64));
    pb.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} trials, {msg} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix("search");
    pb
}

/// Architectures on the first front of the feasible, trained trials so far.
fn front_archs(done: &[Trial], objectives: &[Objective]) -> Result<Vec<Arch>> {
    let trained: Vec<&Trial> = done
        .iter()
        .filter(|t| t.feasible && t.val_top1.is_some() && t.stage != Stage::Reference)
        .collect();
    let points = trained
        .iter()
        .map(|t| trial_point(t, objectives))
        .collect::<Result<Vec<_>>>()?;
    trained
        .iter()
        .zip(ranks(&points))
        .filter(|(_, r)| *r == 0)
        .map(|(t, _)| Arch::from_block_string(&t.arch))
        .collect()
}

/// Successive halving: the best `keep` fraction of the stage continues to `halving_epochs`.
fn halving(
    eval: &Evaluator,
    store: &dyn TrialStore,
    done: &mut [Trial],
    stage: Stage,
    budget: &StageBudget,
) -> Result<()> {
    if budget.halving_keep <= 0.0 || budget.halving_epochs <= budget.epochs {
        return Ok(());
    }
    let mut idx: Vec<usize> = (0..done.len())
        .filter(|&i| done[i].stage == stage && done[i].feasible && done[i].duplicate_of.is_none())
        .collect();
    let acc = |i: usize| done[i].val_top1.unwrap_or(0.0);
    idx.sort_by(|&a, &b| acc(b).total_cmp(&acc(a)));
    let keep = ((idx.len() as f64 * budget.halving_keep).ceil() as usize)
        .max(1)
        .min(idx.len());
    for &i in &idx[..keep] {
        promote(eval, store, &mut done[i], budget.halving_epochs)?;
    }
    Ok(())
}

/// The reference presets, evaluated at the smallest budget and promoted through every larger
/// one ([`SearchConfig::budgets`]), exactly as candidates are promoted.
fn references(
    eval: &Evaluator,
    store: &dyn TrialStore,
    recorded: &HashMap<usize, Trial>,
    done: &mut Vec<Trial>,
    overall: &ProgressBar,
) -> Result<()> {
    let cfg = &eval.study.search;
    let budgets = cfg.budgets();
    let Some((&first, later)) = budgets.split_first() else {
        return Ok(());
    };
    for m in &cfg.reference {
        let index = done.len();
        let mut t = match recorded.get(&index) {
            Some(t) => t.clone(),
            None => {
                let arch = m.to_arch(eval.splits.channels, eval.splits.num_classes)?;
                let label = arch.name.clone().unwrap_or_else(|| m.arch.clone());
                let t = eval.evaluate(&Candidate {
                    index,
                    stage: Stage::Reference,
                    label,
                    arch,
                    epochs: first,
                })?;
                store.record(&t)?;
                t
            }
        };
        for &epochs in later {
            promote(eval, store, &mut t, epochs)?;
        }
        done.push(t);
        overall.inc(1);
    }
    Ok(())
}

/// Trains trial `t` on to `epochs` (unless it got there before an interruption, failed, or was
/// not trained) and logs the new evaluation.
fn promote(eval: &Evaluator, store: &dyn TrialStore, t: &mut Trial, epochs: usize) -> Result<()> {
    if t.epochs >= epochs || t.failed.is_some() || t.val_top1.is_none() {
        return Ok(());
    }
    let started = Instant::now();
    let arch = Arch::from_block_string(&t.arch)?;
    match diverged(eval.train(t.index, &arch, epochs, t.seed))? {
        Ok(acc) => t.val_top1 = Some(acc),
        Err(why) => t.failed = Some(why),
    }
    t.epochs = epochs;
    t.wall_seconds += started.elapsed().as_secs_f64();
    store.record(t)
}
