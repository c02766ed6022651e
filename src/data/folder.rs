//! Image folders: `root/<class>/<image>.{jpg,jpeg,png}`, one subfolder per class.
//!
//! Class indices follow the sorted subfolder names; files in a class are taken in
//! sorted name order. Hidden entries (starting with `.`) and files with other
//! extensions are ignored. Each image is decoded with the `image` crate (format
//! guessed from its content), converted to 1 channel (luma) or 3 (RGB), and resized
//! to `height×width` with a bilinear (triangle) filter when its size differs.
//!
//! [`load_image_folder_splits`] loads `root/train/` and `root/test/` together, mapping test's
//! classes to train's indices by folder name.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::dataset::Dataset;
use super::error::DataError;

const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let e = e.map_err(|e| DataError::io(dir, e))?;
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        out.push(e.path());
    }
    out.sort();
    Ok(out)
}

fn is_image(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .map(|e| EXTENSIONS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str()))
            .unwrap_or(false)
}

/// Decodes one image file and returns its pixels as C×H×W u8 at the requested size.
pub fn load_image_file(
    path: &Path,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Vec<u8>, DataError> {
    let decode_err = |message: String| DataError::Decode {
        path: path.to_path_buf(),
        message,
    };
    let img = image::ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?
        .decode()
        .map_err(|e| decode_err(e.to_string()))?;
    let img = if img.width() as usize != width || img.height() as usize != height {
        img.resize_exact(
            width as u32,
            height as u32,
            image::imageops::FilterType::Triangle,
        )
    } else {
        img
    };
    match channels {
        1 => Ok(img.to_luma8().into_raw()),
        3 => {
            // HWC interleaved -> CHW planar.
            let rgb = img.to_rgb8().into_raw();
            let hw = height * width;
            let mut out = vec![0u8; 3 * hw];
            for (i, px) in rgb.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    out[c * hw + i] = px[c];
                }
            }
            Ok(out)
        }
        c => Err(DataError::Invalid(format!(
            "image folders support 1 or 3 channels, not {c}"
        ))),
    }
}

fn check_size(channels: usize, height: usize, width: usize) -> Result<(), DataError> {
    if channels != 1 && channels != 3 {
        return Err(DataError::Invalid(format!(
            "image folders support 1 or 3 channels, not {channels}"
        )));
    }
    if height == 0 || width == 0 {
        return Err(DataError::Invalid(format!(
            "image size {height}×{width} must be positive"
        )));
    }
    Ok(())
}

/// The class subfolders of `root` as (name, folder), sorted by name.
fn class_dirs(root: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    let classes: Vec<(String, PathBuf)> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .map(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            (name.into_owned(), p)
        })
        .collect();
    if classes.is_empty() {
        return Err(DataError::NoClasses {
            path: root.to_path_buf(),
        });
    }
    Ok(classes)
}

