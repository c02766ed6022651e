//! Training: the recipe, optimizers, schedule, loss, checkpoints, run folders and the loop shared
//! by `train`, `distill` and the search. The trainer takes a [`trainer::TrainJob`]; it knows
//! nothing of experiments, teachers or searches.
//!
//! * [`recipe`] — `[train]`: [`recipe::TrainRecipe`].
//! * [`trainer`] — [`trainer::train_network`]: one run, resumable, tested once at the end.
//! * [`epoch`] — one epoch of steps.
//! * [`objective`] — the [`objective::BatchLoss`] seam and plain cross-entropy.
//! * [`evaluate`] — loss and top-k of a model on a loader.
//! * [`run_dir`] — the run folder and `[output]`.
//! * [`history`] — the metrics table and learning curves.
//! * [`checkpoint`] — weights, optimizer state and their sidecar.
//! * [`optim`], [`schedule`], [`loss`], [`ema`] — the pieces of a step.
//! * [`detector`] — the same for YOLO11 detectors: job, loop, COCO mAP, checkpoints.

pub mod checkpoint;
pub mod detector;
pub mod ema;
pub mod epoch;
pub mod evaluate;
pub mod history;
pub mod loss;
pub mod objective;
pub mod optim;
pub mod recipe;
pub mod run_dir;
pub mod schedule;
pub mod trainer;
