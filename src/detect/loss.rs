//! YOLO11's detection loss on the head's raw maps: the task-aligned assigner picks each anchor's
//! target, then BCE on the class logits, CIoU on the decoded boxes and distribution focal loss
//! on the side distributions, weighted by the target scores and YOLO11's gains.

use super::assign::{assign, AssignerConfig, Object, Predictions};
use super::atan::atan;
use super::decode::decode;
use anyhow::{ensure, Result};
use candle_core::{DType, Tensor};

/// Loss gains (YOLO11's defaults: box 7.5, cls 0.5, dfl 1.5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossGains {
    pub boxes: f64,
    pub cls: f64,
    pub dfl: f64,
}

impl Default for LossGains {
    fn default() -> Self {
        Self {
            boxes: 7.5,
            cls: 0.5,
            dfl: 1.5,
        }
    }
}

/// The loss to minimise and its parts (before gains, per target score) for logs.
pub struct LossParts {
    pub total: Tensor,
    pub boxes: f32,
    pub cls: f32,
    pub dfl: f32,
}

/// The head's maps flattened over anchors: side distributions `[B, A, 4·reg_max]`, class logits
/// `[B, A, C]`, decoded boxes `[B, A, 4]` (`[x1, y1, x2, y2]` in grid units), anchor centres
/// (grid units) and each anchor's stride.
pub struct FlatHead {
    pub dist: Tensor,
    pub logits: Tensor,
    pub boxes: Tensor,
    pub anchors: Vec<[f32; 2]>,
    pub strides: Vec<f32>,
    pub reg_max: usize,
}

/// Flattens per-level maps `[B, 4·reg_max + C, H, W]` (P3, P4, P5 at `strides`; anchors in
/// row-major order within each level) and decodes their boxes with the DFL `bins`.
pub fn flatten_head(maps: &[Tensor], strides: &[usize], bins: &Tensor) -> Result<FlatHead> {
    let reg_max = bins.elem_count();
    let pixels = decode(maps, bins, strides)?.boxes;
    let (mut flat, mut anchors, mut per_anchor) = (Vec::new(), Vec::new(), Vec::new());
    for (m, &s) in maps.iter().zip(strides) {
        let (b, c, h, w) = m.dims4()?;
        flat.push(m.reshape((b, c, h * w))?);
        for y in 0..h {
            for x in 0..w {
                anchors.push([x as f32 + 0.5, y as f32 + 0.5]);
                per_anchor.push(s as f32);
            }
        }
    }
    let all = Tensor::cat(&flat, 2)?.transpose(1, 2)?.contiguous()?;
    let c = all.dim(2)?;
    let per = Tensor::from_vec(per_anchor.clone(), (1, per_anchor.len(), 1), bins.device())?;
    Ok(FlatHead {
        dist: all.narrow(2, 0, 4 * reg_max)?,
        logits: all.narrow(2, 4 * reg_max, c - 4 * reg_max)?,
        boxes: pixels.broadcast_div(&per)?,
        anchors,
        strides: per_anchor,
        reg_max,
    })
}