/// Loads the images of `classes`, labelling the images of `classes[i]` with `i`.
fn load_classes(
    root: &Path,
    classes: &[(String, PathBuf)],
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Dataset, DataError> {
    let mut files = Vec::new();
    for (label, (_, dir)) in classes.iter().enumerate() {
        let imgs: Vec<PathBuf> = sorted_entries(dir)?
            .into_iter()
            .filter(|p| is_image(p))
            .collect();
        if imgs.is_empty() {
            return Err(DataError::EmptyClass { path: dir.clone() });
        }
        files.extend(imgs.into_iter().map(|p| (p, label as u32)));
    }
    let decoded: Vec<Vec<u8>> = files
        .par_iter()
        .map(|(p, _)| load_image_file(p, channels, height, width))
        .collect::<Result<_, _>>()?;
    let labels = files.iter().map(|(_, l)| *l).collect();
    let name = root
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image-folder".into());
    let class_names = classes.iter().map(|(n, _)| n.clone()).collect();
    Dataset::new(
        name,
        decoded.concat(),
        labels,
        channels,
        height,
        width,
        classes.len(),
        class_names,
    )
}

/// Loads an image folder into a [`Dataset`] of `channels×height×width` images.
///
/// Errors: [`DataError::NoClasses`] without subfolders, [`DataError::EmptyClass`] for a
/// subfolder without images, [`DataError::Decode`] naming the first file that does not decode.
pub fn load_image_folder(
    root: &Path,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Dataset, DataError> {
    check_size(channels, height, width)?;
    load_classes(root, &class_dirs(root)?, channels, height, width)
}

/// Returns the first class of `a` that `b` lacks, as a [`DataError::ClassMismatch`].
fn missing_class(
    a: &[(String, PathBuf)],
    a_root: &Path,
    b: &[(String, PathBuf)],
    b_root: &Path,
) -> Option<DataError> {
    a.iter()
        .find(|(name, _)| !b.iter().any(|(n, _)| n == name))
        .map(|(name, _)| DataError::ClassMismatch {
            class: name.clone(),
            present: a_root.to_path_buf(),
            missing: b_root.to_path_buf(),
        })
}

/// Loads `root/train/` and `root/test/` as (train, test) with one class mapping.
///
/// Class indices follow the sorted class-folder names of `train`; each `test` class folder gets
/// the index of the `train` folder with the same name. A class folder present in one split and
/// absent from the other is a [`DataError::ClassMismatch`] naming the class and both folders.
/// Other errors as in [`load_image_folder`].
pub fn load_image_folder_splits(
    root: &Path,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<(Dataset, Dataset), DataError> {
    check_size(channels, height, width)?;
    let (train_root, test_root) = (root.join("train"), root.join("test"));
    let train = class_dirs(&train_root)?;
    let test = class_dirs(&test_root)?;
    if let Some(e) = missing_class(&train, &train_root, &test, &test_root)
        .or_else(|| missing_class(&test, &test_root, &train, &train_root))
    {
        return Err(e);
    }
    let test_by_train: Vec<(String, PathBuf)> = train
        .iter()
        .filter_map(|(name, _)| test.iter().find(|(n, _)| n == name).cloned())
        .collect();
    Ok((
        load_classes(&train_root, &train, channels, height, width)?,
        load_classes(&test_root, &test_by_train, channels, height, width)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::TempDir;

    fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
        image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
            .save(path)
            .unwrap();
    }

    #[test]
    fn loads_sorted_classes_resized() {
        let t = TempDir::new("folder-ok");
        for c in ["b_dog", "a_cat"] {
            std::fs::create_dir_all(t.join(c)).unwrap();
        }
        write_png(&t.join("a_cat/1.png"), 8, 6, [255, 0, 0]);
        write_png(&t.join("a_cat/0.PNG"), 4, 4, [0, 255, 0]);
        image::RgbImage::from_pixel(5, 5, image::Rgb([0, 0, 255]))
            .save(t.join("b_dog/x.jpg"))
            .unwrap();
        std::fs::write(t.join("b_dog/notes.txt"), "ignored").unwrap();
        let d = load_image_folder(t.path(), 3, 4, 4).unwrap();
        assert_eq!(d.class_names, vec!["a_cat", "b_dog"]);
        assert_eq!(d.labels, vec![0, 0, 1]);
        assert_eq!((d.n, d.channels, d.height, d.width), (3, 3, 4, 4));
        // 0.PNG is pure green: channel planes 0, 255, 0.
        let g = d.image(0);
        assert!(g[..16].iter().all(|&v| v == 0) && g[16..32].iter().all(|&v| v == 255));
        // 1.png (resized) is red.
        assert!(d.image(1)[..16].iter().all(|&v| v == 255));
        // JPEG blue, approximately.
        assert!(d.image(2)[32..].iter().all(|&v| v > 200));
        let gray = load_image_folder(t.path(), 1, 2, 2).unwrap();
        assert_eq!(gray.sample_len(), 4);
    }

    #[test]
    fn undecodable_image_is_named() {
        let t = TempDir::new("folder-bad");
        std::fs::create_dir_all(t.join("c0")).unwrap();
        write_png(&t.join("c0/good.png"), 2, 2, [1, 2, 3]);
        std::fs::write(
            t.join("c0/broken.png"),
            b"\x89PNG\r\n\x1a\nthis is not really a png",
        )
        .unwrap();
        let e = load_image_folder(t.path(), 3, 2, 2).unwrap_err();
        assert!(matches!(e, DataError::Decode { .. }), "{e:?}");
        assert!(e.to_string().contains("broken.png"), "{e}");
    }

    #[test]
    fn empty_class_and_no_classes() {
        let t = TempDir::new("folder-empty");
        let e = load_image_folder(t.path(), 3, 2, 2).unwrap_err();
        assert!(matches!(e, DataError::NoClasses { .. }), "{e:?}");
        std::fs::create_dir_all(t.join("a")).unwrap();
        std::fs::create_dir_all(t.join("b")).unwrap();
        write_png(&t.join("a/x.png"), 2, 2, [0, 0, 0]);
        std::fs::write(t.join("b/readme.md"), "no images").unwrap();
        let e = load_image_folder(t.path(), 3, 2, 2).unwrap_err();
        assert!(
            matches!(&e, DataError::EmptyClass { path } if path.ends_with("b")),
            "{e:?}"
        );
        assert!(e.to_string().contains("empty class folder"));
    }

    /// `root/<split>/<class>/0.png` for each (split, class), each class a distinct gray level.
    fn split_tree(t: &TempDir, layout: &[(&str, &[&str])]) {
        for (split, classes) in layout {
            for c in *classes {
                let dir = t.join(&format!("{split}/{c}"));
                std::fs::create_dir_all(&dir).unwrap();
                let v = c.as_bytes()[0];
                write_png(&dir.join("0.png"), 2, 2, [v, v, v]);
            }
        }
    }

    #[test]
    fn splits_share_train_class_indices() {
        let t = TempDir::new("splits-ok");
        split_tree(
            &t,
            &[("train", &["a", "b", "c"]), ("test", &["c", "a", "b"])],
        );
        let (train, test) = load_image_folder_splits(t.path(), 1, 2, 2).unwrap();
        assert_eq!(train.class_names, vec!["a", "b", "c"]);
        assert_eq!(test.class_names, train.class_names);
        assert_eq!(train.labels, vec![0, 1, 2]);
        assert_eq!(test.labels, vec![0, 1, 2]);
        // Each test image carries its class's gray level, so labels follow names.
        for i in 0..3 {
            assert_eq!(test.image(i)[0], b"abc"[i]);
        }
        assert_eq!((train.name.as_str(), test.name.as_str()), ("train", "test"));
    }

    #[test]
    fn class_missing_from_a_split_is_named_with_both_folders() {
        for (train, test, class, present, missing) in [
            (&["a", "b", "c"][..], &["a", "c"][..], "b", "train", "test"),
            (&["a", "c"][..], &["a", "b", "c"][..], "b", "test", "train"),
        ] {
            let t = TempDir::new("splits-missing");
            split_tree(&t, &[("train", train), ("test", test)]);
            let e = load_image_folder_splits(t.path(), 3, 2, 2).unwrap_err();
            let want_present = t.join(present);
            let want_missing = t.join(missing);
            assert!(
                matches!(&e, DataError::ClassMismatch { class: c, present: p, missing: m }
                    if c == class && *p == want_present && *m == want_missing),
                "{e:?}"
            );
            let msg = e.to_string();
            assert!(msg.contains("'b'") && msg.contains(&want_present.display().to_string()));
            assert!(msg.contains(&want_missing.display().to_string()), "{msg}");
        }
    }

    #[test]
    fn splits_need_both_folders() {
        let t = TempDir::new("splits-one");
        split_tree(&t, &[("train", &["a"])]);
        let e = load_image_folder_splits(t.path(), 3, 2, 2).unwrap_err();
        assert!(
            matches!(&e, DataError::Io { path, .. } if *path == t.join("test")),
            "{e:?}"
        );
        let e = load_image_folder_splits(t.path(), 2, 2, 2).unwrap_err();
        assert!(matches!(e, DataError::Invalid(_)), "{e:?}");
    }
}
