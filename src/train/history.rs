//! A run's per-epoch history: `metrics.csv` / `metrics.parquet` and the learning curves.

use super::evaluate::EvalMetrics;
use crate::report::plot::{write_png_svg, Chart, Series};
use crate::report::table::{frame, read_parquet, write_csv_parquet, Col};
use anyhow::{Context, Result};
use plotters::style::RGBColor;
use std::path::Path;

/// One epoch's row of `metrics.csv`.
#[derive(Debug, Clone, Default)]
pub struct EpochRow {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_top1: f64,
    pub val: EvalMetrics,
    pub ema_val_top1: Option<f64>,
    pub images_per_sec: f64,
    pub seconds: f64,
}

/// Writes `metrics.csv` and `metrics.parquet` into `dir`.
pub fn write_metrics(dir: &Path, rows: &[EpochRow]) -> Result<()> {
    let col =
        |name: &str, f: &dyn Fn(&EpochRow) -> f64| Col::float(name, rows.iter().map(f).collect());
    let mut df = frame(vec![
        Col::int("epoch", rows.iter().map(|r| r.epoch as i64).collect()),
        col("lr", &|r| r.lr),
        col("train_loss", &|r| r.train_loss),
        col("train_top1", &|r| r.train_top1),
        col("val_loss", &|r| r.val.loss),
        col("val_top1", &|r| r.val.top1),
        col("val_top5", &|r| r.val.top5),
        col("ema_val_top1", &|r| r.ema_val_top1.unwrap_or(f64::NAN)),
        col("images_per_sec", &|r| r.images_per_sec),
        col("seconds", &|r| r.seconds),
    ])?;
    write_csv_parquet(&mut df, dir, "metrics")
}

/// Reads the first `epochs` rows of `dir/metrics.parquet` back, by column name (for resume).
pub fn read_metrics(dir: &Path, epochs: usize) -> Result<Vec<EpochRow>> {
    let path = dir.join("metrics.parquet");
    let df = read_parquet(&path)?;
    anyhow::ensure!(
        df.height() >= epochs,
        "{} holds {} epochs, the checkpoint {epochs}",
        path.display(),
        df.height()
    );
    let col = |name: &str| -> Result<Vec<f64>> {
        let c = df
            .column(name)
            .and_then(|c| c.cast(&polars::prelude::DataType::Float64))
            .with_context(|| format!("{}: no column {name}", path.display()))?;
        Ok(c.f64()?
            .to_vec()
            .into_iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect())
    };
    let [epoch, lr, tl, tt, vl, v1, v5, ema, ips, secs] = [
        "epoch",
        "lr",
        "train_loss",
        "train_top1",
        "val_loss",
        "val_top1",
        "val_top5",
        "ema_val_top1",
        "images_per_sec",
        "seconds",
    ]
    .map(col);
    let (epoch, lr, tl, tt, vl, v1, v5, ema, ips, secs) =
        (epoch?, lr?, tl?, tt?, vl?, v1?, v5?, ema?, ips?, secs?);
    Ok((0..epochs)
        .map(|i| EpochRow {
            epoch: epoch[i] as usize,
            lr: lr[i],
            train_loss: tl[i],
            train_top1: tt[i],
            val: EvalMetrics {
                loss: vl[i],
                top1: v1[i],
                top5: v5[i],
            },
            ema_val_top1: (!ema[i].is_nan()).then_some(ema[i]),
            images_per_sec: ips[i],
            seconds: secs[i],
        })
        .collect())
}

/// Draws `accuracy.png|svg` and `loss.png|svg` into `dir`.
pub fn write_curves(dir: &Path, name: &str, rows: &[EpochRow]) -> Result<()> {
    let pts = |f: &dyn Fn(&EpochRow) -> f64| -> Vec<(f64, f64)> {
        rows.iter().map(|r| (r.epoch as f64, f(r))).collect()
    };
    let series = |label: &str, points, color| Series {
        label: label.into(),
        points,
        color,
        line: true,
        marker: 3,
    };
    let (blue, red) = (RGBColor(31, 119, 180), RGBColor(214, 39, 40));
    let title = format!("{name}: accuracy");
    write_png_svg(
        &Chart {
            title: &title,
            x_label: "epoch",
            y_label: "top-1 accuracy (%)",
            series: vec![
                series("train (augmented)", pts(&|r| 100.0 * r.train_top1), blue),
                series("validation", pts(&|r| 100.0 * r.val.top1), red),
            ],
            annotations: vec![],
            log_x: false,
        },
        dir,
        "accuracy",
    )?;
    let title = format!("{name}: loss");
    write_png_svg(
        &Chart {
            title: &title,
            x_label: "epoch",
            y_label: "cross-entropy",
            series: vec![
                series("train", pts(&|r| r.train_loss), blue),
                series("validation", pts(&|r| r.val.loss), red),
            ],
            annotations: vec![],
            log_x: false,
        },
        dir,
        "loss",
    )
}
