//! From the detect head's raw maps to boxes and scores: an anchor at every cell centre, the
//! distribution-focal (DFL) expectation of each box side's distance, class sigmoids.

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};

/// Boxes and class scores at every anchor of every level (P3's row-major cells first).
pub struct Detections {
    /// `[B, anchors, 4]`: x1, y1, x2, y2 in input pixels.
    pub boxes: Tensor,
    /// `[B, anchors, classes]`: sigmoid of the class logits.
    pub scores: Tensor,
}

/// Decodes raw maps `[B, 4·reg_max + classes, H, W]` (one per level, with its stride): each
/// side's distance (left, top, right, bottom, in cells) is the softmax over its `reg_max` bins
/// weighted by `bins` (DFL's values `0 … reg_max-1`), measured from the cell centre
/// (x + 0.5, y + 0.5), and scaled by the stride. Differentiable.
pub fn decode(maps: &[Tensor], bins: &Tensor, strides: &[usize]) -> Result<Detections> {
    ensure!(
        maps.len() == strides.len() && !maps.is_empty(),
        "{} head maps for {} strides",
        maps.len(),
        strides.len()
    );
    let (mut boxes, mut scores) = (Vec::new(), Vec::new());
    for (map, &stride) in maps.iter().zip(strides) {
        let (b, s) = decode_level(map, bins, stride)?;
        boxes.push(b);
        scores.push(s);
    }
    Ok(Detections {
        boxes: Tensor::cat(&boxes, 1)?,
        scores: Tensor::cat(&scores, 1)?,
    })
}

/// One level's boxes `[B, H·W, 4]` and scores `[B, H·W, classes]`.
fn decode_level(map: &Tensor, bins: &Tensor, stride: usize) -> Result<(Tensor, Tensor)> {
    let (b, c, h, w) = map.dims4()?;
    let r = bins.elem_count();
    ensure!(
        c > 4 * r,
        "a head map with {c} channels has no classes after 4×{r} box bins"
    );
    let n = h * w;
    let dist = map.narrow(1, 0, 4 * r)?.reshape((b, 4, r, n))?;
    let probs = candle_nn::ops::softmax(&dist, 2)?;
    let sides = probs.broadcast_mul(&bins.reshape((1, 1, r, 1))?)?.sum(2)?; // [B, 4, N]: l, t, r, b
    let centres = cell_centres(h, w, map.device())?; // [1, 2, N]: x, y
    let x1y1 = centres.broadcast_sub(&sides.narrow(1, 0, 2)?)?;
    let x2y2 = centres.broadcast_add(&sides.narrow(1, 2, 2)?)?;
    let boxes = (Tensor::cat(&[x1y1, x2y2], 1)? * stride as f64)?;
    let logits = map
        .narrow(1, 4 * r, c - 4 * r)?
        .reshape((b, c - 4 * r, n))?;
    let scores = candle_nn::ops::sigmoid(&logits)?;
    Ok((
        boxes.transpose(1, 2)?.contiguous()?,
        scores.transpose(1, 2)?.contiguous()?,
    ))
}

/// `[1, 2, H·W]`: the x and y of every cell centre, in cells, row-major.
fn cell_centres(h: usize, w: usize, device: &Device) -> Result<Tensor> {
    let xs = (0..h).flat_map(|_| (0..w).map(|x| x as f32 + 0.5));
    let ys = (0..h).flat_map(|y| (0..w).map(move |_| y as f32 + 0.5));
    let data: Vec<f32> = xs.chain(ys).collect();
    Ok(Tensor::from_vec(data, (1, 2, h * w), device)?)
}
