//! The task-aligned assigner YOLO11 trains with (TOOD's): for each object, the `top_k` anchors
//! inside its box with the highest alignment `score^α · CIoU^β` become its positives; an anchor
//! claimed by several objects keeps the one it overlaps most; target scores are the alignment,
//! normalised per object so that its best anchor's target equals its best IoU.
//! Plain numbers (no gradients): the assigner reads detached predictions.

/// `α`, `β`, `top_k` and `eps`, as YOLO11 sets them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AssignerConfig {
    pub top_k: usize,
    pub alpha: f32,
    pub beta: f32,
    pub eps: f32,
}

impl Default for AssignerConfig {
    fn default() -> Self {
        Self {
            top_k: 10,
            alpha: 0.5,
            beta: 6.0,
            eps: 1e-9,
        }
    }
}

/// One image's predictions as the assigner reads them (pixels, `[x1, y1, x2, y2]`).
pub struct Predictions<'a> {
    /// Class probabilities (sigmoid), `anchors × classes`, row-major.
    pub scores: &'a [f32],
    pub boxes: &'a [[f32; 4]],
    /// Anchor centres.
    pub anchors: &'a [[f32; 2]],
    pub classes: usize,
}

/// One object: class and `[x1, y1, x2, y2]` in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Object {
    pub class: usize,
    pub xyxy: [f32; 4],
}

/// What each anchor is to learn.
#[derive(Debug, Clone, PartialEq)]
pub struct Targets {
    /// The object an anchor is assigned to (`None`: background).
    pub object: Vec<Option<usize>>,
    /// Target class scores, `anchors × classes` (0 for background).
    pub scores: Vec<f32>,
}

/// Complete IoU of two `[x1, y1, x2, y2]` boxes with YOLO11's `eps` (1e-7).
pub fn ciou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let eps = 1e-7f32;
    let (w1, h1) = (a[2] - a[0], (a[3] - a[1]).max(eps));
    let (w2, h2) = (b[2] - b[0], (b[3] - b[1]).max(eps));
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let iou = inter / (w1 * h1 + w2 * h2 - inter + eps);
    let cw = a[2].max(b[2]) - a[0].min(b[0]);
    let ch = a[3].max(b[3]) - a[1].min(b[1]);
    let c2 = cw * cw + ch * ch + eps;
    let dx = b[0] + b[2] - a[0] - a[2];
    let dy = b[1] + b[3] - a[1] - a[3];
    let rho2 = (dx * dx + dy * dy) / 4.0;
    let v = 4.0 / (std::f32::consts::PI * std::f32::consts::PI)
        * ((w2 / h2).atan() - (w1 / h1).atan()).powi(2);
    let alpha = v / (v - iou + (1.0 + eps));
    iou - (rho2 / c2 + v * alpha)
}

/// True when the anchor centre lies strictly inside the box.
fn inside(p: &[f32; 2], b: &[f32; 4], eps: f32) -> bool {
    [p[0] - b[0], p[1] - b[1], b[2] - p[0], b[3] - p[1]]
        .iter()
        .all(|&d| d > eps)
}

/// Assigns every anchor of one image to an object or to the background.
pub fn assign(p: &Predictions, objects: &[Object], cfg: &AssignerConfig) -> Targets {
    let (n, k) = (p.anchors.len(), p.classes);
    // Per object: alignment and CIoU at every anchor inside it (0 elsewhere), and its positives.
    let mut align = vec![vec![0f32; n]; objects.len()];
    let mut overlap = vec![vec![0f32; n]; objects.len()];
    let mut positive = vec![vec![false; n]; objects.len()];
    for (j, o) in objects.iter().enumerate() {
        for a in 0..n {
            if inside(&p.anchors[a], &o.xyxy, cfg.eps) {
                let iou = ciou(&o.xyxy, &p.boxes[a]).max(0.0);
                overlap[j][a] = iou;
                align[j][a] = p.scores[a * k + o.class].powf(cfg.alpha) * iou.powf(cfg.beta);
            }
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&x, &y| align[j][y].total_cmp(&align[j][x]));
        for &a in order.iter().take(cfg.top_k) {
            positive[j][a] = inside(&p.anchors[a], &o.xyxy, cfg.eps);
        }
    }
    // An anchor claimed by several objects keeps the one it overlaps most (the first on a tie).
    let mut object = vec![None; n];
    for (a, slot) in object.iter_mut().enumerate() {
        let claims: Vec<usize> = (0..objects.len()).filter(|&j| positive[j][a]).collect();
        *slot = match claims.len() {
            0 => None,
            1 => Some(claims[0]),
            _ => {
                (0..objects.len()).reduce(|b, j| if overlap[j][a] > overlap[b][a] { j } else { b })
            }
        };
        for (j, pos) in positive.iter_mut().enumerate() {
            pos[a] = *slot == Some(j);
        }
    }
    normalised_scores(&object, objects, &align, &overlap, &positive, k, cfg.eps)
}

