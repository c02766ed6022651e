//! Datasets, splits, augmentation and batching for image classification and detection.
//!
//! * [`dataset`] — [`Dataset`]: u8 N×C×H×W images + u32 labels in memory.
//! * [`idx`] — MNIST-style idx files (raw or gzip, detected by magic bytes).
//! * [`config`] — the `[data]` section: [`DataConfig`], [`DatasetKind`].
//! * [`mnist`] — MNIST / Fashion-MNIST folders: [`locate_fashion_mnist`],
//!   [`load_fashion_mnist`], [`load_mnist`].
//! * [`cifar`] — CIFAR-10 / CIFAR-100 binary files.
//! * [`folder`] — one-subfolder-per-class JPEG/PNG image folders, alone or as train/test splits.
//! * [`split`] — seeded train/validation splits.
//! * [`stats`] — per-dataset normalization constants.
//! * [`augment`] — [`AugmentConfig`] and the seeded CPU [`Augmenter`].
//! * [`loader`] — [`DataLoader`]: epoch batches as candle tensors, prefetched on a thread.
//! * [`epoch`] — the epoch order and the producer thread both loaders share ([`EpochBatches`]).
//! * [`loaders`] — [`Splits`]: the train / validation / test loaders of a run.
//! * [`seed`] — seed derivation from (seed, epoch, index).
//! * [`yolo`] — the YOLO detection format (label files, dataset files) with located errors;
//!   [`synth_detect`] — the embedded default detection set made from Fashion-MNIST.
//! * Detection batches: [`detect_set`] — [`DetectSet`], one split in memory;
//!   [`detect_image`] — [`DetectImage`], [`PixelBox`]; [`mod@letterbox`] — the square network input;
//!   [`detect_augment`] — [`DetectAugment`], scale / translate / flip with box filtering;
//!   [`detect_loader`] — [`DetectLoader`], [`DetectBatch`]; `bilinear` — the sampling both use.
//! * [`error`] — [`DataError`], shared by all of the above.
//!
//! Typical use:
//! ```no_run
//! use mnv4_lab::data::*;
//! # fn main() -> Result<(), DataError> {
//! let dir = locate_fashion_mnist(None)?;
//! let (train, test) = load_fashion_mnist(&dir)?;
//! let (train, val) = split_dataset(&train, 5000, 0)?;
//! let cfg = AugmentConfig { input_size: 32, channels: 3, ..Default::default() };
//! let aug = Augmenter::for_dataset(&cfg, &train)?;
//! let loader = DataLoader::new(train, aug.clone(), LoaderConfig::train(128, 0))?;
//! for epoch in 0..2 {
//!     for batch in loader.epoch(epoch) {
//!         let batch = batch?; // images f32 [B,3,32,32], labels u32 [B], dataset indices
//! #       let _ = (batch.images, batch.labels, batch.indices);
//!     }
//! }
//! let _val = DataLoader::new(val, aug, LoaderConfig::eval(256))?;
//! # let _ = test;
//! # Ok(()) }
//! ```

pub mod augment;
mod bilinear;
pub mod cifar;
pub mod config;
pub mod dataset;
pub mod detect_augment;
pub mod detect_image;
pub mod detect_loader;
pub mod detect_section;
pub mod detect_set;
pub mod epoch;
pub mod error;
pub mod folder;
pub mod idx;
pub mod letterbox;
pub mod loader;
pub mod loaders;
pub mod mnist;
pub mod seed;
pub mod split;
pub mod stats;
pub mod synth_detect;
pub mod yolo;

#[cfg(test)]
pub(crate) mod testutil;

pub use augment::{AugmentConfig, AugmentParams, Augmenter, ResizeMode};
pub use cifar::{load_cifar10, load_cifar100, load_cifar_bin};
pub use config::{DataConfig, DatasetKind};
pub use dataset::Dataset;
pub use detect_augment::{DetectAugment, DetectWarp};
pub use detect_image::{DetectImage, PixelBox};
pub use detect_loader::{DetectBatch, DetectLoader, DetectLoaderConfig};
pub use detect_section::DetectDataSection;
pub use detect_set::{DetectSet, DetectSplit};
pub use epoch::{DeviceBatch, EpochBatches};
pub use error::DataError;
pub use folder::{load_image_file, load_image_folder, load_image_folder_splits};
pub use idx::{load_idx_pair, read_idx_images, read_idx_labels};
pub use letterbox::{letterbox, LetterboxFit};
pub use loader::{Batch, DataLoader, LoaderConfig};
pub use loaders::{build_splits, Splits};
pub use mnist::{load_fashion_mnist, load_mnist, locate_fashion_mnist, DEBIAN_FASHION_MNIST_DIR};
pub use seed::derive_seed;
pub use split::{split_dataset, train_val_split};
pub use stats::NormStats;
