//! Object detectors: YOLO11 at any of its scales, with its own backbone or a MobileNetV4 one,
//! as plain data lowered to a graph whose parameters and MACs are computed from the spec alone,
//! like the classifier's in [`crate::cost`], and that graph built as a candle network.
//!
//! [`DetectorSpec`] says what the detector is; [`DetectorSpec::lower`] turns it into a
//! [`Detector`] (nodes in forward order); [`Detector::plan`] gives every node's rows at one
//! input size. With YOLO11's own backbone the parameter counts equal Ultralytics' published
//! yolo11n … yolo11x totals.
//!
//! [`DetectNet::new`] builds a [`Detector`] as a trainable candle network (from
//! [`crate::model`]'s layers) with Ultralytics' state-dict names; [`DetectNet::forward`] gives the head's raw maps per level and
//! [`decode`] turns them into boxes and class scores.

pub mod assign;
pub mod atan;
pub mod blocks;
pub mod coco;
pub mod coco_json;
pub mod config;
pub mod decode;
pub mod graph;
pub mod head;
pub mod kd;
pub mod loss;
pub mod modules;
pub mod net;
pub mod nms;
pub mod scale;
pub mod sheet;
pub mod spec;
pub mod yolo11;

pub use blocks::Block;
pub use decode::{decode, Detections};
pub use graph::{Detector, Node, NodeOp, NodePlan};
pub use head::LEVEL_STRIDES;
pub use net::DetectNet;
pub use scale::Yolo11Scale;
pub use spec::{Backbone, DetectorSpec};

/// GFLOPs as Ultralytics reports them: two FLOPs per multiply-accumulate, in units of 10⁹.
pub fn gflops(macs: u64) -> f64 {
    2.0 * macs as f64 / 1e9
}

#[cfg(test)]
mod net_tests;
#[cfg(test)]
mod tests;
