//! Test helpers: unique temporary folders that remove themselves, and the rule for test inputs
//! that live outside the repository.

use std::path::{Path, PathBuf};

use super::dataset::Dataset;
use super::synth_detect::{write_synthetic_detection, SynthDetectConfig};
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh folder under the system temp dir, deleted on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `$TMP/mnv4-data-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("mnv4-data-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `self.path().join(name)`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `path` exists. A missing input fails the test under `CI` (which installs every input)
/// and elsewhere skips it with `why` printed, as `tests/common` does for the integration tests.
pub fn require_input(path: &Path, why: &str) -> bool {
    if path.exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI needs {why}: {} is missing", path.display());
    }
    println!("skipped: needs {why}: {} is missing", path.display());
    false
}

/// The default detection set (96×96 canvases), `train` + `val` images, written under `dir` from
/// made-up 28×28 items (bright rectangles, 10 classes) instead of Fashion-MNIST. Returns the
/// dataset file.
pub fn synthetic_detect_set(dir: &Path, train: usize, val: usize) -> PathBuf {
    let items = |n: usize| {
        let mut px = vec![0u8; n * 28 * 28];
        for (k, item) in px.chunks_mut(28 * 28).enumerate() {
            let m = 2 + k % 7;
            for y in m..28 - m {
                for x in m / 2 + 1..28 - m {
                    item[y * 28 + x] = 100 + (k * 13 % 100 + (x * y) % 50) as u8;
                }
            }
        }
        let labels = (0..n as u32).map(|k| k % 10).collect();
        Dataset::new("items", px, labels, 1, 28, 28, 10, vec![]).unwrap()
    };
    let cfg = SynthDetectConfig {
        train,
        val,
        test: val,
        ..Default::default()
    };
    let out = dir.join("det");
    write_synthetic_detection(&items(30), &items(20), &cfg, &out).unwrap();
    out.join("dataset.yaml")
}
