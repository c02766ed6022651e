//! The search driver: coarse stage (widths, depths; fixed IB), fine stage (UIB choices, MQA
//! placement) seeded by the coarse front, optional successive halving, reference presets.
//! It owns budgets, storage and resume: every finished trial is in the trial store (by default
//! `trials.jsonl`) before the next starts, and a resumed run replays the store through the same seeded strategy, so it
//! retrains nothing and makes the same decisions as an uninterrupted run.

use super::config::StageBudget;
use super::detection::DetectData;
use super::evaluator::{needs_promotion, Candidate, Evaluator, TaskData};
use super::generations::WorkQueue;
use super::objective::{trial_point, Objective};
use super::pareto::ranks;
use super::pool::LocalWorkers;
use super::space::SearchSpace;
use super::stage::StageRunner;
use super::store::{self, Job, OpenStudy, TrialStore};
use super::strategy::StageMode;
use super::study::{SearchState, StudySpec};
use super::trials::{Stage, Trial};
use crate::cost::load_profiles;
use crate::data::build_splits;
use crate::distill::teacher::prepare_teacher;
use crate::fsutil::DirLock;
use crate::space::Arch;
use anyhow::{anyhow, bail, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of a search invocation.
#[derive(Debug, Clone, Default)]
pub struct SearchOptions {
    pub resume: bool,
    pub quiet: bool,
    /// Trial store URL (see [`store::StoreUrl`]); default: the one the run recorded, else
    /// `trials.sqlite` in the run folder with workers, `trials.jsonl` without.
    pub storage: Option<String>,
    /// Train through the store's work queue, a generation at a time, with this many local
    /// worker processes (0: workers started elsewhere, e.g. by Slurm); `None`: in this process,
    /// one trial at a time.
    pub workers: Option<usize>,
    /// Math threads of each local worker (default: the cores shared out among them).
    pub worker_threads: Option<usize>,
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
    check_schedule(&run_dir, opts)?;
    let eval = evaluator(study, opts.quiet)?;
    let mut state = open_state(&eval, &space, opts)?;
    state.storage = Some(url.clone());
    state.write(&run_dir)?;
    let overall = overall_bar(
        &eval.bars,
        cfg.coarse.trials + cfg.fine.trials + cfg.reference.len() + cfg.repeat_front,
    );
    let recorded: HashMap<usize, Trial> = recorded.into_iter().map(|t| (t.index, t)).collect();
    let runner = StageRunner {
        eval: &eval,
        store: store.as_ref(),
        recorded: &recorded,
        space: &space,
        overall: &overall,
    };
    let schedule = match opts.workers {
        None => Schedule::InProcess,
        Some(n) => Schedule::Queue(work_queue(store.as_ref(), &url, study, n, opts, &overall)?),
    };
    let t_start = Instant::now();
    let mut done: Vec<Trial> = Vec::new();
    schedule.stage(
        &runner,
        Stage::Coarse,
        StageMode::Coarse,
        &cfg.coarse,
        &mut done,
    )?;
    halving(&schedule, &runner, &mut done, Stage::Coarse, &cfg.coarse)?;
    if cfg.fine.trials > 0 {
        let seeds = front_archs(&done, &cfg.objectives)?;
        let seeds = match seeds.is_empty() {
            true => vec![space.corner(false)],
            false => seeds,
        };
        schedule.stage(
            &runner,
            Stage::Fine,
            StageMode::Fine(seeds),
            &cfg.fine,
            &mut done,
        )?;
        halving(&schedule, &runner, &mut done, Stage::Fine, &cfg.fine)?;
    }
    references(&schedule, &runner, &mut done)?;
    repeats(&schedule, &runner, &mut done)?;
    if let Schedule::Queue(work) = &schedule {
        work.finish()?;
    }
    overall.finish_and_clear();
    let secs = t_start.elapsed().as_secs_f64();
    tracing::info!("{}: {} trials in {secs:.0}s", study.name, done.len());
    Ok(run_dir)
}

/// How trials are trained: one at a time in this process, or a generation at a time by workers
/// through the store's queue.
enum Schedule<'a> {
    InProcess,
    Queue(WorkQueue<'a>),
}

impl Schedule<'_> {
    /// Runs one search stage.
    fn stage(
        &self,
        runner: &StageRunner,
        stage: Stage,
        mode: StageMode,
        budget: &StageBudget,
        done: &mut Vec<Trial>,
    ) -> Result<()> {
        match self {
            Schedule::InProcess => runner.run(stage, mode, budget, done),
            Schedule::Queue(work) => runner.run_generations(work, stage, mode, budget, done),
        }
    }

    /// Trains `done[i]` for each `i` in `which` on to `epochs`.
    fn promote(
        &self,
        runner: &StageRunner,
        done: &mut [Trial],
        which: &[usize],
        epochs: usize,
    ) -> Result<()> {
        match self {
            Schedule::InProcess => {
                for &i in which {
                    if needs_promotion(&done[i], epochs) {
                        runner.eval.promote(&mut done[i], epochs)?;
                        runner.store.record(&done[i])?;
                    }
                }
                Ok(())
            }
            Schedule::Queue(work) => work.promote(done, which, epochs),
        }
    }

    /// Evaluates `fresh` candidates (their indices are not recorded yet) and returns them.
    fn evaluate(&self, runner: &StageRunner, fresh: &[Candidate]) -> Result<Vec<Trial>> {
        match self {
            Schedule::InProcess => fresh
                .iter()
                .map(|c| {
                    let t = runner.eval.evaluate(c)?;
                    runner.store.record(&t)?;
                    Ok(t)
                })
                .collect(),
            Schedule::Queue(work) => {
                let jobs: Vec<Job> = fresh.iter().map(Candidate::job).collect();
                let mut got = work.run(&jobs)?;
                Ok(fresh.iter().filter_map(|c| got.remove(&c.index)).collect())
            }
        }
    }
}

