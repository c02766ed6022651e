//! Non-maximum suppression per class: in score order, a box is kept unless it overlaps a kept
//! box of its class by more than the IoU threshold.

/// A candidate box: `[x1, y1, x2, y2]` in pixels, its class and confidence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub xyxy: [f32; 4],
    pub class: usize,
    pub score: f32,
}

/// IoU of two `[x1, y1, x2, y2]` boxes (0 when either is empty).
pub fn iou_xyxy(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Indices into `boxes` of the kept boxes, best first, at most `max_det` of them. Equal scores
/// keep their input order.
pub fn nms(boxes: &[Scored], iou_threshold: f32, max_det: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| boxes[b].score.total_cmp(&boxes[a].score));
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        if kept.len() == max_det {
            break;
        }
        let b = &boxes[i];
        let clash = kept.iter().any(|&k| {
            boxes[k].class == b.class && iou_xyxy(&boxes[k].xyxy, &b.xyxy) > iou_threshold
        });
        if !clash {
            kept.push(i);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sc(xyxy: [f32; 4], class: usize, score: f32) -> Scored {
        Scored { xyxy, class, score }
    }

    #[test]
    fn overlapping_boxes_of_one_class_keep_the_best() {
        let boxes = [
            sc([0.0, 0.0, 10.0, 10.0], 0, 0.8),
            sc([1.0, 0.0, 11.0, 10.0], 0, 0.9), // IoU 90/110 = 0.818 with the first
            sc([1.0, 0.0, 11.0, 10.0], 1, 0.7), // another class: kept
            sc([20.0, 20.0, 30.0, 30.0], 0, 0.1), // apart: kept
        ];
        assert_eq!(nms(&boxes, 0.7, 300), vec![1, 2, 3]);
        // Above the overlap, both stay.
        assert_eq!(nms(&boxes, 0.85, 300), vec![1, 0, 2, 3]);
        assert_eq!(nms(&boxes, 0.85, 2), vec![1, 0]);
    }

    #[test]
    fn iou_of_hand_computed_boxes() {
        let a = [0.0, 0.0, 4.0, 4.0];
        assert_eq!(iou_xyxy(&a, &[2.0, 0.0, 6.0, 4.0]), 8.0 / 24.0);
        assert_eq!(iou_xyxy(&a, &[4.0, 0.0, 8.0, 4.0]), 0.0);
        assert_eq!(iou_xyxy(&a, &a), 1.0);
        assert_eq!(iou_xyxy(&[1.0, 1.0, 1.0, 1.0], &[1.0, 1.0, 1.0, 1.0]), 0.0);
    }
}
