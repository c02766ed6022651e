//! Several trained networks answering as one model: the mean of their logits, and at each feature
//! tap their maps side by side (concatenated along channels). A teacher is an ensemble of one or
//! more members; an ensemble of one answers exactly as its network.

use super::layers::Mode;
use super::network::{Network, Output};
use crate::space::FeatureTap;
use anyhow::{ensure, Result};
use candle_core::Tensor;

/// One or more networks over the same inputs and classes.
pub struct Ensemble {
    members: Vec<Network>,
}

impl Ensemble {
    /// The ensemble of `members`: refused when they differ in input channels, classes, or the
    /// number and strides of their feature taps (their maps could not be stacked).
    pub fn new(members: Vec<Network>) -> Result<Self> {
        ensure!(
            !members.is_empty(),
            "an ensemble needs at least one network"
        );
        let first = &members[0].arch;
        let strides = |n: &Network| -> Vec<usize> {
            n.arch.feature_taps().iter().map(|t| t.reduction).collect()
        };
        for (i, m) in members.iter().enumerate().skip(1) {
            let a = &m.arch;
            ensure!(
                (a.in_chans, a.num_classes) == (first.in_chans, first.num_classes),
                "ensemble member {} takes {} channels and predicts {} classes; member 1 takes {} and predicts {}",
                i + 1,
                a.in_chans,
                a.num_classes,
                first.in_chans,
                first.num_classes
            );
            ensure!(
                strides(m) == strides(&members[0]),
                "ensemble member {} has feature taps at strides {:?}, member 1 at {:?}",
                i + 1,
                strides(m),
                strides(&members[0])
            );
        }
        Ok(Self { members })
    }

    /// The members, in order.
    pub fn members(&self) -> &[Network] {
        &self.members
    }

    /// Classes every member predicts.
    pub fn num_classes(&self) -> usize {
        self.members[0].arch.num_classes
    }

    /// The ensemble's taps: the members' strides, with their channels summed.
    pub fn feature_taps(&self) -> Vec<FeatureTap> {
        let mut taps = self.members[0].arch.feature_taps();
        for m in &self.members[1..] {
            for (t, o) in taps.iter_mut().zip(m.arch.feature_taps()) {
                t.channels += o.channels;
            }
        }
        taps
    }

    /// Mean logits and, per requested tap, the members' maps concatenated along channels.
    pub fn forward_with(&self, x: &Tensor, mode: Mode, taps: &[usize]) -> Result<Output> {
        if let [only] = self.members.as_slice() {
            return only.forward_with(x, mode, taps);
        }
        let outs = self
            .members
            .iter()
            .map(|m| m.forward_with(x, mode, taps))
            .collect::<Result<Vec<_>>>()?;
        let logits: Vec<&Tensor> = outs.iter().map(|o| &o.logits).collect();
        let logits = (Tensor::stack(&logits, 0)?.sum(0)? / self.members.len() as f64)?;
        let features = (0..taps.len())
            .map(|j| {
                let maps: Vec<&Tensor> = outs.iter().map(|o| &o.features[j]).collect();
                Ok(Tensor::cat(&maps, 1)?)
            })
            .collect::<Result<_>>()?;
        Ok(Output { logits, features })
    }

    /// Mean logits for a batch.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        Ok(self.forward_with(x, mode, &[])?.logits)
    }
}

/// Anything that maps a batch of images to class logits (a network or an ensemble).
pub trait Classifier {
    /// Logits for a batch [B, C, H, W] in `mode`.
    fn logits(&self, x: &Tensor, mode: Mode) -> Result<Tensor>;
    /// Number of classes.
    fn classes(&self) -> usize;
}

impl Classifier for Network {
    fn logits(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward(x, mode)
    }
    fn classes(&self) -> usize {
        self.arch.num_classes
    }
}

impl Classifier for Ensemble {
    fn logits(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward(x, mode)
    }
    fn classes(&self) -> usize {
        self.num_classes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Arch;
    use candle_core::Device;

    fn net(width: f64, seed: u64) -> Network {
        let arch = Arch::resolve("conv-small", width).unwrap().with_io(1, 10);
        Network::new(&arch, &Device::Cpu, seed).unwrap()
    }

    #[test]
    fn an_ensemble_averages_logits_and_stacks_feature_maps() {
        let x = Tensor::randn(0f32, 1.0, (2, 1, 32, 32), &Device::Cpu).unwrap();
        let (a, b) = (net(0.5, 1), net(0.25, 2));
        let (oa, ob) = (
            a.forward_with(&x, Mode::Eval, &[2]).unwrap(),
            b.forward_with(&x, Mode::Eval, &[2]).unwrap(),
        );
        let (ca, cb) = (
            oa.features[0].dim(1).unwrap(),
            ob.features[0].dim(1).unwrap(),
        );
        let e = Ensemble::new(vec![a, b]).unwrap();
        let oe = e.forward_with(&x, Mode::Eval, &[2]).unwrap();
        let want = ((&oa.logits + &ob.logits).unwrap() / 2.0).unwrap();
        let diff = (&oe.logits - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
        assert_eq!(oe.features[0].dims()[1], ca + cb);
        assert_eq!(e.feature_taps()[2].channels, ca + cb);
        let tail = oe.features[0].narrow(1, ca, cb).unwrap();
        let same = (tail - &ob.features[0])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(same.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn an_ensemble_of_one_answers_exactly_as_its_network() {
        let x = Tensor::randn(0f32, 1.0, (2, 1, 32, 32), &Device::Cpu).unwrap();
        let alone = net(0.5, 3).forward(&x, Mode::Eval).unwrap();
        let e = Ensemble::new(vec![net(0.5, 3)]).unwrap();
        let bits = |t: &Tensor| -> Vec<u32> {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.iter().map(|f| f.to_bits()).collect()
        };
        assert_eq!(bits(&e.forward(&x, Mode::Eval).unwrap()), bits(&alone));
    }

    #[test]
    fn members_that_disagree_on_classes_are_refused() {
        let other = Arch::resolve("conv-small", 0.5).unwrap().with_io(1, 7);
        let other = Network::new(&other, &Device::Cpu, 0).unwrap();
        let e = Ensemble::new(vec![net(0.5, 0), other]).err().unwrap();
        assert!(e.to_string().contains("member 2"), "{e}");
    }
}
