//! YOLO11's detect head as candle code: per level a box branch (`cv2.i`) and a class branch
//! (`cv3.i`), and DFL's fixed bin values (`dfl.conv.weight`), under Ultralytics' names.

use super::modules::{dw_conv, YoloConv};
use super::sheet::{ConvUnit, Tail};
use crate::model::layers::Mode;
use crate::model::params::{Init, ParamKind};
use crate::model::ParamStore;
use anyhow::{ensure, Result};
use candle_core::{Tensor, Var};

/// The strides of the head's levels (P3, P4, P5).
pub const LEVEL_STRIDES: [usize; 3] = [8, 16, 32];

/// A chain of convs applied in order.
struct Branch(Vec<YoloConv>);

impl Branch {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut y = x.clone();
        for conv in &self.0 {
            y = conv.forward(&y, mode)?;
        }
        Ok(y)
    }
}

/// The detect head: raw maps `[B, 4·reg_max + classes, H, W]` per level, box distributions
/// first.
pub struct DetectHead {
    boxes: Vec<Branch>,
    classes: Vec<Branch>,
    /// DFL's bin values `0 … reg_max-1` as a `[1, reg_max, 1, 1]` conv weight; never trained.
    dfl: Var,
}

impl DetectHead {
    /// The head over levels with `channels` (P3 first) for `classes` classes. The last biases
    /// start as Ultralytics (8.4) starts them: 2 for the box bins, log(5 / classes / (640 / s)²)
    /// for the classes at stride s.
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        channels: &[usize],
        classes: usize,
        reg_max: usize,
    ) -> Result<Self> {
        ensure!(
            channels.len() == LEVEL_STRIDES.len(),
            "the detect head reads {} levels, not {}",
            LEVEL_STRIDES.len(),
            channels.len()
        );
        let ch0 = channels[0];
        let c2 = 16.max(ch0 / 4).max(4 * reg_max);
        let c3 = ch0.max(classes.min(100));
        let (mut boxes, mut logits) = (Vec::new(), Vec::new());
        for (i, (&c, &s)) in channels.iter().zip(&LEVEL_STRIDES).enumerate() {
            let b = format!("{name}.cv2.{i}");
            let bias = ConvUnit::conv(4 * reg_max, 1, 1).with(Tail::Bias);
            boxes.push(Branch(vec![
                YoloConv::bn_silu(ps, &format!("{b}.0"), c, c2, 3)?,
                YoloConv::bn_silu(ps, &format!("{b}.1"), c2, c2, 3)?,
                YoloConv::new(ps, &format!("{b}.2"), c2, bias, 2.0)?,
            ]));
            let l = format!("{name}.cv3.{i}");
            let prior = (5.0 / classes as f64 / (640.0 / s as f64).powi(2)).ln();
            let bias = ConvUnit::conv(classes, 1, 1).with(Tail::Bias);
            logits.push(Branch(vec![
                dw_conv(ps, &format!("{l}.0.0"), c, c)?,
                YoloConv::bn_silu(ps, &format!("{l}.0.1"), c, c3, 1)?,
                dw_conv(ps, &format!("{l}.1.0"), c3, c3)?,
                YoloConv::bn_silu(ps, &format!("{l}.1.1"), c3, c3, 1)?,
                YoloConv::new(ps, &format!("{l}.2"), c3, bias, prior)?,
            ]));
        }
        let dfl = ps.create(
            &format!("{name}.dfl.conv.weight"),
            &[1, reg_max, 1, 1],
            Init::Const(0.0),
            ParamKind::Buffer,
        )?;
        let bins: Vec<f32> = (0..reg_max).map(|i| i as f32).collect();
        dfl.set(&Tensor::from_vec(bins, (1, reg_max, 1, 1), ps.device())?)?;
        Ok(DetectHead {
            boxes,
            classes: logits,
            dfl,
        })
    }

    /// One raw map per level: the box branch's `4·reg_max` channels, then the class logits.
    pub fn forward(&self, levels: &[Tensor], mode: Mode) -> Result<Vec<Tensor>> {
        ensure!(
            levels.len() == self.boxes.len(),
            "the detect head got {} maps for {} levels",
            levels.len(),
            self.boxes.len()
        );
        let branches = self.boxes.iter().zip(&self.classes);
        levels
            .iter()
            .zip(branches)
            .map(|(x, (b, c))| Ok(Tensor::cat(&[b.forward(x, mode)?, c.forward(x, mode)?], 1)?))
            .collect()
    }

    /// DFL's bin values, `[reg_max]`.
    pub fn bins(&self) -> Result<Tensor> {
        Ok(self.dfl.as_tensor().flatten_all()?)
    }
}
