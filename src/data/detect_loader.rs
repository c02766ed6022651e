//! Detection batches: letterboxed (and, for training, augmented) images as one tensor, with each
//! image's objects in pixels of the network input, prepared on a background thread.
//!
//! * Order: shuffled with `derive_seed(&[seed, epoch])` when `shuffle`, else `0..n`.
//! * Sample `i` of `epoch` is augmented with `StdRng` seeded from `derive_seed(&[seed, epoch, i])`,
//!   so a batch does not depend on batch size or threads, and a resumed epoch sees the same images.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;

use super::detect_augment::DetectAugment;
use super::detect_image::{DetectImage, PixelBox};
use super::detect_set::DetectSet;
use super::epoch::{batch_count, epoch_order, spawn_epoch, DeviceBatch, EpochBatches};
use super::error::DataError;
use super::letterbox::letterbox;
use super::seed::derive_seed;

/// Batching and augmentation options.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectLoaderConfig {
    /// Side of the square network input, a multiple of 32.
    pub imgsz: usize,
    /// Images per batch (> 0).
    pub batch_size: usize,
    /// Shuffle the order every epoch.
    pub shuffle: bool,
    /// Training augmentation after the letterbox; `None`: letterbox only.
    pub augment: Option<DetectAugment>,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Base seed for shuffling and augmentation.
    pub seed: u64,
    /// Batches prepared ahead of the consumer (clamped to 1..=8).
    pub prefetch: usize,
}

impl DetectLoaderConfig {
    /// Training: shuffled, default augmentation, ragged last batch dropped, prefetch 3.
    pub fn train(imgsz: usize, batch_size: usize, seed: u64) -> Self {
        DetectLoaderConfig {
            imgsz,
            batch_size,
            shuffle: true,
            augment: Some(DetectAugment::default()),
            drop_last: true,
            seed,
            prefetch: 3,
        }
    }

    /// Validation: in order, letterbox only, every image, prefetch 3.
    pub fn val(imgsz: usize, batch_size: usize) -> Self {
        DetectLoaderConfig {
            imgsz,
            batch_size,
            shuffle: false,
            augment: None,
            drop_last: false,
            seed: 0,
            prefetch: 3,
        }
    }
}

/// One batch: images `f32 [B, 3, S, S]` in `[0, 1]`, each image's objects (class and
/// `[x1, y1, x2, y2]` in pixels of the `S × S` input), and each image's index in the set.
#[derive(Debug, Clone)]
pub struct DetectBatch {
    pub images: Tensor,
    pub objects: Vec<Vec<PixelBox>>,
    pub indices: Vec<usize>,
}

impl DeviceBatch for DetectBatch {
    fn to_device(self, device: &Device) -> Result<Self, DataError> {
        Ok(DetectBatch {
            images: self.images.to_device(device)?,
            ..self
        })
    }
}

/// A detection split + options; call [`DetectLoader::epoch`] per epoch.
#[derive(Debug, Clone)]
pub struct DetectLoader {
    set: Arc<DetectSet>,
    cfg: DetectLoaderConfig,
    device: Device,
}

impl DetectLoader {
    /// Checks the input size (a positive multiple of 32), batch size and augmentation.
    pub fn new(set: impl Into<Arc<DetectSet>>, cfg: DetectLoaderConfig) -> Result<Self, DataError> {
        if cfg.imgsz == 0 || !cfg.imgsz.is_multiple_of(32) {
            return Err(DataError::Invalid(format!(
                "imgsz {} must be a positive multiple of 32",
                cfg.imgsz
            )));
        }
        if cfg.batch_size == 0 {
            return Err(DataError::Invalid("batch_size must be positive".into()));
        }
        if let Some(a) = &cfg.augment {
            a.check()?;
        }
        Ok(DetectLoader {
            set: set.into(),
            cfg,
            device: Device::Cpu,
        })
    }

    /// Puts the yielded images on `device` (default CPU; batches are built on CPU and moved).
    pub fn with_device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// The split.
    pub fn set(&self) -> &DetectSet {
        &self.set
    }

    /// The options.
    pub fn config(&self) -> &DetectLoaderConfig {
        &self.cfg
    }

    /// Batches per epoch.
    pub fn len(&self) -> usize {
        batch_count(self.set.len(), self.cfg.batch_size, self.cfg.drop_last)
    }

