//! The built network agrees with the spec-only layer plan at odd and non-square input sizes, in
//! train and eval mode, for every block kind (hybrid-medium has MQA with K/V down-sampling).

use candle_core::{DType, Device, Tensor};
use mnv4_lab::cost::plan;
use mnv4_lab::model::{Mode, Network};
use mnv4_lab::space::presets::preset;

#[test]
fn feature_maps_match_the_plan_at_odd_and_non_square_sizes() {
    for (name, width) in [("conv-small", 0.5), ("hybrid-medium", 0.25)] {
        let arch = preset(name, width).unwrap().with_io(1, 7);
        let net = Network::new(&arch, &Device::Cpu, 3).unwrap();
        for (h, w) in [(33, 47), (64, 40), (35, 35)] {
            let x = Tensor::ones((2, 1, h, w), DType::F32, &Device::Cpu).unwrap();
            let layers = plan(&arch, h, w);
            for mode in [Mode::Train, Mode::Eval] {
                let out = net.forward_with(&x, mode, &[0, 1, 2, 3, 4]).unwrap();
                assert_eq!(out.logits.dims(), &[2, 7]);
                for (tap, feat) in arch.feature_taps().iter().zip(&out.features) {
                    let layer = match tap.after_stage {
                        None => "conv_stem".to_string(),
                        Some(s) if s == arch.stages.len() => format!("blocks.{s}.0.conv"),
                        Some(s) => {
                            let last = arch.stages[s].blocks.len() - 1;
                            let prefix = format!("blocks.{s}.{last}.");
                            layers
                                .iter()
                                .rev()
                                .find(|l| l.name.starts_with(&prefix))
                                .unwrap()
                                .name
                                .clone()
                        }
                    };
                    let want = layers.iter().find(|l| l.name == layer).unwrap().out_shape;
                    assert_eq!(
                        &feat.dims()[1..],
                        &want,
                        "{name} {h}×{w} tap after {:?}",
                        tap.after_stage
                    );
                }
            }
        }
    }
}
