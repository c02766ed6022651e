//! The in-memory dataset: u8 pixels in N×C×H×W order plus u32 labels.

use super::error::DataError;

/// A labelled image dataset held fully in memory.
///
/// Pixels are `u8` in `N×C×H×W` (channel-major per image) order; sample `i`
/// occupies `images[i * sample_len() .. (i + 1) * sample_len()]`.
/// Every label is `< num_classes` (checked by [`Dataset::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Name such as `"fashion-mnist/train"`; the part before `/` names the family
    /// (used to pick normalization constants, see [`super::stats::NormStats::for_dataset`]).
    pub name: String,
    /// Pixels, `n * channels * height * width` bytes.
    pub images: Vec<u8>,
    /// One label per sample.
    pub labels: Vec<u32>,
    /// Number of samples.
    pub n: usize,
    /// Channels per image (1 or 3).
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Number of classes; labels are `0..num_classes`.
    pub num_classes: usize,
    /// Human-readable class names (`num_classes` entries).
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Builds a dataset, checking that buffer sizes agree and labels are in range.
    ///
    /// `class_names` may be empty, in which case `class_0`, `class_1`, … are used.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: impl Into<String>,
        images: Vec<u8>,
        labels: Vec<u32>,
        channels: usize,
        height: usize,
        width: usize,
        num_classes: usize,
        class_names: Vec<String>,
    ) -> Result<Self, DataError> {
        let name = name.into();
        let n = labels.len();
        let sample = channels * height * width;
        if sample == 0 {
            return Err(DataError::Invalid(format!(
                "dataset {name}: zero-sized images ({channels}×{height}×{width})"
            )));
        }
        if images.len() != n * sample {
            return Err(DataError::Invalid(format!(
                "dataset {name}: {} pixel bytes for {n} labels of {channels}×{height}×{width} images (expected {})",
                images.len(),
                n * sample
            )));
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= num_classes)
        {
            return Err(DataError::LabelOutOfRange {
                path: name.into(),
                index,
                label,
                num_classes,
            });
        }
        let class_names = if class_names.is_empty() {
            (0..num_classes).map(|i| format!("class_{i}")).collect()
        } else if class_names.len() == num_classes {
            class_names
        } else {
            return Err(DataError::Invalid(format!(
                "dataset {name}: {} class names for {num_classes} classes",
                class_names.len()
            )));
        };
        Ok(Dataset {
            name,
            images,
            labels,
            n,
            channels,
            height,
            width,
            num_classes,
            class_names,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when the dataset holds no sample.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bytes per image (`channels * height * width`).
    pub fn sample_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Pixels of sample `i` (C×H×W). Panics if `i >= n`.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.sample_len();
        &self.images[i * s..(i + 1) * s]
    }

    /// Label of sample `i`. Panics if `i >= n`.
    pub fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }

    /// Number of samples per class (`num_classes` entries).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// A new dataset holding the samples at `indices`, in that order (repeats allowed).
    ///
    /// Panics if an index is `>= n` (indices come from [`super::split`] or the caller).
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let s = self.sample_len();
        let mut images = Vec::with_capacity(indices.len() * s);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            assert!(
                i < self.n,
                "Dataset::subset: index {i} out of range for {} ({} samples)",
                self.name,
                self.n
            );
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            name: self.name.clone(),
            images,
            labels,
            n: indices.len(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            num_classes: self.num_classes,
            class_names: self.class_names.clone(),
        }
    }

    /// Concatenates datasets of identical geometry and classes (e.g. CIFAR-10 batches).
    pub fn concat(name: impl Into<String>, parts: Vec<Dataset>) -> Result<Dataset, DataError> {
        let name = name.into();
        let first = parts
            .first()
            .ok_or_else(|| DataError::Invalid(format!("dataset {name}: nothing to concatenate")))?;
        let (c, h, w, k) = (first.channels, first.height, first.width, first.num_classes);
        let class_names = first.class_names.clone();
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for p in parts {
            if (p.channels, p.height, p.width, p.num_classes) != (c, h, w, k) {
                return Err(DataError::Invalid(format!(
                    "dataset {name}: cannot concatenate {} ({}×{}×{}, {} classes) with {c}×{h}×{w}, {k} classes",
                    p.name, p.channels, p.height, p.width, p.num_classes
                )));
            }
            images.extend_from_slice(&p.images);
            labels.extend_from_slice(&p.labels);
        }
        Dataset::new(name, images, labels, c, h, w, k, class_names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Dataset {
        // 4 samples of 1×1×2, pixel values encode the sample index.
        let images = vec![0, 0, 1, 1, 2, 2, 3, 3];
        Dataset::new("toy/train", images, vec![0, 1, 2, 1], 1, 1, 2, 3, vec![]).unwrap()
    }

    #[test]
    fn subset_picks_samples_in_order() {
        let d = toy();
        let s = d.subset(&[3, 0]);
        assert_eq!(s.n, 2);
        assert_eq!(s.images, vec![3, 3, 0, 0]);
        assert_eq!(s.labels, vec![1, 0]);
        assert_eq!(s.class_names, d.class_names);
        assert_eq!(d.class_counts(), vec![1, 2, 1]);
    }

    #[test]
    fn new_rejects_bad_label_and_size() {
        let e = Dataset::new("t", vec![0; 2], vec![5, 0], 1, 1, 1, 3, vec![]).unwrap_err();
        assert!(matches!(
            e,
            DataError::LabelOutOfRange {
                index: 0,
                label: 5,
                ..
            }
        ));
        let e = Dataset::new("t", vec![0; 3], vec![0, 0], 1, 1, 1, 3, vec![]).unwrap_err();
        assert!(matches!(e, DataError::Invalid(_)));
    }

    #[test]
    fn concat_checks_geometry() {
        let d = toy();
        let c = Dataset::concat("both", vec![d.clone(), d.clone()]).unwrap();
        assert_eq!(c.n, 8);
        let mut other = d.clone();
        other.width = 1;
        other.height = 2;
        // Same bytes per sample but a different geometry: rejected.
        let e = Dataset::concat("bad", vec![d, other]).unwrap_err();
        assert!(matches!(e, DataError::Invalid(_)));
    }
}