/// YOLO11's loss for a batch: `objects[i]` are image `i`'s objects in pixels.
pub fn detection_loss(
    head: &FlatHead,
    objects: &[Vec<Object>],
    gains: &LossGains,
    assigner: &AssignerConfig,
) -> Result<LossParts> {
    let (b, a, classes) = head.logits.dims3()?;
    ensure!(
        objects.len() == b,
        "{} label lists for a batch of {b}",
        objects.len()
    );
    let boxes = &head.boxes;
    let mut t = targets(head, boxes, objects, assigner)?;
    let dev = head.logits.device();
    let target_scores = Tensor::from_vec(std::mem::take(&mut t.scores), (b, a, classes), dev)?;
    let denom = (t.score_sum as f64).max(1.0);
    let cls = (bce_with_logits(&head.logits, &target_scores)?.sum_all()? / denom)?;
    let (box_loss, dfl) = if t.fg.is_empty() {
        let zero = Tensor::zeros((), DType::F32, dev)?;
        (zero.clone(), zero)
    } else {
        let idx = Tensor::from_vec(t.fg.clone(), t.fg.len(), dev)?;
        let weight = Tensor::from_vec(t.weights.clone(), t.fg.len(), dev)?;
        let pred = boxes.reshape((b * a, 4))?.index_select(&idx, 0)?;
        let goal = Tensor::from_vec(t.boxes.concat(), (t.fg.len(), 4), dev)?;
        let iou = ciou(&pred, &goal)?;
        let box_loss = ((iou.affine(-1.0, 1.0)? * &weight)?.sum_all()? / denom)?;
        let dist = head
            .dist
            .reshape((b * a, 4 * head.reg_max))?
            .index_select(&idx, 0)?;
        let dfl = (dfl_loss(&dist, &t, head)?.mul(&weight)?.sum_all()? / denom)?;
        (box_loss, dfl)
    };
    let total = ((box_loss.affine(gains.boxes, 0.0)? + cls.affine(gains.cls, 0.0)?)?
        + dfl.affine(gains.dfl, 0.0)?)?
    .affine(b as f64, 0.0)?;
    Ok(LossParts {
        total,
        boxes: box_loss.to_scalar()?,
        cls: cls.to_scalar()?,
        dfl: dfl.to_scalar()?,
    })
}

/// What the assigner decided, flattened over the batch.
struct BatchTargets {
    /// Target class scores, `B·A·C`.
    scores: Vec<f32>,
    score_sum: f32,
    /// Foreground anchors as `image·A + anchor`.
    fg: Vec<u32>,
    /// Per foreground anchor: its target box in grid units, anchor centre, and weight (its
    /// target score summed over classes).
    boxes: Vec<[f32; 4]>,
    centres: Vec<[f32; 2]>,
    weights: Vec<f32>,
}

fn targets(
    head: &FlatHead,
    boxes: &Tensor,
    objects: &[Vec<Object>],
    cfg: &AssignerConfig,
) -> Result<BatchTargets> {
    let (_, a, classes) = head.logits.dims3()?;
    let probs = candle_nn::ops::sigmoid(&head.logits.detach())?.to_vec3::<f32>()?;
    let grid = boxes.detach().to_vec3::<f32>()?;
    let px_anchors: Vec<[f32; 2]> = (0..a)
        .map(|i| head.anchors[i].map(|v| v * head.strides[i]))
        .collect();
    let mut out = BatchTargets {
        scores: Vec::with_capacity(objects.len() * a * classes),
        score_sum: 0.0,
        fg: Vec::new(),
        boxes: Vec::new(),
        centres: Vec::new(),
        weights: Vec::new(),
    };
    for (i, objs) in objects.iter().enumerate() {
        let px: Vec<[f32; 4]> = (0..a)
            .map(|j| {
                let s = head.strides[j];
                [
                    grid[i][j][0] * s,
                    grid[i][j][1] * s,
                    grid[i][j][2] * s,
                    grid[i][j][3] * s,
                ]
            })
            .collect();
        let scores: Vec<f32> = probs[i].concat();
        let p = Predictions {
            scores: &scores,
            boxes: &px,
            anchors: &px_anchors,
            classes,
        };
        let t = assign(&p, objs, cfg);
        for (j, o) in t.object.iter().enumerate() {
            let Some(k) = *o else { continue };
            let s = head.strides[j];
            out.fg.push((i * a + j) as u32);
            out.boxes.push(objs[k].xyxy.map(|v| v / s));
            out.centres.push(head.anchors[j]);
            out.weights
                .push(t.scores[j * classes..(j + 1) * classes].iter().sum());
        }
        out.score_sum += t.scores.iter().sum::<f32>();
        out.scores.extend(t.scores);
    }
    Ok(out)
}

