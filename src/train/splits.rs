//! Turns an experiment's `[data]` section into train / validation / test loaders. Validation is
//! held out from the training set with `data.split_seed`; test is only for final reports.

use super::config::DataConfig;
use crate::data::mnist::LOCAL_FASHION_MNIST_DIR;
use crate::data::{
    download_fashion_mnist, load_cifar10, load_cifar100, load_fashion_mnist, load_image_folder,
    load_mnist, locate_fashion_mnist, split_dataset, AugmentConfig, Augmenter, DataLoader, Dataset,
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
        "fashion-mnist" => load_fashion_mnist(&fetch_fashion_mnist(cfg.path.as_deref())?)?,
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

/// Finds Fashion-MNIST; when it is nowhere, downloads it into `data/fashion-mnist/` and, if that
/// fails (no internet) on a Debian machine where we are root, installs `dataset-fashion-mnist`.
/// When every route fails the error says how to get the data.
pub fn fetch_fashion_mnist(configured: Option<&Path>) -> Result<PathBuf> {
    let missing = match locate_fashion_mnist(configured) {
        Ok(dir) => return Ok(dir),
        Err(e) => e,
    };
    tracing::warn!("Fashion-MNIST not found; downloading it into {LOCAL_FASHION_MNIST_DIR}/");
    let download = download_fashion_mnist(Path::new(LOCAL_FASHION_MNIST_DIR));
    if download.is_ok() {
        return Ok(locate_fashion_mnist(configured)?);
    }
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if is_root && Path::new("/usr/bin/apt-get").exists() {
        tracing::warn!("download failed; installing Debian's dataset-fashion-mnist with apt-get");
        let ok = std::process::Command::new("apt-get")
            .args(["install", "-y", "-q", "dataset-fashion-mnist"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Ok(locate_fashion_mnist(configured)?);
        }
    }
    Err(anyhow::Error::new(missing).context(format!(
        "Fashion-MNIST is not on this machine and could not be fetched ({})",
        download
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or("")
    )))
}

fn head(ds: Dataset, limit: usize) -> Dataset {
    if limit == 0 || limit >= ds.n {
        ds
    } else {
        ds.subset(&(0..limit).collect::<Vec<_>>())
    }
}

/// The loaders of an experiment: its `[data]` section, batch sizes and seed.
pub fn experiment_splits(exp: &super::config::Experiment) -> Result<Splits> {
    build_splits(
        &exp.data,
        exp.train.batch_size,
        exp.train.eval_batch_size,
        exp.seed,
    )
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
