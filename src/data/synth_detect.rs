//! The embedded default detection dataset: Fashion-MNIST items placed at several scales on
//! larger black canvases, 1 to `max_items` per image (they may overlap), with unlabelled
//! clutter (faint fragments of other items), written in the YOLO format so that it can be
//! opened and checked by eye. Training canvases draw items from Fashion-MNIST's training split;
//! validation canvases from the first half of its test split and test canvases from the second
//! half, so no item is seen in both the split a model is selected on and the one it is reported
//! on. Every canvas is seeded from (seed, split, index).

use super::dataset::Dataset;
use super::error::DataError;
use super::seed::derive_seed;
use super::yolo::{format_labels, DetectDatasetFile, YoloBox};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

/// A pixel brighter than this belongs to an item's box (items are bright on black).
const INK: u8 = 24;
/// Clutter fragments are drawn at this fraction of their brightness.
const CLUTTER_GAIN: f32 = 0.35;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthDetectConfig {
    /// Side of the square canvas, pixels.
    pub canvas: usize,
    pub train: usize,
    pub val: usize,
    pub test: usize,
    /// Items per canvas: 1 ..= max_items.
    pub max_items: usize,
    /// Item side as a multiple of 28 pixels, drawn uniformly from this range.
    pub scale: (f32, f32),
    /// Unlabelled clutter fragments per canvas.
    pub clutter: usize,
    pub seed: u64,
}

impl Default for SynthDetectConfig {
    fn default() -> Self {
        Self {
            canvas: 96,
            train: 4000,
            val: 1000,
            test: 1000,
            max_items: 4,
            scale: (0.6, 1.8),
            clutter: 3,
            seed: 0,
        }
    }
}

impl SynthDetectConfig {
    fn check(&self) -> Result<(), DataError> {
        let bad = |m: String| Err(DataError::Invalid(m));
        if self.canvas < 32 {
            return bad(format!(
                "canvas {} is too small: at least 32 pixels",
                self.canvas
            ));
        }
        if self.max_items == 0 || self.train == 0 || self.val == 0 || self.test == 0 {
            return bad("max_items, train, val and test must be positive".into());
        }
        let (lo, hi) = self.scale;
        if !(lo > 0.0 && lo <= hi && (28.0 * hi) as usize <= self.canvas) {
            return bad(format!(
                "item scale {lo}..{hi} must be positive, ordered, and fit the {} canvas",
                self.canvas
            ));
        }
        Ok(())
    }
}

/// One canvas and its boxes.
pub fn make_canvas(
    src: &Dataset,
    cfg: &SynthDetectConfig,
    rng: &mut StdRng,
) -> (Vec<u8>, Vec<YoloBox>) {
    let s = cfg.canvas;
    let mut img = vec![0u8; s * s];
    let mut boxes = Vec::new();
    for _ in 0..rng.random_range(1..=cfg.max_items) {
        let i = rng.random_range(0..src.len());
        let side =
            ((28.0 * rng.random_range(cfg.scale.0..=cfg.scale.1)).round() as usize).clamp(8, s);
        let item = resize(src.image(i), src.width, side);
        let (x0, y0) = (
            rng.random_range(0..=s - side),
            rng.random_range(0..=s - side),
        );
        paste(&mut img, s, &item, side, (x0, y0), 1.0);
        if let Some((bx0, by0, bx1, by1)) = ink_bounds(&item, side) {
            let n = s as f32;
            let (w, h) = ((bx1 + 1 - bx0) as f32, (by1 + 1 - by0) as f32);
            boxes.push(YoloBox {
                class: src.label(i) as usize,
                cx: ((x0 + bx0) as f32 + w / 2.0) / n,
                cy: ((y0 + by0) as f32 + h / 2.0) / n,
                w: w / n,
                h: h / n,
            });
        }
    }
    for _ in 0..cfg.clutter {
        let i = rng.random_range(0..src.len());
        let side = rng.random_range(6..=12).min(s);
        let item = resize(src.image(i), src.width, 28);
        let (fx, fy) = (
            rng.random_range(0..=28 - side),
            rng.random_range(0..=28 - side),
        );
        let frag: Vec<u8> = (0..side * side)
            .map(|k| item[(fy + k / side) * 28 + fx + k % side])
            .collect();
        let at = (
            rng.random_range(0..=s - side),
            rng.random_range(0..=s - side),
        );
        paste(&mut img, s, &frag, side, at, CLUTTER_GAIN);
    }
    (img, boxes)
}

