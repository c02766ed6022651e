//! Architectures as plain data: no candle in here.
//!
//! An [`Arch`] is written by hand or by the search as TOML, or as a one-line block string
//! (see [`blockstr`]); both round-trip losslessly. [`presets`] holds the five released models.
//! [`lower`] turns an `Arch` into the layer list the builder and the cost model read.

pub mod arch;
pub mod blockstr;
pub mod lower;
pub mod model_spec;
pub mod presets;
pub mod validate;

pub use arch::{check_tap_indices, Activation, Arch, Block, FeatureTap, Stage};
pub use lower::{lower, LayerSpec};
pub use model_spec::ModelSpec;
pub use validate::{validate, ArchError};

use anyhow::{Context, Result};
use std::path::Path;

impl Arch {
    /// Parses and validates an arch TOML document.
    pub fn from_toml_str(text: &str) -> Result<Arch> {
        let arch: Arch = toml::from_str(text).map_err(|e| anyhow::anyhow!("arch TOML: {e}"))?;
        validate(&arch)?;
        Ok(arch)
    }

    /// Writes the arch as a TOML document.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("an Arch always serializes to TOML")
    }

    /// Parses and validates the one-line block-string form.
    pub fn from_block_string(text: &str) -> Result<Arch> {
        let arch = blockstr::parse_block_string(text)?;
        validate(&arch)?;
        Ok(arch)
    }

    /// The one-line block-string form.
    pub fn to_block_string(&self) -> String {
        blockstr::to_block_string(self)
    }

    /// The block string without the name: equal for structurally identical architectures.
    pub fn canonical(&self) -> String {
        let mut a = self.clone();
        a.name = None;
        a.to_block_string()
    }

    /// A stable 16-hex-digit hash of [`Arch::canonical`] (FNV-1a 64), for de-duplication and file names.
    pub fn hash_hex(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.canonical().bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// Reads an arch file (TOML), naming the file in errors.
    pub fn load(path: &Path) -> Result<Arch> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading arch file {}", path.display()))?;
        Arch::from_toml_str(&text).with_context(|| format!("in arch file {}", path.display()))
    }

    /// Resolves a model argument: a preset name (with `width`), an arch TOML file, or a block string.
    pub fn resolve(model: &str, width: f64) -> Result<Arch> {
        if let Some(_canon) = presets::canonical_preset(model) {
            return presets::preset(model, width).map_err(anyhow::Error::msg);
        }
        let p = Path::new(model);
        let mut arch = if p.exists() {
            Arch::load(p)?
        } else if model.contains('|') {
            Arch::from_block_string(model)?
        } else {
            anyhow::bail!(
                "'{model}' is neither a preset ({}), an arch file, nor a block string",
                presets::PRESETS.join(", ")
            );
        };
        if width != 1.0 {
            presets::scale_width(&mut arch, width);
        }
        Ok(arch)
    }

    /// Sets the number of classes and input channels (e.g. for Fashion-MNIST: 10 classes, 1 channel).
    pub fn with_io(mut self, in_chans: usize, num_classes: usize) -> Arch {
        self.in_chans = in_chans;
        self.num_classes = num_classes;
        self
    }
}
