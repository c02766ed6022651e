//! The offline distillation dataset: for every training sample and augmented view, the
//! teacher's logits and the feature maps the feature losses tap, in f16, on disk. It is keyed by
//! the teacher checkpoint's hash, the students' data, the seed, the teacher's input size and the
//! taps. A view is an epoch: sample i in epoch e is augmented from (seed, e, i), so the student
//! always sees exactly the view the teacher scored. Later runs and every search candidate with
//! the same data settings read the views instead of running the teacher.
//!
//! File `<dir>/<key>/e<epoch>.view`: magic `MNV4TLC2`, u64 samples, u64 classes, u64 taps, per
//! tap u64 channels, height, width; a presence byte per sample; samples × classes logits; then
//! per tap samples × C×H×W values; all little-endian f16. Written atomically.

use crate::fsutil::atomic_write_with;
use anyhow::{bail, ensure, Context, Result};
use half::f16;
use sha2::{Digest, Sha256};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"MNV4TLC2";

/// The cache key: a hash of the teacher's weights hash and every setting that changes a view.
pub fn cache_key(teacher_hash: &str, settings: &str) -> String {
    let mut h = Sha256::new();
    h.update(teacher_hash.as_bytes());
    h.update(b"\n");
    h.update(settings.as_bytes());
    format!("{:x}", h.finalize())[..24].to_string()
}

/// One sample's teacher outputs: logits and the maps at each tap, as f32.
pub struct TeacherRows {
    pub logits: Vec<f32>,
    /// Per tap, the batch's maps row-major `[batch, C, H, W]`.
    pub features: Vec<Vec<f32>>,
}

/// The teacher's outputs for one epoch's view, by training-sample index.
pub struct TeacherView {
    pub samples: usize,
    pub classes: usize,
    /// `(C, H, W)` per tap; fixed by the first stored batch or the file.
    shapes: Vec<[usize; 3]>,
    taps: usize,
    present: Vec<bool>,
    logits: Vec<f16>,
    features: Vec<Vec<f16>>,
}

fn to_f16(dst: &mut [f16], src: &[f32]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(v);
    }
}

impl TeacherView {
    /// An empty view of `taps` feature maps, to be filled while the teacher runs.
    pub fn empty(samples: usize, classes: usize, taps: usize) -> Self {
        Self {
            samples,
            classes,
            shapes: Vec::new(),
            taps,
            present: vec![false; samples],
            logits: vec![f16::ZERO; samples * classes],
            features: Vec::new(),
        }
    }

    /// Bytes one sample takes (logits and every tap), once the shapes are known.
    pub fn bytes_per_sample(&self) -> usize {
        1 + 2
            * (self.classes
                + self
                    .shapes
                    .iter()
                    .map(|s| s.iter().product::<usize>())
                    .sum::<usize>())
    }

    /// Stores the teacher's outputs for `indices`: logits `[len, classes]` and, per tap, maps
    /// `[len, C, H, W]` with their shapes.
    pub fn store(
        &mut self,
        indices: &[usize],
        rows: &TeacherRows,
        shapes: &[[usize; 3]],
    ) -> Result<()> {
        ensure!(
            shapes.len() == self.taps,
            "teacher gave {} taps, the view holds {}",
            shapes.len(),
            self.taps
        );
        if self.features.is_empty() && self.taps > 0 {
            self.shapes = shapes.to_vec();
            let per = |s: &[usize; 3]| self.samples * s.iter().product::<usize>();
            self.features = shapes.iter().map(|s| vec![f16::ZERO; per(s)]).collect();
        }
        ensure!(
            self.shapes == shapes || self.taps == 0,
            "teacher feature shapes changed within a view"
        );
        let k = self.classes;
        for (r, &i) in indices.iter().enumerate() {
            ensure!(
                i < self.samples,
                "sample index {i} outside the view of {}",
                self.samples
            );
            to_f16(
                &mut self.logits[i * k..(i + 1) * k],
                &rows.logits[r * k..(r + 1) * k],
            );
            for (t, s) in self.shapes.iter().enumerate() {
                let n = s.iter().product::<usize>();
                to_f16(
                    &mut self.features[t][i * n..(i + 1) * n],
                    &rows.features[t][r * n..(r + 1) * n],
                );
            }
            self.present[i] = true;
        }
        Ok(())
    }

    /// The outputs of `indices` with the tap shapes, or `None` if any sample is missing.
    pub fn fetch(&self, indices: &[usize]) -> Option<(TeacherRows, Vec<[usize; 3]>)> {
        let k = self.classes;
        let mut logits = Vec::with_capacity(indices.len() * k);
        let mut features: Vec<Vec<f32>> = vec![Vec::new(); self.shapes.len()];
        for &i in indices {
            if !*self.present.get(i)? {
                return None;
            }
            logits.extend(self.logits[i * k..(i + 1) * k].iter().map(|v| v.to_f32()));
            for (t, s) in self.shapes.iter().enumerate() {
                let n = s.iter().product::<usize>();
                features[t].extend(
                    self.features[t][i * n..(i + 1) * n]
                        .iter()
                        .map(|v| v.to_f32()),
                );
            }
        }
        Some((TeacherRows { logits, features }, self.shapes.clone()))
    }

