//! Neural architecture search over MobileNetV4 UIB choices.
//!
//! * [`config`] — the `[search]` section; [`objective`] — what a front ranks on.
//! * [`space`] — search spaces, sampling, mutation, crossover.
//! * [`strategy`] — random search, regularized evolution, NSGA-II (ask / tell).
//! * [`pareto`] — domination, non-dominated sorting, crowding, hypervolume.
//! * [`study`] — a study's settings and its recorded state (`search.json`).
//! * [`trials`] — what a trial records; [`store`] — where trials live (JSONL, SQLite,
//!   PostgreSQL) and the work queue of workers.
//! * [`evaluator`] — one candidate: cost, budgets, latency, training; [`latency`] — latency
//!   measured in pairs with a reference network.
//! * [`stage`] — one stage: ask, dedupe, replay or evaluate, log, tell.
//! * [`driver`] — the stages in order, halving, references, resume.
//! * [`generations`] — `search --workers`: a generation at a time through the work queue;
//!   [`pool`] — local worker processes.
//! * [`worker`] — `mnv4-lab worker`: claim, train, record, heartbeats.
//! * [`report`] — tables, Pareto and hypervolume plots, README summary; [`noise`] — the
//!   noise floor from repeated front members.
//! * [`retrain`] — the front and the presets retrained at the full budget; [`reuse`] — finished
//!   runs it takes as its own; [`curve`] — a retrained model against the preset curve at equal
//!   MACs or latency.
//! * [`latency_rank`] — how candle, the ONNX runtime, MACs and the rooflines rank a space.

pub mod config;
pub mod curve;
pub mod detection;
pub mod driver;
pub mod evaluator;
pub mod generations;
pub mod latency;
pub mod latency_rank;
pub mod noise;
pub mod objective;
pub mod pareto;
pub mod pool;
pub mod report;
pub mod retrain;
pub mod reuse;
pub mod space;
pub mod stage;
pub mod store;
pub mod strategy;
pub mod study;
pub mod trials;
pub mod worker;
