//! The one builder from an [`Arch`](crate::space::Arch) to a trainable candle network, with
//! timm-compatible parameter names so timm checkpoints load directly and ours load in timm.

pub mod blocks;
pub mod ensemble;
pub mod layers;
pub mod network;
pub mod params;

pub use ensemble::{Classifier, Ensemble};
pub use layers::Mode;
pub use network::{Network, Output};
pub use params::{ParamKind, ParamStore};
