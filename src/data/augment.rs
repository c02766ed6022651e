//! CPU augmentation and preprocessing of one u8 C×H×W image into f32 C'×S×S.
//!
//! Pipeline, in this order (training; evaluation skips steps 2 and 3):
//! 1. **Resize** the source to `input_size × input_size` ([`ResizeMode`]): `bilinear`
//!    (half-pixel centres, like `align_corners=false`, no antialiasing), `nearest`
//!    (source pixel whose centre is nearest), or `pad` (no interpolation: centre the image
//!    on a zero canvas, or centre-crop it when larger). Pixels are scaled to `[0, 1]`.
//! 2. **Random crop with zero padding**: the image is padded by `pad` zero (black) pixels
//!    on each side and a `input_size` window is cut at a uniform offset in `0..=2·pad`
//!    per axis (torchvision `RandomCrop(size, padding=pad)`).
//! 3. **Horizontal flip** with probability ½ when `flip`.
//! 4. **Channels** to the model's: 1 → 3 replicates, 3 → 1 takes Rec. 601 luma.
//! 5. **Normalize** `(x − mean) / std` per output channel when `normalize`.
//! 6. **Random erasing** (Zhong et al., 2020) with probability `erase`: a rectangle of
//!    2–33 % of the image, aspect ratio 0.3–3.3 (log-uniform), is filled with uniform random
//!    pixel values in `[0, 1]`, normalized like the image.
//!
//! Randomness comes only from the `StdRng` passed in, so a sample seeded from
//! (seed, epoch, index) is augmented identically on every run and every thread.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::dataset::Dataset;
use super::error::DataError;
use super::stats::{NormStats, LUMA_WEIGHTS};

/// How the source image is brought to the input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Nearest neighbour: output pixel `o` reads source `floor((o + ½)·L/S)`.
    Nearest,
    /// Bilinear with half-pixel centres (`align_corners=false`), edges clamped.
    #[default]
    Bilinear,
    /// No interpolation: zero-pad (centred) to the input size, or centre-crop if larger.
    Pad,
}

/// Augmentation and preprocessing settings of an experiment (TOML/JSON section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Side of the square model input (default 32).
    pub input_size: usize,
    /// Channels the model expects, 1 or 3 (default 3).
    pub channels: usize,
    /// How the source is brought to `input_size` (default `bilinear`).
    pub resize: ResizeMode,
    /// Zero padding for the random crop, in pixels; 0 disables the crop (default 4).
    pub pad: usize,
    /// Random horizontal flip (default true).
    pub flip: bool,
    /// Normalize with per-channel mean/std (default true).
    pub normalize: bool,
    /// Mean override (per source or output channel); default: the dataset's constants.
    pub mean: Option<Vec<f32>>,
    /// Std override (per source or output channel); default: the dataset's constants.
    pub std: Option<Vec<f32>>,
    /// Probability of random erasing per training sample, in `[0, 1]` (default 0: off).
    #[serde(skip_serializing_if = "is_zero")]
    pub erase: f32,
}

fn is_zero(v: &f32) -> bool {
    *v == 0.0
}

/// Erased area as a fraction of the image: the range of Zhong et al. and timm.
const ERASE_AREA: (f32, f32) = (0.02, 1.0 / 3.0);
/// Erased rectangle's aspect ratio (height / width), drawn log-uniformly.
const ERASE_ASPECT: (f32, f32) = (0.3, 3.3);
/// Tries to place a rectangle inside the image before giving up on erasing this sample.
const ERASE_ATTEMPTS: usize = 10;

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            input_size: 32,
            channels: 3,
            resize: ResizeMode::Bilinear,
            pad: 4,
            flip: true,
            normalize: true,
            mean: None,
            std: None,
            erase: 0.0,
        }
    }
}

/// One output position's source taps along an axis.
#[derive(Debug, Clone, Copy)]
struct Tap {
    i0: usize,
    i1: usize,
    w1: f32,
    valid: bool,
}

