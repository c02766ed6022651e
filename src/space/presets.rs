//! The five released MobileNetV4 models, as block strings (the same definitions as timm's
//! `_gen_mobilenet_v4` and TF Model Garden), plus the width multiplier.

use super::arch::{round_channels, Arch, Block};
use super::blockstr::parse_block_string;

const CONV_SMALL: &str = "in3 nc1000 relu stem32 feat960 head1280
 | cn_k3_s2_c32 cn_k1_s1_c32
 | cn_k3_s2_c96 cn_k1_s1_c64
 | uir_a5_k5_s2_e3_c96 uir_r4_a0_k3_s1_e2_c96 uir_a3_k0_s1_e4_c96
 | uir_a3_k3_s2_e6_c128 uir_a5_k5_s1_e4_c128 uir_a0_k5_s1_e4_c128 uir_a0_k5_s1_e3_c128
   uir_r2_a0_k3_s1_e4_c128";

const CONV_MEDIUM: &str = "in3 nc1000 relu stem32 feat960 head1280
 | er_k3_s2_e4_c48
 | uir_a3_k5_s2_e4_c80 uir_a3_k3_s1_e2_c80
 | uir_a3_k5_s2_e6_c160 uir_r2_a3_k3_s1_e4_c160 uir_a3_k5_s1_e4_c160 uir_a3_k3_s1_e4_c160
   uir_a3_k0_s1_e4_c160 uir_a0_k0_s1_e2_c160 uir_a3_k0_s1_e4_c160
 | uir_a5_k5_s2_e6_c256 uir_a5_k5_s1_e4_c256 uir_r2_a3_k5_s1_e4_c256 uir_a0_k0_s1_e4_c256
   uir_a3_k0_s1_e4_c256 uir_a3_k5_s1_e2_c256 uir_a5_k5_s1_e4_c256 uir_r2_a0_k0_s1_e4_c256
   uir_a5_k0_s1_e2_c256";

const CONV_LARGE: &str = "in3 nc1000 relu stem24 feat960 head1280
 | er_k3_s2_e4_c48
 | uir_a3_k5_s2_e4_c96 uir_a3_k3_s1_e4_c96
 | uir_a3_k5_s2_e4_c192 uir_r3_a3_k3_s1_e4_c192 uir_a3_k5_s1_e4_c192 uir_r5_a5_k3_s1_e4_c192
   uir_a3_k0_s1_e4_c192
 | uir_r4_a5_k5_s2_e4_c512 uir_a5_k0_s1_e4_c512 uir_a5_k3_s1_e4_c512 uir_r2_a5_k0_s1_e4_c512
   uir_a5_k3_s1_e4_c512 uir_a5_k5_s1_e4_c512 uir_r3_a5_k0_s1_e4_c512";

const HYBRID_MEDIUM: &str = "in3 nc1000 relu stem32 feat960 head1280 ls1e-5
 | er_k3_s2_e4_c48
 | uir_a3_k5_s2_e4_c80 uir_a3_k3_s1_e2_c80
 | uir_a3_k5_s2_e6_c160 uir_a0_k0_s1_e2_c160 uir_a3_k3_s1_e4_c160 uir_a3_k5_s1_e4_c160
   mqa_k3_h4_s1_v2_d64_c160 uir_a3_k3_s1_e4_c160 mqa_k3_h4_s1_v2_d64_c160 uir_a3_k0_s1_e4_c160
   mqa_k3_h4_s1_v2_d64_c160 uir_a3_k3_s1_e4_c160 mqa_k3_h4_s1_v2_d64_c160 uir_a3_k0_s1_e4_c160
 | uir_a5_k5_s2_e6_c256 uir_a5_k5_s1_e4_c256 uir_r2_a3_k5_s1_e4_c256 uir_a0_k0_s1_e2_c256
   uir_a3_k5_s1_e2_c256 uir_a0_k0_s1_e2_c256 uir_a0_k0_s1_e4_c256 mqa_k3_h4_s1_d64_c256
   uir_a3_k0_s1_e4_c256 mqa_k3_h4_s1_d64_c256 uir_a5_k5_s1_e4_c256 mqa_k3_h4_s1_d64_c256
   uir_a5_k0_s1_e4_c256 mqa_k3_h4_s1_d64_c256 uir_a5_k0_s1_e4_c256";

