//! The architecture spec: exact parameter counts and MACs of the presets against timm, lossless
//! TOML and block-string round trips, and one test per validation rule.

use mnv4_lab::cost::{cost, load_profiles};
use mnv4_lab::space::presets::{preset, PRESETS};
use mnv4_lab::space::{validate, Arch, Block};

fn params_macs(arch: &Arch, res: usize) -> (u64, u64) {
    let c = cost(arch, res, res, &[]);
    (c.params, c.macs)
}

#[test]
fn preset_parameter_counts_equal_timm() {
    let expected = [
        ("conv-small", 1.0, 3_774_024),
        ("conv-medium", 1.0, 9_715_512),
        ("conv-large", 1.0, 32_590_864),
        ("hybrid-medium", 1.0, 11_074_648),
        ("hybrid-large", 1.0, 37_764_624),
        ("conv-small", 0.5, 2_238_952),
    ];
    for (name, width, want) in expected {
        let (p, _) = params_macs(&preset(name, width).unwrap(), 224);
        assert_eq!(p, want, "{name} at width {width}");
    }
}

#[test]
fn preset_macs_match_timm_within_half_a_percent() {
    let expected = [
        ("conv-small", 186.0e6),
        ("conv-medium", 827.6e6),
        ("conv-large", 2171.3e6),
        ("hybrid-medium", 966.3e6),
        ("hybrid-large", 2549.6e6),
    ];
    for (name, want) in expected {
        let (_, m) = params_macs(&preset(name, 1.0).unwrap(), 224);
        let rel = (m as f64 - want).abs() / want;
        assert!(
            rel <= 0.005,
            "{name}: {m} MACs vs {want} ({:.3}% off)",
            rel * 100.0
        );
    }
}

#[test]
fn aliases_resolve_to_the_same_preset() {
    for (alias, canon) in [
        ("small", "conv-small"),
        ("medium", "conv-medium"),
        ("large", "conv-large"),
        ("mobilenetv4_conv_small", "conv-small"),
        ("mobilenetv4_hybrid_large", "hybrid-large"),
    ] {
        assert_eq!(preset(alias, 1.0).unwrap(), preset(canon, 1.0).unwrap());
    }
    assert!(preset("conv-tiny", 1.0)
        .unwrap_err()
        .contains("unknown model"));
    assert!(preset("small", 3.0).unwrap_err().contains("outside"));
}

#[test]
fn hybrid_large_is_gelu_and_hybrids_have_layer_scale() {
    use mnv4_lab::space::Activation;
    assert_eq!(preset("hybrid-large", 1.0).unwrap().act, Activation::Gelu);
    assert_eq!(preset("hybrid-medium", 1.0).unwrap().act, Activation::Relu);
    assert_eq!(
        preset("hybrid-medium", 1.0).unwrap().layer_scale,
        Some(1e-5)
    );
    assert_eq!(preset("conv-large", 1.0).unwrap().layer_scale, None);
}

#[test]
fn feature_taps_are_strides_2_to_32() {
    for name in PRESETS {
        let taps = preset(name, 1.0).unwrap().feature_taps();
        let strides: Vec<usize> = taps.iter().map(|t| t.reduction).collect();
        assert_eq!(strides, vec![2, 4, 8, 16, 32], "{name}");
        assert_eq!(taps[4].channels, 960);
    }
}

#[test]
fn every_preset_round_trips_through_toml_and_block_string() {
    for name in PRESETS {
        for width in [0.25, 0.5, 0.75, 1.0, 1.5] {
            let arch = preset(name, width).unwrap();
            let toml = arch.to_toml_string();
            assert_eq!(Arch::from_toml_str(&toml).unwrap(), arch, "{name} TOML");
            let line = arch.to_block_string();
            assert!(!line.contains('\n'));
            assert_eq!(
                Arch::from_block_string(&line).unwrap(),
                arch,
                "{name} block string: {line}"
            );
        }
    }
}

#[test]
fn hash_ignores_the_name_and_sees_structure() {
    let a = preset("conv-small", 1.0).unwrap();
    let mut b = a.clone();
    b.name = Some("renamed".into());
    assert_eq!(a.hash_hex(), b.hash_hex());
    if let Block::Uib { mid_dw, .. } = &mut b.stages[2].blocks[1] {
        *mid_dw = 5;
    }
    assert_ne!(a.hash_hex(), b.hash_hex());
}

fn small() -> Arch {
    preset("conv-small", 1.0).unwrap()
}

fn expect_invalid(arch: Arch, at: &str, what: &str) {
    let e = validate(&arch).expect_err("should be invalid");
    assert!(
        e.at.contains(at),
        "error at '{}' should mention '{at}'",
        e.at
    );
    assert!(
        e.what.contains(what),
        "error '{}' should mention '{what}'",
        e.what
    );
}