fn taps(len: usize, size: usize, mode: ResizeMode) -> Vec<Tap> {
    let scale = len as f32 / size as f32;
    (0..size)
        .map(|o| match mode {
            _ if len == size => Tap {
                i0: o,
                i1: o,
                w1: 0.0,
                valid: true,
            },
            ResizeMode::Nearest => {
                let i = (((o as f32 + 0.5) * scale) as usize).min(len - 1);
                Tap {
                    i0: i,
                    i1: i,
                    w1: 0.0,
                    valid: true,
                }
            }
            ResizeMode::Bilinear => {
                let x = ((o as f32 + 0.5) * scale - 0.5).clamp(0.0, (len - 1) as f32);
                let i0 = x.floor() as usize;
                Tap {
                    i0,
                    i1: (i0 + 1).min(len - 1),
                    w1: x - i0 as f32,
                    valid: true,
                }
            }
            ResizeMode::Pad => {
                let i = o as isize + (len as isize - size as isize) / 2;
                let valid = (0..len as isize).contains(&i);
                let i = if valid { i as usize } else { 0 };
                Tap {
                    i0: i,
                    i1: i,
                    w1: 0.0,
                    valid,
                }
            }
        })
        .collect()
}

/// Random choices for one sample: crop offsets in `0..=2·pad`, the flip and the erasing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AugmentParams {
    /// Horizontal crop offset into the padded image.
    pub dx: usize,
    /// Vertical crop offset into the padded image.
    pub dy: usize,
    /// Mirror left–right.
    pub flip: bool,
    /// The rectangle to erase, if any.
    pub erase: Option<EraseBox>,
}

/// A rectangle of the output image filled with random pixel values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EraseBox {
    /// Left column.
    pub x: usize,
    /// Top row.
    pub y: usize,
    /// Width in pixels.
    pub w: usize,
    /// Height in pixels.
    pub h: usize,
    /// Seed of the fill values, so the parameters stay small and `Copy`.
    pub fill_seed: u64,
}

/// A ready-to-run preprocessing pipeline for one source geometry (see module docs).
#[derive(Debug, Clone)]
pub struct Augmenter {
    cfg: AugmentConfig,
    src: (usize, usize, usize),
    rows: Vec<Tap>,
    cols: Vec<Tap>,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

impl Augmenter {
    /// Builds the pipeline for `src_channels×src_height×src_width` u8 images.
    ///
    /// `stats` (any of source or output channel count) is required when `cfg.normalize`,
    /// unless `cfg.mean`/`cfg.std` are set, which take precedence.
    pub fn new(
        cfg: &AugmentConfig,
        src_channels: usize,
        src_height: usize,
        src_width: usize,
        stats: Option<&NormStats>,
    ) -> Result<Self, DataError> {
        if cfg.input_size == 0 {
            return Err(DataError::Invalid(
                "augment.input_size must be positive".into(),
            ));
        }
        if !matches!(cfg.channels, 1 | 3) {
            return Err(DataError::Invalid(format!(
                "augment.channels must be 1 or 3, not {}",
                cfg.channels
            )));
        }
        if !(0.0..=1.0).contains(&cfg.erase) {
            return Err(DataError::Invalid(format!(
                "augment.erase is a probability in [0, 1], not {}",
                cfg.erase
            )));
        }
        if !matches!(src_channels, 1 | 3) || src_height == 0 || src_width == 0 {
            return Err(DataError::Invalid(format!(
                "source images must be 1 or 3 channels of positive size, not {src_channels}×{src_height}×{src_width}"
            )));
        }
        let (mean, inv_std) = if cfg.normalize {
            let s = match (&cfg.mean, &cfg.std, stats) {
                (Some(m), Some(s), _) => NormStats::new(m.clone(), s.clone())?,
                (None, None, Some(s)) => s.clone(),
                (Some(_), None, _) | (None, Some(_), _) => {
                    return Err(DataError::Invalid(
                        "augment.mean and augment.std must be given together".into(),
                    ))
                }
                (None, None, None) => {
                    return Err(DataError::Invalid(
                        "normalize is on but no mean/std is known".into(),
                    ))
                }
            };
            let s = s.adapt(cfg.channels)?;
            (s.mean, s.std.iter().map(|v| 1.0 / v).collect())
        } else {
            (vec![0.0; cfg.channels], vec![1.0; cfg.channels])
        };
        Ok(Augmenter {
            cfg: cfg.clone(),
            src: (src_channels, src_height, src_width),
            rows: taps(src_height, cfg.input_size, cfg.resize),
            cols: taps(src_width, cfg.input_size, cfg.resize),
            mean,
            inv_std,
        })
    }

