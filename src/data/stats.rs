//! Per-dataset normalization constants (pixel values scaled to `[0, 1]`).

use super::dataset::Dataset;
use super::error::DataError;

/// Rec. 601 luma weights used for RGB → 1 channel.
pub const LUMA_WEIGHTS: [f32; 3] = [0.299, 0.587, 0.114];

/// Fashion-MNIST train-set mean (1 channel).
pub const FASHION_MNIST_MEAN: [f32; 1] = [0.2860];
/// Fashion-MNIST train-set std (1 channel).
pub const FASHION_MNIST_STD: [f32; 1] = [0.3530];
/// MNIST train-set mean (1 channel).
pub const MNIST_MEAN: [f32; 1] = [0.1307];
/// MNIST train-set std (1 channel).
pub const MNIST_STD: [f32; 1] = [0.3081];
/// CIFAR-10 train-set per-channel mean (RGB).
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// CIFAR-10 train-set per-channel std (RGB, true pixel std).
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];
/// CIFAR-100 train-set per-channel mean (RGB).
pub const CIFAR100_MEAN: [f32; 3] = [0.5071, 0.4865, 0.4409];
/// CIFAR-100 train-set per-channel std (RGB).
pub const CIFAR100_STD: [f32; 3] = [0.2673, 0.2564, 0.2762];
/// ImageNet per-channel mean (RGB), a sensible default for image folders.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet per-channel std (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Per-channel mean and standard deviation, in `[0, 1]` pixel units.
#[derive(Debug, Clone, PartialEq)]
pub struct NormStats {
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Standard deviation per channel (all > 0).
    pub std: Vec<f32>,
}

impl NormStats {
    /// Builds stats, checking equal lengths and positive stds.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self, DataError> {
        if mean.len() != std.len() || mean.is_empty() {
            return Err(DataError::Invalid(format!(
                "normalization mean has {} values and std {}",
                mean.len(),
                std.len()
            )));
        }
        if std.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
            return Err(DataError::Invalid(format!(
                "normalization std must be positive, got {std:?}"
            )));
        }
        Ok(NormStats { mean, std })
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Known constants for a dataset family: the part of `name` before `/`, e.g.
    /// `"fashion-mnist/train"` → Fashion-MNIST. Knows fashion-mnist, mnist, cifar10,
    /// cifar100 and imagenet (with or without `-`/`_`, any case).
    pub fn for_dataset(name: &str) -> Option<NormStats> {
        let family: String = name
            .split('/')
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        let (m, s): (&[f32], &[f32]) = match family.as_str() {
            "fashionmnist" | "fmnist" => (&FASHION_MNIST_MEAN, &FASHION_MNIST_STD),
            "mnist" => (&MNIST_MEAN, &MNIST_STD),
            "cifar10" => (&CIFAR10_MEAN, &CIFAR10_STD),
            "cifar100" => (&CIFAR100_MEAN, &CIFAR100_STD),
            "imagenet" => (&IMAGENET_MEAN, &IMAGENET_STD),
            _ => return None,
        };
        Some(NormStats {
            mean: m.to_vec(),
            std: s.to_vec(),
        })
    }

    /// Measures per-channel mean and std of a dataset (population std, pixels / 255).
    pub fn compute(ds: &Dataset) -> Result<NormStats, DataError> {
        let hw = ds.height * ds.width;
        let mut sum = vec![0f64; ds.channels];
        let mut sq = vec![0f64; ds.channels];
        for img in ds.images.chunks_exact(ds.sample_len()) {
            for (c, plane) in img.chunks_exact(hw).enumerate() {
                for &p in plane {
                    let v = p as f64 / 255.0;
                    sum[c] += v;
                    sq[c] += v * v;
                }
            }
        }
        let count = (ds.n * hw) as f64;
        if count == 0.0 {
            return Err(DataError::Invalid(format!(
                "cannot compute statistics of empty dataset {}",
                ds.name
            )));
        }
        let mean: Vec<f32> = sum.iter().map(|s| (s / count) as f32).collect();
        let std: Vec<f32> = sum
            .iter()
            .zip(&sq)
            .map(|(s, q)| {
                let m = s / count;
                ((q / count - m * m).max(0.0).sqrt() as f32).max(1e-6)
            })
            .collect();
        NormStats::new(mean, std)
    }

    /// Converts stats to `channels` output channels, matching the channel conversion of
    /// [`super::augment::Augmenter`]: 1 → 3 replicates; 3 → 1 takes the luma mean
    /// `Σ wᶜ·meanᶜ` (exact) and `Σ wᶜ·stdᶜ` as std (an upper bound, exact when channels are
    /// perfectly correlated, close for natural images).
    pub fn adapt(&self, channels: usize) -> Result<NormStats, DataError> {
        match (self.channels(), channels) {
            (a, b) if a == b => Ok(self.clone()),
            (1, n) => Ok(NormStats {
                mean: vec![self.mean[0]; n],
                std: vec![self.std[0]; n],
            }),
            (3, 1) => {
                let dot = |v: &[f32]| v.iter().zip(LUMA_WEIGHTS).map(|(a, w)| a * w).sum::<f32>();
                Ok(NormStats {
                    mean: vec![dot(&self.mean)],
                    std: vec![dot(&self.std)],
                })
            }
            (a, b) => Err(DataError::Invalid(format!(
                "cannot adapt {a}-channel statistics to {b} channels"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_family() {
        assert_eq!(
            NormStats::for_dataset("fashion-mnist/train").unwrap().mean,
            vec![0.2860]
        );
        assert_eq!(
            NormStats::for_dataset("mnist/test").unwrap().std,
            vec![0.3081]
        );
        assert_eq!(
            NormStats::for_dataset("CIFAR-10").unwrap().mean,
            CIFAR10_MEAN.to_vec()
        );
        assert_eq!(
            NormStats::for_dataset("cifar100/val").unwrap().std,
            CIFAR100_STD.to_vec()
        );
        assert!(NormStats::for_dataset("my-folder").is_none());
    }

    #[test]
    fn adapt_and_compute() {
        let s = NormStats::for_dataset("fashion-mnist")
            .unwrap()
            .adapt(3)
            .unwrap();
        assert_eq!(s.mean, vec![0.2860; 3]);
        let l = NormStats::for_dataset("cifar10").unwrap().adapt(1).unwrap();
        assert!((l.mean[0] - (0.299 * 0.4914 + 0.587 * 0.4822 + 0.114 * 0.4465)).abs() < 1e-6);
        let ds = Dataset::new("t", vec![0, 255, 0, 255], vec![0], 1, 2, 2, 1, vec![]).unwrap();
        let c = NormStats::compute(&ds).unwrap();
        assert!((c.mean[0] - 0.5).abs() < 1e-6 && (c.std[0] - 0.5).abs() < 1e-6);
        assert!(NormStats::new(vec![0.5], vec![0.0]).is_err());
    }
}
