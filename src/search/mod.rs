//! Neural architecture search over MobileNetV4 UIB choices.
//!
//! * [`space`] — search spaces, sampling, mutation, crossover.
//! * [`strategy`] — random search, regularized evolution, NSGA-II (ask / tell).
//! * [`pareto`] — domination, non-dominated sorting, crowding, hypervolume.
//! * [`trials`] — the durable trial log.
//! * [`config`] — the `[search]` section.
//! * [`driver`] — coarse and fine stages, budgets, resume.
//! * [`report`] — tables, Pareto and hypervolume plots, README summary.

pub mod config;
pub mod driver;
pub mod pareto;
pub mod report;
pub mod space;
pub mod strategy;
pub mod trials;