/// The work queue of a `--workers` search, with its local workers started.
fn work_queue<'a>(
    store: &'a dyn TrialStore,
    url: &str,
    study: &StudySpec,
    workers: usize,
    opts: &SearchOptions,
    overall: &'a ProgressBar,
) -> Result<WorkQueue<'a>> {
    let Some(queue) = store.queue() else {
        bail!(
            "{}: --workers needs a store with a work queue: sqlite:PATH or postgres://… \
             (a .jsonl trial log has none)",
            store.location()
        );
    };
    let pool = match workers {
        0 => None,
        n => {
            let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
            let threads = opts.worker_threads.unwrap_or((cores / n).max(1));
            Some(LocalWorkers::start(n, threads, url, &study.name)?)
        }
    };
    Ok(WorkQueue {
        store,
        queue,
        pool: RefCell::new(pool),
        poll: Duration::from_millis(500),
        overall,
    })
}

/// Refuses to resume a search with workers without them, or the other way round: its
/// decisions depend on it.
fn check_schedule(run_dir: &Path, opts: &SearchOptions) -> Result<()> {
    if !opts.resume || !run_dir.join("search.json").exists() {
        return Ok(());
    }
    let generations = SearchState::read(run_dir)?.generations;
    if generations != opts.workers.is_some() {
        bail!(
            "{}: this search was started {} --workers; resume it the same way (its decisions \
             depend on it)",
            run_dir.display(),
            if generations { "with" } else { "without" }
        );
    }
    Ok(())
}

/// The trial store: `--storage`, else the one a resumed run recorded, else the run folder's
/// `trials.sqlite` (with workers) or `trials.jsonl`.
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
    Ok(match opts.workers {
        Some(_) => format!("sqlite:{}", run_dir.join("trials.sqlite").display()),
        None => store::default_url(&run_dir),
    })
}

/// The study's evaluator: data, hardware profiles and (when distilling) the teacher. A
/// detection study opens its detection data and trains without a teacher.
pub fn evaluator(study: &StudySpec, quiet: bool) -> Result<Evaluator<'_>> {
    let t = &study.train;
    let profiles = load_profiles(study.search.profiles.as_deref())?;
    let (data, teacher) = match &study.search.detect {
        Some(task) => {
            let d = DetectData::open(task, t, study.seed)?;
            (TaskData::Detect(Box::new(d)), None)
        }
        None => {
            let splits = build_splits(&study.data, t.batch_size, t.eval_batch_size, study.seed)?;
            let teacher = match study.distill.uses_teacher() {
                true => {
                    let plan = study.teacher_plan();
                    let request = study.teacher_request(&plan, quiet);
                    Some(prepare_teacher(&request, &splits)?)
                }
                false => None,
            };
            (TaskData::Classify(splits), teacher)
        }
    };
    Ok(Evaluator {
        study,
        data,
        profiles,
        teacher,
        bars: (!quiet).then(MultiProgress::new),
        quiet,
    })
}

/// The recorded state of a resumed study, or a new one with the hypervolume reference point
/// fixed now; either way carrying the current settings.
fn open_state(eval: &Evaluator, space: &SearchSpace, opts: &SearchOptions) -> Result<SearchState> {
    let run_dir = eval.study.run_dir();
    let mut state = match opts.resume && run_dir.join("search.json").exists() {
        true => SearchState::read(&run_dir)?,
        false => SearchState {
            study: eval.study.clone(),
            space: space.clone(),
            hv_reference: hv_reference(eval, space)?,
            input_size: eval.data.input_size(),
            teacher: eval.teacher.as_ref().map(|t| t.source.clone()),
            teacher_test_top1: eval.teacher.as_ref().map(|t| t.test.top1),
            teacher_val_top1: eval.teacher.as_ref().map(|t| t.val.top1),
            teacher_seconds: eval.teacher.as_ref().map(|t| t.prepare_seconds),
            machine: Some(crate::report::machine::describe()),
            storage: None,
            generations: opts.workers.is_some(),
        },
    };
    state.study = eval.study.clone();
    Ok(state)
}

