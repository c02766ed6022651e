//! One split of a YOLO-format detection dataset, read into memory.
//!
//! The dataset file (`dataset.yaml`, see [`super::yolo`]) names the split's image folder; every
//! `.png` / `.jpg` / `.jpeg` in it (sorted by name, not recursive) is a sample. Its label file is
//! found as Ultralytics finds it: the path's last `images` folder becomes `labels` and the
//! extension `.txt` (`images/train/a.png` → `labels/train/a.txt`); no label file means no
//! objects. Images are held as RGB (grey replicated), boxes in pixels of the image.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::detect_image::{DetectImage, PixelBox};
use super::error::DataError;
use super::yolo::{parse_labels, DetectDatasetFile};

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];
const MAKE_DETECT: &str =
    "`mnv4-lab data make-detect --out DIR` creates the default detection set \
     (Fashion-MNIST items on 96×96 canvases) with DIR/dataset.yaml";

/// Which split of the dataset file to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectSplit {
    Train,
    Val,
    Test,
}

impl DetectSplit {
    /// The dataset file's key for this split.
    pub fn key(self) -> &'static str {
        match self {
            DetectSplit::Train => "train",
            DetectSplit::Val => "val",
            DetectSplit::Test => "test",
        }
    }
}

/// The images and objects of one split, with the dataset's class names.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectSet {
    names: Vec<String>,
    paths: Vec<PathBuf>,
    samples: Vec<DetectImage>,
}

impl DetectSet {
    /// Reads every image of `split` and its labels; errors name the file (and line).
    pub fn open(dataset_yaml: &Path, split: DetectSplit) -> Result<DetectSet, DataError> {
        let file = read_dataset_file(dataset_yaml)?;
        let dir = split_dir(dataset_yaml, &file, split)?;
        let paths = image_files(&dir, dataset_yaml, split)?;
        let classes = file.names.len();
        let samples = paths
            .par_iter()
            .map(|p| load_sample(p, classes))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DetectSet {
            names: file.names,
            paths,
            samples,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when the split holds no image (never, for an opened set).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Class names in label order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Sample `i`: RGB pixels and objects in its own pixels. Panics if `i >= len()`.
    pub fn sample(&self, i: usize) -> &DetectImage {
        &self.samples[i]
    }

    /// `(width, height)` of image `i`.
    pub fn image_size(&self, i: usize) -> (usize, usize) {
        (self.samples[i].width, self.samples[i].height)
    }

    /// The objects of image `i`, in its pixels.
    pub fn objects(&self, i: usize) -> &[PixelBox] {
        &self.samples[i].objects
    }

    /// The file image `i` was read from.
    pub fn path(&self, i: usize) -> &Path {
        &self.paths[i]
    }
}

fn read_dataset_file(path: &Path) -> Result<DetectDatasetFile, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            DataError::Invalid(format!("{} does not exist; {MAKE_DETECT}", path.display()))
        }
        _ => DataError::io(path, e),
    })?;
    DetectDatasetFile::parse(path, &text)
}

/// The split's image folder: under `path:` (relative to the file's folder), else that folder.
fn split_dir(
    yaml: &Path,
    file: &DetectDatasetFile,
    split: DetectSplit,
) -> Result<PathBuf, DataError> {
    let rel = match split {
        DetectSplit::Train => &file.train,
        DetectSplit::Val => &file.val,
        DetectSplit::Test => file
            .test
            .as_ref()
            .ok_or_else(|| DataError::Invalid(format!("{}: no `test:` split", yaml.display())))?,
    };
    let base = yaml.parent().unwrap_or(Path::new(""));
    let root = file
        .path
        .as_ref()
        .map_or(base.to_path_buf(), |p| base.join(p));
    Ok(root.join(rel))
}

/// The images in `dir`, sorted by name.
fn image_files(dir: &Path, yaml: &Path, split: DetectSplit) -> Result<Vec<PathBuf>, DataError> {
    if !dir.is_dir() {
        return Err(DataError::Invalid(format!(
            "{} does not exist or is not a folder (the `{}:` images of {}); {MAKE_DETECT}",
            dir.display(),
            split.key(),
            yaml.display()
        )));
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let p = entry.map_err(|e| DataError::io(dir, e))?.path();
        let ext = p
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if p.is_file() && ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str())) {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(DataError::Invalid(format!(
            "{}: no .png/.jpg/.jpeg images",
            dir.display()
        )));
    }
    files.sort();
    Ok(files)
}