    /// Builds the pipeline for a dataset's geometry. Statistics: `cfg.mean`/`cfg.std` if set,
    /// else the constants of the dataset family ([`NormStats::for_dataset`]), else measured
    /// on `ds` itself ([`NormStats::compute`]; pass the training set).
    pub fn for_dataset(cfg: &AugmentConfig, ds: &Dataset) -> Result<Self, DataError> {
        let stats = if !cfg.normalize || cfg.mean.is_some() || cfg.std.is_some() {
            None
        } else if let Some(s) = NormStats::for_dataset(&ds.name) {
            Some(s)
        } else {
            tracing::info!(
                "no known normalization constants for {}; measuring them",
                ds.name
            );
            Some(NormStats::compute(ds)?)
        };
        Augmenter::new(cfg, ds.channels, ds.height, ds.width, stats.as_ref())
    }

    /// The configuration.
    pub fn config(&self) -> &AugmentConfig {
        &self.cfg
    }

    /// Source geometry `(channels, height, width)` this pipeline expects.
    pub fn source_shape(&self) -> (usize, usize, usize) {
        self.src
    }

    /// Output shape `(channels, input_size, input_size)`.
    pub fn output_shape(&self) -> (usize, usize, usize) {
        (self.cfg.channels, self.cfg.input_size, self.cfg.input_size)
    }

    /// Number of f32 values per output sample.
    pub fn output_len(&self) -> usize {
        self.cfg.channels * self.cfg.input_size * self.cfg.input_size
    }

    /// Draws the random choices for one sample: always dx, dy and the flip coin (3 draws),
    /// then, only when `erase > 0`, the erasing coin and its rectangle.
    pub fn draw(&self, rng: &mut StdRng) -> AugmentParams {
        let p = self.cfg.pad;
        let dx = rng.random_range(0..=2 * p);
        let dy = rng.random_range(0..=2 * p);
        let coin = rng.random_bool(0.5);
        let erase = if self.cfg.erase > 0.0 && rng.random::<f32>() < self.cfg.erase {
            self.draw_erase(rng)
        } else {
            None
        };
        AugmentParams {
            dx,
            dy,
            flip: self.cfg.flip && coin,
            erase,
        }
    }

    /// A rectangle of random area and aspect ratio that fits the image, or `None` when
    /// [`ERASE_ATTEMPTS`] draws all fell outside.
    fn draw_erase(&self, rng: &mut StdRng) -> Option<EraseBox> {
        let s = self.cfg.input_size;
        let area = (s * s) as f32;
        let (lo, hi) = (ERASE_ASPECT.0.ln(), ERASE_ASPECT.1.ln());
        for _ in 0..ERASE_ATTEMPTS {
            let target = area * rng.random_range(ERASE_AREA.0..ERASE_AREA.1);
            let aspect = rng.random_range(lo..hi).exp();
            let h = (target * aspect).sqrt().round() as usize;
            let w = (target / aspect).sqrt().round() as usize;
            if (1..s).contains(&h) && (1..s).contains(&w) {
                return Some(EraseBox {
                    x: rng.random_range(0..=s - w),
                    y: rng.random_range(0..=s - h),
                    w,
                    h,
                    fill_seed: rng.random(),
                });
            }
        }
        None
    }

    /// Training transform: random crop/flip drawn from `rng`, then channels and normalization.
    pub fn apply_train(&self, src: &[u8], rng: &mut StdRng, out: &mut [f32]) {
        let p = self.draw(rng);
        self.apply_with(src, p, out);
    }

    /// Evaluation transform: resize, channels, normalization (no randomness).
    pub fn apply_eval(&self, src: &[u8], out: &mut [f32]) {
        let pad = self.cfg.pad;
        self.apply_with(
            src,
            AugmentParams {
                dx: pad,
                dy: pad,
                flip: false,
                erase: None,
            },
            out,
        );
    }

