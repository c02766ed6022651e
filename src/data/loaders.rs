//! A run's three loaders from its `[data]` section. Validation is held out from the training set
//! with `data.split_seed`; test is only for final reports. Nothing here fetches or installs data:
//! a missing dataset is an error that says how to get it (`mnv4-lab data fetch` does it).

use super::config::{DataConfig, DatasetKind};
use super::{
    load_cifar10, load_cifar100, load_fashion_mnist, load_image_folder_splits, load_mnist,
    locate_fashion_mnist, split_dataset, Augmenter, DataLoader, Dataset, LoaderConfig,
};
use anyhow::{Context, Result};
use std::path::PathBuf;

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

impl Splits {
    /// The same splits with the training loader's shuffling and augmentation seeded by `seed`.
    pub fn with_train_seed(&self, seed: u64) -> Splits {
        Splits {
            train: self.train.clone().with_seed(seed),
            val: self.val.clone(),
            test: self.test.clone(),
            ..*self
        }
    }
}

fn require_path(cfg: &DataConfig) -> Result<PathBuf> {
    cfg.path
        .clone()
        .with_context(|| format!("data.path must name the {} folder", cfg.dataset))
}

/// Loads (train, test) for the configured dataset.
pub fn load_train_test(cfg: &DataConfig) -> Result<(Dataset, Dataset)> {
    let aug = &cfg.augment;
    Ok(match cfg.dataset {
        DatasetKind::FashionMnist => {
            load_fashion_mnist(&locate_fashion_mnist(cfg.path.as_deref())?)?
        }
        DatasetKind::Mnist => load_mnist(&require_path(cfg)?)?,
        DatasetKind::Cifar10 => load_cifar10(&require_path(cfg)?)?,
        DatasetKind::Cifar100 => load_cifar100(&require_path(cfg)?)?,
        DatasetKind::Folder => {
            let size = aug.input_size;
            load_image_folder_splits(&require_path(cfg)?, aug.channels, size, size)?
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
    let aug = &cfg.augment;
    let augmenter = Augmenter::for_dataset(aug, &train)?;
    let eval_aug = Augmenter::for_dataset(aug, &val)?;
    let test_aug = Augmenter::for_dataset(aug, &test)?;
    Ok(Splits {
        train: DataLoader::new(train, augmenter, LoaderConfig::train(batch_size, seed))?,
        val: DataLoader::new(val, eval_aug, LoaderConfig::eval(eval_batch_size))?,
        test: DataLoader::new(test, test_aug, LoaderConfig::eval(eval_batch_size))?,
        num_classes: train_full.num_classes,
        channels: aug.channels,
        input_size: aug.input_size,
    })
}
