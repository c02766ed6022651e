//! The distillation objective: a [`BatchLoss`] combining CE, KD, feature KD, attention transfer
//! and DKD with explicit weights, reading the teacher's logits and features from the offline
//! distillation dataset when it can.

use super::cache::{view_path, TeacherRows, TeacherView};
use super::config::DistillConfig;
use super::frozen::FrozenTeacher;
use super::losses::{attention_transfer, dkd_loss, feature_mse, kd_loss};
use crate::data::Batch;
use crate::model::layers::{BatchNorm, Conv, ConvInit};
use crate::model::{Ensemble, Mode, Network, ParamKind, ParamStore};
use crate::space::{Arch, FeatureTap};
use crate::train::loss::cross_entropy;
use crate::train::objective::{BatchLoss, Step};
use anyhow::{ensure, Result};
use candle_core::{DType, Tensor, Var};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// A trainable 1×1 conv + BN from student to teacher channels (dropped from the exported student).
struct Adapter {
    conv: Conv,
    bn: BatchNorm,
}

/// (student channels, teacher channels) of the adapter at each feature tap, checking that the
/// tap exists in both networks and that the teacher's map is not coarser than the student's.
/// `teacher` is the teacher's taps ([`Arch::feature_taps`], or an ensemble's).
pub fn adapter_shapes(
    student: &Arch,
    teacher: &[FeatureTap],
    taps: &[usize],
) -> Result<Vec<(usize, usize)>> {
    let (s, t) = (student.feature_taps(), teacher);
    taps.iter()
        .map(|&i| {
            ensure!(
                i < s.len() && i < t.len(),
                "distill.feature_taps: index {i} out of range (student has {}, teacher {} taps)",
                s.len(),
                t.len()
            );
            ensure!(
                t[i].reduction <= s[i].reduction,
                "feature tap {i}: the teacher's map (stride {}) is coarser than the student's (stride {})",
                t[i].reduction,
                s[i].reduction
            );
            Ok((s[i].channels, t[i].channels))
        })
        .collect()
}

/// Where the cache lives and what is loaded for the current epoch.
struct CacheState {
    dir: PathBuf,
    key: String,
    view: Option<TeacherView>,
    /// The view came from disk (nothing to write at epoch end).
    from_disk: bool,
}

/// Student loss with a frozen teacher.
pub struct DistillObjective {
    cfg: DistillConfig,
    smoothing: f64,
    teacher: Arc<Ensemble>,
    /// The teacher on the native engine, for eval mode; compiled at the first live batch.
    frozen: Option<FrozenTeacher>,
    /// Samples in the training set (rows of a cache view).
    train_samples: usize,
    adapters: Vec<Adapter>,
    adapter_params: ParamStore,
    cache: Option<CacheState>,
    epoch: Option<usize>,
    /// Seconds spent running the teacher (0 when every batch came from the cache).
    pub teacher_seconds: f64,
    /// Batches whose teacher outputs came from the cache.
    pub cached_batches: usize,
    /// Batches for which the teacher ran.
    pub live_batches: usize,
}

