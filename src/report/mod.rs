//! Tables (CSV + Parquet via polars) and plots (PNG + SVG via plotters).

pub mod plot;
pub mod table;
