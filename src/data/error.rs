//! The one error type shared by every loader in [`crate::data`].
//!
//! Each variant names the file (or folder) involved and the exact problem, so a
//! message read in a log is enough to fix the data without a debugger.

use std::path::PathBuf;

/// Everything that can go wrong while finding, reading, checking or batching data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O error (open, read, list, create) on `path`.
    #[error("{path}: {source}")]
    Io {
        /// File or folder the operation was about.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A gzip stream (detected by its magic bytes `1f 8b`) failed to decompress.
    #[error("{path}: gzip data is corrupt or truncated: {source}")]
    Gzip {
        /// The gzip file.
        path: PathBuf,
        /// Decompressor error.
        #[source]
        source: std::io::Error,
    },

    /// The leading magic number of an idx file is not the expected one.
    #[error("{path}: bad magic number {found} (0x{found:08x}), expected {expected} (0x{expected:08x}, {what}){hint}")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Magic number read from the file.
        found: u32,
        /// Magic number required.
        expected: u32,
        /// What the expected magic means, e.g. "idx3 u8 images".
        what: &'static str,
        /// Extra hint (may be empty), e.g. "; this looks like a label file".
        hint: String,
    },

    /// The file holds fewer bytes than its header (or record layout) requires.
    #[error("{path}: truncated file: expected {expected} bytes{detail}, found {actual}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes required.
        expected: u64,
        /// Bytes present.
        actual: u64,
        /// Context such as " (after gzip decompression)" (may be empty).
        detail: &'static str,
    },

    /// The file holds more bytes than its header declares (never silently ignored).
    #[error("{path}: {actual} bytes{detail} but the header declares {expected}; refusing to ignore {extra} trailing bytes", extra = actual - expected)]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Bytes declared by the header.
        expected: u64,
        /// Bytes present.
        actual: u64,
        /// Context such as " (after gzip decompression)" (may be empty).
        detail: &'static str,
    },

    /// A header field is unusable (e.g. zero image size, sizes that overflow).
    #[error("{path}: bad header: {message}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// A fixed-size-record file (CIFAR) whose size is not a multiple of the record size.
    #[error("{path}: truncated record: file size {size} bytes is not a multiple of the {record}-byte record size ({full} full records + {rest} stray bytes)", full = size / record, rest = size % record)]
    PartialRecord {
        /// The file.
        path: PathBuf,
        /// File size in bytes.
        size: u64,
        /// Record size in bytes.
        record: u64,
    },

    /// A file that holds no samples at all.
    #[error("{path}: file is empty (no samples)")]
    Empty {
        /// The file.
        path: PathBuf,
    },

    /// A label is not below the number of classes.
    #[error("{path}: label {label} of sample {index} is out of range (dataset has {num_classes} classes, labels must be 0..{num_classes})")]
    LabelOutOfRange {
        /// The label file.
        path: PathBuf,
        /// Sample index (0-based).
        index: usize,
        /// Offending label.
        label: u32,
        /// Number of classes.
        num_classes: usize,
    },

    /// Image and label files disagree about the number of samples.
    #[error("image/label count mismatch: {images_path} holds {images} images but {labels_path} holds {labels} labels")]
    CountMismatch {
        /// Image file.
        images_path: PathBuf,
        /// Number of images.
        images: usize,
        /// Label file.
        labels_path: PathBuf,
        /// Number of labels.
        labels: usize,
    },

    /// An image file in an image folder that could not be decoded.
    #[error("{path}: cannot decode image: {message}")]
    Decode {
        /// The image file.
        path: PathBuf,
        /// Decoder message.
        message: String,
    },

    /// A class folder of an image folder that contains no JPEG/PNG file.
    #[error("{path}: empty class folder (no .jpg/.jpeg/.png files)")]
    EmptyClass {
        /// The class folder.
        path: PathBuf,
    },

    /// An image-folder root without any class subfolder.
    #[error("{path}: no class folders (expected one subfolder per class, each holding .jpg/.jpeg/.png images)")]
    NoClasses {
        /// The root folder.
        path: PathBuf,
    },

    /// A class folder in one split of an image folder without a counterpart in the other split.
    #[error("class '{class}' has a folder in {present} but none in {missing}; train and test must hold the same class folders")]
    ClassMismatch {
        /// The class (folder name).
        class: String,
        /// The split folder that holds the class.
        present: PathBuf,
        /// The split folder that lacks it.
        missing: PathBuf,
    },

    /// A dataset could not be found in any of the searched places.
    #[error("{dataset} not found; searched: {searched}.\n{how_to_get}", searched = display_paths(.searched))]
    NotFound {
        /// Dataset name.
        dataset: &'static str,
        /// Folders that were searched, in order.
        searched: Vec<PathBuf>,
        /// Instructions to obtain the dataset.
        how_to_get: String,
    },

    /// Downloading a dataset file failed.
    #[error("download of {url} into {dest} failed: {reason}.\n{how_to_get}")]
    DownloadFailed {
        /// URL that was requested.
        url: String,
        /// Destination file.
        dest: PathBuf,
        /// What went wrong (curl exit status, missing curl, ...).
        reason: String,
        /// Other ways to obtain the dataset.
        how_to_get: String,
    },

    /// A train/validation split that cannot be made.
    #[error("cannot split {n} samples with a validation set of {val_size}: val_size must be smaller than the number of samples")]
    InvalidSplit {
        /// Number of samples.
        n: usize,
        /// Requested validation size.
        val_size: usize,
    },

    /// A line of a detection label file or dataset file that cannot be used as it is.
    #[error("{path}:{line}: {message}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong and what is expected.
        message: String,
    },

    /// An invalid argument or configuration (batch size 0, unsupported channels, ...).
    #[error("invalid data configuration: {0}")]
    Invalid(String),

    /// A candle error while building or moving batch tensors.
    #[error("building batch tensors: {0}")]
    Candle(#[from] candle_core::Error),
}

impl DataError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_file_and_problem() {
        let e = DataError::BadMagic {
            path: "x/train-images".into(),
            found: 2049,
            expected: 2051,
            what: "idx3 u8 images",
            hint: String::new(),
        };
        let m = e.to_string();
        assert!(m.contains("x/train-images") && m.contains("2049") && m.contains("2051"));
        let e = DataError::TrailingBytes {
            path: "f".into(),
            expected: 10,
            actual: 13,
            detail: "",
        };
        assert!(e.to_string().contains("3 trailing bytes"));
        let e = DataError::PartialRecord {
            path: "b.bin".into(),
            size: 3074,
            record: 3073,
        };
        assert!(e.to_string().contains("1 full records + 1 stray bytes"));
    }
}
