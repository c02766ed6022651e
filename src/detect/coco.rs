//! Average precision as COCO computes it for boxes (pycocotools' `COCOeval`, area "all", up to
//! 100 detections per image and class): greedy matching in score order at IoU 0.50:0.05:0.95,
//! the precision envelope sampled at 101 recall points, averaged over the IoU thresholds and
//! over the classes that have ground truth.

use std::collections::BTreeMap;

/// Detections kept per image and class, as COCO's `maxDets` (the last of 1, 10, 100).
pub const MAX_DETS: usize = 100;

/// A ground-truth box: `[x, y, w, h]` in pixels (COCO's layout).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GtBox {
    pub image: u64,
    pub category: u64,
    pub bbox: [f64; 4],
}

/// A detection: `[x, y, w, h]` in pixels and its confidence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetBox {
    pub image: u64,
    pub category: u64,
    pub bbox: [f64; 4],
    pub score: f64,
}

/// COCO's box metrics; `None` where no class has ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoAp {
    /// AP averaged over IoU 0.50:0.05:0.95 (mAP50-95).
    pub map: Option<f64>,
    pub map50: Option<f64>,
    pub map75: Option<f64>,
    /// Per category: AP at each of the ten IoU thresholds; `None` without ground truth.
    pub per_category: Vec<(u64, Option<[f64; 10]>)>,
}

/// The ten IoU thresholds, computed as numpy's `linspace(0.5, 0.95, 10)` computes them.
pub fn iou_thresholds() -> [f64; 10] {
    let step = (0.95 - 0.5) / 9.0;
    let mut t = [0.0; 10];
    for (i, v) in t.iter_mut().enumerate() {
        *v = 0.5 + i as f64 * step;
    }
    t[9] = 0.95;
    t
}

/// IoU of two `[x, y, w, h]` boxes, as COCO's `bbIou` computes it (no crowd).
pub fn iou_xywh(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let w = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let h = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if w <= 0.0 || h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    inter / (a[2] * a[3] + b[2] * b[3] - inter)
}

/// COCO's metrics over `images` (detections on other images are ignored, as COCO ignores
/// images absent from the ground truth) for `categories`.
pub fn evaluate(gts: &[GtBox], dets: &[DetBox], images: &[u64], categories: &[u64]) -> CocoAp {
    let mut images = images.to_vec();
    images.sort_unstable();
    images.dedup();
    let per_category: Vec<(u64, Option<[f64; 10]>)> = categories
        .iter()
        .map(|&c| (c, category_ap(gts, dets, &images, c)))
        .collect();
    let scored: Vec<&[f64; 10]> = per_category
        .iter()
        .filter_map(|(_, a)| a.as_ref())
        .collect();
    let mean = |f: &dyn Fn(&[f64; 10]) -> f64| -> Option<f64> {
        (!scored.is_empty()).then(|| scored.iter().map(|a| f(a)).sum::<f64>() / scored.len() as f64)
    };
    CocoAp {
        map: mean(&|a| a.iter().sum::<f64>() / 10.0),
        map50: mean(&|a| a[0]),
        map75: mean(&|a| a[5]),
        per_category,
    }
}