const HYBRID_LARGE: &str = "in3 nc1000 gelu stem24 feat960 head1280 ls1e-5
 | er_k3_s2_e4_c48
 | uir_a3_k5_s2_e4_c96 uir_a3_k3_s1_e4_c96
 | uir_a3_k5_s2_e4_c192 uir_r3_a3_k3_s1_e4_c192 uir_a3_k5_s1_e4_c192 uir_r2_a5_k3_s1_e4_c192
   mqa_k3_h8_s1_v2_d48_c192 uir_a5_k3_s1_e4_c192 mqa_k3_h8_s1_v2_d48_c192 uir_a5_k3_s1_e4_c192
   mqa_k3_h8_s1_v2_d48_c192 uir_a5_k3_s1_e4_c192 mqa_k3_h8_s1_v2_d48_c192 uir_a3_k0_s1_e4_c192
 | uir_r4_a5_k5_s2_e4_c512 uir_a5_k0_s1_e4_c512 uir_a5_k3_s1_e4_c512 uir_r2_a5_k0_s1_e4_c512
   uir_a5_k3_s1_e4_c512 uir_a5_k5_s1_e4_c512 mqa_k3_h8_s1_d64_c512 uir_a5_k0_s1_e4_c512
   mqa_k3_h8_s1_d64_c512 uir_a5_k0_s1_e4_c512 mqa_k3_h8_s1_d64_c512 uir_a5_k0_s1_e4_c512
   mqa_k3_h8_s1_d64_c512 uir_a5_k0_s1_e4_c512";

/// Canonical preset names, in size order.
pub const PRESETS: [&str; 5] = [
    "conv-small",
    "conv-medium",
    "conv-large",
    "hybrid-medium",
    "hybrid-large",
];

/// Maps a preset name or alias (`small`, `mobilenetv4_conv_small`, ...) to its canonical name.
pub fn canonical_preset(name: &str) -> Option<&'static str> {
    let n = name.trim().to_ascii_lowercase().replace('_', "-");
    let n = n.strip_prefix("mobilenetv4-").unwrap_or(&n);
    match n {
        "conv-small" | "small" => Some("conv-small"),
        "conv-medium" | "medium" => Some("conv-medium"),
        "conv-large" | "large" => Some("conv-large"),
        "hybrid-medium" => Some("hybrid-medium"),
        "hybrid-large" => Some("hybrid-large"),
        _ => None,
    }
}

/// timm's model name for a canonical preset (`conv-small` → `mobilenetv4_conv_small`).
pub fn timm_name(preset: &str) -> String {
    format!("mobilenetv4_{}", preset.replace('-', "_"))
}

/// Builds a preset at width multiplier `width` (1.0 = the released model), with 1000 classes and
/// 3 input channels. Block widths and the `features` conv are rounded like timm's
/// `round_channels`; the stem stays fixed for `width < 1`; the 1280 head is kept.
pub fn preset(name: &str, width: f64) -> Result<Arch, String> {
    let canon = canonical_preset(name).ok_or_else(|| {
        format!(
            "unknown model '{name}' (presets: {}; aliases small, medium, large and timm names)",
            PRESETS.join(", ")
        )
    })?;
    if !(0.25..=2.0).contains(&width) {
        return Err(format!("width multiplier {width} is outside 0.25 … 2.0"));
    }
    let text = match canon {
        "conv-small" => CONV_SMALL,
        "conv-medium" => CONV_MEDIUM,
        "conv-large" => CONV_LARGE,
        "hybrid-medium" => HYBRID_MEDIUM,
        _ => HYBRID_LARGE,
    };
    let mut arch = parse_block_string(text).map_err(|e| e.to_string())?;
    arch.name = Some(if width == 1.0 {
        canon.to_string()
    } else {
        format!("{canon}-w{width}")
    });
    if width != 1.0 {
        scale_width(&mut arch, width);
    }
    Ok(arch)
}

/// Applies a width multiplier to an architecture the way timm does for MobileNetV4.
pub fn scale_width(arch: &mut Arch, width: f64) {
    if width >= 1.0 {
        arch.stem = round_channels(arch.stem, width);
    }
    let mut ch = arch.stem;
    for stage in &mut arch.stages {
        for block in &mut stage.blocks {
            match block {
                Block::ConvBn { out, .. } | Block::FusedIb { out, .. } | Block::Uib { out, .. } => {
                    *out = round_channels(*out, width);
                    ch = *out;
                }
                // timm keeps attention dims fixed; they only shrink (to a multiple of 8) where
                // a narrow width leaves fewer channels than the key / value dimension.
                Block::Mqa {
                    key_dim, value_dim, ..
                } => {
                    let cap = (ch / 8 * 8).max(8).min(ch);
                    *key_dim = (*key_dim).min(cap);
                    *value_dim = (*value_dim).min(cap);
                }
            }
        }
    }
    arch.features = round_channels(arch.features, width);
}

/// Resolves a timm model name such as `mobilenetv4_conv_small` or `mobilenetv4_conv_small_050`
/// (width 0.5) to the matching architecture.
pub fn preset_from_timm_name(name: &str) -> Option<Arch> {
    let base = name.split('.').next().unwrap_or(name);
    if let Some(a) = canonical_preset(base) {
        return preset(a, 1.0).ok();
    }
    let (stem, suffix) = base.rsplit_once('_')?;
    let digits: u32 = suffix.parse().ok().filter(|_| suffix.len() == 3)?;
    preset(canonical_preset(stem)?, digits as f64 / 100.0).ok()
}
