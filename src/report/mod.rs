//! Tables (CSV + Parquet via polars), plots (PNG + SVG via plotters) and rank correlation.

pub mod plot;
pub mod spearman;
pub mod table;