/// One category's AP at each IoU threshold; `None` when it has no ground truth.
fn category_ap(gts: &[GtBox], dets: &[DetBox], images: &[u64], category: u64) -> Option<[f64; 10]> {
    let mut gt_by_image: BTreeMap<u64, Vec<&GtBox>> = BTreeMap::new();
    let mut det_by_image: BTreeMap<u64, Vec<&DetBox>> = BTreeMap::new();
    for g in gts.iter().filter(|g| g.category == category) {
        gt_by_image.entry(g.image).or_default().push(g);
    }
    for d in dets.iter().filter(|d| d.category == category) {
        det_by_image.entry(d.image).or_default().push(d);
    }
    let positives: usize = images
        .iter()
        .map(|i| gt_by_image.get(i).map_or(0, Vec::len))
        .sum();
    if positives == 0 {
        return None;
    }
    let thresholds = iou_thresholds();
    // Every kept detection in image order, each image's in score order: (score, matched per t).
    let mut ranked: Vec<(f64, [bool; 10])> = Vec::new();
    for image in images {
        let g = gt_by_image.get(image).map_or(&[][..], Vec::as_slice);
        let mut d: Vec<&DetBox> = det_by_image.get(image).cloned().unwrap_or_default();
        d.sort_by(|a, b| b.score.total_cmp(&a.score));
        d.truncate(MAX_DETS);
        let matched = match_image(g, &d, &thresholds);
        ranked.extend(d.iter().zip(matched).map(|(d, m)| (d.score, m)));
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut ap = [0.0; 10];
    for (t, v) in ap.iter_mut().enumerate() {
        let hits: Vec<bool> = ranked.iter().map(|(_, m)| m[t]).collect();
        *v = interpolated_ap(&hits, positives);
    }
    Some(ap)
}

/// Greedy matching in one image: each detection (in score order) takes the unmatched ground
/// truth of highest IoU at or above each threshold (a later box wins a tie, as in COCO).
fn match_image(gts: &[&GtBox], dets: &[&DetBox], thresholds: &[f64; 10]) -> Vec<[bool; 10]> {
    let mut out = vec![[false; 10]; dets.len()];
    for (t, &thr) in thresholds.iter().enumerate() {
        let mut taken = vec![false; gts.len()];
        for (d, det) in dets.iter().enumerate() {
            let mut best = thr.min(1.0 - 1e-10);
            let mut hit = None;
            for (g, gt) in gts.iter().enumerate() {
                let iou = iou_xywh(&det.bbox, &gt.bbox);
                if taken[g] || iou < best {
                    continue;
                }
                best = iou;
                hit = Some(g);
            }
            if let Some(g) = hit {
                taken[g] = true;
                out[d][t] = true;
            }
        }
    }
    out
}

/// AP of a ranked list of hits against `positives` ground-truth boxes: the precision envelope
/// read at recall 0, 0.01, …, 1 (the first point at or past each), 0 where recall never gets
/// there, averaged.
pub fn interpolated_ap(hits: &[bool], positives: usize) -> f64 {
    let (mut tp, mut fp) = (0f64, 0f64);
    let mut recall = Vec::with_capacity(hits.len());
    let mut precision = Vec::with_capacity(hits.len());
    for &h in hits {
        if h {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        recall.push(tp / positives as f64);
        precision.push(tp / (tp + fp + f64::EPSILON));
    }
    for i in (1..precision.len()).rev() {
        if precision[i] > precision[i - 1] {
            precision[i - 1] = precision[i];
        }
    }
    let mut sum = 0.0;
    for r in 0..=100 {
        let at = if r == 100 { 1.0 } else { r as f64 * 0.01 };
        let i = recall.partition_point(|&x| x < at);
        if i < precision.len() {
            sum += precision[i];
        }
    }
    sum / 101.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gt(category: u64, bbox: [f64; 4]) -> GtBox {
        GtBox {
            image: 1,
            category,
            bbox,
        }
    }

    fn det(category: u64, bbox: [f64; 4], score: f64) -> DetBox {
        DetBox {
            image: 1,
            category,
            bbox,
            score,
        }
    }

    #[test]
    fn ap_of_a_hand_computed_case() {
        // Two objects; a perfect hit, a false positive, then a box at IoU 80/120 = 2/3 with the
        // second object: a hit at IoU 0.50 … 0.65, a miss from 0.70 on.
        let gts = [
            gt(7, [0.0, 0.0, 10.0, 10.0]),
            gt(7, [20.0, 20.0, 10.0, 10.0]),
        ];
        let dets = [
            det(7, [0.0, 0.0, 10.0, 10.0], 0.9),
            det(7, [50.0, 50.0, 10.0, 10.0], 0.8),
            det(7, [22.0, 20.0, 10.0, 10.0], 0.7),
        ];
        // Hit: precision envelope 1 up to recall 0.5 (51 points), 2/3 up to 1 (50 points).
        let hit = (51.0 + 50.0 * 2.0 / 3.0) / 101.0;
        // Miss: recall stops at 0.5.
        let miss = 51.0 / 101.0;
        let m = evaluate(&gts, &dets, &[1], &[7]);
        let close =
            |a: Option<f64>, b: f64| assert!((a.unwrap() - b).abs() < 1e-12, "{a:?} vs {b}");
        close(m.map50, hit);
        close(m.map75, miss);
        close(m.map, (4.0 * hit + 6.0 * miss) / 10.0);
        // A class with detections but no ground truth does not count; one with ground truth
        // but no detections counts as 0.
        let mut more = dets.to_vec();
        more.push(det(8, [0.0, 0.0, 5.0, 5.0], 0.99));
        let m = evaluate(&gts, &more, &[1], &[7, 8]);
        close(m.map50, hit);
        assert_eq!(m.per_category[1], (8, None));
        let mut gts2 = gts.to_vec();
        gts2.push(gt(9, [0.0, 0.0, 5.0, 5.0]));
        close(evaluate(&gts2, &dets, &[1], &[7, 9]).map50, hit / 2.0);
        // Detections on images outside the evaluated set are ignored.
        let mut elsewhere = dets.to_vec();
        elsewhere.push(DetBox {
            image: 2,
            ..dets[1]
        });
        close(evaluate(&gts, &elsewhere, &[1], &[7]).map50, hit);
        assert_eq!(evaluate(&[], &dets, &[1], &[7]).map, None);
    }

    #[test]
    fn a_detection_takes_the_best_unmatched_object() {
        // The first detection overlaps both objects, the second more; it takes the second, so
        // the next detection (on the second) is a false positive and the first object is
        // never found at IoU 0.5.
        let gts = [gt(1, [0.0, 0.0, 10.0, 10.0]), gt(1, [4.0, 0.0, 10.0, 10.0])];
        let dets = [
            det(1, [3.0, 0.0, 10.0, 10.0], 0.9),
            det(1, [4.0, 0.0, 10.0, 10.0], 0.8),
        ];
        let m = match_image(
            &gts.iter().collect::<Vec<_>>(),
            &dets.iter().collect::<Vec<_>>(),
            &iou_thresholds(),
        );
        assert!(m[0][0] && !m[1][0]);
        // IoU(d0, g0) = 70/130 < IoU(d0, g1) = 90/110; at IoU 0.5 d1 meets g0 at 60/140: a miss.
        assert!((interpolated_ap(&[true, false], 2) - 51.0 / 101.0).abs() < 1e-12);
    }

    #[test]
    fn thresholds_match_numpys_linspace() {
        let t = iou_thresholds();
        assert_eq!(t[0], 0.5);
        assert_eq!(t[1], 0.5 + (0.95 - 0.5) / 9.0);
        assert_eq!(t[9], 0.95);
    }
}