    /// Applies the pipeline with explicit random choices. Panics if `src` or `out` have the
    /// wrong length (checked by the loader).
    pub fn apply_with(&self, src: &[u8], params: AugmentParams, out: &mut [f32]) {
        let (sc, sh, sw) = self.src;
        let s = self.cfg.input_size;
        assert_eq!(src.len(), sc * sh * sw, "augment: source length");
        assert_eq!(out.len(), self.output_len(), "augment: output length");
        // 1. Resize to S×S per source channel, scaled to [0, 1].
        let mut resized = vec![0f32; sc * s * s];
        for c in 0..sc {
            let plane = &src[c * sh * sw..(c + 1) * sh * sw];
            let dst = &mut resized[c * s * s..(c + 1) * s * s];
            for (y, ty) in self.rows.iter().enumerate() {
                if !ty.valid {
                    continue;
                }
                let r0 = &plane[ty.i0 * sw..(ty.i0 + 1) * sw];
                let r1 = &plane[ty.i1 * sw..(ty.i1 + 1) * sw];
                for (x, tx) in self.cols.iter().enumerate() {
                    if !tx.valid {
                        continue;
                    }
                    let top = r0[tx.i0] as f32 * (1.0 - tx.w1) + r0[tx.i1] as f32 * tx.w1;
                    let bot = r1[tx.i0] as f32 * (1.0 - tx.w1) + r1[tx.i1] as f32 * tx.w1;
                    dst[y * s + x] = (top * (1.0 - ty.w1) + bot * ty.w1) / 255.0;
                }
            }
        }
        // 2–5. Crop (zero outside), flip, channel conversion, normalization.
        let pad = self.cfg.pad as isize;
        let oc = self.cfg.channels;
        for co in 0..oc {
            let (m, inv) = (self.mean[co], self.inv_std[co]);
            for y in 0..s {
                let sy = y as isize + params.dy as isize - pad;
                for x in 0..s {
                    let xf = if params.flip { s - 1 - x } else { x };
                    let sx = xf as isize + params.dx as isize - pad;
                    let v = if sy < 0 || sx < 0 || sy >= s as isize || sx >= s as isize {
                        0.0
                    } else {
                        let at = sy as usize * s + sx as usize;
                        match (sc, oc) {
                            (1, _) => resized[at],
                            (3, 1) => (0..3)
                                .map(|c| LUMA_WEIGHTS[c] * resized[c * s * s + at])
                                .sum(),
                            _ => resized[co * s * s + at],
                        }
                    };
                    out[co * s * s + y * s + x] = (v - m) * inv;
                }
            }
        }
        if let Some(b) = params.erase {
            self.erase(b, out);
        }
    }

