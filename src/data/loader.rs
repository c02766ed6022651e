//! Epoch batch iterator yielding candle tensors, prepared on a background thread.
//!
//! * Order: shuffled with `StdRng` seeded from `derive_seed(&[seed, epoch])` (train) or
//!   `0..n` (eval).
//! * Augmentation of sample `i` uses `StdRng` seeded from `derive_seed(&[seed, epoch, i])`
//!   (`i` = index in the dataset), so results do not depend on batch size, thread count or
//!   scheduling: the same seed gives identical batches run after run.
//! * A producer thread ([`super::epoch`]) fills a bounded channel (depth `prefetch`) while the
//!   consumer trains; samples within a batch are processed in parallel with rayon.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;

use super::augment::Augmenter;
use super::dataset::Dataset;
use super::epoch::{batch_count, epoch_order, spawn_epoch, DeviceBatch, EpochBatches};
use super::error::DataError;
use super::seed::derive_seed;

/// Batching options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch (> 0).
    pub batch_size: usize,
    /// Shuffle the order every epoch.
    pub shuffle: bool,
    /// Apply the random crop/flip (otherwise only resize, channels, normalization).
    pub augment: bool,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Base seed for shuffling and augmentation.
    pub seed: u64,
    /// Batches prepared ahead of the consumer (channel depth, clamped to 1..=8).
    pub prefetch: usize,
}

impl LoaderConfig {
    /// Training: shuffle, augment, drop the ragged last batch, prefetch 3.
    pub fn train(batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: true,
            augment: true,
            drop_last: true,
            seed,
            prefetch: 3,
        }
    }

    /// Evaluation: dataset order, no augmentation, keep every sample, prefetch 3.
    pub fn eval(batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: false,
            augment: false,
            drop_last: false,
            seed: 0,
            prefetch: 3,
        }
    }
}

/// One batch: images `f32 [B, C, S, S]`, labels `u32 [B]`, and the dataset index of each sample
/// (what per-sample caches, such as the teacher's outputs, are keyed by).
#[derive(Debug, Clone)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    pub indices: Vec<usize>,
}

/// A dataset + preprocessing + batching options; call [`DataLoader::epoch`] per epoch.
#[derive(Debug, Clone)]
pub struct DataLoader {
    dataset: Arc<Dataset>,
    augmenter: Arc<Augmenter>,
    cfg: LoaderConfig,
    device: Device,
}

impl DataLoader {
    /// Checks that the augmenter was built for the dataset's geometry and the batch size is positive.
    pub fn new(
        dataset: impl Into<Arc<Dataset>>,
        augmenter: Augmenter,
        cfg: LoaderConfig,
    ) -> Result<Self, DataError> {
        let dataset = dataset.into();
        if cfg.batch_size == 0 {
            return Err(DataError::Invalid("batch_size must be positive".into()));
        }
        let geo = (dataset.channels, dataset.height, dataset.width);
        if augmenter.source_shape() != geo {
            return Err(DataError::Invalid(format!(
                "augmenter built for {:?} images but dataset {} holds {geo:?}",
                augmenter.source_shape(),
                dataset.name
            )));
        }
        Ok(DataLoader {
            dataset,
            augmenter: Arc::new(augmenter),
            cfg,
            device: Device::Cpu,
        })
    }

    /// Puts the yielded tensors on `device` (default CPU; batches are built on CPU and moved).
    pub fn with_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// The same loader with another base seed for shuffling and augmentation.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.cfg.seed = seed;
        self
    }

    /// The dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The preprocessing pipeline.
    pub fn augmenter(&self) -> &Augmenter {
        &self.augmenter
    }

    /// The batching options.
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        batch_count(self.dataset.n, self.cfg.batch_size, self.cfg.drop_last)
    }

    /// True when an epoch yields no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample order of `epoch` (dataset indices; truncated to whole batches when `drop_last`).
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let c = &self.cfg;
        epoch_order(
            self.dataset.n,
            c.batch_size,
            c.shuffle,
            c.drop_last,
            (c.seed, epoch),
        )
    }

    /// Starts producing the batches of `epoch` on a background thread.
    pub fn epoch(&self, epoch: u64) -> EpochBatches<Batch> {
        let ds = Arc::clone(&self.dataset);
        let aug = Arc::clone(&self.augmenter);
        let (augment, seed) = (self.cfg.augment, self.cfg.seed);
        spawn_epoch(
            format!("data-loader-e{epoch}"),
            self.epoch_order(epoch),
            (self.cfg.batch_size, self.cfg.prefetch),
            self.device.clone(),
            move |chunk| build_batch(&ds, &aug, chunk, seed, epoch, augment),
        )
    }
}