/// Bilinear resize of a square `n`×`n` grey image to `side`×`side` (half-pixel centres).
fn resize(src: &[u8], n: usize, side: usize) -> Vec<u8> {
    let scale = n as f32 / side as f32;
    let tap = |o: usize| {
        let x = ((o as f32 + 0.5) * scale - 0.5).clamp(0.0, (n - 1) as f32);
        let i = x.floor() as usize;
        (i, (i + 1).min(n - 1), x - i as f32)
    };
    let mut out = vec![0u8; side * side];
    for y in 0..side {
        let (y0, y1, wy) = tap(y);
        for x in 0..side {
            let (x0, x1, wx) = tap(x);
            let p = |yy: usize, xx: usize| src[yy * n + xx] as f32;
            let top = p(y0, x0) * (1.0 - wx) + p(y0, x1) * wx;
            let bot = p(y1, x0) * (1.0 - wx) + p(y1, x1) * wx;
            out[y * side + x] = (top * (1.0 - wy) + bot * wy).round() as u8;
        }
    }
    out
}

/// Draws `item` (`side`×`side`) at `(x0, y0)` keeping the brighter pixel, scaled by `gain`.
fn paste(img: &mut [u8], s: usize, item: &[u8], side: usize, (x0, y0): (usize, usize), gain: f32) {
    for y in 0..side {
        for x in 0..side {
            let v = (item[y * side + x] as f32 * gain) as u8;
            let p = &mut img[(y0 + y) * s + x0 + x];
            *p = (*p).max(v);
        }
    }
}

/// Inclusive pixel bounds `(x0, y0, x1, y1)` of the item's ink, if it has any.
fn ink_bounds(item: &[u8], side: usize) -> Option<(usize, usize, usize, usize)> {
    let ink: Vec<(usize, usize)> = (0..side * side)
        .filter(|&k| item[k] > INK)
        .map(|k| (k % side, k / side))
        .collect();
    Some((
        ink.iter().map(|p| p.0).min()?,
        ink.iter().map(|p| p.1).min()?,
        ink.iter().map(|p| p.0).max()?,
        ink.iter().map(|p| p.1).max()?,
    ))
}

/// The held-out items split in two disjoint halves: (validation pool, test pool).
pub fn held_out_pools(held_out: &Dataset) -> (Dataset, Dataset) {
    let half = held_out.len() / 2;
    let indices: Vec<usize> = (0..held_out.len()).collect();
    (
        held_out.subset(&indices[..half]),
        held_out.subset(&indices[half..]),
    )
}

