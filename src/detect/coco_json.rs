//! COCO's JSON files for boxes: a ground-truth file (`images`, `annotations`, `categories`) and a
//! results file (a list of `{image_id, category_id, bbox, score}`), read with errors that name
//! the file and the entry.

use super::coco::{DetBox, GtBox};
use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;

/// A ground-truth file, as far as box evaluation reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoGroundTruth {
    pub images: Vec<u64>,
    pub categories: Vec<u64>,
    pub boxes: Vec<GtBox>,
}

#[derive(Deserialize)]
struct GtFile {
    images: Vec<IdOnly>,
    annotations: Vec<Annotation>,
    categories: Vec<IdOnly>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: u64,
}

#[derive(Deserialize)]
struct Annotation {
    image_id: u64,
    category_id: u64,
    bbox: Vec<f64>,
    #[serde(default)]
    iscrowd: u8,
}

#[derive(Deserialize)]
struct Result1 {
    image_id: u64,
    category_id: u64,
    bbox: Vec<f64>,
    score: f64,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, what: &str) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a COCO {what} file", path.display()))
}

/// A `[x, y, w, h]` box with finite values and non-negative sides.
fn xywh(bbox: &[f64], at: impl Fn() -> String) -> Result<[f64; 4]> {
    let b: [f64; 4] = bbox.try_into().map_err(|_| {
        anyhow::anyhow!(
            "{}: bbox has {} numbers, not 4 (x, y, w, h)",
            at(),
            bbox.len()
        )
    })?;
    ensure!(
        b.iter().all(|v| v.is_finite()) && b[2] >= 0.0 && b[3] >= 0.0,
        "{}: bbox {b:?} needs finite numbers and a non-negative width and height",
        at()
    );
    Ok(b)
}

/// Reads a ground-truth file; crowd annotations are refused (box AP here has no crowd rule).
pub fn read_ground_truth(path: &Path) -> Result<CocoGroundTruth> {
    let f: GtFile = read_json(path, "ground-truth")?;
    let images: Vec<u64> = f.images.iter().map(|i| i.id).collect();
    let categories: Vec<u64> = f.categories.iter().map(|c| c.id).collect();
    let (known_i, known_c): (BTreeSet<u64>, BTreeSet<u64>) = (
        images.iter().copied().collect(),
        categories.iter().copied().collect(),
    );
    let mut boxes = Vec::with_capacity(f.annotations.len());
    for (k, a) in f.annotations.iter().enumerate() {
        let at = || format!("{}: annotations[{k}]", path.display());
        ensure!(
            known_i.contains(&a.image_id),
            "{}: image_id {} is not in images",
            at(),
            a.image_id
        );
        ensure!(
            known_c.contains(&a.category_id),
            "{}: category_id {} is not in categories",
            at(),
            a.category_id
        );
        if a.iscrowd != 0 {
            bail!(
                "{}: crowd annotations (iscrowd = 1) are not supported",
                at()
            );
        }
        boxes.push(GtBox {
            image: a.image_id,
            category: a.category_id,
            bbox: xywh(&a.bbox, at)?,
        });
    }
    Ok(CocoGroundTruth {
        images,
        categories,
        boxes,
    })
}

/// Reads a results file; every detection must name an image of `gt` (as COCO requires).
pub fn read_results(path: &Path, gt: &CocoGroundTruth) -> Result<Vec<DetBox>> {
    let rows: Vec<Result1> = read_json(path, "results")?;
    let known: BTreeSet<u64> = gt.images.iter().copied().collect();
    rows.iter()
        .enumerate()
        .map(|(k, r)| {
            let at = || format!("{}: [{k}]", path.display());
            ensure!(
                known.contains(&r.image_id),
                "{}: image_id {} is not in the ground truth",
                at(),
                r.image_id
            );
            ensure!(
                r.score.is_finite(),
                "{}: score {} is not a finite number",
                at(),
                r.score
            );
            Ok(DetBox {
                image: r.image_id,
                category: r.category_id,
                bbox: xywh(&r.bbox, at)?,
                score: r.score,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn bad_files_name_the_file_and_the_entry() {
        let dir = std::env::temp_dir().join(format!("mnv4-coco-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let head = r#""images": [{"id": 1}], "categories": [{"id": 3}]"#;
        let gt = |anns: &str| {
            write(
                &dir,
                "gt.json",
                &format!("{{{head}, \"annotations\": [{anns}]}}"),
            )
        };
        let err = |r: Result<CocoGroundTruth>| format!("{:#}", r.unwrap_err());
        let e = err(read_ground_truth(&gt(
            r#"{"image_id": 1, "category_id": 3, "bbox": [1, 2, 3]}"#,
        )));
        assert!(
            e.contains("gt.json: annotations[0]: bbox has 3 numbers"),
            "{e}"
        );
        let e = err(read_ground_truth(&gt(
            r#"{"image_id": 2, "category_id": 3, "bbox": [1, 2, 3, 4]}"#,
        )));
        assert!(e.contains("image_id 2 is not in images"), "{e}");
        let e = err(read_ground_truth(&gt(
            r#"{"image_id": 1, "category_id": 3, "bbox": [1, 2, -3, 4]}"#,
        )));
        assert!(e.contains("non-negative"), "{e}");
        let e = err(read_ground_truth(&write(&dir, "gt.json", "[]")));
        assert!(e.contains("not a COCO ground-truth file"), "{e}");
        let truth = read_ground_truth(&gt(
            r#"{"image_id": 1, "category_id": 3, "bbox": [1, 2, 3, 4]}"#,
        ))
        .unwrap();
        assert_eq!(truth.boxes.len(), 1);
        let pred = write(
            &dir,
            "pred.json",
            r#"[{"image_id": 5, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5}]"#,
        );
        let e = format!("{:#}", read_results(&pred, &truth).unwrap_err());
        assert!(
            e.contains("pred.json: [0]: image_id 5 is not in the ground truth"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