    /// Writes the view atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        atomic_write_with(path, |tmp| {
            let f = std::fs::File::create(tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            let mut w = BufWriter::new(f);
            w.write_all(MAGIC)?;
            let header = [self.samples, self.classes, self.shapes.len()];
            for v in header.iter().chain(self.shapes.iter().flatten()) {
                w.write_all(&(*v as u64).to_le_bytes())?;
            }
            w.write_all(&self.present.iter().map(|&p| p as u8).collect::<Vec<_>>())?;
            for v in self.logits.iter().chain(self.features.iter().flatten()) {
                w.write_all(&v.to_le_bytes())?;
            }
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            Ok(())
        })
        .with_context(|| format!("writing teacher view {}", path.display()))
    }

    /// Reads a view; a file of the wrong shape or size is an error naming the file.
    pub fn load(path: &Path, samples: usize, classes: usize, taps: usize) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading teacher view {}", path.display()))?;
        let bad = |what: String| {
            anyhow::anyhow!(
                "teacher view {}: {what}; delete it to recompute",
                path.display()
            )
        };
        if bytes.len() < 32 || &bytes[..8] != MAGIC {
            return Err(bad("not a teacher view (bad magic)".into()));
        }
        let word = |i: usize| -> Result<usize> {
            let b = bytes
                .get(8 + 8 * i..16 + 8 * i)
                .ok_or_else(|| bad("truncated header".into()))?;
            Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        };
        let (n, k, t) = (word(0)?, word(1)?, word(2)?);
        if (n, k, t) != (samples, classes, taps) {
            bail!(bad(format!("holds {n} samples × {k} classes with {t} taps; expected {samples} × {classes} with {taps}")));
        }
        let shapes: Vec<[usize; 3]> = (0..t)
            .map(|j| Ok([word(3 + 3 * j)?, word(4 + 3 * j)?, word(5 + 3 * j)?]))
            .collect::<Result<_>>()?;
        let head = 32 + 24 * t;
        let per_tap: Vec<usize> = shapes
            .iter()
            .map(|s| s.iter().try_fold(n, |a, &d| a.checked_mul(d)))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("tap shapes overflow".into()))?;
        let values = n * k + per_tap.iter().sum::<usize>();
        if bytes.len() != head + n + 2 * values {
            bail!(bad(format!(
                "{} bytes; its header implies {}",
                bytes.len(),
                head + n + 2 * values
            )));
        }
        let present = bytes[head..head + n].iter().map(|&b| b != 0).collect();
        let mut all = bytes[head + n..]
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]));
        let logits: Vec<f16> = all.by_ref().take(n * k).collect();
        let features = per_tap
            .iter()
            .map(|&m| all.by_ref().take(m).collect())
            .collect();
        Ok(Self {
            samples,
            classes,
            shapes,
            taps,
            present,
            logits,
            features,
        })
    }
}

/// Path of the view file for `epoch` under `dir/key`.
pub fn view_path(dir: &Path, key: &str, epoch: usize) -> PathBuf {
    dir.join(key).join(format!("e{epoch:04}.view"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_round_trip_and_reject_wrong_shapes() {
        let dir = std::env::temp_dir().join(format!("mnv4-cache-{}", std::process::id()));
        let mut v = TeacherView::empty(4, 3, 1);
        let rows = TeacherRows {
            logits: vec![1.0, -2.0, 0.5, 3.0, 0.25, -1.0],
            features: vec![vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]],
        };
        v.store(&[2, 0], &rows, &[[1, 2, 2]]).unwrap();
        let (got, shapes) = v.fetch(&[0, 2]).unwrap();
        assert_eq!(got.logits, vec![3.0, 0.25, -1.0, 1.0, -2.0, 0.5]);
        assert_eq!(
            got.features[0],
            vec![5.0, 6.0, 7.0, 8.0, 1.0, 2.0, 3.0, 4.0]
        );
        assert_eq!(shapes, vec![[1, 2, 2]]);
        assert!(v.fetch(&[1]).is_none());
        assert_eq!(v.bytes_per_sample(), 1 + 2 * (3 + 4));
        let p = view_path(&dir, "k", 0);
        v.save(&p).unwrap();
        let back = TeacherView::load(&p, 4, 3, 1).unwrap();
        let (got, _) = back.fetch(&[2]).unwrap();
        assert_eq!(
            (got.logits, got.features),
            (vec![1.0, -2.0, 0.5], vec![vec![1.0, 2.0, 3.0, 4.0]])
        );
        let e = TeacherView::load(&p, 5, 3, 1).err().unwrap().to_string();
        assert!(e.contains("expected 5 × 3 with 1"), "{e}");
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.pop();
        std::fs::write(&p, &bytes).unwrap();
        let e = TeacherView::load(&p, 4, 3, 1).err().unwrap().to_string();
        assert!(e.contains("header implies"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_change_with_teacher_and_settings() {
        assert_ne!(cache_key("a", "x"), cache_key("b", "x"));
        assert_ne!(cache_key("a", "x"), cache_key("a", "y"));
        assert_eq!(cache_key("a", "x"), cache_key("a", "x"));
    }
}