    /// 6. Fills the rectangle with uniform random pixels in `[0, 1]`, normalized per channel.
    fn erase(&self, b: EraseBox, out: &mut [f32]) {
        let s = self.cfg.input_size;
        let mut rng = StdRng::seed_from_u64(b.fill_seed);
        for co in 0..self.cfg.channels {
            let (m, inv) = (self.mean[co], self.inv_std[co]);
            for y in b.y..b.y + b.h {
                for v in &mut out[co * s * s + y * s + b.x..co * s * s + y * s + b.x + b.w] {
                    *v = (rng.random::<f32>() - m) * inv;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_cfg(
        size: usize,
        channels: usize,
        pad: usize,
        flip: bool,
        resize: ResizeMode,
    ) -> AugmentConfig {
        AugmentConfig {
            input_size: size,
            channels,
            resize,
            pad,
            flip,
            normalize: false,
            mean: None,
            std: None,
            erase: 0.0,
        }
    }

    /// 1×2×3 image with values 10, 20, …, 60.
    fn small() -> Vec<u8> {
        vec![10, 20, 30, 40, 50, 60]
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: AugmentConfig =
            serde_json::from_str(r#"{"input_size": 28, "resize": "pad"}"#).unwrap();
        assert_eq!(
            (c.input_size, c.channels, c.pad, c.flip, c.normalize),
            (28, 3, 4, true, true)
        );
        assert_eq!(c.resize, ResizeMode::Pad);
        let e = serde_json::from_str::<AugmentConfig>(r#"{"input_sise": 28}"#).unwrap_err();
        assert!(e.to_string().contains("input_sise"), "{e}");
        let back: AugmentConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn identity_crop_flip_and_zero_padding() {
        let a = Augmenter::new(&raw_cfg(3, 1, 1, true, ResizeMode::Pad), 1, 3, 3, None).unwrap();
        let src: Vec<u8> = (1..=9).map(|v| v * 10).collect();
        let f = |v: u8| v as f32 / 255.0;
        let mut out = vec![0.0; 9];
        a.apply_eval(&src, &mut out);
        assert_eq!(out, src.iter().map(|&v| f(v)).collect::<Vec<_>>());
        // Shift window one to the right and down: top-left reads source (1,1).
        a.apply_with(
            &src,
            AugmentParams {
                dx: 2,
                dy: 2,
                flip: false,
                erase: None,
            },
            &mut out,
        );
        assert_eq!(
            out,
            vec![f(50), f(60), 0.0, f(80), f(90), 0.0, 0.0, 0.0, 0.0]
        );
        // Flip only.
        a.apply_with(
            &src,
            AugmentParams {
                dx: 1,
                dy: 1,
                flip: true,
                erase: None,
            },
            &mut out,
        );
        assert_eq!(&out[..3], &[f(30), f(20), f(10)]);
    }

    #[test]
    fn resize_modes() {
        // Pad 2×3 into 4×4: centred with zero border.
        let a = Augmenter::new(&raw_cfg(4, 1, 0, false, ResizeMode::Pad), 1, 2, 3, None).unwrap();
        let mut out = vec![0.0; 16];
        a.apply_eval(&small(), &mut out);
        let px: Vec<u8> = out.iter().map(|v| (v * 255.0).round() as u8).collect();
        assert_eq!(
            px,
            vec![0, 0, 0, 0, 10, 20, 30, 0, 40, 50, 60, 0, 0, 0, 0, 0]
        );
        // Nearest 2×3 -> 4×6 duplicates pixels.
        let a =
            Augmenter::new(&raw_cfg(6, 1, 0, false, ResizeMode::Nearest), 1, 2, 3, None).unwrap();
        let mut out = vec![0.0; 36];
        a.apply_eval(&small(), &mut out);
        let px: Vec<u8> = out.iter().map(|v| (v * 255.0).round() as u8).collect();
        assert_eq!(&px[..6], &[10, 10, 20, 20, 30, 30]);
        assert_eq!(&px[30..], &[40, 40, 50, 50, 60, 60]);
        // Bilinear of a constant image stays constant; of a ramp stays monotone in range.
        let a = Augmenter::new(
            &raw_cfg(5, 1, 0, false, ResizeMode::Bilinear),
            1,
            2,
            3,
            None,
        )
        .unwrap();
        let mut out = vec![0.0; 25];
        a.apply_eval(&small(), &mut out);
        assert!(out
            .iter()
            .all(|&v| (10.0 / 255.0 - 1e-6..=60.0 / 255.0 + 1e-6).contains(&v)));
        assert!(out[..5].windows(2).all(|w| w[0] <= w[1]));
        a.apply_eval(&[7; 6], &mut out);
        assert!(out.iter().all(|&v| (v - 7.0 / 255.0).abs() < 1e-6));
    }

    #[test]
    fn channels_and_normalization() {
        let mut cfg = raw_cfg(2, 3, 0, false, ResizeMode::Bilinear);
        cfg.normalize = true;
        let stats = NormStats::for_dataset("fashion-mnist").unwrap();
        let a = Augmenter::new(&cfg, 1, 2, 2, Some(&stats)).unwrap();
        let mut out = vec![0.0; 12];
        a.apply_eval(&[0, 255, 0, 255], &mut out);
        let lo = (0.0 - 0.2860) / 0.3530;
        let hi = (1.0 - 0.2860) / 0.3530;
        for c in 0..3 {
            for (i, want) in [lo, hi, lo, hi].iter().enumerate() {
                assert!((out[c * 4 + i] - want).abs() < 1e-5);
            }
        }
        // RGB -> luma.
        let a = Augmenter::new(
            &raw_cfg(1, 1, 0, false, ResizeMode::Bilinear),
            3,
            1,
            1,
            None,
        )
        .unwrap();
        let mut out = vec![0.0; 1];
        a.apply_eval(&[255, 0, 0], &mut out);
        assert!((out[0] - 0.299).abs() < 1e-6);
        // Normalize without stats is a clear error.
        cfg.normalize = true;
        assert!(Augmenter::new(&cfg, 1, 2, 2, None).is_err());
        cfg.mean = Some(vec![0.5]);
        assert!(Augmenter::new(&cfg, 1, 2, 2, None).is_err());
        cfg.std = Some(vec![0.25]);
        assert!(Augmenter::new(&cfg, 1, 2, 2, None).is_ok());
    }

    #[test]
    fn deterministic_with_seed_and_shape() {
        let cfg = AugmentConfig::default();
        let stats = NormStats::for_dataset("cifar10").unwrap();
        let a = Augmenter::new(&cfg, 1, 28, 28, Some(&stats.adapt(1).unwrap())).unwrap();
        assert_eq!(a.output_shape(), (3, 32, 32));
        let src: Vec<u8> = (0..784).map(|i| (i % 256) as u8).collect();
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut out = vec![0.0; a.output_len()];
            a.apply_train(&src, &mut rng, &mut out);
            out
        };
        assert_eq!(run(3), run(3));
        let distinct = (0..20).map(run).filter(|o| *o != run(3)).count();
        assert!(distinct >= 15, "augmentations barely vary: {distinct}");
        // The draws cover the whole range.
        let mut rng = StdRng::seed_from_u64(0);
        let ps: Vec<_> = (0..500).map(|_| a.draw(&mut rng)).collect();
        assert!(ps.iter().any(|p| p.dx == 0) && ps.iter().any(|p| p.dx == 8));
        assert!(ps.iter().any(|p| p.flip) && ps.iter().any(|p| !p.flip));
    }

    #[test]
    fn erasing_is_off_by_default_and_keeps_the_old_stream() {
        let a = Augmenter::new(&raw_cfg(8, 1, 2, true, ResizeMode::Pad), 1, 8, 8, None).unwrap();
        let mut rng = StdRng::seed_from_u64(5);
        let mut three = StdRng::seed_from_u64(5);
        for _ in 0..100 {
            assert_eq!(a.draw(&mut rng).erase, None);
            three.random_range(0..=4usize);
            three.random_range(0..=4usize);
            three.random_bool(0.5);
        }
        assert_eq!(rng.random::<u64>(), three.random::<u64>());
        let json = serde_json::to_string(&AugmentConfig::default()).unwrap();
        assert!(!json.contains("erase"), "{json}");
        let mut cfg = raw_cfg(8, 1, 0, false, ResizeMode::Pad);
        cfg.erase = 1.5;
        let e = Augmenter::new(&cfg, 1, 8, 8, None).unwrap_err();
        assert!(e.to_string().contains("augment.erase"), "{e}");
    }

    #[test]
    fn erasing_fills_one_rectangle_with_normalized_random_pixels() {
        let mut cfg = raw_cfg(32, 3, 0, false, ResizeMode::Pad);
        cfg.normalize = true;
        cfg.erase = 0.5;
        let stats = NormStats::for_dataset("fashion-mnist").unwrap();
        let a = Augmenter::new(&cfg, 1, 32, 32, Some(&stats)).unwrap();
        let (lo, hi) = ((0.0 - 0.2860) / 0.3530, (1.0 - 0.2860) / 0.3530);
        let src = vec![0u8; 32 * 32];
        let mut rng = StdRng::seed_from_u64(1);
        let mut erased = 0;
        for _ in 0..1000 {
            let p = a.draw(&mut rng);
            let Some(b) = p.erase else { continue };
            erased += 1;
            let frac = (b.w * b.h) as f32 / 1024.0;
            assert!(b.x + b.w <= 32 && b.y + b.h <= 32, "{b:?}");
            assert!((0.015..=0.36).contains(&frac), "{b:?} covers {frac}");
            let mut out = vec![0.0; 3 * 1024];
            a.apply_with(&src, p, &mut out);
            let mut again = vec![0.0; 3 * 1024];
            a.apply_with(&src, p, &mut again);
            assert_eq!(out, again);
            for (i, v) in out.iter().enumerate() {
                let (y, x) = ((i % 1024) / 32, i % 32);
                let inside = (b.y..b.y + b.h).contains(&y) && (b.x..b.x + b.w).contains(&x);
                if inside {
                    assert!((lo - 1e-5..=hi + 1e-5).contains(v), "{v} at {i}");
                } else {
                    assert!((v - lo).abs() < 1e-6, "pixel {i} outside the box changed");
                }
            }
            let inside: Vec<f32> = (b.y..b.y + b.h).map(|y| out[y * 32 + b.x]).collect();
            assert!(
                inside.windows(2).any(|w| w[0] != w[1]),
                "fill is not random"
            );
        }
        assert!(
            (420..=580).contains(&erased),
            "erased {erased} of 1000 at p = 0.5"
        );
    }
}