/// Error 1 and 1.1 × each cost of the space's largest corner.
fn hv_reference(eval: &Evaluator, space: &SearchSpace) -> Result<Vec<f64>> {
    let corner = eval.with_io(&space.corner(true));
    let (c, latency) = eval.cost_and_latency(&corner)?;
    let proto = Trial {
        val_top1: Some(0.0),
        params: c.params,
        macs: c.macs,
        latency_ms: latency.ms,
        latency_ratio: Some(latency.ratio),
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
    front_trials(done, objectives)?
        .iter()
        .map(|t| Arch::from_block_string(&t.arch))
        .collect()
}

/// Successive halving: the best `keep` fraction of the stage continues to `halving_epochs`.
fn halving(
    schedule: &Schedule,
    runner: &StageRunner,
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
    schedule.promote(runner, done, &idx[..keep], budget.halving_epochs)
}

/// Up to `search.repeat_front` front members (the most accurate first) trained again with
/// another weight seed at their own budget: the report's measured noise floor.
fn repeats(schedule: &Schedule, runner: &StageRunner, done: &mut Vec<Trial>) -> Result<()> {
    let cfg = &runner.eval.study.search;
    let front = front_trials(done, &cfg.objectives)?;
    let base = done.len();
    let mut fresh = Vec::new();
    let mut recorded = Vec::new();
    for (j, m) in front.iter().take(cfg.repeat_front).enumerate() {
        match runner.recorded.get(&(base + j)) {
            Some(t) => recorded.push(t.clone()),
            None => fresh.push(Candidate {
                index: base + j,
                stage: Stage::Repeat,
                label: format!("t{:04}", m.index),
                arch: Arch::from_block_string(&m.arch)?,
                epochs: m.epochs,
            }),
        }
    }
    let evaluated = schedule.evaluate(runner, &fresh)?;
    let mut all: Vec<Trial> = recorded.into_iter().chain(evaluated).collect();
    all.sort_by_key(|t| t.index);
    for t in all {
        done.push(t);
        runner.overall.inc(1);
    }
    Ok(())
}

/// The trained, feasible front of the searched candidates, most accurate first.
fn front_trials(done: &[Trial], objectives: &[Objective]) -> Result<Vec<Trial>> {
    let trained: Vec<&Trial> = done
        .iter()
        .filter(|t| t.feasible && t.val_top1.is_some() && t.stage.is_candidate())
        .filter(|t| t.duplicate_of.is_none())
        .collect();
    let points = trained
        .iter()
        .map(|t| trial_point(t, objectives))
        .collect::<Result<Vec<_>>>()?;
    let mut front: Vec<Trial> = trained
        .iter()
        .zip(ranks(&points))
        .filter(|(_, r)| *r == 0)
        .map(|(t, _)| (*t).clone())
        .collect();
    front.sort_by(|a, b| {
        b.val_top1
            .unwrap_or(0.0)
            .total_cmp(&a.val_top1.unwrap_or(0.0))
    });
    Ok(front)
}

/// The reference presets, evaluated at the smallest budget and promoted through every larger
/// one ([`SearchConfig::budgets`]), exactly as candidates are promoted.
fn references(schedule: &Schedule, runner: &StageRunner, done: &mut Vec<Trial>) -> Result<()> {
    let eval = runner.eval;
    let cfg = &eval.study.search;
    let budgets = cfg.budgets();
    let Some((&first, later)) = budgets.split_first() else {
        return Ok(());
    };
    let base = done.len();
    let mut fresh = Vec::new();
    for (j, m) in cfg.reference.iter().enumerate() {
        if runner.recorded.contains_key(&(base + j)) {
            continue;
        }
        let (channels, classes) = eval.data.io();
        let arch = m.to_arch(channels, classes)?;
        fresh.push(Candidate {
            index: base + j,
            stage: Stage::Reference,
            label: arch.name.clone().unwrap_or_else(|| m.arch.clone()),
            arch: eval.with_io(&arch),
            epochs: first,
        });
    }
    let mut evaluated = schedule.evaluate(runner, &fresh)?.into_iter();
    for j in 0..cfg.reference.len() {
        let t = match runner.recorded.get(&(base + j)) {
            Some(t) => t.clone(),
            None => evaluated
                .next()
                .ok_or_else(|| anyhow!("reference {j} was not evaluated"))?,
        };
        done.push(t);
        runner.overall.inc(1);
    }
    let which: Vec<usize> = (base..done.len()).collect();
    for &epochs in later {
        schedule.promote(runner, done, &which, epochs)?;
    }
    Ok(())
}
