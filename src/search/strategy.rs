//! Search strategies behind one small interface: `ask` proposes an architecture, `tell` reports
//! its objectives. Random search, regularized evolution and NSGA-II. A strategy owns only its
//! population; the driver owns budgets, storage and resume.

use super::pareto::{crowding_distance, non_dominated_sort, Point};
use super::space::SearchSpace;
use crate::space::Arch;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Which strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StrategyKind {
    #[default]
    Random,
    Evolution,
    Nsga2,
}

impl std::fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StrategyKind::Random => "random",
            StrategyKind::Evolution => "evolution",
            StrategyKind::Nsga2 => "nsga2",
        })
    }
}

/// What a stage searches.
#[derive(Debug, Clone)]
pub enum StageMode {
    /// Widths and depths with every UIB a fixed inverted bottleneck.
    Coarse,
    /// Per-block UIB choices and MQA placement on the widths / depths of these seeds.
    Fine(Vec<Arch>),
}

/// An evaluated candidate as the strategy sees it.
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub arch: Arch,
    pub point: Point,
}

/// ask → arch, tell ← objectives.
pub trait Strategy {
    /// Proposes the next candidate.
    fn ask(&mut self, rng: &mut StdRng) -> Arch;
    /// Reports a candidate's objectives (all minimized) and constraint violation.
    fn tell(&mut self, arch: Arch, point: Point);
}

/// Builds a strategy for one stage.
pub fn make_strategy(
    kind: StrategyKind,
    space: SearchSpace,
    mode: StageMode,
    population: usize,
    tournament: usize,
) -> Box<dyn Strategy> {
    let base = Base { space, mode };
    match kind {
        StrategyKind::Random => Box::new(RandomSearch { base }),
        StrategyKind::Evolution => Box::new(RegularizedEvolution {
            base,
            population,
            tournament,
            queue: VecDeque::new(),
        }),
        StrategyKind::Nsga2 => Box::new(Nsga2 {
            base,
            population,
            all: Vec::new(),
        }),
    }
}

struct Base {
    space: SearchSpace,
    mode: StageMode,
}

impl Base {
    fn fine(&self) -> bool {
        matches!(self.mode, StageMode::Fine(_))
    }

    fn sample(&self, rng: &mut StdRng) -> Arch {
        match &self.mode {
            StageMode::Coarse => self.space.sample_coarse(rng),
            StageMode::Fine(seeds) => {
                let seed = seeds.choose(rng).expect("fine stage has seeds");
                self.space.sample_fine(rng, seed)
            }
        }
    }
}

/// Uniform random sampling of the stage's space.
struct RandomSearch {
    base: Base,
}

impl Strategy for RandomSearch {
    fn ask(&mut self, rng: &mut StdRng) -> Arch {
        self.base.sample(rng)
    }
    fn tell(&mut self, _: Arch, _: Point) {}
}

/// Regularized evolution (Real et al. 2019): a queue of the `population` newest candidates;
/// a parent is the best of `tournament` random members; the child is a one-step mutation; the
/// oldest member dies. Fitness is the first objective, infeasible candidates last.
struct RegularizedEvolution {
    base: Base,
    population: usize,
    tournament: usize,
    queue: VecDeque<Evaluated>,
}

fn fitness(p: &Point) -> (bool, f64) {
    (p.violation > 0.0, p.objectives[0])
}

impl Strategy for RegularizedEvolution {
    fn ask(&mut self, rng: &mut StdRng) -> Arch {
        if self.queue.len() < self.population {
            return self.base.sample(rng);
        }
        let members: Vec<&Evaluated> = (0..self.tournament)
            .map(|_| &self.queue[rng.random_range(0..self.queue.len())])
            .collect();
        let parent = members
            .into_iter()
            .min_by(|a, b| {
                fitness(&a.point)
                    .partial_cmp(&fitness(&b.point))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .expect("tournament >= 1");
        self.base.space.mutate(rng, &parent.arch, self.base.fine())
    }

    fn tell(&mut self, arch: Arch, point: Point) {
        self.queue.push_back(Evaluated { arch, point });
        if self.queue.len() > self.population {
            self.queue.pop_front();
        }
    }
}

/// Steady-state NSGA-II (Deb et al. 2002) with constrained domination: the parent pool is the
/// best `population` candidates by (front, crowding distance); parents are chosen by binary
/// tournament; the child is a crossover followed by a mutation.
struct Nsga2 {
    base: Base,
    population: usize,
    all: Vec<Evaluated>,
}

/// A member of the NSGA-II parent pool.
#[derive(Debug, Clone, Copy)]
struct Survivor {
    /// Index into `Nsga2::all`.
    index: usize,
    /// Non-dominated front, 0 = best.
    rank: usize,
    /// Crowding distance within the front (larger = more isolated).
    crowding: f64,
}

impl Survivor {
    /// Binary-tournament order: lower front first, then larger crowding distance.
    fn beats(&self, other: &Survivor) -> bool {
        (self.rank, -self.crowding) <= (other.rank, -other.crowding)
    }
}

impl Nsga2 {
    /// The best `population` candidates by (front rank, crowding distance).
    fn survivors(&self) -> Vec<Survivor> {
        let points: Vec<Point> = self.all.iter().map(|e| e.point.clone()).collect();
        let mut out = Vec::new();
        for (rank, front) in non_dominated_sort(&points).iter().enumerate() {
            let d = crowding_distance(&points, front);
            let mut members: Vec<Survivor> = front
                .iter()
                .zip(d)
                .map(|(&index, crowding)| Survivor {
                    index,
                    rank,
                    crowding,
                })
                .collect();
            members.sort_by(|a, b| b.crowding.total_cmp(&a.crowding));
            for m in members {
                if out.len() == self.population {
                    return out;
                }
                out.push(m);
            }
        }
        out
    }
}

impl Strategy for Nsga2 {
    fn ask(&mut self, rng: &mut StdRng) -> Arch {
        if self.all.len() < self.population {
            return self.base.sample(rng);
        }
        let pool = self.survivors();
        let pick = |rng: &mut StdRng| {
            let a = pool[rng.random_range(0..pool.len())];
            let b = pool[rng.random_range(0..pool.len())];
            let better = if a.beats(&b) { a } else { b };
            &self.all[better.index].arch
        };
        let (p1, p2) = (pick(rng).clone(), pick(rng).clone());
        let child = self.base.space.crossover(rng, &p1, &p2, self.base.fine());
        self.base.space.mutate(rng, &child, self.base.fine())
    }

    fn tell(&mut self, arch: Arch, point: Point) {
        self.all.push(Evaluated { arch, point });
    }
}
