//! mnv4-lab: MobileNetV4 research toolkit.
//!
//! * [`space`] — the architecture as plain data (no candle): `Arch`, presets, block strings.
//! * [`cost`] — parameters, MACs, bytes and roofline latency computed from an `Arch` alone.
//! * [`model`] — the one builder that turns any `Arch` into a candle network, timm-named weights.
//! * [`ops`] — convolution kernels used by the builder (fast CPU paths and the generic candle path).
//! * [`data`] — datasets, splits and augmentation.
//! * [`cli`] — the `mnv4-lab` command line.

pub mod cli;
pub mod cost;
pub mod data;
pub mod distill;
pub mod fsutil;
pub mod model;
pub mod ops;
pub mod report;
pub mod search;
pub mod space;
pub mod train;
