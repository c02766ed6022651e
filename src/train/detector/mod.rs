//! Training and evaluating YOLO11 detectors: the job, the loop (YOLO11's loss, SGD or AdamW
//! with warm-up and cosine decay), COCO mAP on validation every epoch, resumable checkpoints.
//!
//! * [`job`] — [`job::DetectTrainJob`].
//! * [`inputs`] — the loaders and the teacher a run is opened with.
//! * [`trainer`] — [`trainer::train_detector`].
//! * [`evaluate`] — predictions (confidence, NMS) and COCO mAP.
//! * [`distill`] — a frozen teacher detector's class scores and P3–P5 maps as extra targets.
//! * [`checkpoint`], [`metrics`] — what a run writes.

pub mod checkpoint;
pub mod distill;
pub mod evaluate;
pub mod inputs;
pub mod job;
pub mod metrics;
pub mod trainer;
