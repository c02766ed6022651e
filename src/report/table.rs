//! Tables written with polars as CSV and Parquet, atomically.

use crate::fsutil::atomic_write_with;
use anyhow::{anyhow, Context, Result};
use polars::prelude::*;
use std::fs::File;
use std::path::Path;

/// One column of a table.
pub enum Col {
    Int(&'static str, Vec<i64>),
    Float(&'static str, Vec<f64>),
    Text(&'static str, Vec<String>),
    Bool(&'static str, Vec<bool>),
}

/// Builds a polars frame from columns of equal length.
pub fn frame(cols: Vec<Col>) -> Result<DataFrame> {
    let columns: Vec<Column> = cols
        .into_iter()
        .map(|c| match c {
            Col::Int(n, v) => Column::new(n.into(), v),
            Col::Float(n, v) => Column::new(n.into(), v),
            Col::Text(n, v) => Column::new(n.into(), v),
            Col::Bool(n, v) => Column::new(n.into(), v),
        })
        .collect();
    DataFrame::new_infer_height(columns).map_err(|e| anyhow!("building table: {e}"))
}

/// Writes `df` as `{stem}.csv` and `{stem}.parquet` in `dir`.
pub fn write_csv_parquet(df: &mut DataFrame, dir: &Path, stem: &str) -> Result<()> {
    let csv = dir.join(format!("{stem}.csv"));
    atomic_write_with(&csv, |tmp| {
        let mut f = File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
        CsvWriter::new(&mut f)
            .finish(df)
            .map_err(|e| anyhow!("writing {}: {e}", csv.display()))
    })?;
    let pq = dir.join(format!("{stem}.parquet"));
    atomic_write_with(&pq, |tmp| {
        let f = File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
        ParquetWriter::new(f)
            .finish(df)
            .map(|_| ())
            .map_err(|e| anyhow!("writing {}: {e}", pq.display()))
    })
}

/// Reads a Parquet table back (used by `report` and tests).
pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    ParquetReader::new(f)
        .finish()
        .map_err(|e| anyhow!("reading {}: {e}", path.display()))
}
