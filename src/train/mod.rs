//! Training: the experiment file, data splits, optimizers, schedule, loss, checkpoints and the
//! loop shared by `train`, `distill` and the search.

pub mod checkpoint;
pub mod config;
pub mod loss;
pub mod optim;
pub mod schedule;
pub mod splits;
pub mod trainer;
