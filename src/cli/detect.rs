//! `mnv4-lab detect …`: object detection with YOLO11 and MobileNetV4 backbones. `detect map`
//! scores COCO-format detections against COCO-format ground truth, as pycocotools does.

use crate::detect::coco::evaluate;
use crate::detect::coco_json::{read_ground_truth, read_results};
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Arguments of `mnv4-lab detect`.
#[derive(Debug, Args)]
pub struct DetectArgs {
    #[command(subcommand)]
    pub action: DetectAction,
}

/// What `mnv4-lab detect` does.
#[derive(Debug, Subcommand)]
pub enum DetectAction {
    /// Box mAP50-95, mAP50 and mAP75 of a COCO results file against a COCO ground-truth file
    /// (101-point interpolation, up to 100 detections per image and class), per class too.
    Map {
        /// Ground truth: a COCO JSON file with `images`, `annotations` and `categories`.
        #[arg(long)]
        gt: PathBuf,
        /// Detections: a COCO results JSON list of `{image_id, category_id, bbox, score}`.
        #[arg(long)]
        pred: PathBuf,
        /// Print the metrics as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: &DetectArgs) -> Result<()> {
    match &args.action {
        DetectAction::Map { gt, pred, json } => {
            let truth = read_ground_truth(gt)?;
            let dets = read_results(pred, &truth)?;
            let m = evaluate(&truth.boxes, &dets, &truth.images, &truth.categories);
            let show = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.6}"));
            if *json {
                let per: Vec<_> = m
                    .per_category
                    .iter()
                    .map(|(c, ap)| serde_json::json!({"category_id": c, "ap": ap}))
                    .collect();
                let out = serde_json::json!({
                    "map": m.map, "map50": m.map50, "map75": m.map75, "per_category": per,
                });
                println!("{out}");
                return Ok(());
            }
            println!(
                "{} images, {} objects, {} detections: mAP50-95 {} | mAP50 {} | mAP75 {}",
                truth.images.len(),
                truth.boxes.len(),
                dets.len(),
                show(m.map),
                show(m.map50),
                show(m.map75)
            );
            for (c, ap) in &m.per_category {
                let avg = ap.map(|a| a.iter().sum::<f64>() / 10.0);
                println!(
                    "  category {c}: AP50-95 {} AP50 {}",
                    show(avg),
                    show(ap.map(|a| a[0]))
                );
            }
            Ok(())
        }
    }
}