impl DistillObjective {
    /// `student` is only used for its feature-tap shapes; `train_samples` is the size of the
    /// training set the batches index into; `cache_key` enables the offline distillation
    /// dataset.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &DistillConfig,
        smoothing: f64,
        student: &Network,
        teacher: Arc<Ensemble>,
        train_samples: usize,
        cache_key: Option<String>,
        seed: u64,
    ) -> Result<Self> {
        let mut adapter_params = ParamStore::new(student.params.device(), seed ^ 0xada9);
        let mut adapters = Vec::new();
        if cfg.needs_features() {
            adapter_shapes(&student.arch, &teacher.feature_taps(), &cfg.feature_taps)?;
        }
        if cfg.feature_weight > 0.0 {
            let shapes = adapter_shapes(&student.arch, &teacher.feature_taps(), &cfg.feature_taps)?;
            for (&i, (cs, ct)) in cfg.feature_taps.iter().zip(shapes) {
                let p = format!("adapter.{i}");
                adapters.push(Adapter {
                    conv: Conv::new(
                        &mut adapter_params,
                        &format!("{p}.conv"),
                        cs,
                        ct,
                        1,
                        1,
                        1,
                        ConvInit::FanOut,
                    )?,
                    bn: BatchNorm::new(&mut adapter_params, &format!("{p}.bn"), ct)?,
                });
            }
        }
        let cache = match cache_key {
            Some(key) if cfg.cache => Some(CacheState {
                dir: cfg.cache_dir.clone(),
                key,
                view: None,
                from_disk: false,
            }),
            _ => None,
        };
        Ok(Self {
            cfg: cfg.clone(),
            smoothing,
            teacher,
            frozen: None,
            train_samples,
            adapters,
            adapter_params,
            cache,
            epoch: None,
            teacher_seconds: 0.0,
            cached_batches: 0,
            live_batches: 0,
        })
    }

    /// Bytes one training sample takes in a cached view (logits and features), once known.
    pub fn cache_bytes_per_sample(&self) -> Option<usize> {
        let view = self.cache.as_ref()?.view.as_ref()?;
        Some(view.bytes_per_sample())
    }

    /// The teacher (one network, or an ensemble).
    pub fn teacher(&self) -> &Ensemble {
        &self.teacher
    }

    fn start_epoch(&mut self, epoch: usize) -> Result<()> {
        self.epoch = Some(epoch);
        let n = self.train_samples;
        let k = self.teacher.num_classes();
        let taps = self.teacher_taps().len();
        if let Some(c) = &mut self.cache {
            let path = view_path(&c.dir, &c.key, epoch);
            if path.exists() {
                c.view = Some(TeacherView::load(&path, n, k, taps)?);
                c.from_disk = true;
                tracing::info!(
                    "teacher outputs for epoch {} from cache {}",
                    epoch + 1,
                    path.display()
                );
            } else {
                c.view = Some(TeacherView::empty(n, k, taps));
                c.from_disk = false;
            }
        }
        Ok(())
    }

    /// The feature taps the teacher reports: the losses' taps, and with a cache always the
    /// configured taps, so that one offline dataset serves logit-only and feature runs alike.
    fn teacher_taps(&self) -> Vec<usize> {
        match self.cfg.needs_features() || self.cache.is_some() {
            true => self.cfg.feature_taps.clone(),
            false => Vec::new(),
        }
    }

    /// The feature taps the losses read (none when no loss needs features).
    fn taps(&self) -> Vec<usize> {
        match self.cfg.needs_features() {
            true => self.cfg.feature_taps.clone(),
            false => Vec::new(),
        }
    }

    /// The teacher's logits and tap maps for `batch`: from the cache view, or by running the
    /// teacher and storing them. Live outputs are rounded through f16 whether or not a cache is
    /// on, so a run reading the cache trains exactly like the run that filled it.
    fn teacher_outputs(&mut self, batch: &Batch, taps: &[usize]) -> Result<(Tensor, Vec<Tensor>)> {
        let (b, k) = (batch.indices.len(), self.teacher.num_classes());
        let dev = batch.images.device();
        let view = self.cache.as_ref().and_then(|c| c.view.as_ref());
        if let Some((rows, shapes)) = view.and_then(|v| v.fetch(&batch.indices)) {
            self.cached_batches += 1;
            let feats = rows
                .features
                .into_iter()
                .zip(shapes)
                .map(|(f, [c, h, w])| Tensor::from_vec(f, (b, c, h, w), dev))
                .collect::<candle_core::Result<_>>()?;
            return Ok((Tensor::from_vec(rows.logits, (b, k), dev)?, feats));
        }
        let t0 = Instant::now();
        let input = self.teacher_input(&batch.images)?;
        let (logits, feats) = match self.cfg.teacher_train_bn {
            false => self.frozen()?.forward(&input, taps)?,
            true => {
                let out = self.teacher.forward_with(&input, Mode::Train, taps)?;
                (out.logits, out.features)
            }
        };
        let round = |t: &Tensor| -> Result<Tensor> {
            Ok(t.detach().to_dtype(DType::F16)?.to_dtype(DType::F32)?)
        };
        let logits = round(&logits)?;
        let feats: Vec<Tensor> = feats.iter().map(round).collect::<Result<_>>()?;
        if let Some(v) = self.cache.as_mut().and_then(|c| c.view.as_mut()) {
            let shapes = feats
                .iter()
                .map(|f| f.dims4().map(|(_, c, h, w)| [c, h, w]))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let rows = TeacherRows {
                logits: logits.flatten_all()?.to_vec1()?,
                features: feats
                    .iter()
                    .map(|f| f.flatten_all()?.to_vec1())
                    .collect::<candle_core::Result<_>>()?,
            };
            v.store(&batch.indices, &rows, &shapes)?;
        }
        self.teacher_seconds += t0.elapsed().as_secs_f64();
        self.live_batches += 1;
        Ok((logits, feats))
    }

    /// The teacher compiled for eval mode, at its first use (a run whose views are all cached
    /// never compiles it).
    fn frozen(&mut self) -> Result<&FrozenTeacher> {
        if self.frozen.is_none() {
            self.frozen = Some(FrozenTeacher::compile(&self.teacher)?);
        }
        Ok(self.frozen.as_ref().expect("compiled above"))
    }

    fn teacher_input(&self, images: &Tensor) -> Result<Tensor> {
        Ok(match self.cfg.teacher_res {
            Some(r) => {
                let (_, _, h, _) = images.dims4()?;
                ensure!(
                    r % h == 0,
                    "distill.teacher_res {r} must be a multiple of the input size {h}"
                );
                images.upsample_nearest2d(r, r)?
            }
            None => images.clone(),
        })
    }
}