/// Target scores: an anchor's alignment scaled so each object's best positive gets its best IoU.
fn normalised_scores(
    object: &[Option<usize>],
    objects: &[Object],
    align: &[Vec<f32>],
    overlap: &[Vec<f32>],
    positive: &[Vec<bool>],
    classes: usize,
    eps: f32,
) -> Targets {
    let n = object.len();
    let best = |v: &[f32], j: usize| -> f32 {
        (0..n)
            .filter(|&a| positive[j][a])
            .map(|a| v[a])
            .fold(0.0, f32::max)
    };
    let (best_align, best_iou): (Vec<f32>, Vec<f32>) = (0..objects.len())
        .map(|j| (best(&align[j], j), best(&overlap[j], j)))
        .unzip();
    let mut scores = vec![0f32; n * classes];
    for (a, o) in object.iter().enumerate() {
        if let Some(j) = *o {
            let norm = align[j][a] * best_iou[j] / (best_align[j] + eps);
            scores[a * classes + objects[j].class] = norm;
        }
    }
    Targets {
        object: object.to_vec(),
        scores,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Anchors of one stride-8 level over a `side`×`side` image, row-major.
    fn anchors(side: usize) -> Vec<[f32; 2]> {
        let n = side / 8;
        (0..n * n)
            .map(|i| [(i % n) as f32 * 8.0 + 4.0, (i / n) as f32 * 8.0 + 4.0])
            .collect()
    }

    #[test]
    fn each_object_gets_its_top_k_aligned_anchors_inside_it() {
        let a = anchors(64);
        let object = Object {
            class: 1,
            xyxy: [0.0, 0.0, 32.0, 32.0],
        };
        // Every anchor predicts the object shifted by its index: the closer, the better aligned.
        let boxes: Vec<[f32; 4]> = (0..a.len())
            .map(|i| {
                let s = i as f32 * 0.25;
                [s, s, 32.0 + s, 32.0 + s]
            })
            .collect();
        let scores = vec![0.5; a.len() * 2];
        let p = Predictions {
            scores: &scores,
            boxes: &boxes,
            anchors: &a,
            classes: 2,
        };
        let t = assign(&p, &[object], &AssignerConfig::default());
        let fg: Vec<usize> = (0..a.len()).filter(|&i| t.object[i].is_some()).collect();
        // 16 anchor centres lie inside; the 10 best aligned are the 10 lowest indices among them.
        let inside_first: Vec<usize> = (0..a.len())
            .filter(|&i| a[i][0] < 32.0 && a[i][1] < 32.0)
            .take(10)
            .collect();
        assert_eq!(fg, inside_first);
        // The best anchor's target equals its IoU; class 0 gets nothing.
        let best = ciou(&object.xyxy, &boxes[fg[0]]);
        assert!((t.scores[fg[0] * 2 + 1] - best).abs() < 1e-6);
        assert!(fg.iter().all(|&i| t.scores[i * 2] == 0.0));
        let max = fg.iter().map(|&i| t.scores[i * 2 + 1]).fold(0.0, f32::max);
        assert!((max - best).abs() < 1e-6);
    }

    #[test]
    fn an_anchor_claimed_twice_keeps_the_object_it_overlaps_most() {
        let a = [[12.0f32, 12.0]];
        let objects = [
            Object {
                class: 0,
                xyxy: [0.0, 0.0, 24.0, 24.0],
            },
            Object {
                class: 1,
                xyxy: [8.0, 8.0, 20.0, 20.0],
            },
        ];
        let boxes = [[8.0f32, 8.0, 19.0, 20.0]]; // close to the second object
        let p = Predictions {
            scores: &[0.9, 0.9],
            boxes: &boxes,
            anchors: &a,
            classes: 2,
        };
        let t = assign(&p, &objects, &AssignerConfig::default());
        assert_eq!(t.object, vec![Some(1)]);
        assert_eq!(t.scores[0], 0.0);
        assert!(t.scores[1] > 0.0);
    }

    #[test]
    fn ciou_of_identical_boxes_is_one_and_falls_with_distance() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert!((ciou(&a, &a) - 1.0).abs() < 1e-6);
        let near = ciou(&a, &[1.0, 0.0, 11.0, 10.0]);
        let far = ciou(&a, &[5.0, 0.0, 15.0, 10.0]);
        assert!(1.0 > near && near > far && far > 0.0);
        // Apart: negative (IoU 0 less the centre-distance penalty).
        assert!(ciou(&a, &[20.0, 0.0, 30.0, 10.0]) < 0.0);
    }
}
