//! Offline teacher cache: the teacher's logits (f16) for every training sample and augmented
//! view, on disk, keyed by the teacher checkpoint's hash, the dataset and the augmentation
//! settings. A view is an epoch: sample i in epoch e is augmented from (seed, e, i), so the
//! student always sees exactly the view the teacher scored. Later runs and every search
//! candidate with the same data settings read the cache instead of running the teacher.
//!
//! File `<dir>/<key>/e<epoch>.logits`: magic `MNV4TLC1`, u64 samples, u64 classes, then a
//! presence byte per sample, then samples × classes little-endian f16. Written atomically.

use crate::fsutil::atomic_write;
use anyhow::{bail, Context, Result};
use half::f16;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"MNV4TLC1";

/// SHA-256 of a file, hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// The cache key: a hash of the teacher's weights hash and every setting that changes a view.
pub fn cache_key(teacher_hash: &str, settings: &str) -> String {
    let mut h = Sha256::new();
    h.update(teacher_hash.as_bytes());
    h.update(b"\n");
    h.update(settings.as_bytes());
    format!("{:x}", h.finalize())[..24].to_string()
}

/// Teacher logits of one epoch's view, by training-sample index.
pub struct ViewLogits {
    pub samples: usize,
    pub classes: usize,
    present: Vec<bool>,
    data: Vec<f16>,
}

impl ViewLogits {
    /// An empty view to be filled while the teacher runs.
    pub fn empty(samples: usize, classes: usize) -> Self {
        Self {
            samples,
            classes,
            present: vec![false; samples],
            data: vec![f16::ZERO; samples * classes],
        }
    }

    /// Stores the logits (row-major [len, classes]) of `indices`.
    pub fn store(&mut self, indices: &[usize], logits: &[f32]) {
        for (r, &i) in indices.iter().enumerate() {
            let row = &logits[r * self.classes..(r + 1) * self.classes];
            for (d, &v) in self.data[i * self.classes..(i + 1) * self.classes]
                .iter_mut()
                .zip(row)
            {
                *d = f16::from_f32(v);
            }
            self.present[i] = true;
        }
    }

    /// The logits of `indices` as f32 rows, or `None` if any is missing.
    pub fn fetch(&self, indices: &[usize]) -> Option<Vec<f32>> {
        let mut out = Vec::with_capacity(indices.len() * self.classes);
        for &i in indices {
            if !*self.present.get(i)? {
                return None;
            }
            out.extend(
                self.data[i * self.classes..(i + 1) * self.classes]
                    .iter()
                    .map(|v| v.to_f32()),
            );
        }
        Some(out)
    }

    /// Writes the view atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::with_capacity(24 + self.samples * (1 + 2 * self.classes));
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(self.samples as u64).to_le_bytes());
        bytes.extend_from_slice(&(self.classes as u64).to_le_bytes());
        bytes.extend(self.present.iter().map(|&p| p as u8));
        for v in &self.data {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        atomic_write(path, &bytes)
    }

    /// Reads a view; a file of the wrong shape or size is an error naming the file.
    pub fn load(path: &Path, samples: usize, classes: usize) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading teacher cache {}", path.display()))?;
        let want = 24 + samples * (1 + 2 * classes);
        if bytes.len() < 24 || &bytes[..8] != MAGIC {
            bail!(
                "teacher cache {} is not a cache file (bad magic)",
                path.display()
            );
        }
        let n = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
        let k = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")) as usize;
        if (n, k) != (samples, classes) || bytes.len() != want {
            bail!(
                "teacher cache {} holds {n}×{k} logits in {} bytes; expected {samples}×{classes} in {want}",
                path.display(),
                bytes.len()
            );
        }
        let present = bytes[24..24 + n].iter().map(|&b| b != 0).collect();
        let data = bytes[24 + n..]
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(Self {
            samples,
            classes,
            present,
            data,
        })
    }
}

/// Path of the view file for `epoch` under `dir/key`.
pub fn view_path(dir: &Path, key: &str, epoch: usize) -> PathBuf {
    dir.join(key).join(format!("e{epoch:04}.logits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_round_trip_and_reject_wrong_shapes() {
        let dir = std::env::temp_dir().join(format!("mnv4-cache-{}", std::process::id()));
        let mut v = ViewLogits::empty(4, 3);
        v.store(&[2, 0], &[1.0, -2.0, 0.5, 3.0, 0.25, -1.0]);
        assert_eq!(
            v.fetch(&[0, 2]).unwrap(),
            vec![3.0, 0.25, -1.0, 1.0, -2.0, 0.5]
        );
        assert!(v.fetch(&[1]).is_none());
        let p = view_path(&dir, "k", 0);
        v.save(&p).unwrap();
        let back = ViewLogits::load(&p, 4, 3).unwrap();
        assert_eq!(back.fetch(&[2]).unwrap(), vec![1.0, -2.0, 0.5]);
        let e = ViewLogits::load(&p, 5, 3).err().unwrap().to_string();
        assert!(e.contains("expected 5×3"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_change_with_teacher_and_settings() {
        assert_ne!(cache_key("a", "x"), cache_key("b", "x"));
        assert_ne!(cache_key("a", "x"), cache_key("a", "y"));
        assert_eq!(cache_key("a", "x"), cache_key("a", "x"));
    }
}