#[test]
fn unsupported_kernel_is_rejected_with_its_place() {
    let mut a = small();
    a.stages[2].blocks[0] = Block::Uib {
        start_dw: 4,
        mid_dw: 5,
        stride: 2,
        expansion: 3.0,
        out: 96,
    };
    expect_invalid(a, "stage 2 block 0", "start depthwise kernel 4");
    let mut a = small();
    a.stages[0].blocks[0] = Block::ConvBn {
        k: 4,
        stride: 2,
        out: 32,
    };
    expect_invalid(a, "stage 0 block 0", "kernel 4");
}

#[test]
fn bad_stride_is_rejected() {
    let mut a = small();
    a.stages[1].blocks[0] = Block::ConvBn {
        k: 3,
        stride: 3,
        out: 96,
    };
    expect_invalid(a, "stage 1 block 0", "stride 3");
}

#[test]
fn zero_width_and_bad_expansion_are_rejected() {
    let mut a = small();
    a.stages[3].blocks[1] = Block::Uib {
        start_dw: 5,
        mid_dw: 5,
        stride: 1,
        expansion: 4.0,
        out: 0,
    };
    expect_invalid(a, "stage 3 block 1", "output width");
    let mut a = small();
    a.stages[3].blocks[1] = Block::Uib {
        start_dw: 5,
        mid_dw: 5,
        stride: 1,
        expansion: -2.0,
        out: 128,
    };
    expect_invalid(a, "stage 3 block 1", "expansion");
    let mut a = small();
    a.stem = 0;
    expect_invalid(a, "stem", "stem width");
}

#[test]
fn mqa_that_does_not_fit_is_rejected() {
    let mut a = small();
    a.stages[2].blocks.push(Block::Mqa {
        heads: 4,
        key_dim: 128,
        value_dim: 128,
        kv_stride: 2,
        kv_kernel: 3,
    });
    expect_invalid(a, "stage 2 block 6 (MQA)", "do not fit");
    let mut a = small();
    a.stages[2].blocks.push(Block::Mqa {
        heads: 0,
        key_dim: 32,
        value_dim: 32,
        kv_stride: 1,
        kv_kernel: 3,
    });
    expect_invalid(a, "stage 2 block 6 (MQA)", "heads");
}

#[test]
fn empty_stage_is_rejected() {
    let mut a = small();
    a.stages[1].blocks.clear();
    expect_invalid(a, "stage 1", "empty");
}

#[test]
fn unknown_activation_and_keys_are_reported() {
    let text = small()
        .to_toml_string()
        .replace("act = \"relu\"", "act = \"swish\"");
    let e = Arch::from_toml_str(&text).unwrap_err().to_string();
    assert!(e.contains("swish") || e.contains("unknown variant"), "{e}");
    let text = format!("colour = 3\n{}", small().to_toml_string());
    let e = Arch::from_toml_str(&text).unwrap_err().to_string();
    assert!(e.contains("colour"), "{e}");
    let line = small().to_block_string().replace("relu", "swish");
    let e = Arch::from_block_string(&line).unwrap_err().to_string();
    assert!(e.contains("swish"), "{e}");
}

#[test]
fn malformed_block_strings_name_the_token() {
    let line = small()
        .to_block_string()
        .replace("uir_a5_k5_s2_e3_c96", "uir_a5_k5_s2_e3");
    let e = Arch::from_block_string(&line).unwrap_err().to_string();
    assert!(
        e.contains("missing option 'c'") && e.contains("stage 2"),
        "{e}"
    );
    let line = small()
        .to_block_string()
        .replace("cn_k3_s2_c96", "xx_k3_s2_c96");
    let e = Arch::from_block_string(&line).unwrap_err().to_string();
    assert!(e.contains("unknown block type 'xx'"), "{e}");
}

#[test]
fn width_half_matches_timm_050_layout() {
    let a = preset("conv-small", 0.5).unwrap();
    assert_eq!(a.stem, 32, "stem stays fixed below width 1");
    assert_eq!(a.features, 480);
    assert_eq!(a.head, 1280);
}

#[test]
fn builtin_profiles_parse_and_rank_models() {
    let profiles = load_profiles(None).unwrap();
    assert!(profiles
        .iter()
        .any(|p| p.name == "pixel6-cpu" && p.ridge_macs_per_byte == 31.2));
    assert!(profiles
        .iter()
        .any(|p| p.name == "pixel8-edgetpu" && p.ridge_macs_per_byte == 433.8));
    let s = cost(&preset("conv-small", 1.0).unwrap(), 224, 224, &profiles);
    let l = cost(&preset("conv-large", 1.0).unwrap(), 224, 224, &profiles);
    for ((n, a), (_, b)) in s.roofline_ms.iter().zip(&l.roofline_ms) {
        assert!(
            a > &0.0 && b > a,
            "{n}: small {a} ms should beat large {b} ms"
        );
    }
}

#[test]
fn non_square_resolution_sizes_follow_conv_arithmetic() {
    let a = small();
    let layers = mnv4_lab::cost::plan(&a, 97, 131);
    let last = layers.iter().find(|l| l.name == "blocks.4.0.conv").unwrap();
    // 97 → 49 → 25 → 13 → 7 → 4 ; 131 → 66 → 33 → 17 → 9 → 5
    assert_eq!(last.out_shape, [960, 4, 5]);
}
