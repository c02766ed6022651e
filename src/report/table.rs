//! Tables written with polars as CSV and Parquet, atomically.

use crate::fsutil::atomic_write_with;
use anyhow::{anyhow, Context, Result};
use polars::prelude::*;
use std::fs::File;
use std::path::Path;

/// One named column of a table.
pub struct Col(Column);

impl Col {
    /// Integers.
    pub fn int(name: impl AsRef<str>, values: Vec<i64>) -> Self {
        Col(Column::new(name.as_ref().into(), values))
    }

    /// Floats.
    pub fn float(name: impl AsRef<str>, values: Vec<f64>) -> Self {
        Col(Column::new(name.as_ref().into(), values))
    }

    /// Text.
    pub fn text(name: impl AsRef<str>, values: Vec<String>) -> Self {
        Col(Column::new(name.as_ref().into(), values))
    }

    /// Booleans.
    pub fn boolean(name: impl AsRef<str>, values: Vec<bool>) -> Self {
        Col(Column::new(name.as_ref().into(), values))
    }
}

/// Builds a polars frame from columns of equal length.
pub fn frame(cols: Vec<Col>) -> Result<DataFrame> {
    let columns: Vec<Column> = cols.into_iter().map(|c| c.0).collect();
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
