//! MNIST-style idx files (images magic 2051, labels magic 2049), raw or gzip.
//!
//! Gzip is detected by the magic bytes `1f 8b`, never by the file name. Sizes are
//! checked exactly: a short file is [`DataError::Truncated`], a long one
//! [`DataError::TrailingBytes`]; nothing is silently cut.

use std::io::{Read, Write};
use std::path::Path;

use super::dataset::Dataset;
use super::error::DataError;

/// Magic number of an idx3 file of u8 images (`00 00 08 03`).
pub const IDX_IMAGES_MAGIC: u32 = 2051;
/// Magic number of an idx1 file of u8 labels (`00 00 08 01`).
pub const IDX_LABELS_MAGIC: u32 = 2049;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// u8 images read from an idx3 file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub n: usize,
    /// Rows (height).
    pub rows: usize,
    /// Columns (width).
    pub cols: usize,
    /// `n * rows * cols` pixels, row-major per image.
    pub pixels: Vec<u8>,
}

/// Reads a whole file, transparently decompressing it when it starts with the gzip magic.
///
/// Returns the bytes and whether the file was gzip.
pub fn read_maybe_gz(path: &Path) -> Result<(Vec<u8>, bool), DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if raw.len() >= 2 && raw[..2] == GZIP_MAGIC {
        let mut out = Vec::with_capacity(raw.len() * 2);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|source| DataError::Gzip {
                path: path.to_path_buf(),
                source,
            })?;
        Ok((out, true))
    } else {
        Ok((raw, false))
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn detail(gz: bool) -> &'static str {
    if gz {
        " (after gzip decompression)"
    } else {
        ""
    }
}

/// Checks header length, magic, and exact total size; returns the header's u32 fields after the magic.
fn check_idx(
    path: &Path,
    bytes: &[u8],
    gz: bool,
    magic: u32,
    what: &'static str,
    ndims: usize,
) -> Result<Vec<usize>, DataError> {
    let header = 4 + 4 * ndims;
    if bytes.len() < 4 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: header as u64,
            actual: bytes.len() as u64,
            detail: detail(gz),
        });
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        let hint = match found {
            IDX_IMAGES_MAGIC => "; this looks like an idx3 image file".to_string(),
            IDX_LABELS_MAGIC => "; this looks like an idx1 label file".to_string(),
            _ if bytes[..2] == GZIP_MAGIC => "; data is still gzip after decompression".to_string(),
            _ => String::new(),
        };
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found,
            expected: magic,
            what,
            hint,
        });
    }
    if bytes.len() < header {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: header as u64,
            actual: bytes.len() as u64,
            detail: detail(gz),
        });
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|d| be_u32(bytes, 4 + 4 * d) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .and_then(|body| body.checked_add(header as u64))
        .ok_or_else(|| DataError::BadHeader {
            path: path.to_path_buf(),
            message: format!("dimensions {dims:?} overflow"),
        })?;
    let actual = bytes.len() as u64;
    if actual < expected {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected,
            actual,
            detail: detail(gz),
        });
    }
    if actual > expected {
        return Err(DataError::TrailingBytes {
            path: path.to_path_buf(),
            expected,
            actual,
            detail: detail(gz),
        });
    }
    Ok(dims)
}

/// Reads an idx3 u8 image file (magic 2051), raw or gzip.
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DataError> {
    let (bytes, gz) = read_maybe_gz(path)?;
    let dims = check_idx(path, &bytes, gz, IDX_IMAGES_MAGIC, "idx3 u8 images", 3)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if n > 0 && (rows == 0 || cols == 0) {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            message: format!("{n} images of zero size {rows}×{cols}"),
        });
    }
    let mut pixels = bytes;
    pixels.drain(..16);
    Ok(IdxImages {
        n,
        rows,
        cols,
        pixels,
    })
}

/// Reads an idx1 u8 label file (magic 2049), raw or gzip.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let (bytes, gz) = read_maybe_gz(path)?;
    check_idx(path, &bytes, gz, IDX_LABELS_MAGIC, "idx1 u8 labels", 1)?;
    let mut labels = bytes;
    labels.drain(..8);
    Ok(labels)
}

