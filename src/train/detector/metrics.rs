//! The per-epoch table of a detector run (`metrics.csv`), written atomically every epoch and read
//! back on resume.

use crate::fsutil::atomic_write;
use anyhow::{ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// One epoch: mean loss parts, validation mAP, throughput.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectRow {
    pub epoch: usize,
    pub lr: f64,
    pub box_loss: f64,
    pub cls_loss: f64,
    pub dfl_loss: f64,
    /// Distillation terms, unweighted (0 without a teacher).
    pub kd_cls_loss: f64,
    pub kd_feature_loss: f64,
    pub val_map: f64,
    pub val_map50: f64,
    /// Training images seen.
    pub images: usize,
    /// Training and validation time.
    pub seconds: f64,
}

const HEADER: &str = "epoch,lr,box_loss,cls_loss,dfl_loss,val_map50_95,val_map50,images,seconds,kd_cls_loss,kd_feature_loss";
/// Columns of the table before the distillation terms were added (still read).
const OLD_COLUMNS: usize = 9;

impl DetectRow {
    fn values(&self) -> [f64; 11] {
        [
            self.epoch as f64,
            self.lr,
            self.box_loss,
            self.cls_loss,
            self.dfl_loss,
            self.val_map,
            self.val_map50,
            self.images as f64,
            self.seconds,
            self.kd_cls_loss,
            self.kd_feature_loss,
        ]
    }

    /// The row by column name (for the checkpoint's sidecar).
    pub fn as_map(&self) -> BTreeMap<String, f64> {
        HEADER
            .split(',')
            .map(String::from)
            .zip(self.values())
            .collect()
    }
}

/// Writes every row to `path` as CSV.
pub fn write_rows(path: &Path, rows: &[DetectRow]) -> Result<()> {
    let mut text = format!("{HEADER}\n");
    for r in rows {
        let v = r.values();
        text += &format!(
            "{},{:.6e},{:.6},{:.6},{:.6},{:.6},{:.6},{},{:.2},{:.6},{:.6}\n",
            r.epoch, v[1], v[2], v[3], v[4], v[5], v[6], r.images, v[8], v[9], v[10]
        );
    }
    atomic_write(path, text.as_bytes())
}

/// The first `epochs` rows of `path`.
pub fn read_rows(path: &Path, epochs: usize) -> Result<Vec<DetectRow>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().skip(1).take(epochs).enumerate() {
        let v: Vec<f64> = line
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}:{}: not a metrics row", path.display(), i + 2))?;
        ensure!(
            v.len() == OLD_COLUMNS || v.len() == HEADER.split(',').count(),
            "{}:{}: {} columns, expected {}",
            path.display(),
            i + 2,
            v.len(),
            HEADER.split(',').count()
        );
        rows.push(DetectRow {
            epoch: v[0] as usize,
            lr: v[1],
            box_loss: v[2],
            cls_loss: v[3],
            dfl_loss: v[4],
            val_map: v[5],
            val_map50: v[6],
            images: v[7] as usize,
            seconds: v[8],
            kd_cls_loss: v.get(9).copied().unwrap_or(0.0),
            kd_feature_loss: v.get(10).copied().unwrap_or(0.0),
        });
    }
    ensure!(
        rows.len() == epochs,
        "{} has {} epochs, the checkpoint {epochs}",
        path.display(),
        rows.len()
    );
    Ok(rows)
}
