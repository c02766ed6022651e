//! mnv4-lab: MobileNetV4 research toolkit — architecture search over UIB choices and
//! knowledge distillation, on candle, on a CPU.
//!
//! Layers, top to bottom; a module imports only from the rows below it:
//!
//! | layer | modules |
//! |---|---|
//! | commands | [`cli`] |
//! | the experiment file | [`experiment`] |
//! | studies | [`search`] |
//! | learning | [`distill`], [`train`] |
//! | models | [`model`], [`detect`], [`export`] |
//! | facts | [`space`], [`cost`], [`data`], [`report`], [`fsutil`] |
//! | kernels | [`ops`] |
//!
//! * [`space`] — the architecture as plain data (no candle): `Arch`, presets, block strings.
//! * [`cost`] — parameters, MACs, bytes and roofline latency computed from an `Arch` alone.
//! * [`model`] — the one builder that turns any `Arch` into a candle network, timm-named weights.
//! * [`detect`] — YOLO11 detectors (own or MobileNetV4 backbone) as data, with exact parameters and
//!   MACs, and built as candle networks with Ultralytics' tensor names.
//! * [`export`] — a built network as an ONNX file (BN folded, dynamic batch), from the lowered layers,
//!   and compiled for the native inference engine ([`export::engine`]).
//! * [`ops`] — CPU kernels as candle custom ops (convolutions, batch norm, activations, softmax), and
//!   channels-last inference kernels with runtime SIMD dispatch ([`ops::simd`]).
//! * [`data`] — datasets, splits, augmentation, background batching.
//! * [`experiment`] — the experiment file: the sections below, composed and checked at load.
//! * [`train`] — the recipe, optimizers, checkpoints, run folders and the shared training loop.
//! * [`distill`] — KD / DKD / feature KD / attention transfer, teacher resolution, logit cache.
//! * [`search`] — search spaces, strategies, the coarse-to-fine driver and its reports.
//! * [`report`] — tables (polars), plots (plotters), rank correlation and intervals over seeds.
//! * [`fsutil`] — atomic writes, folder locks and file hashes.
//! * [`cli`] — the `mnv4-lab` command line.

pub mod cli;
pub mod cost;
pub mod data;
pub mod detect;
pub mod distill;
pub mod experiment;
pub mod export;
pub mod fsutil;
pub mod model;
pub mod ops;
pub mod report;
pub mod search;
pub mod space;
pub mod train;