/// Loads an image file and a label file into a 1-channel [`Dataset`].
///
/// Errors on a count mismatch or a label `>= num_classes`. The dataset is named
/// after the image file; callers usually rename it (e.g. `"mnist/train"`).
pub fn load_idx_pair(
    images: &Path,
    labels: &Path,
    num_classes: usize,
) -> Result<Dataset, DataError> {
    let img = read_idx_images(images)?;
    let lab = read_idx_labels(labels)?;
    if img.n != lab.len() {
        return Err(DataError::CountMismatch {
            images_path: images.to_path_buf(),
            images: img.n,
            labels_path: labels.to_path_buf(),
            labels: lab.len(),
        });
    }
    if let Some((index, &label)) = lab
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= num_classes)
    {
        return Err(DataError::LabelOutOfRange {
            path: labels.to_path_buf(),
            index,
            label: label as u32,
            num_classes,
        });
    }
    let name = images
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if img.n == 0 {
        return Err(DataError::Empty {
            path: images.to_path_buf(),
        });
    }
    Dataset::new(
        name,
        img.pixels,
        lab.into_iter().map(u32::from).collect(),
        1,
        img.rows,
        img.cols,
        num_classes,
        vec![],
    )
}

fn write_bytes(path: &Path, bytes: &[u8], gzip: bool) -> Result<(), DataError> {
    let f = std::fs::File::create(path).map_err(|e| DataError::io(path, e))?;
    let res = if gzip {
        let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        enc.write_all(bytes).and_then(|_| enc.finish().map(|_| ()))
    } else {
        let mut f = f;
        f.write_all(bytes)
    };
    res.map_err(|e| DataError::io(path, e))
}

/// Writes u8 images as an idx3 file (gzip-compressed when `gzip`); used by tests and tools.
pub fn write_idx_images(
    path: &Path,
    rows: usize,
    cols: usize,
    pixels: &[u8],
    gzip: bool,
) -> Result<(), DataError> {
    let per = rows * cols;
    if per == 0 || !pixels.len().is_multiple_of(per) {
        return Err(DataError::Invalid(format!(
            "write_idx_images: {} pixels are not a whole number of {rows}×{cols} images",
            pixels.len()
        )));
    }
    let n = pixels.len() / per;
    let mut bytes = Vec::with_capacity(16 + pixels.len());
    for v in [IDX_IMAGES_MAGIC, n as u32, rows as u32, cols as u32] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    bytes.extend_from_slice(pixels);
    write_bytes(path, &bytes, gzip)
}

