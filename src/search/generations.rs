//! Trials a generation at a time (`search --workers`): the strategy proposes a whole generation
//! (`population` candidates), the driver enqueues it in the study's database, workers train it,
//! and once every result is in the driver tells the strategy in trial-number order. Decisions
//! depend on the seed alone, never on how many workers there are or which finishes first.
//! Promotions (successive halving, the references' later budgets) go through the queue too.

use super::config::StageBudget;
use super::evaluator::needs_promotion;
use super::pool::LocalWorkers;
use super::stage::{duplicate, StageRunner};
use super::store::{Job, TrialQueue, TrialStore};
use super::strategy::StageMode;
use super::trials::{Stage, Trial};
use crate::space::Arch;
use anyhow::{anyhow, bail, Result};
use indicatif::ProgressBar;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

/// The study's work queue, as the driver uses it: enqueue a generation, wait for its results.
pub struct WorkQueue<'a> {
    pub store: &'a dyn TrialStore,
    pub queue: &'a dyn TrialQueue,
    /// Local workers started by this search (`--workers N` with N > 0), watched while waiting.
    pub pool: RefCell<Option<LocalWorkers>>,
    /// How often the store is read while waiting.
    pub poll: Duration,
    pub overall: &'a ProgressBar,
}

impl WorkQueue<'_> {
    /// Queues `jobs` (fresh trials and promotions) and waits until each has its result; a trial
    /// given up on before (a resumed search) is retried.
    pub fn run(&self, jobs: &[Job]) -> Result<HashMap<usize, Trial>> {
        let given_up: Vec<usize> = self.queue.failures()?.into_iter().map(|f| f.0).collect();
        let (promotions, fresh): (Vec<Job>, Vec<Job>) =
            jobs.iter().cloned().partition(|j| j.promote.is_some());
        self.queue.enqueue(&fresh)?;
        let retried: Vec<Job> = fresh
            .into_iter()
            .filter(|j| given_up.contains(&j.index))
            .collect();
        self.queue.requeue(&retried)?;
        self.queue.requeue(&promotions)?;
        loop {
            let by_index: HashMap<usize, Trial> = self
                .store
                .trials()?
                .into_iter()
                .map(|t| (t.index, t))
                .collect();
            let open = jobs
                .iter()
                .filter(|j| !by_index.get(&j.index).is_some_and(|r| j.finished_by(r)))
                .count();
            if open == 0 {
                return Ok(jobs
                    .iter()
                    .map(|j| (j.index, by_index[&j.index].clone()))
                    .collect());
            }
            self.check_failures(jobs)?;
            if let Some(pool) = self.pool.borrow_mut().as_mut() {
                pool.check()?;
            }
            self.overall
                .set_message(format!("{open} of {} queued trials to go", jobs.len()));
            std::thread::sleep(self.poll);
        }
    }

    /// An error naming a trial of `jobs` that the workers gave up on.
    fn check_failures(&self, jobs: &[Job]) -> Result<()> {
        for (index, why) in self.queue.failures()? {
            if jobs.iter().any(|j| j.index == index) {
                bail!(
                    "{}: trial {index} failed: {why}. Fix the cause, then run the search again \
                     with --resume (it retries the trial)",
                    self.store.location()
                );
            }
        }
        Ok(())
    }

    /// Closes the study (workers exit once it is drained) and waits for the local workers.
    pub fn finish(&self) -> Result<()> {
        self.queue.close()?;
        match self.pool.borrow_mut().take() {
            Some(pool) => pool.finish(),
            None => Ok(()),
        }
    }

    /// Trains `done[i]` for each `i` in `which` on to `epochs`, as one generation.
    pub fn promote(&self, done: &mut [Trial], which: &[usize], epochs: usize) -> Result<()> {
        let jobs: Vec<Job> = which
            .iter()
            .map(|&i| &done[i])
            .filter(|t| needs_promotion(t, epochs))
            .map(|t| Job {
                index: t.index,
                stage: t.stage,
                label: t.label.clone(),
                arch: t.arch.clone(),
                epochs,
                promote: Some(Box::new(t.clone())),
            })
            .collect();
        let results = self.run(&jobs)?;
        for &i in which {
            if let Some(t) = results.get(&done[i].index) {
                done[i] = t.clone();
            }
        }
        Ok(())
    }
}

impl StageRunner<'_> {
    /// Like [`StageRunner::run`], one generation at a time through `work`.
    pub fn run_generations(
        &self,
        work: &WorkQueue,
        stage: Stage,
        mode: StageMode,
        budget: &StageBudget,
        done: &mut Vec<Trial>,
    ) -> Result<()> {
        let (mut strategy, mut streams) = self.strategy(stage, mode);
        let size = self.eval.study.search.population.max(1);
        let mut k = 0;
        while k < budget.trials {
            let n = size.min(budget.trials - k);
            let mut asked: Vec<(Arch, Arch, String)> = Vec::with_capacity(n);
            for j in 0..n {
                let pending: Vec<String> = asked.iter().map(|a| a.2.clone()).collect();
                let arch = self.ask_new(strategy.as_mut(), streams.next(k + j), done, &pending);
                let io = self.eval.with_io(&arch);
                let hash = io.hash_hex();
                asked.push((arch, io, hash));
            }
            let jobs = self.generation_jobs(stage, budget.epochs, &asked, done)?;
            let mut results = work.run(&jobs)?;
            for (arch, io, hash) in asked {
                let index = done.len();
                let trial = match self.replayed(index, &io)? {
                    Some(t) => t,
                    None => match results.remove(&index) {
                        Some(t) => t,
                        None => {
                            let prev = done.iter().find(|t| t.hash == hash).ok_or_else(|| {
                                anyhow!("trial {index} was neither queued nor a duplicate")
                            })?;
                            let t = duplicate(index, stage, prev);
                            self.store.record(&t)?;
                            t
                        }
                    },
                };
                self.tell(strategy.as_mut(), arch, &trial)?;
                self.report(&trial)?;
                done.push(trial);
                self.show_front(done)?;
            }
            k += n;
        }
        Ok(())
    }

    /// The jobs of a generation: its proposals that are neither recorded (a resumed run) nor a
    /// duplicate of an earlier trial or of an earlier proposal of the generation.
    fn generation_jobs(
        &self,
        stage: Stage,
        epochs: usize,
        asked: &[(Arch, Arch, String)],
        done: &[Trial],
    ) -> Result<Vec<Job>> {
        let mut jobs = Vec::new();
        for (j, (_, io, hash)) in asked.iter().enumerate() {
            let index = done.len() + j;
            let duplicate =
                done.iter().any(|t| &t.hash == hash) || asked[..j].iter().any(|a| &a.2 == hash);
            if self.replayed(index, io)?.is_none() && !duplicate {
                jobs.push(Job {
                    index,
                    stage,
                    label: String::new(),
                    arch: io.to_block_string(),
                    epochs,
                    promote: None,
                });
            }
        }
        Ok(jobs)
    }
}