impl BatchLoss for DistillObjective {
    fn loss(&mut self, net: &Network, batch: &Batch, step: Step) -> Result<(Tensor, Tensor)> {
        if self.epoch != Some(step.epoch) {
            self.start_epoch(step.epoch)?;
        }
        let (images, labels) = (&batch.images, &batch.labels);
        let taps = self.taps();
        let (t_logits, t_feats) = self.teacher_outputs(batch, &self.teacher_taps())?;
        let out = net.forward_with(images, Mode::Train, &taps)?;
        let c = &self.cfg;
        let mut loss = (cross_entropy(&out.logits, labels, self.smoothing)? * c.ce_weight)?;
        if c.kd_weight > 0.0 {
            loss = (loss + (kd_loss(&out.logits, &t_logits, c.temperature)? * c.kd_weight)?)?;
        }
        if c.dkd_weight > 0.0 {
            let warm = if c.dkd_warmup_epochs > 0.0 {
                (step.progress() / c.dkd_warmup_epochs).min(1.0)
            } else {
                1.0
            };
            let dkd = dkd_loss(
                &out.logits,
                &t_logits,
                labels,
                c.dkd_alpha,
                c.dkd_beta,
                c.dkd_temperature,
                warm,
            )?;
            loss = (loss + (dkd * c.dkd_weight)?)?;
        }
        for (j, (s, t)) in out.features.iter().zip(&t_feats).enumerate() {
            if c.feature_weight > 0.0 {
                let a = &self.adapters[j];
                let adapted = a.bn.after_conv(&a.conv, s, Mode::Train, None)?;
                loss = (loss + (feature_mse(&adapted, t)? * c.feature_weight)?)?;
            }
            if c.at_weight > 0.0 {
                loss = (loss + (attention_transfer(s, t)? * c.at_weight)?)?;
            }
        }
        Ok((loss, out.logits))
    }

    fn extra_params(&self) -> Vec<(String, Var, ParamKind)> {
        self.adapter_params.trainable()
    }

    fn end_epoch(&mut self, epoch: usize) -> Result<()> {
        if let Some(c) = &self.cache {
            if let (false, Some(v)) = (c.from_disk, &c.view) {
                v.save(&view_path(&c.dir, &c.key, epoch))?;
            }
        }
        self.epoch = None;
        Ok(())
    }
}