    /// True when an epoch yields no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image order of `epoch` (set indices; whole batches only when `drop_last`).
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let c = &self.cfg;
        epoch_order(
            self.set.len(),
            c.batch_size,
            c.shuffle,
            c.drop_last,
            (c.seed, epoch),
        )
    }

    /// Image `index` as the network sees it in `epoch`: letterboxed, then augmented if training.
    pub fn view(&self, index: usize, epoch: u64) -> DetectImage {
        let img = letterbox(self.set.sample(index), self.cfg.imgsz);
        match &self.cfg.augment {
            None => img,
            Some(aug) => {
                let seed = derive_seed(&[self.cfg.seed, epoch, index as u64]);
                let warp = aug.draw(img.width, img.height, &mut StdRng::seed_from_u64(seed));
                warp.apply(&img)
            }
        }
    }

    /// Starts producing the batches of `epoch` on a background thread.
    pub fn epoch(&self, epoch: u64) -> EpochBatches<DetectBatch> {
        let this = self.clone();
        spawn_epoch(
            format!("detect-loader-e{epoch}"),
            self.epoch_order(epoch),
            (self.cfg.batch_size, self.cfg.prefetch),
            self.device.clone(),
            move |chunk| this.build_batch(chunk, epoch),
        )
    }

    /// The views of images `indices` as one CPU batch.
    fn build_batch(&self, indices: &[usize], epoch: u64) -> Result<DetectBatch, DataError> {
        let s = self.cfg.imgsz;
        let plane = s * s;
        let mut images = vec![0f32; indices.len() * 3 * plane];
        let objects = images
            .par_chunks_mut(3 * plane)
            .zip(indices.par_iter())
            .map(|(out, &i)| {
                let view = self.view(i, epoch);
                view.write_planar(out);
                view.objects
            })
            .collect();
        Ok(DetectBatch {
            images: Tensor::from_vec(images, (indices.len(), 3, s, s), &Device::Cpu)?,
            objects,
            indices: indices.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::detect_set::DetectSplit;
    use crate::data::testutil::{synthetic_detect_set, TempDir};

    /// The training split of a generated default set of `n` images.
    fn set(n: usize) -> Arc<DetectSet> {
        let tmp = TempDir::new("detect-loader");
        let yaml = synthetic_detect_set(tmp.path(), n, 2);
        Arc::new(DetectSet::open(&yaml, DetectSplit::Train).unwrap())
    }

    fn loader(set: &Arc<DetectSet>, cfg: DetectLoaderConfig) -> DetectLoader {
        DetectLoader::new(Arc::clone(set), cfg).unwrap()
    }

    /// One batch: its dims, and per image (index, pixel bits, objects).
    type Flat = (Vec<usize>, Vec<(usize, Vec<u32>, Vec<PixelBox>)>);

    fn collect(l: &DetectLoader, epoch: u64) -> Vec<Flat> {
        l.epoch(epoch)
            .map(|b| {
                let b = b.unwrap();
                let x = b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let bits: Vec<u32> = x.iter().map(|v| v.to_bits()).collect();
                let n = bits.len() / b.indices.len();
                let images = b.indices.iter().zip(bits.chunks(n)).zip(b.objects);
                let images = images.map(|((&i, px), o)| (i, px.to_vec(), o)).collect();
                (b.images.dims().to_vec(), images)
            })
            .collect()
    }

    /// A view's pixels as a batch holds them: planar RGB / 255, as bits.
    fn planar(view: &DetectImage) -> Vec<u32> {
        let plane = view.width * view.height;
        (0..3 * plane)
            .map(|k| (view.rgb[(k % plane) * 3 + k / plane] as f32 / 255.0).to_bits())
            .collect()
    }

    /// Every image of every batch is the loader's view of it in that epoch.
    fn batches_are_views(l: &DetectLoader, epoch: u64, batches: &[Flat]) {
        for (i, px, objects) in batches.iter().flat_map(|b| &b.1) {
            let view = l.view(*i, epoch);
            assert!(
                planar(&view) == *px,
                "image {i}: pixels differ from its view"
            );
            assert_eq!(objects, &view.objects, "image {i}");
        }
    }

    fn indices(batches: &[Flat]) -> Vec<usize> {
        batches
            .iter()
            .flat_map(|b| b.1.iter().map(|x| x.0))
            .collect()
    }

    #[test]
    fn one_seed_and_epoch_give_bit_identical_batches() {
        let set = set(10);
        let run =
            |seed, epoch| collect(&loader(&set, DetectLoaderConfig::train(96, 4, seed)), epoch);
        let a = run(7, 3);
        assert_eq!(
            a.len(),
            2,
            "10 images in batches of 4, the ragged one dropped"
        );
        assert!(a == run(7, 3), "seed 7 epoch 3 differs between two runs");
        assert!(a != run(7, 4), "epochs 3 and 4 give the same batches");
        assert!(a != run(8, 3), "seeds 7 and 8 give the same batches");
        // An image's view depends on (seed, epoch, index), not on batching.
        let cfg = DetectLoaderConfig {
            batch_size: 3,
            prefetch: 1,
            ..DetectLoaderConfig::train(96, 4, 7)
        };
        let l = loader(&set, cfg);
        batches_are_views(&l, 3, &collect(&l, 3));
        batches_are_views(&l, 3, &a);
    }

    #[test]
    fn training_batches_are_shuffled_and_keep_boxes_inside_the_input() {
        let set = set(12);
        let l = loader(&set, DetectLoaderConfig::train(128, 4, 1));
        assert_eq!(l.len(), 3);
        let batches = collect(&l, 0);
        let mut seen = indices(&batches);
        assert_eq!(seen, l.epoch_order(0));
        assert_ne!(
            seen,
            (0..12).collect::<Vec<_>>(),
            "training order is shuffled"
        );
        seen.sort_unstable();
        assert_eq!(seen, (0..12).collect::<Vec<_>>());
        for (dims, images) in &batches {
            assert_eq!(dims, &[4, 3, 128, 128]);
            for (_, px, objects) in images {
                assert!(px.iter().all(|&b| (0.0..=1.0).contains(&f32::from_bits(b))));
                for o in objects {
                    let [x1, y1, x2, y2] = o.xyxy;
                    assert!(
                        0.0 <= x1 && x2 <= 128.0 && 0.0 <= y1 && y2 <= 128.0,
                        "{o:?}"
                    );
                    assert!(x2 - x1 > 2.0 && y2 - y1 > 2.0, "{o:?}");
                }
            }
        }
        batches_are_views(&l, 0, &batches);
    }

    #[test]
    fn validation_is_in_order_keeps_the_last_batch_and_is_only_the_letterbox() {
        let set = set(10);
        let l = loader(&set, DetectLoaderConfig::val(96, 4));
        let batches = collect(&l, 0);
        let sizes: Vec<usize> = batches.iter().map(|b| b.0[0]).collect();
        assert_eq!(sizes, [4, 4, 2]);
        assert_eq!(indices(&batches), (0..10).collect::<Vec<_>>());
        for i in 0..set.len() {
            let same = &l.view(i, 9) == set.sample(i);
            assert!(same, "image {i}: 96×96 at 96 is not the identity");
        }
        batches_are_views(&l, 0, &batches);
        assert!(
            collect(&l, 0) == collect(&l, 5),
            "validation depends on the epoch"
        );
    }

    #[test]
    fn without_scale_translation_or_flip_training_sees_the_validation_view() {
        let set = set(6);
        let still = DetectLoaderConfig {
            augment: Some(DetectAugment {
                scale: 0.0,
                translate: 0.0,
                fliplr: 0.0,
            }),
            ..DetectLoaderConfig::train(128, 2, 3)
        };
        let (train, val) = (
            loader(&set, still),
            loader(&set, DetectLoaderConfig::val(128, 2)),
        );
        for i in 0..set.len() {
            for epoch in [0, 5] {
                let same = train.view(i, epoch) == val.view(i, 0);
                assert!(same, "image {i}, epoch {epoch}");
            }
        }
        batches_are_views(&val, 1, &collect(&train, 1));
    }

    #[test]
    fn bad_options_are_refused() {
        let set = set(2);
        let bad = |cfg| {
            DetectLoader::new(Arc::clone(&set), cfg)
                .unwrap_err()
                .to_string()
        };
        let e = bad(DetectLoaderConfig::val(100, 2));
        assert!(
            e.contains("imgsz 100 must be a positive multiple of 32"),
            "{e}"
        );
        assert!(bad(DetectLoaderConfig::val(0, 2)).contains("multiple of 32"));
        assert!(bad(DetectLoaderConfig::val(64, 0)).contains("batch_size"));
        let wild = DetectLoaderConfig {
            augment: Some(DetectAugment {
                scale: 1.5,
                ..Default::default()
            }),
            ..DetectLoaderConfig::train(64, 2, 0)
        };
        assert!(bad(wild).contains("scale must be in 0..1"));
    }
}
