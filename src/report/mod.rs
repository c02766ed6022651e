//! Tables (CSV + Parquet via polars), plots (PNG + SVG via plotters), rank correlation, intervals
//! for comparisons over seeds and the machine a measurement was taken on.

pub mod machine;
pub mod plot;
pub mod spearman;
pub mod stats;
pub mod table;
