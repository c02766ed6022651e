//! MNIST-family folders (MNIST, Fashion-MNIST): finding and loading them (fetching is the
//! command line's job: `mnv4-lab data fetch`).
//!
//! A folder holds the four standard idx files, each either gzip (`NAME.gz`) or raw
//! (`NAME`): `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`. The Debian package
//! `dataset-fashion-mnist` installs the gzip files in [`DEBIAN_FASHION_MNIST_DIR`].

use std::path::{Path, PathBuf};

use super::dataset::Dataset;
use super::error::DataError;
use super::idx::load_idx_pair;

/// Base names (without `.gz`) of the four MNIST-family files: train images, train labels,
/// test images, test labels.
pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Where the Debian package `dataset-fashion-mnist` puts the files.
pub const DEBIAN_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// The project-local folder searched after the configured one.
pub const LOCAL_FASHION_MNIST_DIR: &str = "data/fashion-mnist";
/// Official download location of the Fashion-MNIST `.gz` files (Zalando Research).
pub const FASHION_MNIST_BASE_URL: &str =
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";
/// Project page of Fashion-MNIST.
pub const FASHION_MNIST_HOMEPAGE: &str = "https://github.com/zalandoresearch/fashion-mnist";

/// Fashion-MNIST class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// How to obtain Fashion-MNIST, used in [`DataError::NotFound`] and [`DataError::DownloadFailed`].
pub fn fashion_mnist_how_to_get() -> String {
    format!(
        "To get Fashion-MNIST, either\n  \
         * install the Debian package:  apt-get install dataset-fashion-mnist   (puts the files in {DEBIAN_FASHION_MNIST_DIR}/), or\n  \
         * download the four files {} from {FASHION_MNIST_BASE_URL} (see {FASHION_MNIST_HOMEPAGE}) into {LOCAL_FASHION_MNIST_DIR}/, \
         e.g. `curl -fL -O {FASHION_MNIST_BASE_URL}train-images-idx3-ubyte.gz` for each, or\n  \
         * set the dataset path in the configuration to a folder that holds them (gzip or raw).",
        MNIST_FILES.map(|f| format!("{f}.gz")).join(", ")
    )
}

/// The four file paths (train images, train labels, test images, test labels) in `dir`,
/// preferring `NAME.gz` over `NAME`; `None` if any is missing.
pub fn mnist_files(dir: &Path) -> Option<[PathBuf; 4]> {
    let find = |base: &str| {
        [format!("{base}.gz"), base.to_string()]
            .into_iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
    };
    let [a, b, c, d] = MNIST_FILES.map(find);
    Some([a?, b?, c?, d?])
}

/// First folder among `candidates` that holds all four files, or [`DataError::NotFound`].
fn locate_in(
    dataset: &'static str,
    candidates: &[PathBuf],
    how_to_get: String,
) -> Result<PathBuf, DataError> {
    candidates
        .iter()
        .find(|d| mnist_files(d).is_some())
        .cloned()
        .ok_or_else(|| DataError::NotFound {
            dataset,
            searched: candidates.to_vec(),
            how_to_get,
        })
}

/// Finds the Fashion-MNIST folder: `configured` first, then `data/fashion-mnist/`, then
/// `/usr/share/datasets/fashion-mnist/`. The error lists the searched folders and how to get
/// the data (Debian package or the official download).
pub fn locate_fashion_mnist(configured: Option<&Path>) -> Result<PathBuf, DataError> {
    let mut candidates = Vec::new();
    if let Some(c) = configured {
        candidates.push(c.to_path_buf());
    }
    candidates.push(PathBuf::from(LOCAL_FASHION_MNIST_DIR));
    candidates.push(PathBuf::from(DEBIAN_FASHION_MNIST_DIR));
    let found = locate_in("Fashion-MNIST", &candidates, fashion_mnist_how_to_get())?;
    if let Some(c) = configured {
        if found != c {
            tracing::warn!(
                "Fashion-MNIST not in configured folder {}; using {}",
                c.display(),
                found.display()
            );
        }
    }
    Ok(found)
}

/// Loads `(train, test)` from an MNIST-family folder, naming them `"{name}/train"` and
/// `"{name}/test"`.
pub fn load_mnist_family(
    dir: &Path,
    name: &str,
    num_classes: usize,
    class_names: &[&str],
) -> Result<(Dataset, Dataset), DataError> {
    let [tri, trl, tei, tel] = mnist_files(dir).ok_or_else(|| DataError::NotFound {
        dataset: "MNIST-family idx files",
        searched: vec![dir.to_path_buf()],
        how_to_get: format!(
            "The folder must hold {} (each gzip `.gz` or raw).",
            MNIST_FILES.join(", ")
        ),
    })?;
    let names: Vec<String> = class_names.iter().map(|s| s.to_string()).collect();
    let mut train = load_idx_pair(&tri, &trl, num_classes)?;
    let mut test = load_idx_pair(&tei, &tel, num_classes)?;
    train.name = format!("{name}/train");
    test.name = format!("{name}/test");
    if names.len() == num_classes {
        train.class_names = names.clone();
        test.class_names = names;
    }
    Ok((train, test))
}

