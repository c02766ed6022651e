//! Test helpers: unique temporary folders that remove themselves, and the rule for test inputs
//! that live outside the repository.

use std::path::{Path, PathBuf};
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
