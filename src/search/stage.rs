//! One search stage: ask the strategy → skip known architectures → replay the trial from the
//! store (after an interruption) or evaluate it → record it → tell the strategy.

use super::config::StageBudget;
use super::evaluator::{Candidate, Evaluator};
use super::objective::{trial_point, Objective};
use super::pareto::ranks;
use super::space::SearchSpace;
use super::store::TrialStore;
use super::strategy::{make_strategy, StageMode, Strategy};
use super::trials::{Stage, Trial};
use crate::data::derive_seed;
use crate::space::Arch;
use anyhow::{ensure, Result};
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;

/// Proposals asked for in a row while the strategy keeps proposing known architectures.
const MAX_REASKS: usize = 20;

/// Runs stages against one evaluator, trial store and set of recorded trials.
pub struct StageRunner<'a> {
    pub eval: &'a Evaluator<'a>,
    pub store: &'a dyn TrialStore,
    /// Trials already in the store (a resumed run), by index.
    pub recorded: &'a HashMap<usize, Trial>,
    pub space: &'a SearchSpace,
    pub overall: &'a ProgressBar,
}

impl StageRunner<'_> {
    pub(super) fn objectives(&self) -> &[Objective] {
        &self.eval.study.search.objectives
    }

    /// Runs `budget.trials` proposals of `stage`, appending each finished trial to `done`.
    pub fn run(
        &self,
        stage: Stage,
        mode: StageMode,
        budget: &StageBudget,
        done: &mut Vec<Trial>,
    ) -> Result<()> {
        let (mut strategy, mut streams) = self.strategy(stage, mode);
        for k in 0..budget.trials {
            let arch = self.ask_new(strategy.as_mut(), streams.next(k), done, &[]);
            let trial = self.trial_for(stage, &arch, budget.epochs, done)?;
            self.tell(strategy.as_mut(), arch, &trial)?;
            self.report(&trial)?;
            done.push(trial);
            self.show_front(done)?;
        }
        Ok(())
    }

    /// The stage's strategy and its random streams.
    pub(super) fn strategy(&self, stage: Stage, mode: StageMode) -> (Box<dyn Strategy>, Streams) {
        let cfg = &self.eval.study.search;
        let stage_id = if stage == Stage::Coarse { 1 } else { 2 };
        let seed = derive_seed(&[self.eval.study.seed, 0x5ea7c4, stage_id]);
        let own_seed = derive_seed(&[seed, cfg.strategy as u64 + 1]);
        let strategy = make_strategy(
            cfg.strategy,
            self.space.clone(),
            mode,
            cfg.population,
            cfg.tournament,
        );
        let streams = Streams {
            shared: StdRng::seed_from_u64(seed),
            own: StdRng::seed_from_u64(own_seed),
            population: cfg.population,
        };
        (strategy, streams)
    }

    /// Tells the strategy the accuracy at the stage's budget (before any promotion), so a
    /// replay after an interruption tells it exactly what the original run told it.
    pub(super) fn tell(
        &self,
        strategy: &mut dyn Strategy,
        arch: Arch,
        trial: &Trial,
    ) -> Result<()> {
        let mut seen = trial.clone();
        seen.val_top1 = trial.stage_val_top1;
        strategy.tell(arch, trial_point(&seen, self.objectives())?);
        Ok(())
    }

    /// Asks until the candidate is new (identical architectures are never trained twice):
    /// neither in `done` nor among the `pending` hashes.
    pub(super) fn ask_new(
        &self,
        strategy: &mut dyn Strategy,
        rng: &mut StdRng,
        done: &[Trial],
        pending: &[String],
    ) -> Arch {
        let mut arch = strategy.ask(rng);
        for _ in 0..MAX_REASKS {
            let hash = self.eval.with_io(&arch).hash_hex();
            if !done.iter().any(|t| t.hash == hash) && !pending.contains(&hash) {
                break;
            }
            arch = strategy.ask(rng);
        }
        arch
    }

    /// The trial of the next index: replayed from the log, a duplicate of an earlier one, or
    /// freshly evaluated (the last two are logged).
    fn trial_for(&self, stage: Stage, arch: &Arch, epochs: usize, done: &[Trial]) -> Result<Trial> {
        let index = done.len();
        let arch_io = self.eval.with_io(arch);
        if let Some(t) = self.replayed(index, &arch_io)? {
            return Ok(t);
        }
        let hash = arch_io.hash_hex();
        let trial = match done.iter().find(|t| t.hash == hash) {
            Some(prev) => duplicate(index, stage, prev),
            None => self.eval.evaluate(&Candidate {
                index,
                stage,
                label: String::new(),
                arch: arch_io,
                epochs,
            })?,
        };
        self.store.record(&trial)?;
        Ok(trial)
    }

    /// Trial `index` as recorded before an interruption, checked to be the architecture this
    /// run proposes (`arch_io`, with the data's input and classes).
    pub(super) fn replayed(&self, index: usize, arch_io: &Arch) -> Result<Option<Trial>> {
        let Some(t) = self.recorded.get(&index) else {
            return Ok(None);
        };
        ensure!(
            t.hash == arch_io.hash_hex(),
            "resume: trial {index} in the log is {} but this run proposes {} — the experiment or space changed since the log was written",
            t.arch,
            arch_io.to_block_string()
        );
        Ok(Some(t.clone()))
    }

    pub(super) fn report(&self, trial: &Trial) -> Result<()> {
        if self.eval.quiet {
            let (score, cost) = (&self.objectives()[0], &self.objectives()[1]);
            tracing::info!(
                "{} #{}: {} {} {:.2}% {} {:.3}",
                trial.stage,
                trial.index,
                if trial.feasible { "" } else { "INFEASIBLE" },
                score.short_name(),
                100.0 * trial.val_top1.unwrap_or(0.0),
                cost,
                cost.value(trial)?
            );
        }
        Ok(())
    }

    pub(super) fn show_front(&self, done: &[Trial]) -> Result<()> {
        let points = done
            .iter()
            .map(|t| trial_point(t, self.objectives()))
            .collect::<Result<Vec<_>>>()?;
        let front = ranks(&points).iter().filter(|&&r| r == 0).count();
        self.overall.set_message(format!("front {front}"));
        self.overall.inc(1);
        Ok(())
    }
}

/// Trial `index` of `stage`: the same architecture as `prev`, reusing its results.
pub(super) fn duplicate(index: usize, stage: Stage, prev: &Trial) -> Trial {
    Trial {
        index,
        stage,
        duplicate_of: Some(prev.index),
        wall_seconds: 0.0,
        ..prev.clone()
    }
}

/// A stage's random streams: the first population is drawn from a stream every strategy
/// shares (so strategies start from the same candidates), later proposals from the strategy's
/// own.
pub(super) struct Streams {
    shared: StdRng,
    own: StdRng,
    population: usize,
}

impl Streams {
    /// The stream of the stage's `k`-th proposal.
    pub(super) fn next(&mut self, k: usize) -> &mut StdRng {
        match k < self.population {
            true => &mut self.shared,
            false => &mut self.own,
        }
    }
}
