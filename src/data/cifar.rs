//! CIFAR-10 and CIFAR-100 "binary version" files.
//!
//! * CIFAR-10: `data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`; records of
//!   1 label byte + 3072 pixel bytes (3×32×32, channel-major).
//! * CIFAR-100: `train.bin`, `test.bin`; records of 2 label bytes (coarse, fine) + 3072
//!   pixel bytes; the fine label (100 classes) is used.
//!
//! The folders may be given directly or as their parent (holding `cifar-10-batches-bin/`
//! or `cifar-100-binary/`, as the official tarballs extract).

use std::path::{Path, PathBuf};

use super::dataset::Dataset;
use super::error::DataError;

/// Pixel bytes per CIFAR image (3×32×32).
pub const CIFAR_IMAGE_BYTES: usize = 3 * 32 * 32;

/// CIFAR-10 class names, in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Reads one CIFAR binary file with `label_bytes` label bytes per record, keeping label
/// byte `label_index`, checking every label `< num_classes`.
pub fn load_cifar_bin(
    path: &Path,
    label_bytes: usize,
    label_index: usize,
    num_classes: usize,
    name: &str,
) -> Result<Dataset, DataError> {
    if label_index >= label_bytes {
        return Err(DataError::Invalid(format!(
            "label byte {label_index} of {label_bytes} does not exist"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let record = label_bytes + CIFAR_IMAGE_BYTES;
    if bytes.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    if !bytes.len().is_multiple_of(record) {
        return Err(DataError::PartialRecord {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            record: record as u64,
        });
    }
    let n = bytes.len() / record;
    let mut images = Vec::with_capacity(n * CIFAR_IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for (index, rec) in bytes.chunks_exact(record).enumerate() {
        let label = rec[label_index] as u32;
        if label as usize >= num_classes {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                label,
                num_classes,
            });
        }
        labels.push(label);
        images.extend_from_slice(&rec[label_bytes..]);
    }
    Dataset::new(name, images, labels, 3, 32, 32, num_classes, vec![])
}

/// `dir` itself if it holds `probe`, else `dir/sub` if that does, else an error.
fn resolve(
    dir: &Path,
    sub: &str,
    probe: &str,
    dataset: &'static str,
    how: &str,
) -> Result<PathBuf, DataError> {
    let cands = [dir.to_path_buf(), dir.join(sub)];
    cands
        .iter()
        .find(|d| d.join(probe).is_file())
        .cloned()
        .ok_or_else(|| DataError::NotFound {
            dataset,
            searched: cands.to_vec(),
            how_to_get: how.to_string(),
        })
}

/// Loads CIFAR-10 `(train, test)`: 50000 / 10000 images, 3×32×32, 10 classes.
pub fn load_cifar10(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let d = resolve(
        dir,
        "cifar-10-batches-bin",
        "test_batch.bin",
        "CIFAR-10",
        "Expected data_batch_1.bin … data_batch_5.bin and test_batch.bin \
         (the binary version, https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz).",
    )?;
    let names: Vec<String> = CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect();
    let parts = (1..=5)
        .map(|i| {
            load_cifar_bin(
                &d.join(format!("data_batch_{i}.bin")),
                1,
                0,
                10,
                "cifar10/train",
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut train = Dataset::concat("cifar10/train", parts)?;
    let mut test = load_cifar_bin(&d.join("test_batch.bin"), 1, 0, 10, "cifar10/test")?;
    train.class_names = names.clone();
    test.class_names = names;
    Ok((train, test))
}

/// Loads CIFAR-100 `(train, test)` with fine labels: 50000 / 10000 images, 3×32×32, 100 classes.
///
/// Class names come from `fine_label_names.txt` when present beside the files.
pub fn load_cifar100(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let d = resolve(
        dir,
        "cifar-100-binary",
        "train.bin",
        "CIFAR-100",
        "Expected train.bin and test.bin (the binary version, \
         https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz).",
    )?;
    let mut train = load_cifar_bin(&d.join("train.bin"), 2, 1, 100, "cifar100/train")?;
    let mut test = load_cifar_bin(&d.join("test.bin"), 2, 1, 100, "cifar100/test")?;
    if let Ok(text) = std::fs::read_to_string(d.join("fine_label_names.txt")) {
        let names: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if names.len() == 100 {
            train.class_names = names.clone();
            test.class_names = names;
        }
    }
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::TempDir;

    fn records(labels: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, l) in labels.iter().enumerate() {
            out.extend_from_slice(l);
            out.extend((0..CIFAR_IMAGE_BYTES).map(|p| ((p + i) % 256) as u8));
        }
        out
    }

    #[test]
    fn cifar10_folder_loads() {
        let t = TempDir::new("cifar10");
        let sub = t.join("cifar-10-batches-bin");
        std::fs::create_dir_all(&sub).unwrap();
        for i in 1..=5u8 {
            std::fs::write(
                sub.join(format!("data_batch_{i}.bin")),
                records(&[&[i], &[9]]),
            )
            .unwrap();
        }
        std::fs::write(sub.join("test_batch.bin"), records(&[&[0], &[1], &[2]])).unwrap();
        let (tr, te) = load_cifar10(t.path()).unwrap();
        assert_eq!(
            (tr.n, te.n, tr.channels, tr.height, tr.width),
            (10, 3, 3, 32, 32)
        );
        assert_eq!(tr.labels, vec![1, 9, 2, 9, 3, 9, 4, 9, 5, 9]);
        assert_eq!(te.image(1)[0], 1);
        assert_eq!(tr.class_names[0], "airplane");
    }

    #[test]
    fn cifar100_uses_fine_label() {
        let t = TempDir::new("cifar100");
        std::fs::write(t.join("train.bin"), records(&[&[3, 99], &[19, 0]])).unwrap();
        std::fs::write(t.join("test.bin"), records(&[&[1, 42]])).unwrap();
        let (tr, te) = load_cifar100(t.path()).unwrap();
        assert_eq!(tr.labels, vec![99, 0]);
        assert_eq!(te.labels, vec![42]);
        assert_eq!(tr.num_classes, 100);
    }

    #[test]
    fn truncated_record_is_an_error() {
        let t = TempDir::new("cifar-trunc");
        let p = t.join("data_batch_1.bin");
        let mut b = records(&[&[1], &[2]]);
        b.pop();
        std::fs::write(&p, &b).unwrap();
        let e = load_cifar_bin(&p, 1, 0, 10, "x").unwrap_err();
        assert!(
            matches!(
                e,
                DataError::PartialRecord {
                    size: 6145,
                    record: 3073,
                    ..
                }
            ),
            "{e:?}"
        );
        let m = e.to_string();
        assert!(m.contains("data_batch_1.bin") && m.contains("3073"), "{m}");
        std::fs::write(&p, b"").unwrap();
        assert!(matches!(
            load_cifar_bin(&p, 1, 0, 10, "x").unwrap_err(),
            DataError::Empty { .. }
        ));
    }

    #[test]
    fn bad_label_is_an_error() {
        let t = TempDir::new("cifar-label");
        let p = t.join("test_batch.bin");
        std::fs::write(&p, records(&[&[0], &[10]])).unwrap();
        let e = load_cifar_bin(&p, 1, 0, 10, "x").unwrap_err();
        assert!(
            matches!(
                e,
                DataError::LabelOutOfRange {
                    index: 1,
                    label: 10,
                    num_classes: 10,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("test_batch.bin"));
        let p = t.join("train.bin");
        std::fs::write(&p, records(&[&[0, 100]])).unwrap();
        assert!(matches!(
            load_cifar_bin(&p, 2, 1, 100, "x").unwrap_err(),
            DataError::LabelOutOfRange { label: 100, .. }
        ));
    }

    #[test]
    fn missing_folder_explains() {
        let t = TempDir::new("cifar-missing");
        let e = load_cifar10(t.path()).unwrap_err();
        assert!(e.to_string().contains("cifar-10-batches-bin"), "{e}");
    }
}
