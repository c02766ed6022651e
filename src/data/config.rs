//! `[data]`: which dataset, the validation split, the subsets and the preprocessing.

use super::augment::{AugmentConfig, Augmenter};
use super::stats::NormStats;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// The largest input side an experiment may ask for.
pub const MAX_INPUT_SIZE: usize = 4096;

/// The datasets mnv4-lab reads, parsed once from `data.dataset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// Fashion-MNIST (idx files; looked up, see [`super::locate_fashion_mnist`]).
    FashionMnist,
    /// MNIST (idx files in `data.path`).
    Mnist,
    /// CIFAR-10 binary files in `data.path`.
    Cifar10,
    /// CIFAR-100 binary files in `data.path`.
    Cifar100,
    /// Image folders `data.path/train/<class>/` and `data.path/test/<class>/`.
    Folder,
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::Folder => "folder",
        })
    }
}

/// `[data]`: which dataset, the validation split, preprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `fashion-mnist` (default), `mnist`, `cifar10`, `cifar100` or `folder`.
    pub dataset: DatasetKind,
    /// Where the files are; default: looked up (for Fashion-MNIST: `data/fashion-mnist/`, then
    /// `/usr/share/datasets/fashion-mnist/`). For `folder`: `path/train/` and `path/test/`.
    pub path: Option<PathBuf>,
    /// Training images held out for validation (selection happens on these, never on test).
    pub val_size: usize,
    /// Seed of the train/validation split, kept apart from the run's seed so that runs with
    /// different seeds (and their teacher) share one split and no model trains on another's
    /// validation set.
    pub split_seed: u64,
    /// Use only the first N training images (after the validation split); 0 = all. For smoke runs.
    pub train_limit: usize,
    /// Use only the first N validation / test images; 0 = all.
    pub eval_limit: usize,
    /// Preprocessing and augmentation.
    pub augment: AugmentConfig,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: DatasetKind::FashionMnist,
            path: None,
            val_size: 5000,
            split_seed: 0,
            train_limit: 0,
            eval_limit: 0,
            augment: AugmentConfig::default(),
        }
    }
}

impl DataConfig {
    /// Checks what serde cannot: a dataset other than the default needs its path; the
    /// preprocessing must be buildable (channels 1 or 3, a positive input size up to
    /// [`MAX_INPUT_SIZE`], `mean` and `std` given together with one value or one per channel).
    pub fn check(&self) -> Result<()> {
        let a = &self.augment;
        if a.input_size > MAX_INPUT_SIZE {
            bail!(
                "data.augment.input_size = {} is larger than {MAX_INPUT_SIZE}",
                a.input_size
            );
        }
        let probe = NormStats::new(vec![0.5], vec![0.25])?;
        Augmenter::new(a, 1, 28, 28, Some(&probe)).context("in [data.augment]")?;
        let needs_path = !matches!(self.dataset, DatasetKind::FashionMnist);
        if needs_path && self.path.is_none() {
            bail!(
                "data.dataset = \"{}\" needs data.path (the folder that holds its files)",
                self.dataset
            );
        }
        Ok(())
    }
}