/// Element-wise binary cross-entropy of logits `x` against targets `z` in [0, 1], stable form
/// `max(x, 0) − x·z + log(1 + e^−|x|)`.
pub(crate) fn bce_with_logits(x: &Tensor, z: &Tensor) -> Result<Tensor> {
    let soft = x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    Ok(((x.relu()? - x.mul(z)?)? + soft)?)
}

/// CIoU of predicted boxes `[F, 4]` against fixed target boxes `[F, 4]` (`[x1, y1, x2, y2]`),
/// differentiable in the prediction; the aspect weight `α` is held constant, as in YOLO11.
pub fn ciou(pred: &Tensor, goal: &Tensor) -> Result<Tensor> {
    let eps = 1e-7;
    let col = |t: &Tensor, i: usize| t.narrow(1, i, 1).and_then(|c| c.squeeze(1));
    let (px1, py1, px2, py2) = (col(pred, 0)?, col(pred, 1)?, col(pred, 2)?, col(pred, 3)?);
    let (gx1, gy1, gx2, gy2) = (col(goal, 0)?, col(goal, 1)?, col(goal, 2)?, col(goal, 3)?);
    let (w1, h1) = ((&px2 - &px1)?, (&py2 - &py1)?.maximum(eps)?);
    let (w2, h2) = ((&gx2 - &gx1)?, (&gy2 - &gy1)?.maximum(eps)?);
    let iw = (px2.minimum(&gx2)? - px1.maximum(&gx1)?)?.relu()?;
    let ih = (py2.minimum(&gy2)? - py1.maximum(&gy1)?)?.relu()?;
    let inter = (iw * ih)?;
    let union = (((&w1 * &h1)? + (&w2 * &h2)?)? - &inter)?.affine(1.0, eps)?;
    let iou = (&inter / union)?;
    let cw = (px2.maximum(&gx2)? - px1.minimum(&gx1)?)?;
    let ch = (py2.maximum(&gy2)? - py1.minimum(&gy1)?)?;
    let c2 = (cw.sqr()? + ch.sqr()?)?.affine(1.0, eps)?;
    let dx = ((&gx1 + &gx2)? - (&px1 + &px2)?)?;
    let dy = ((&gy1 + &gy2)? - (&py1 + &py2)?)?;
    let rho2 = ((dx.sqr()? + dy.sqr()?)? / 4.0)?;
    let k = 4.0 / (std::f64::consts::PI * std::f64::consts::PI);
    let v = ((atan(&(&w2 / &h2)?)? - atan(&(&w1 / &h1)?)?)?.sqr()? * k)?;
    let alpha = (&v / (&v - &iou)?.affine(1.0, 1.0 + eps)?)?.detach();
    Ok((iou - ((rho2 / c2)? + (v * alpha)?)?)?)
}

