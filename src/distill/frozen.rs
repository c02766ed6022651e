//! The frozen teacher in eval mode on the native engine ([`crate::export::engine`]): batch norm
//! folded, channels-last kernels. It answers what [`Ensemble::forward_with`] answers in eval
//! mode (to float rounding) in less than half the time of the training path, which matters
//! because the teacher runs on every sample of every epoch view that is not cached yet.

use crate::export::engine::{Engine, FeatureMap};
use crate::model::Ensemble;
use anyhow::Result;
use candle_core::{Device, Tensor};

/// The teacher's members, compiled.
pub struct FrozenTeacher {
    members: Vec<Engine>,
}

impl FrozenTeacher {
    /// Compiles every member of `teacher` with its current weights.
    pub fn compile(teacher: &Ensemble) -> Result<Self> {
        let members = teacher
            .members()
            .iter()
            .map(Engine::compile)
            .collect::<Result<_>>()?;
        Ok(Self { members })
    }

    /// The members' mean logits `[batch, classes]` and, per tap in `taps`, their maps side by
    /// side along channels `[batch, C, H, W]`, for `input` `[batch, C, H, W]`; on `input`'s
    /// device.
    pub fn forward(&self, input: &Tensor, taps: &[usize]) -> Result<(Tensor, Vec<Tensor>)> {
        let (b, _, h, w) = input.dims4()?;
        let x = input.flatten_all()?.to_vec1::<f32>()?;
        let outs = self
            .members
            .iter()
            .map(|m| m.run_with_taps(&x, b, (h, w), taps))
            .collect::<Result<Vec<_>>>()?;
        let mut logits = vec![0f32; outs[0].0.len()];
        for (member, _) in &outs {
            for (sum, v) in logits.iter_mut().zip(member) {
                *sum += v;
            }
        }
        let n = self.members.len() as f32;
        logits.iter_mut().for_each(|v| *v /= n);
        let dev = input.device();
        let classes = logits.len() / b;
        let logits = Tensor::from_vec(logits, (b, classes), dev)?;
        let maps = (0..taps.len())
            .map(|j| side_by_side(outs.iter().map(|(_, maps)| &maps[j]), dev))
            .collect::<Result<_>>()?;
        Ok((logits, maps))
    }
}

/// Maps of the same batch and size concatenated along channels, image by image.
fn side_by_side<'a>(
    maps: impl Iterator<Item = &'a FeatureMap> + Clone,
    dev: &Device,
) -> Result<Tensor> {
    let channels: usize = maps.clone().map(|m| m.dims[1]).sum();
    let first = maps.clone().next().expect("an ensemble has members");
    let [b, _, h, w] = first.dims;
    let mut values = Vec::with_capacity(b * channels * h * w);
    for image in 0..b {
        for m in maps.clone() {
            let len = m.dims[1] * h * w;
            values.extend_from_slice(&m.values[image * len..][..len]);
        }
    }
    Ok(Tensor::from_vec(values, (b, channels, h, w), dev)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mode, Network};
    use crate::space::presets::preset;

    #[test]
    fn an_ensemble_answers_as_in_the_training_path() {
        // Two members of different widths (different tap channels), batch 3, every tap.
        let members = [(0.5, 1), (0.75, 2)]
            .into_iter()
            .map(|(w, seed)| {
                let arch = preset("conv-small", w).unwrap().with_io(1, 10);
                Network::new(&arch, &Device::Cpu, seed).unwrap()
            })
            .collect();
        let teacher = Ensemble::new(members).unwrap();
        let frozen = FrozenTeacher::compile(&teacher).unwrap();
        let x: Vec<f32> = (0..3 * 32 * 32)
            .map(|i| ((i * 7) % 13) as f32 * 0.25 - 1.5)
            .collect();
        let x = Tensor::from_vec(x, (3, 1, 32, 32), &Device::Cpu).unwrap();
        let taps = [3, 1, 2];
        let want = teacher.forward_with(&x, Mode::Eval, &taps).unwrap();
        let (logits, maps) = frozen.forward(&x, &taps).unwrap();
        let close = |got: &Tensor, want: &Tensor, what: &str| {
            assert_eq!(got.dims(), want.dims(), "{what}: dims");
            let (g, w) = (
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            let scale = w.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            for (i, (a, b)) in g.iter().zip(&w).enumerate() {
                assert!((a - b).abs() <= 1e-4 * scale, "{what} at {i}: {a} vs {b}");
            }
        };
        close(&logits, &want.logits, "logits");
        for ((got, want), tap) in maps.iter().zip(&want.features).zip(taps) {
            close(got, want, &format!("tap {tap}"));
        }
    }
}
