//! Neural architecture search over MobileNetV4 UIB choices.
//!
//! * [`config`] — the `[search]` section; [`objective`] — what a front ranks on.
//! * [`space`] — search spaces, sampling, mutation, crossover.
//! * [`strategy`] — random search, regularized evolution, NSGA-II (ask / tell).
//! * [`pareto`] — domination, non-dominated sorting, crowding, hypervolume.
//! * [`study`] — a study's settings and its recorded state (`search.json`).
//! * [`trials`] — the durable trial log.
//! * [`evaluator`] — one candidate: cost, budgets, latency, training.
//! * [`stage`] — one stage: ask, dedupe, replay or evaluate, log, tell.
//! * [`driver`] — the stages in order, halving, references, resume.
//! * [`report`] — tables, Pareto and hypervolume plots, README summary.
//! * [`retrain`] — the front and the presets retrained at the full budget.

pub mod config;
pub mod driver;
pub mod evaluator;
pub mod objective;
pub mod pareto;
pub mod report;
pub mod retrain;
pub mod space;
pub mod stage;
pub mod strategy;
pub mod study;
pub mod trials;
