//! A detector's predictions and their COCO mAP: decode the head, keep every (anchor, class)
//! above the confidence threshold, class-wise NMS, then COCO's box AP against the labels.

use crate::data::PixelBox;
use crate::detect::coco::{evaluate, CocoAp, DetBox, GtBox};
use crate::detect::nms::{nms, Scored};
use crate::detect::DetectNet;
use crate::model::Mode;
use anyhow::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// How raw predictions become detections (Ultralytics' validation defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictConfig {
    /// Minimum class score of a candidate.
    pub conf: f32,
    /// NMS IoU threshold (boxes of one class overlapping more are suppressed).
    pub iou: f32,
    /// Detections kept per image.
    pub max_det: usize,
}

impl Default for PredictConfig {
    fn default() -> Self {
        Self {
            conf: 0.001,
            iou: 0.7,
            max_det: 300,
        }
    }
}

impl PredictConfig {
    /// Value checks; errors name the field.
    pub fn check(&self) -> Result<()> {
        anyhow::ensure!(
            (0.0..1.0).contains(&self.conf),
            "predict.conf must be in [0, 1), got {}",
            self.conf
        );
        anyhow::ensure!(
            self.iou > 0.0 && self.iou <= 1.0,
            "predict.iou must be in (0, 1], got {}",
            self.iou
        );
        anyhow::ensure!(self.max_det > 0, "predict.max_det must be at least 1");
        Ok(())
    }
}

/// Detections of every image of a batch `[B, 3, S, S]`, best first.
pub fn predict(net: &DetectNet, images: &Tensor, cfg: &PredictConfig) -> Result<Vec<Vec<Scored>>> {
    let maps = net.forward(images, Mode::Eval)?;
    let d = net.decode(&maps)?;
    let boxes = d.boxes.to_vec3::<f32>()?;
    let scores = d.scores.to_vec3::<f32>()?;
    Ok(boxes
        .iter()
        .zip(&scores)
        .map(|(b, s)| {
            let mut cands = Vec::new();
            for (xyxy, row) in b.iter().zip(s) {
                for (class, &score) in row.iter().enumerate() {
                    if score > cfg.conf {
                        let xyxy = [xyxy[0], xyxy[1], xyxy[2], xyxy[3]];
                        cands.push(Scored { xyxy, class, score });
                    }
                }
            }
            nms(&cands, cfg.iou, cfg.max_det)
                .into_iter()
                .map(|i| cands[i])
                .collect()
        })
        .collect())
}

/// COCO box metrics gathered over batches: each image's labels and detections.
#[derive(Default)]
pub struct MapAccumulator {
    gts: Vec<GtBox>,
    dets: Vec<DetBox>,
    images: u64,
}

impl MapAccumulator {
    /// Adds one image's labelled objects and detections (pixels of the same input).
    pub fn add(&mut self, objects: &[PixelBox], detections: &[Scored]) {
        let image = self.images;
        self.images += 1;
        let xywh = |b: [f32; 4]| -> [f64; 4] {
            let [x1, y1, x2, y2] = b.map(f64::from);
            [x1, y1, x2 - x1, y2 - y1]
        };
        self.gts.extend(objects.iter().map(|o| GtBox {
            image,
            category: o.class as u64,
            bbox: xywh(o.xyxy),
        }));
        self.dets.extend(detections.iter().map(|d| DetBox {
            image,
            category: d.class as u64,
            bbox: xywh(d.xyxy),
            score: f64::from(d.score),
        }));
    }

    /// COCO's metrics over everything added, for `classes` categories.
    pub fn finish(&self, classes: usize) -> CocoAp {
        let images: Vec<u64> = (0..self.images).collect();
        let categories: Vec<u64> = (0..classes as u64).collect();
        evaluate(&self.gts, &self.dets, &images, &categories)
    }
}