/// `…/images/…/a.png` → `…/labels/…/a.txt` (the last `images` folder); else `a.txt` beside it.
fn label_path(image: &Path) -> PathBuf {
    let parts: Vec<_> = image.components().collect();
    let last_images = parts[..parts.len().saturating_sub(1)]
        .iter()
        .rposition(|c| c.as_os_str() == "images");
    let mut out: PathBuf = parts
        .iter()
        .enumerate()
        .map(|(i, c)| match Some(i) == last_images {
            true => Path::new("labels"),
            false => Path::new(c.as_os_str()),
        })
        .collect();
    out.set_extension("txt");
    out
}

/// One image as RGB with its objects in pixels.
fn load_sample(path: &Path, classes: usize) -> Result<DetectImage, DataError> {
    let img = image::ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?
        .decode()
        .map_err(|e| DataError::Decode {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
        .to_rgb8();
    let (width, height) = (img.width() as usize, img.height() as usize);
    let labels = label_path(path);
    let text = match std::fs::read_to_string(&labels) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(DataError::io(labels, e)),
    };
    let (w, h) = (width as f32, height as f32);
    let objects = parse_labels(&labels, &text, classes)?
        .into_iter()
        .map(|b| PixelBox {
            class: b.class,
            xyxy: [
                ((b.cx - b.w / 2.0) * w).clamp(0.0, w),
                ((b.cy - b.h / 2.0) * h).clamp(0.0, h),
                ((b.cx + b.w / 2.0) * w).clamp(0.0, w),
                ((b.cy + b.h / 2.0) * h).clamp(0.0, h),
            ],
        })
        .collect();
    Ok(DetectImage {
        width,
        height,
        rgb: img.into_raw(),
        objects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::{synthetic_detect_set, TempDir};

    fn write(path: PathBuf, bytes: impl AsRef<[u8]>) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// Under `root`: train holds a.png (40×20 RGB, two objects), b.jpg (30×30 grey, one) and
    /// c.png (no label file); val holds v.png; names `[x, y]`. Returns the dataset file.
    fn tiny(root: &Path) -> PathBuf {
        let train = root.join("images/train");
        std::fs::create_dir_all(&train).unwrap();
        std::fs::create_dir_all(root.join("images/val")).unwrap();
        let a = image::RgbImage::from_fn(40, 20, |x, y| image::Rgb([x as u8, y as u8, 7]));
        a.save(train.join("a.png")).unwrap();
        image::GrayImage::from_pixel(30, 30, image::Luma([90]))
            .save(train.join("b.jpg"))
            .unwrap();
        image::GrayImage::new(8, 8)
            .save(train.join("c.png"))
            .unwrap();
        image::GrayImage::new(8, 8)
            .save(root.join("images/val/v.png"))
            .unwrap();
        write(
            root.join("labels/train/a.txt"),
            "1 0.5 0.5 0.5 0.5\n0 0.1 0.1 0.2 0.2\n",
        );
        write(root.join("labels/train/b.txt"), "0 0.5 0.5 1 1\n");
        let yaml = root.join("dataset.yaml");
        write(
            yaml.clone(),
            "train: images/train\nval: images/val\nnames: [x, y]\n",
        );
        yaml
    }

    fn pixel(img: &DetectImage, x: usize, y: usize) -> [u8; 3] {
        let i = (y * img.width + x) * 3;
        [img.rgb[i], img.rgb[i + 1], img.rgb[i + 2]]
    }

    #[test]
    fn a_yolo_split_loads_with_its_objects_in_pixels() {
        let tmp = TempDir::new("detect-set");
        let yaml = tiny(tmp.path());
        let set = DetectSet::open(&yaml, DetectSplit::Train).unwrap();
        assert_eq!(
            (set.len(), set.names()),
            (3, &["x".to_string(), "y".to_string()][..])
        );
        assert_eq!(set.path(0), tmp.join("images/train/a.png"));
        assert_eq!(set.image_size(0), (40, 20));
        let boxes = |class, xyxy| PixelBox { class, xyxy };
        assert_eq!(
            set.objects(0),
            [
                boxes(1, [10.0, 5.0, 30.0, 15.0]),
                boxes(0, [0.0, 0.0, 8.0, 4.0])
            ]
        );
        assert_eq!(pixel(set.sample(0), 13, 17), [13, 17, 7]);
        let grey = set.sample(1);
        assert_eq!(
            (grey.width, grey.height, grey.rgb.len()),
            (30, 30, 30 * 30 * 3)
        );
        assert!(
            grey.rgb.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]),
            "grey is replicated"
        );
        assert_eq!(set.objects(1), [boxes(0, [0.0, 0.0, 30.0, 30.0])]);
        assert!(set.objects(2).is_empty(), "no label file: no objects");
        assert_eq!(DetectSet::open(&yaml, DetectSplit::Val).unwrap().len(), 1);
        let e = DetectSet::open(&yaml, DetectSplit::Test)
            .unwrap_err()
            .to_string();
        assert!(e.contains("dataset.yaml: no `test:` split"), "{e}");
    }

    #[test]
    fn bad_inputs_name_the_file() {
        let err = |root: &Path, split| {
            DetectSet::open(&root.join("dataset.yaml"), split)
                .unwrap_err()
                .to_string()
        };
        let tmp = TempDir::new("detect-set-bad");
        let e = err(tmp.path(), DetectSplit::Train);
        assert!(
            e.contains("dataset.yaml does not exist") && e.contains("make-detect"),
            "{e}"
        );

        let root = tmp.join("no-val");
        tiny(&root);
        std::fs::remove_dir_all(root.join("images/val")).unwrap();
        let e = err(&root, DetectSplit::Val);
        let dir = root.join("images/val").display().to_string();
        assert!(
            e.contains(&dir) && e.contains("`val:`") && e.contains("make-detect"),
            "{e}"
        );

        let root = tmp.join("bad-label");
        tiny(&root);
        write(
            root.join("labels/train/b.txt"),
            "0 0.5 0.5 1 1\n2 0.5 0.5 0.1 0.1\n",
        );
        let e = err(&root, DetectSplit::Train);
        assert!(
            e.contains("labels/train/b.txt:2: class 2 is out of range"),
            "{e}"
        );

        let root = tmp.join("bad-image");
        tiny(&root);
        write(root.join("images/train/d.png"), "not a png");
        let e = err(&root, DetectSplit::Train);
        assert!(e.contains("images/train/d.png: cannot decode image"), "{e}");

        let root = tmp.join("empty");
        tiny(&root);
        std::fs::remove_file(root.join("images/val/v.png")).unwrap();
        let e = err(&root, DetectSplit::Val);
        assert!(e.contains("images/val: no .png/.jpg/.jpeg images"), "{e}");
    }

    #[test]
    fn label_files_sit_under_the_last_images_folder() {
        assert_eq!(
            label_path(Path::new("/d/images/x/images/train/a.b.png")),
            Path::new("/d/images/x/labels/train/a.b.txt")
        );
        assert_eq!(
            label_path(Path::new("photos/images.jpg")),
            Path::new("photos/images.txt")
        );
    }

    #[test]
    fn the_generated_default_set_opens() {
        let tmp = TempDir::new("detect-set-synth");
        let yaml = synthetic_detect_set(tmp.path(), 5, 3);
        let set = DetectSet::open(&yaml, DetectSplit::Train).unwrap();
        assert_eq!((set.len(), set.names().len()), (5, 10));
        for i in 0..set.len() {
            assert_eq!(set.image_size(i), (96, 96));
            assert!(!set.objects(i).is_empty(), "image {i} has no objects");
            for o in set.objects(i) {
                let [x1, y1, x2, y2] = o.xyxy;
                assert!(0.0 <= x1 && x1 < x2 && x2 <= 96.0 && 0.0 <= y1 && y1 < y2 && y2 <= 96.0);
            }
        }
        assert_eq!(DetectSet::open(&yaml, DetectSplit::Val).unwrap().len(), 3);
    }
}