/// Writes u8 labels as an idx1 file (gzip-compressed when `gzip`); used by tests and tools.
pub fn write_idx_labels(path: &Path, labels: &[u8], gzip: bool) -> Result<(), DataError> {
    let mut bytes = Vec::with_capacity(8 + labels.len());
    for v in [IDX_LABELS_MAGIC, labels.len() as u32] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    bytes.extend_from_slice(labels);
    write_bytes(path, &bytes, gzip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::TempDir;

    fn pixels(n: usize, rows: usize, cols: usize) -> Vec<u8> {
        (0..n * rows * cols).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn round_trip_raw_and_gz() {
        let t = TempDir::new("idx-rt");
        let px = pixels(5, 3, 4);
        let labels = [0u8, 9, 3, 3, 1];
        for gz in [false, true] {
            // Names deliberately do not say ".gz": detection is by magic bytes.
            let ip = t.join(&format!("img-{gz}"));
            let lp = t.join(&format!("lab-{gz}"));
            write_idx_images(&ip, 3, 4, &px, gz).unwrap();
            write_idx_labels(&lp, &labels, gz).unwrap();
            let head = std::fs::read(&ip).unwrap();
            assert_eq!(head[..2] == GZIP_MAGIC, gz);
            let d = load_idx_pair(&ip, &lp, 10).unwrap();
            assert_eq!((d.n, d.channels, d.height, d.width), (5, 1, 3, 4));
            assert_eq!(d.images, px);
            assert_eq!(d.labels, vec![0, 9, 3, 3, 1]);
            assert_eq!(d.num_classes, 10);
        }
    }

    #[test]
    fn bad_magic_names_found_and_expected() {
        let t = TempDir::new("idx-magic");
        let lp = t.join("labels");
        write_idx_labels(&lp, &[1, 2], false).unwrap();
        // A label file passed as images.
        let e = read_idx_images(&lp).unwrap_err();
        match &e {
            DataError::BadMagic {
                found, expected, ..
            } => assert_eq!((*found, *expected), (2049, 2051)),
            other => panic!("unexpected {other:?}"),
        }
        let m = e.to_string();
        assert!(
            m.contains("labels") && m.contains("2049") && m.contains("2051"),
            "{m}"
        );
        assert!(m.contains("looks like an idx1 label file"), "{m}");
        // Garbage.
        let g = t.join("garbage");
        std::fs::write(&g, b"hello world, not idx").unwrap();
        assert!(matches!(
            read_idx_labels(&g).unwrap_err(),
            DataError::BadMagic { expected: 2049, .. }
        ));
    }

    #[test]
    fn truncated_and_trailing_are_errors() {
        let t = TempDir::new("idx-trunc");
        let ip = t.join("img");
        write_idx_images(&ip, 2, 2, &pixels(3, 2, 2), false).unwrap();
        let full = std::fs::read(&ip).unwrap();
        // Cut one byte: expected 16+12 = 28, actual 27.
        std::fs::write(&ip, &full[..full.len() - 1]).unwrap();
        let e = read_idx_images(&ip).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::Truncated {
                    expected: 28,
                    actual: 27,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("expected 28 bytes"), "{e}");
        // Cut into the header.
        std::fs::write(&ip, &full[..10]).unwrap();
        assert!(matches!(
            read_idx_images(&ip).unwrap_err(),
            DataError::Truncated {
                expected: 16,
                actual: 10,
                ..
            }
        ));
        // Extra bytes.
        let mut long = full.clone();
        long.extend_from_slice(&[0, 0]);
        std::fs::write(&ip, &long).unwrap();
        assert!(matches!(
            read_idx_images(&ip).unwrap_err(),
            DataError::TrailingBytes {
                expected: 28,
                actual: 30,
                ..
            }
        ));
        // Truncated gzip member: decompressor error naming the file.
        let gp = t.join("img.gz");
        write_idx_images(&gp, 2, 2, &pixels(3, 2, 2), true).unwrap();
        let gzb = std::fs::read(&gp).unwrap();
        std::fs::write(&gp, &gzb[..gzb.len() - 6]).unwrap();
        let e = read_idx_images(&gp).unwrap_err();
        assert!(matches!(e, DataError::Gzip { .. }), "{e:?}");
        assert!(e.to_string().contains("img.gz"));
        // Truncated body inside a valid gzip stream: reports decompressed sizes.
        write_bytes(&gp, &full[..20], true).unwrap();
        let e = read_idx_images(&gp).unwrap_err();
        assert!(e.to_string().contains("after gzip decompression"), "{e}");
    }

    #[test]
    fn label_out_of_range_and_count_mismatch() {
        let t = TempDir::new("idx-labels");
        let ip = t.join("img");
        let lp = t.join("lab");
        write_idx_images(&ip, 2, 2, &pixels(3, 2, 2), false).unwrap();
        write_idx_labels(&lp, &[0, 10, 1], false).unwrap();
        let e = load_idx_pair(&ip, &lp, 10).unwrap_err();
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
        assert!(e.to_string().contains("lab"));
        write_idx_labels(&lp, &[0, 1], false).unwrap();
        let e = load_idx_pair(&ip, &lp, 10).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::CountMismatch {
                    images: 3,
                    labels: 2,
                    ..
                }
            ),
            "{e:?}"
        );
        let m = e.to_string();
        assert!(m.contains("3 images") && m.contains("2 labels"), "{m}");
    }

    #[test]
    fn missing_file_names_path() {
        let t = TempDir::new("idx-missing");
        let e = read_idx_labels(&t.join("nope")).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }));
        assert!(e.to_string().contains("nope"));
    }
}