/// Preprocesses the samples `indices` into CPU tensors.
fn build_batch(
    ds: &Dataset,
    aug: &Augmenter,
    indices: &[usize],
    seed: u64,
    epoch: u64,
    augment: bool,
) -> Result<Batch, DataError> {
    let (c, h, w) = aug.output_shape();
    let len = aug.output_len();
    let mut images = vec![0f32; indices.len() * len];
    images
        .par_chunks_mut(len)
        .zip(indices.par_iter())
        .for_each(|(out, &i)| {
            if augment {
                let mut rng = StdRng::seed_from_u64(derive_seed(&[seed, epoch, i as u64]));
                aug.apply_train(ds.image(i), &mut rng, out);
            } else {
                aug.apply_eval(ds.image(i), out);
            }
        });
    let labels: Vec<u32> = indices.iter().map(|&i| ds.labels[i]).collect();
    let b = indices.len();
    Ok(Batch {
        images: Tensor::from_vec(images, (b, c, h, w), &Device::Cpu)?,
        labels: Tensor::from_vec(labels, b, &Device::Cpu)?,
        indices: indices.to_vec(),
    })
}

impl DeviceBatch for Batch {
    fn to_device(self, device: &Device) -> Result<Self, DataError> {
        Ok(Batch {
            images: self.images.to_device(device)?,
            labels: self.labels.to_device(device)?,
            indices: self.indices,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::augment::AugmentConfig;

    /// `n` samples of 1×6×6; sample `i` has label `i` and pixels derived from `i`.
    fn indexed(n: usize) -> Dataset {
        let images = (0..n * 36).map(|p| ((p / 36) * 5 + p % 36) as u8).collect();
        Dataset::new(
            "indexed/train",
            images,
            (0..n as u32).collect(),
            1,
            6,
            6,
            n,
            vec![],
        )
        .unwrap()
    }

    fn loader(ds: &Dataset, cfg: LoaderConfig) -> DataLoader {
        let aug_cfg = AugmentConfig {
            input_size: 8,
            channels: 3,
            pad: 2,
            ..AugmentConfig::default()
        };
        let aug = Augmenter::for_dataset(&aug_cfg, ds).unwrap();
        DataLoader::new(ds.clone(), aug, cfg).unwrap()
    }

    fn collect(l: &DataLoader, epoch: u64) -> Vec<(Vec<f32>, Vec<u32>, Vec<usize>)> {
        l.epoch(epoch)
            .map(|b| {
                let Batch {
                    images: x,
                    labels: y,
                    ..
                } = b.unwrap();
                let dims = x.dims().to_vec();
                (
                    x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    y.to_vec1::<u32>().unwrap(),
                    dims,
                )
            })
            .collect()
    }

    #[test]
    fn batches_carry_their_sample_indices() {
        let ds = indexed(37);
        let l = loader(&ds, LoaderConfig::train(5, 9));
        let mut seen = Vec::new();
        for b in l.epoch(2) {
            let b = b.unwrap();
            let want: Vec<u32> = b.indices.iter().map(|&i| ds.labels[i]).collect();
            assert_eq!(b.labels.to_vec1::<u32>().unwrap(), want);
            seen.extend(b.indices);
        }
        assert_eq!(seen, l.epoch_order(2));
    }

    #[test]
    fn every_sample_once_per_epoch() {
        let ds = indexed(37);
        let mut cfg = LoaderConfig::train(8, 42);
        cfg.drop_last = false;
        let l = loader(&ds, cfg.clone());
        assert_eq!(l.len(), 5);
        let batches = collect(&l, 0);
        assert_eq!(batches.len(), 5);
        assert_eq!(batches[0].2, vec![8, 3, 8, 8]);
        assert_eq!(batches[4].2, vec![5, 3, 8, 8]);
        let mut seen: Vec<u32> = batches.iter().flat_map(|b| b.1.clone()).collect();
        assert_ne!(
            seen,
            (0..37).collect::<Vec<_>>(),
            "train order must be shuffled"
        );
        seen.sort_unstable();
        assert_eq!(seen, (0..37).collect::<Vec<_>>());
        // drop_last: 4 full batches of distinct samples.
        cfg.drop_last = true;
        let l = loader(&ds, cfg);
        let batches = collect(&l, 1);
        assert_eq!(batches.len(), 4);
        let mut seen: Vec<u32> = batches.iter().flat_map(|b| b.1.clone()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 32);
    }

    #[test]
    fn same_seed_same_batches() {
        let ds = indexed(20);
        let a = collect(&loader(&ds, LoaderConfig::train(6, 9)), 3);
        let b = collect(&loader(&ds, LoaderConfig::train(6, 9)), 3);
        assert_eq!(a, b);
        let other_epoch = collect(&loader(&ds, LoaderConfig::train(6, 9)), 4);
        assert_ne!(a, other_epoch);
        let other_seed = collect(&loader(&ds, LoaderConfig::train(6, 10)), 3);
        assert_ne!(a, other_seed);
        let reseeded = collect(&loader(&ds, LoaderConfig::train(6, 9)).with_seed(10), 3);
        assert_eq!(reseeded, other_seed);
    }

    #[test]
    fn augmentation_independent_of_batching() {
        let ds = indexed(20);
        let mut c1 = LoaderConfig::train(3, 5);
        c1.drop_last = false;
        let mut c2 = c1.clone();
        c2.batch_size = 7;
        c2.prefetch = 1;
        let flat = |v: Vec<(Vec<f32>, Vec<u32>, Vec<usize>)>| {
            v.into_iter().fold((vec![], vec![]), |(mut x, mut y), b| {
                x.extend(b.0);
                y.extend(b.1);
                (x, y)
            })
        };
        assert_eq!(
            flat(collect(&loader(&ds, c1), 2)),
            flat(collect(&loader(&ds, c2), 2))
        );
    }

    #[test]
    fn eval_mode_is_ordered_and_plain() {
        let ds = indexed(10);
        let l = loader(&ds, LoaderConfig::eval(4));
        let batches = collect(&l, 0);
        assert_eq!(batches.len(), 3);
        let labels: Vec<u32> = batches.iter().flat_map(|b| b.1.clone()).collect();
        assert_eq!(labels, (0..10).collect::<Vec<_>>());
        // Eval output equals the augmenter's eval transform, and does not depend on the epoch.
        let mut want = vec![0.0; l.augmenter().output_len()];
        l.augmenter().apply_eval(ds.image(5), &mut want);
        let n = want.len();
        assert_eq!(&batches[1].0[n..2 * n], &want[..]);
        assert_eq!(collect(&l, 0), collect(&l, 7));
    }

    #[test]
    fn early_drop_stops_producer_and_bad_config_errors() {
        let ds = indexed(50);
        let l = loader(&ds, LoaderConfig::train(2, 1));
        let mut it = l.epoch(0);
        assert!(it.next().unwrap().is_ok());
        drop(it); // must not hang
        let aug = Augmenter::for_dataset(&AugmentConfig::default(), &ds).unwrap();
        assert!(DataLoader::new(ds.clone(), aug.clone(), LoaderConfig::train(0, 1)).is_err());
        let other = Dataset::new("x", vec![0; 9], vec![0], 1, 3, 3, 1, vec![]).unwrap();
        assert!(DataLoader::new(other, aug, LoaderConfig::train(1, 1)).is_err());
    }
}
