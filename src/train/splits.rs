//! Turns an experiment's `[data]` section into train / validation / test loaders. Validation is
//! held out from the training set with the experiment's seed; test is only for final reports.

use super::config::DataConfig;
use crate::data::{
    load_cifar10, load_cifar100, load_fashion_mnist, load_image_folder, load_mnist,
    locate_fashion_mnist, split_dataset, AugmentConfig, Augmenter, DataLoader, Dataset,
    LoaderConfig,
};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The three loaders of a run.
pub struct Splits {
    pub train: DataLoader,
    pub val: DataLoader,
    pub test: DataLoader,
    pub num_classes: usize,
    /// The model's input channels.
    pub channels: usize,
    pub input_size: usize,
}

fn require_dir(p: &Option<PathBuf>, what: &str) -> Result<PathBuf> {
    p.clone()
        .with_context(|| format!("data.path must name the {what} folder"))
}

/// Loads (train, test) for the configured dataset.
pub fn load_train_test(cfg: &DataConfig) -> Result<(Dataset, Dataset)> {
    let aug = &cfg.augment;
    Ok(match cfg.dataset.as_str() {
        "fashion-mnist" => load_fashion_mnist(&locate_fashion_mnist(cfg.path.as_deref())?)?,
        "mnist" => load_mnist(&require_dir(&cfg.path, "MNIST")?)?,
        "cifar10" => load_cifar10(&require_dir(&cfg.path, "CIFAR-10")?)?,
        "cifar100" => load_cifar100(&require_dir(&cfg.path, "CIFAR-100")?)?,
        _ => {
            let root = require_dir(&cfg.path, "image")?;
            let load = |sub: &str| -> Result<Dataset> {
                let dir: &Path = &root.join(sub);
                Ok(load_image_folder(
                    dir,
                    aug.channels,
                    aug.input_size,
                    aug.input_size,
                )?)
            };
            (load("train")?, load("test")?)
        }
    })
}

fn head(ds: Dataset, limit: usize) -> Dataset {
    if limit == 0 || limit >= ds.n {
        ds
    } else {
        ds.subset(&(0..limit).collect::<Vec<_>>())
    }
}

/// Builds the loaders. `data.split_seed` drives the split; `seed` the shuffling and augmentation.
pub fn build_splits(
    cfg: &DataConfig,
    batch_size: usize,
    eval_batch_size: usize,
    seed: u64,
) -> Result<Splits> {
    let (train_full, test) = load_train_test(cfg)?;
    let (train, val) = split_dataset(&train_full, cfg.val_size, cfg.split_seed)
        .with_context(|| format!("data.val_size = {}", cfg.val_size))?;
    let train = head(train, cfg.train_limit);
    let val = head(val, cfg.eval_limit);
    let test = head(test, cfg.eval_limit);
    anyhow::ensure!(
        train.n >= batch_size,
        "the training set has {} images, fewer than one batch of {batch_size}",
        train.n
    );
    let aug: &AugmentConfig = &cfg.augment;
    let num_classes = train_full.num_classes;
    let augmenter = Augmenter::for_dataset(aug, &train)?;
    let eval_aug = Augmenter::for_dataset(aug, &val)?;
    let test_aug = Augmenter::for_dataset(aug, &test)?;
    Ok(Splits {
        train: DataLoader::new(train, augmenter, LoaderConfig::train(batch_size, seed))?,
        val: DataLoader::new(val, eval_aug, LoaderConfig::eval(eval_batch_size))?,
        test: DataLoader::new(test, test_aug, LoaderConfig::eval(eval_batch_size))?,
        num_classes,
        channels: aug.channels,
        input_size: aug.input_size,
    })
}
