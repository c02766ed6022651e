//! Checks that an `Arch` describes a network the builder can make, with messages that say where.

use super::arch::{Arch, Block};
use super::lower::uib_stride_carrier;
use std::fmt;

/// What is wrong with an architecture, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchError {
    /// Where: "stem", "head", "stage 2 block 1", ...
    pub at: String,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for ArchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid architecture at {}: {}", self.at, self.what)
    }
}

impl std::error::Error for ArchError {}

fn err(at: impl Into<String>, what: impl Into<String>) -> ArchError {
    ArchError {
        at: at.into(),
        what: what.into(),
    }
}

const DW_KERNELS: [usize; 2] = [3, 5];

fn check_stride(at: &str, stride: usize) -> Result<(), ArchError> {
    if stride == 1 || stride == 2 {
        Ok(())
    } else {
        Err(err(
            at,
            format!("stride {stride} is not supported (use 1 or 2)"),
        ))
    }
}

fn check_positive(at: &str, what: &str, v: usize) -> Result<(), ArchError> {
    if v == 0 {
        Err(err(at, format!("{what} must be positive, got 0")))
    } else {
        Ok(())
    }
}

fn check_expansion(at: &str, e: f64) -> Result<(), ArchError> {
    if !(e.is_finite() && e > 0.0) {
        Err(err(
            at,
            format!("expansion must be a positive number, got {e}"),
        ))
    } else {
        Ok(())
    }
}

fn check_odd_kernel(at: &str, what: &str, k: usize) -> Result<(), ArchError> {
    if k == 0 || k.is_multiple_of(2) {
        Err(err(
            at,
            format!("{what} kernel {k} is not supported (use an odd size such as 1, 3 or 5)"),
        ))
    } else {
        Ok(())
    }
}

fn check_dw(at: &str, what: &str, k: usize, allow_absent: bool) -> Result<(), ArchError> {
    if (allow_absent && k == 0) || DW_KERNELS.contains(&k) {
        Ok(())
    } else {
        let choices = if allow_absent {
            "0 (absent), 3 or 5"
        } else {
            "3 or 5"
        };
        Err(err(
            at,
            format!("{what} depthwise kernel {k} is not supported (use {choices})"),
        ))
    }
}

/// Validates every rule; the first violation is returned.
pub fn validate(arch: &Arch) -> Result<(), ArchError> {
    if let Some(name) = &arch.name {
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '|') {
            return Err(err(
                "model",
                format!("name '{name}' must be non-empty without spaces or '|'"),
            ));
        }
    }
    check_positive("model", "in_chans", arch.in_chans)?;
    check_positive("model", "num_classes", arch.num_classes)?;
    check_positive("stem", "stem width", arch.stem)?;
    check_odd_kernel("stem", "stem", arch.stem_kernel)?;
    check_stride("stem", arch.stem_stride)?;
    if let Some(ls) = arch.layer_scale {
        if !(ls.is_finite() && ls > 0.0) {
            return Err(err(
                "model",
                format!("layer_scale must be positive, got {ls}"),
            ));
        }
    }
    if !(0.0..1.0).contains(&arch.dropout) {
        return Err(err(
            "head",
            format!("dropout must be in [0, 1), got {}", arch.dropout),
        ));
    }
    if arch.stages.is_empty() {
        return Err(err("model", "an architecture needs at least one stage"));
    }
    for (s, stage) in arch.stages.iter().enumerate() {
        if stage.blocks.is_empty() {
            return Err(err(format!("stage {s}"), "stage is empty"));
        }
    }
    for (s, b, in_ch, block) in arch.walk() {
        let at = format!("stage {s} block {b} ({})", block.kind_name());
        match *block {
            Block::ConvBn { k, stride, out } => {
                check_odd_kernel(&at, "conv", k)?;
                check_stride(&at, stride)?;
                check_positive(&at, "output width", out)?;
            }
            Block::FusedIb {
                k,
                stride,
                expansion,
                out,
            } => {
                check_odd_kernel(&at, "fused conv", k)?;
                check_stride(&at, stride)?;
                check_expansion(&at, expansion)?;
                check_positive(&at, "output width", out)?;
            }
            Block::Uib {
                start_dw,
                mid_dw,
                stride,
                expansion,
                out,
            } => {
                check_dw(&at, "start", start_dw, true)?;
                check_dw(&at, "middle", mid_dw, true)?;
                check_stride(&at, stride)?;
                check_expansion(&at, expansion)?;
                check_positive(&at, "output width", out)?;
                if stride > 1 && uib_stride_carrier(start_dw, mid_dw).is_none() {
                    return Err(err(
                        &at,
                        "a stride-2 UIB needs a start or middle depthwise conv to carry the stride",
                    ));
                }
            }
            Block::Mqa {
                heads,
                key_dim,
                value_dim,
                kv_stride,
                kv_kernel,
            } => {
                check_positive(&at, "heads", heads)?;
                check_positive(&at, "key_dim", key_dim)?;
                check_positive(&at, "value_dim", value_dim)?;
                check_stride(&at, kv_stride)?;
                check_dw(&at, "key/value down-sampling", kv_kernel, false)?;
                if key_dim > in_ch || value_dim > in_ch {
                    return Err(err(
                        &at,
                        format!(
                            "key_dim {key_dim} / value_dim {value_dim} do not fit the block's {in_ch} input channels"
                        ),
                    ));
                }
            }
        }
    }
    check_positive("head", "features width", arch.features)?;
    check_positive("head", "head width", arch.head)?;
    Ok(())
}