/// Loads Fashion-MNIST `(train, test)` (60000 / 10000 images, 1×28×28, 10 classes) from `dir`.
pub fn load_fashion_mnist(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    load_mnist_family(dir, "fashion-mnist", 10, &FASHION_MNIST_CLASSES)
}

/// Loads MNIST digits `(train, test)` from `dir` (same file names as Fashion-MNIST).
pub fn load_mnist(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    load_mnist_family(
        dir,
        "mnist",
        10,
        &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::idx::{write_idx_images, write_idx_labels};
    use crate::data::testutil::TempDir;

    /// Writes a tiny MNIST-family folder: 6 train and 4 test images of 2×3.
    fn write_fake(dir: &Path, gz: bool) {
        let suffix = if gz { ".gz" } else { "" };
        let px = |n: usize| (0..n * 6).map(|i| i as u8).collect::<Vec<_>>();
        write_idx_images(
            &dir.join(format!("{}{suffix}", MNIST_FILES[0])),
            2,
            3,
            &px(6),
            gz,
        )
        .unwrap();
        write_idx_labels(
            &dir.join(format!("{}{suffix}", MNIST_FILES[1])),
            &[0, 1, 2, 3, 4, 9],
            gz,
        )
        .unwrap();
        write_idx_images(
            &dir.join(format!("{}{suffix}", MNIST_FILES[2])),
            2,
            3,
            &px(4),
            gz,
        )
        .unwrap();
        write_idx_labels(
            &dir.join(format!("{}{suffix}", MNIST_FILES[3])),
            &[5, 6, 7, 8],
            gz,
        )
        .unwrap();
    }

    #[test]
    fn loads_gz_and_raw_folders() {
        for gz in [true, false] {
            let t = TempDir::new("mnist-fake");
            write_fake(t.path(), gz);
            let (tr, te) = load_fashion_mnist(t.path()).unwrap();
            assert_eq!((tr.n, te.n, tr.height, tr.width), (6, 4, 2, 3));
            assert_eq!(tr.name, "fashion-mnist/train");
            assert_eq!(te.class_names[9], "Ankle boot");
            let (tr, _) = load_mnist(t.path()).unwrap();
            assert_eq!(tr.name, "mnist/train");
            assert_eq!(tr.labels, vec![0, 1, 2, 3, 4, 9]);
        }
    }

    #[test]
    fn locate_prefers_configured_and_explains_absence() {
        let t = TempDir::new("mnist-locate");
        write_fake(t.path(), true);
        assert_eq!(locate_fashion_mnist(Some(t.path())).unwrap(), t.path());
        let empty = TempDir::new("mnist-empty");
        let e = locate_in(
            "Fashion-MNIST",
            &[empty.path().to_path_buf(), empty.join("also-missing")],
            fashion_mnist_how_to_get(),
        )
        .unwrap_err();
        let m = e.to_string();
        println!("{m}");
        assert!(m.contains("apt-get install dataset-fashion-mnist"), "{m}");
        assert!(m.contains(FASHION_MNIST_BASE_URL), "{m}");
        assert!(
            m.contains("github.com/zalandoresearch/fashion-mnist"),
            "{m}"
        );
        assert!(m.contains("data/fashion-mnist/"), "{m}");
        assert!(m.contains("also-missing"), "{m}");
        // A folder missing one file does not count.
        std::fs::remove_file(t.join(&format!("{}.gz", MNIST_FILES[3]))).unwrap();
        assert!(mnist_files(t.path()).is_none());
    }

    /// Download through curl from a local `file://` URL (no network involved).
    #[test]
    fn real_fashion_mnist_when_present() {
        let dir = Path::new(DEBIAN_FASHION_MNIST_DIR);
        let why = "Fashion-MNIST (apt-get install dataset-fashion-mnist)";
        if !crate::data::testutil::require_input(dir, why) {
            return;
        }
        let (tr, te) = load_fashion_mnist(dir).unwrap();
        assert_eq!(
            (tr.n, tr.channels, tr.height, tr.width, tr.num_classes),
            (60000, 1, 28, 28, 10)
        );
        assert_eq!(
            (te.n, te.channels, te.height, te.width, te.num_classes),
            (10000, 1, 28, 28, 10)
        );
        assert_eq!(tr.class_counts(), vec![6000; 10]);
        assert_eq!(te.class_counts(), vec![1000; 10]);
        // First training and test images are both ankle boots (label 9).
        assert_eq!((tr.labels[0], te.labels[0]), (9, 9));
        let mean =
            tr.images.iter().map(|&p| p as f64).sum::<f64>() / tr.images.len() as f64 / 255.0;
        assert!((mean - 0.2860).abs() < 1e-3, "train mean {mean}");
    }
}