/// Writes the dataset into `out` (which must not exist):
/// `images/{train,val,test}/NNNNNN.png`, `labels/{train,val,test}/NNNNNN.txt` and
/// `dataset.yaml`. Validation and test canvases draw their items from the two halves of
/// `held_out` ([`held_out_pools`]). It is written into a sibling temporary folder and renamed at
/// the end, so an interrupted run leaves no half dataset behind.
pub fn write_synthetic_detection(
    train_src: &Dataset,
    held_out: &Dataset,
    cfg: &SynthDetectConfig,
    out: &Path,
) -> Result<DetectDatasetFile, DataError> {
    cfg.check()?;
    if held_out.len() < 2 {
        return Err(DataError::Invalid(format!(
            "the held-out items ({}) must number at least 2, one for each of val and test",
            held_out.len()
        )));
    }
    if out.exists() {
        return Err(DataError::Invalid(format!(
            "{} exists: remove it or choose another folder",
            out.display()
        )));
    }
    let tmp = out.with_extension(format!("tmp-{}", std::process::id()));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    let (val_pool, test_pool) = held_out_pools(held_out);
    for (split, src, n, id) in [
        ("train", train_src, cfg.train, 1),
        ("val", &val_pool, cfg.val, 2),
        ("test", &test_pool, cfg.test, 3),
    ] {
        let (images, labels) = (
            tmp.join("images").join(split),
            tmp.join("labels").join(split),
        );
        std::fs::create_dir_all(&images).map_err(io(&images))?;
        std::fs::create_dir_all(&labels).map_err(io(&labels))?;
        for i in 0..n {
            let mut rng = StdRng::seed_from_u64(derive_seed(&[cfg.seed, id, i as u64]));
            let (img, boxes) = make_canvas(src, cfg, &mut rng);
            let png = images.join(format!("{i:06}.png"));
            let side = cfg.canvas as u32;
            image::GrayImage::from_raw(side, side, img)
                .expect("the canvas holds side² pixels")
                .save(&png)
                .map_err(|e| DataError::Io {
                    path: png.clone(),
                    source: std::io::Error::other(e),
                })?;
            let txt = labels.join(format!("{i:06}.txt"));
            std::fs::write(&txt, format_labels(&boxes)).map_err(io(&txt))?;
        }
    }
    let file = DetectDatasetFile {
        path: None,
        train: "images/train".into(),
        val: "images/val".into(),
        test: Some("images/test".into()),
        names: train_src.class_names.clone(),
    };
    let yaml = tmp.join("dataset.yaml");
    std::fs::write(&yaml, file.format()).map_err(io(&yaml))?;
    std::fs::rename(&tmp, out).map_err(io(out))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::{require_input, TempDir};
    use crate::data::yolo::parse_labels;
    use crate::data::{load_fashion_mnist, DEBIAN_FASHION_MNIST_DIR};

    fn small() -> SynthDetectConfig {
        SynthDetectConfig {
            canvas: 64,
            train: 12,
            val: 4,
            test: 3,
            ..Default::default()
        }
    }

    #[test]
    fn the_default_set_is_seeded_yolo_with_boxes_around_the_items() {
        let dir = Path::new(DEBIAN_FASHION_MNIST_DIR);
        if !require_input(dir, "Fashion-MNIST (Debian's dataset-fashion-mnist)") {
            return;
        }
        let (train, test) = load_fashion_mnist(dir).unwrap();
        let tmp = TempDir::new("synth-detect");
        let file = write_synthetic_detection(&train, &test, &small(), &tmp.join("a")).unwrap();
        write_synthetic_detection(&train, &test, &small(), &tmp.join("b")).unwrap();
        assert_eq!(file.names.len(), 10);
        let yaml = std::fs::read_to_string(tmp.join("a/dataset.yaml")).unwrap();
        assert_eq!(
            DetectDatasetFile::parse(Path::new("dataset.yaml"), &yaml).unwrap(),
            file
        );
        let mut objects = 0;
        for (split, n) in [("train", 12), ("val", 4), ("test", 3)] {
            for i in 0..n {
                let rel = format!("labels/{split}/{i:06}.txt");
                let text = std::fs::read_to_string(tmp.join("a").join(&rel)).unwrap();
                let again = std::fs::read_to_string(tmp.join("b").join(&rel)).unwrap();
                assert_eq!(text, again, "{rel} differs between two runs with one seed");
                let boxes = parse_labels(Path::new(&rel), &text, 10).unwrap();
                assert!(
                    (1..=4).contains(&boxes.len()),
                    "{rel}: {} boxes",
                    boxes.len()
                );
                let img = image::open(tmp.join("a").join(format!("images/{split}/{i:06}.png")))
                    .unwrap()
                    .to_luma8();
                assert_eq!(img.dimensions(), (64, 64));
                for b in &boxes {
                    // Each box's centre row holds ink (an item pixel) somewhere inside the box.
                    let y = (b.cy * 64.0) as u32;
                    let (x0, x1) = (
                        ((b.cx - b.w / 2.0) * 64.0) as u32,
                        ((b.cx + b.w / 2.0) * 64.0) as u32,
                    );
                    assert!(
                        (x0..x1.min(64)).any(|x| img.get_pixel(x, y)[0] > INK),
                        "{rel}: {b:?}"
                    );
                }
                objects += boxes.len();
            }
        }
        assert!((19..=76).contains(&objects), "{objects} objects");
        let first =
            |split: &str| std::fs::read(tmp.join("a/images").join(split).join("000000.png"));
        assert_ne!(first("val").unwrap(), first("test").unwrap());
        let e = write_synthetic_detection(&train, &test, &small(), &tmp.join("a")).unwrap_err();
        assert!(e.to_string().contains("exists"), "{e}");
        let bad = SynthDetectConfig {
            canvas: 40,
            scale: (1.0, 2.0),
            ..small()
        };
        let e = write_synthetic_detection(&train, &test, &bad, &tmp.join("c")).unwrap_err();
        assert!(e.to_string().contains("fit the 40 canvas"), "{e}");
    }

    #[test]
    fn validation_and_test_items_come_from_disjoint_halves_of_the_held_out_split() {
        let n = 7;
        let images: Vec<u8> = (0..n as u8).flat_map(|k| [k; 4]).collect();
        let labels = (0..n as u32).map(|k| k % 3).collect();
        let held = Dataset::new("held", images, labels, 1, 2, 2, 3, vec![]).unwrap();
        let (val, test) = held_out_pools(&held);
        assert_eq!((val.len(), test.len()), (3, 4));
        let firsts = |d: &Dataset| (0..d.len()).map(|i| d.image(i)[0]).collect::<Vec<_>>();
        assert_eq!(firsts(&val), [0, 1, 2]);
        assert_eq!(firsts(&test), [3, 4, 5, 6]);
    }
}
