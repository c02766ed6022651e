//! Image folders: `root/<class>/<image>.{jpg,jpeg,png}`, one subfolder per class.
//!
//! Class indices follow the sorted subfolder names; files in a class are taken in
//! sorted name order. Hidden entries (starting with `.`) and files with other
//! extensions are ignored. Each image is decoded with the `image` crate (format
//! guessed from its content), converted to 1 channel (luma) or 3 (RGB), and resized
//! to `height×width` with a bilinear (triangle) filter when its size differs.

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
    let classes: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if classes.is_empty() {
        return Err(DataError::NoClasses {
            path: root.to_path_buf(),
        });
    }
    let mut files = Vec::new();
    let mut class_names = Vec::new();
    for (label, dir) in classes.iter().enumerate() {
        let imgs: Vec<PathBuf> = sorted_entries(dir)?
            .into_iter()
            .filter(|p| is_image(p))
            .collect();
        if imgs.is_empty() {
            return Err(DataError::EmptyClass { path: dir.clone() });
        }
        class_names.push(
            dir.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        );
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
}