/// Distribution focal loss per foreground anchor `[F]`: each side's target distance (grid
/// units, clamped to `[0, reg_max − 1.01]`) split between its two neighbouring bins, the
/// cross-entropy of the side's distribution against that split, averaged over the four sides.
fn dfl_loss(dist: &Tensor, t: &BatchTargets, head: &FlatHead) -> Result<Tensor> {
    let (f, r) = (t.fg.len(), head.reg_max);
    let mut split = vec![0f32; f * 4 * r];
    for (n, (b, c)) in t.boxes.iter().zip(&t.centres).enumerate() {
        let sides = [c[0] - b[0], c[1] - b[1], b[2] - c[0], b[3] - c[1]];
        for (s, d) in sides.iter().enumerate() {
            let d = d.clamp(0.0, r as f32 - 1.01);
            let lo = d.floor() as usize;
            let row = (n * 4 + s) * r;
            split[row + lo] += (lo + 1) as f32 - d;
            split[row + lo + 1] += d - lo as f32;
        }
    }
    let split = Tensor::from_vec(split, (f * 4, r), dist.device())?;
    let nll = candle_nn::ops::log_softmax(&dist.reshape((f * 4, r))?, 1)?.neg()?;
    Ok((nll * split)?.sum(1)?.reshape((f, 4))?.mean(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    const R: usize = 16;

    fn bins() -> Tensor {
        Tensor::arange(0f32, R as f32, &Device::Cpu).unwrap()
    }

    /// A 4×4 stride-8 head map (32×32 image) with `classes` classes: every side distribution and
    /// class logit at `low`, then the given anchors set to predict exactly.
    fn head_map(classes: usize, exact: &[(usize, [usize; 4], usize)]) -> Vec<f32> {
        let (c, n) = (4 * R + classes, 16);
        let mut v = vec![-20f32; c * n];
        for ch in 0..4 * R {
            for a in 0..n {
                v[ch * n + a] = 0.0;
            }
        }
        for &(a, sides, class) in exact {
            for (s, &d) in sides.iter().enumerate() {
                v[(s * R + d) * n + a] = 30.0;
            }
            v[(4 * R + class) * n + a] = 20.0;
        }
        v
    }

    #[test]
    fn an_exact_prediction_costs_almost_nothing() {
        // Object [4, 4, 28, 20] px = [0.5, 0.5, 3.5, 2.5] in grid units. Two anchor centres lie
        // inside it: (1.5, 1.5) with sides l t r b = 1 1 2 1 and (2.5, 1.5) with 2 1 1 1.
        let map = head_map(2, &[(5, [1, 1, 2, 1], 1), (6, [2, 1, 1, 1], 1)]);
        let map = Tensor::from_vec(map, (1, 4 * R + 2, 4, 4), &Device::Cpu).unwrap();
        let head = flatten_head(&[map], &[8], &bins()).unwrap();
        let obj = vec![vec![Object {
            class: 1,
            xyxy: [4.0, 4.0, 28.0, 20.0],
        }]];
        let l = detection_loss(
            &head,
            &obj,
            &LossGains::default(),
            &AssignerConfig::default(),
        )
        .unwrap();
        assert!(
            l.boxes < 1e-5 && l.dfl < 1e-5 && l.cls < 1e-5,
            "{} {} {}",
            l.boxes,
            l.dfl,
            l.cls
        );
        let b = head.boxes.to_vec3::<f32>().unwrap();
        for (got, want) in b[0][5].iter().zip([0.5, 0.5, 3.5, 2.5]) {
            assert!((got - want).abs() < 1e-5, "{:?}", b[0][5]);
        }
    }

    #[test]
    fn descending_the_loss_on_raw_maps_finds_the_objects() {
        let dev = Device::Cpu;
        let map = Var::from_tensor(&Tensor::randn(0f32, 0.1, (2, 4 * R + 3, 4, 4), &dev).unwrap())
            .unwrap();
        let objects = vec![
            vec![Object {
                class: 2,
                xyxy: [2.0, 3.0, 21.0, 30.0],
            }],
            vec![
                Object {
                    class: 0,
                    xyxy: [0.0, 0.0, 14.0, 12.0],
                },
                Object {
                    class: 1,
                    xyxy: [15.0, 14.0, 32.0, 31.0],
                },
            ],
        ];
        let step = |lr: f64| -> f32 {
            let head = flatten_head(&[map.as_tensor().clone()], &[8], &bins()).unwrap();
            let l = detection_loss(
                &head,
                &objects,
                &LossGains::default(),
                &AssignerConfig::default(),
            )
            .unwrap();
            let g = l.total.backward().unwrap();
            let grad = g.get(map.as_tensor()).unwrap();
            map.set(&(map.as_tensor() - (grad * lr).unwrap()).unwrap())
                .unwrap();
            l.total.to_scalar::<f32>().unwrap()
        };
        let first = step(0.1);
        let mut last = first;
        for _ in 0..300 {
            last = step(0.1);
        }
        assert!(last < first / 5.0, "loss {first} → {last}");
    }
}
