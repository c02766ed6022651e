//! A search space (`search_spaces/*.toml`): per stage the width choices, depth range, stride and
//! block kind; per block the start / middle depthwise kernels and expansion; where MQA blocks may
//! follow. Sampling, mutation and crossover work on [`Arch`] values and always return valid ones.

use crate::space::lower::uib_stride_carrier;
use crate::space::{validate, Activation, Arch, Block, Stage};
use anyhow::{bail, ensure, Context, Result};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which blocks make up a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    /// A k×k ConvBn carrying the stride, then 1×1 ConvBn blocks (conv-small's first stages).
    Conv,
    /// Fused inverted bottlenecks (k = 3).
    Fused,
    /// Universal inverted bottlenecks, optionally interleaved with MQA blocks.
    Uib,
}

/// Where MQA blocks may be placed in a UIB stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqaChoices {
    pub heads: Vec<usize>,
    pub key_dim: Vec<usize>,
    pub kv_stride: Vec<usize>,
    /// At most this many MQA blocks in the stage (each follows a UIB).
    pub max_blocks: usize,
}

/// One stage of the space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpace {
    pub kind: StageKind,
    pub widths: Vec<usize>,
    /// Inclusive [min, max] number of blocks (MQA blocks not counted).
    pub depth: [usize; 2],
    pub stride: usize,
    #[serde(default = "default_dw")]
    pub start_dw: Vec<usize>,
    #[serde(default = "default_dw")]
    pub mid_dw: Vec<usize>,
    #[serde(default = "default_expansion")]
    pub expansion: Vec<f64>,
    #[serde(default)]
    pub mqa: Option<MqaChoices>,
}

fn default_dw() -> Vec<usize> {
    vec![0, 3, 5]
}

fn default_expansion() -> Vec<f64> {
    vec![2.0, 3.0, 4.0, 6.0]
}

/// A whole search space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpace {
    pub name: String,
    pub act: Activation,
    pub stem_widths: Vec<usize>,
    #[serde(default = "default_stem_stride")]
    pub stem_stride: usize,
    #[serde(default = "default_features")]
    pub features: usize,
    #[serde(default = "default_head")]
    pub head: usize,
    #[serde(default)]
    pub layer_scale: Option<f64>,
    #[serde(rename = "stage")]
    pub stages: Vec<StageSpace>,
}

fn default_stem_stride() -> usize {
    2
}
fn default_features() -> usize {
    960
}
fn default_head() -> usize {
    1280
}

/// The per-block choices of a UIB: start and middle depthwise kernels (0 = absent), expansion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UibChoice {
    pub start_dw: usize,
    pub mid_dw: usize,
    pub expansion: f64,
}

/// The inverted bottleneck every coarse-stage UIB uses (start 0, middle 3×3, expansion 4).
pub const COARSE_IB: UibChoice = UibChoice {
    start_dw: 0,
    mid_dw: 3,
    expansion: 4.0,
};

impl UibChoice {
    /// The choices a block carries: a UIB's own; a FusedIB's expansion with the coarse IB's
    /// kernels; `None` for ConvBn and MQA.
    pub fn of(block: &Block) -> Option<Self> {
        match *block {
            Block::Uib {
                start_dw,
                mid_dw,
                expansion,
                ..
            } => Some(UibChoice {
                start_dw,
                mid_dw,
                expansion,
            }),
            Block::FusedIb { expansion, .. } => Some(UibChoice {
                expansion,
                ..COARSE_IB
            }),
            _ => None,
        }
    }

    /// Draws start kernel, middle kernel and expansion, in that order.
    fn random(st: &StageSpace, rng: &mut StdRng) -> Self {
        UibChoice {
            start_dw: *st.start_dw.choose(rng).expect("non-empty"),
            mid_dw: *st.mid_dw.choose(rng).expect("non-empty"),
            expansion: *st.expansion.choose(rng).expect("non-empty"),
        }
    }
}

impl SearchSpace {
    /// Reads and checks a space file; errors name the offending entry.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading search space {}", path.display()))?;
        let s: SearchSpace = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("search space {}: {e}", path.display()))?;
        s.check()
            .with_context(|| format!("in search space {}", path.display()))?;
        Ok(s)
    }

    /// Rejects empty choice lists, unsupported kernels, strides and depths, naming the entry.
    pub fn check(&self) -> Result<()> {
        ensure!(
            !self.stages.is_empty(),
            "a space needs at least one [[stage]]"
        );
        ensure!(
            !self.stem_widths.is_empty() && !self.stem_widths.contains(&0),
            "stem_widths must be non-empty and positive"
        );
        for (i, st) in self.stages.iter().enumerate() {
            let at = format!("stage {i}");
            ensure!(
                !st.widths.is_empty() && !st.widths.contains(&0),
                "{at}: widths must be non-empty and positive"
            );
            ensure!(
                st.depth[0] >= 1 && st.depth[0] <= st.depth[1],
                "{at}: depth must be [min, max] with 1 <= min <= max, got {:?}",
                st.depth
            );
            let max_depth = crate::space::blockstr::MAX_REPEAT;
            ensure!(st.depth[1] <= max_depth, "{at}: depth above {max_depth}");
            ensure!(
                st.stride == 1 || st.stride == 2,
                "{at}: stride {} (use 1 or 2)",
                st.stride
            );
            if st.kind == StageKind::Uib {
                for (what, ks) in [("start_dw", &st.start_dw), ("mid_dw", &st.mid_dw)] {
                    ensure!(!ks.is_empty(), "{at}: {what} must list at least one choice");
                    if let Some(k) = ks.iter().find(|k| ![0, 3, 5].contains(*k)) {
                        bail!("{at}: {what} choice {k} is not supported (use 0, 3 or 5)");
                    }
                }
                ensure!(
                    !st.expansion.is_empty()
                        && st.expansion.iter().all(|e| *e > 0.0 && e.is_finite()),
                    "{at}: expansion choices must be positive"
                );
                if st.stride == 2 && !st.start_dw.iter().chain(&st.mid_dw).any(|&k| k > 0) {
                    bail!("{at}: a stride-2 UIB stage needs a non-zero start_dw or mid_dw choice");
                }
            } else if st.kind == StageKind::Fused {
                ensure!(
                    !st.expansion.is_empty(),
                    "{at}: expansion must list at least one choice"
                );
                if let Some(e) = st.expansion.iter().find(|e| !(**e > 0.0 && e.is_finite())) {
                    bail!("{at}: expansion choice {e} is not a positive number");
                }
            }
            if let Some(m) = &st.mqa {
                ensure!(
                    st.kind == StageKind::Uib,
                    "{at}: mqa is only allowed in uib stages"
                );
                ensure!(
                    !m.heads.is_empty() && !m.key_dim.is_empty() && !m.kv_stride.is_empty(),
                    "{at}: mqa choices must be non-empty"
                );
                ensure!(!m.heads.contains(&0), "{at}: mqa heads must be positive");
                if let Some(s) = m.kv_stride.iter().find(|s| **s != 1 && **s != 2) {
                    bail!("{at}: mqa kv_stride {s} (use 1 or 2)");
                }
                let min_w = *st.widths.iter().min().expect("checked non-empty");
                if let Some(d) = m.key_dim.iter().find(|d| **d > min_w || **d == 0) {
                    bail!("{at}: mqa key_dim {d} does not fit the stage's narrowest width {min_w}");
                }
            }
        }
        // The corners must be valid architectures.
        for corner in [self.corner(false), self.corner(true)] {
            validate(&corner).context("a corner of the space is not a valid architecture")?;
        }
        Ok(())
    }

    /// The block of stage `st` at width `width` with `choice`; the first one carries the stride.
    fn block(&self, st: &StageSpace, first: bool, width: usize, choice: UibChoice) -> Block {
        let stride = if first { st.stride } else { 1 };
        match st.kind {
            StageKind::Conv => Block::ConvBn {
                k: if first { 3 } else { 1 },
                stride,
                out: width,
            },
            StageKind::Fused => Block::FusedIb {
                k: 3,
                stride,
                expansion: choice.expansion,
                out: width,
            },
            StageKind::Uib => {
                let UibChoice {
                    start_dw,
                    mut mid_dw,
                    expansion,
                } = choice;
                if stride > 1 && uib_stride_carrier(start_dw, mid_dw).is_none() {
                    mid_dw = 3; // a stride-2 UIB needs a depthwise conv to carry the stride
                }
                Block::Uib {
                    start_dw,
                    mid_dw,
                    stride,
                    expansion,
                    out: width,
                }
            }
        }
    }

    fn arch(&self, stem: usize, stages: Vec<Stage>) -> Arch {
        Arch {
            name: None,
            in_chans: 3,
            num_classes: 1000,
            act: self.act,
            layer_scale: self.layer_scale,
            stem,
            stem_kernel: 3,
            stem_stride: self.stem_stride,
            stages,
            features: self.features,
            head: self.head,
            dropout: 0.0,
        }
    }

    /// The smallest (`large = false`) or largest corner: narrowest / widest widths, min / max
    /// depth, the cheapest / most expensive block choices, as many MQA blocks as allowed.
    pub fn corner(&self, large: bool) -> Arch {
        let pick = |v: &[usize]| {
            if large {
                *v.iter().max().unwrap_or(&1)
            } else {
                *v.iter().min().unwrap_or(&1)
            }
        };
        let pick_f = |v: &[f64]| {
            let it = v.iter().copied();
            if large {
                it.fold(f64::MIN, f64::max)
            } else {
                it.fold(f64::MAX, f64::min)
            }
        };
        let stages = self
            .stages
            .iter()
            .map(|st| {
                let depth = if large { st.depth[1] } else { st.depth[0] };
                let w = pick(&st.widths);
                let choice = UibChoice {
                    start_dw: pick(&st.start_dw),
                    mid_dw: pick(&st.mid_dw),
                    expansion: pick_f(&st.expansion),
                };
                let mut blocks = Vec::new();
                let mut mqa_left = if large {
                    st.mqa.as_ref().map(|m| m.max_blocks).unwrap_or(0)
                } else {
                    0
                };
                for i in 0..depth {
                    blocks.push(self.block(st, i == 0, w, choice));
                    if mqa_left > 0 {
                        let m = st.mqa.as_ref().expect("mqa_left > 0 only with mqa");
                        blocks.push(mqa_block(
                            pick(&m.heads),
                            pick(&m.key_dim),
                            if large { 1 } else { 2 },
                        ));
                        mqa_left -= 1;
                    }
                }
                Stage { blocks }
            })
            .collect();
        self.arch(pick(&self.stem_widths), stages)
    }

    /// A random coarse-stage architecture: random widths and depths, every UIB an inverted
    /// bottleneck (start 0, middle 3×3, expansion 4), no MQA.
    pub fn sample_coarse(&self, rng: &mut StdRng) -> Arch {
        let stages = self
            .stages
            .iter()
            .map(|st| {
                let w = *st.widths.choose(rng).expect("non-empty");
                let depth = rng.random_range(st.depth[0]..=st.depth[1]);
                let e = if st.kind == StageKind::Fused {
                    *st.expansion.choose(rng).expect("non-empty")
                } else {
                    COARSE_IB.expansion
                };
                let choice = UibChoice {
                    expansion: e,
                    ..COARSE_IB
                };
                Stage {
                    blocks: (0..depth)
                        .map(|i| self.block(st, i == 0, w, choice))
                        .collect(),
                }
            })
            .collect();
        self.arch(*self.stem_widths.choose(rng).expect("non-empty"), stages)
    }

    fn random_mqa(m: &MqaChoices, rng: &mut StdRng) -> Block {
        mqa_block(
            *m.heads.choose(rng).expect("non-empty"),
            *m.key_dim.choose(rng).expect("non-empty"),
            *m.kv_stride.choose(rng).expect("non-empty"),
        )
    }

    /// A random fine-stage architecture on `base`'s widths and depths: every UIB's start and
    /// middle depthwise kernels and expansion drawn anew, and MQA blocks placed at random.
    pub fn sample_fine(&self, rng: &mut StdRng, base: &Arch) -> Arch {
        let mut arch = base.clone();
        for (st, stage) in self.stages.iter().zip(arch.stages.iter_mut()) {
            if st.kind != StageKind::Uib {
                continue;
            }
            let width = stage_width(stage);
            let depth = stage.depth();
            let mut blocks = Vec::new();
            let mut mqa_left = st
                .mqa
                .as_ref()
                .map(|m| rng.random_range(0..=m.max_blocks.min(depth)))
                .unwrap_or(0);
            for i in 0..depth {
                let c = UibChoice::random(st, rng);
                blocks.push(self.block(st, i == 0, width, c));
                if mqa_left > 0 && rng.random_bool(0.5) {
                    blocks.push(Self::random_mqa(
                        st.mqa.as_ref().expect("mqa_left > 0 only with mqa"),
                        rng,
                    ));
                    mqa_left -= 1;
                }
            }
            stage.blocks = blocks;
        }
        arch
    }

    /// Changes one thing: in the coarse stage one stage's width or depth; in the fine stage one
    /// block's start / middle kernel or expansion, or adds / removes an MQA block — never a
    /// width or a depth, so a fine child keeps its parent's skeleton.
    pub fn mutate(&self, rng: &mut StdRng, arch: &Arch, fine: bool) -> Arch {
        let uib: Vec<usize> = (0..self.stages.len())
            .filter(|&s| self.stages[s].kind == StageKind::Uib)
            .collect();
        if fine && uib.is_empty() {
            return arch.clone();
        }
        for _ in 0..32 {
            let mut a = arch.clone();
            let s = match fine {
                true => *uib.choose(rng).expect("non-empty"),
                false => rng.random_range(0..self.stages.len()),
            };
            let st = &self.stages[s];
            let stage = &mut a.stages[s];
            let moves = if fine { 3 } else { 2 };
            match (fine, rng.random_range(0..moves)) {
                (false, 0) => set_stage_width(stage, *st.widths.choose(rng).expect("non-empty")),
                (false, _) => self.mutate_depth(st, stage, rng),
                (true, 0 | 1) => self.mutate_choice(st, stage, rng),
                (true, _) => {
                    if let Some(m) = &st.mqa {
                        mutate_mqa(m, stage, rng);
                    }
                }
            }
            if a != *arch && validate(&a).is_ok() {
                return a;
            }
        }
        arch.clone()
    }

    /// Adds a block like the last one, or drops the last one with an MQA block that follows
    /// it, within the stage's depth range.
    fn mutate_depth(&self, st: &StageSpace, stage: &mut Stage, rng: &mut StdRng) {
        let depth = stage.depth();
        let grow = rng.random_bool(0.5);
        if grow && depth < st.depth[1] {
            let template = stage.blocks.iter().rev().find(|b| !b.is_mqa());
            let c = UibChoice::of(template.expect("depth >= 1")).unwrap_or(COARSE_IB);
            let w = stage_width(stage);
            stage.blocks.push(self.block(st, false, w, c));
        } else if !grow && depth > st.depth[0] {
            let last = stage.blocks.iter().rposition(|b| !b.is_mqa());
            stage.blocks.truncate(last.expect("depth >= 1"));
        }
    }

    /// Draws one UIB's start kernel, middle kernel or expansion anew.
    fn mutate_choice(&self, st: &StageSpace, stage: &mut Stage, rng: &mut StdRng) {
        let idx: Vec<usize> = stage
            .blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| matches!(b, Block::Uib { .. }))
            .map(|(i, _)| i)
            .collect();
        if let Some(&i) = idx.choose(rng) {
            let w = stage_width(stage);
            let mut c = UibChoice::of(&stage.blocks[i]).unwrap_or(COARSE_IB);
            match rng.random_range(0..3) {
                0 => c.start_dw = *st.start_dw.choose(rng).expect("non-empty"),
                1 => c.mid_dw = *st.mid_dw.choose(rng).expect("non-empty"),
                _ => c.expansion = *st.expansion.choose(rng).expect("non-empty"),
            }
            stage.blocks[i] = self.block(st, i == 0, w, c);
        }
    }

    /// Uniform crossover of whole stages (stem from either parent). In the fine stage only
    /// stages with the same skeleton (width and depth) are exchanged, so the child keeps the
    /// first parent's skeleton.
    pub fn crossover(&self, rng: &mut StdRng, a: &Arch, b: &Arch, fine: bool) -> Arch {
        let mut child = a.clone();
        if rng.random_bool(0.5) && !fine {
            child.stem = b.stem;
        }
        for (s, stage) in child.stages.iter_mut().enumerate() {
            let same = |x: &Stage, y: &Stage| (x.width(), x.depth()) == (y.width(), y.depth());
            if rng.random_bool(0.5) && (!fine || same(stage, &b.stages[s])) {
                *stage = b.stages[s].clone();
            }
        }
        if validate(&child).is_ok() {
            child
        } else {
            a.clone()
        }
    }
}

/// What the fine stage may not change: the stem, and each stage's width and depth.
pub fn skeleton(arch: &Arch) -> (usize, Vec<(Option<usize>, usize)>) {
    let stages = arch.stages.iter().map(|s| (s.width(), s.depth())).collect();
    (arch.stem, stages)
}

fn mqa_block(heads: usize, key_dim: usize, kv_stride: usize) -> Block {
    Block::Mqa {
        heads,
        key_dim,
        value_dim: key_dim,
        kv_stride,
        kv_kernel: 3,
    }
}

/// Removes a random MQA block, or inserts one after a UIB not yet followed by one.
fn mutate_mqa(m: &MqaChoices, stage: &mut Stage, rng: &mut StdRng) {
    let mqa_at: Vec<usize> = stage
        .blocks
        .iter()
        .enumerate()
        .filter(|(_, b)| b.is_mqa())
        .map(|(i, _)| i)
        .collect();
    if !mqa_at.is_empty() && (mqa_at.len() >= m.max_blocks || rng.random_bool(0.5)) {
        stage.blocks.remove(*mqa_at.choose(rng).expect("non-empty"));
    } else if mqa_at.len() < m.max_blocks {
        let after: Vec<usize> = stage
            .blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| matches!(b, Block::Uib { .. }))
            .map(|(i, _)| i)
            .filter(|i| !stage.blocks.get(i + 1).is_some_and(Block::is_mqa))
            .collect();
        if let Some(&i) = after.choose(rng) {
            stage.blocks.insert(i + 1, SearchSpace::random_mqa(m, rng));
        }
    }
}

fn stage_width(stage: &Stage) -> usize {
    stage.width().expect("a stage has a non-MQA block")
}

fn set_stage_width(stage: &mut Stage, w: usize) {
    for out in stage.blocks.iter_mut().filter_map(Block::width_mut) {
        *out = w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn small() -> SearchSpace {
        SearchSpace::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/search_spaces/small.toml"
        )))
        .unwrap()
    }

    #[test]
    fn fine_children_keep_the_skeleton_of_their_first_parent() {
        let s = small();
        let mut rng = StdRng::seed_from_u64(3);
        let coarse: Vec<Arch> = (0..30).map(|_| s.sample_coarse(&mut rng)).collect();
        let mut pool: Vec<Arch> = coarse.iter().map(|c| s.sample_fine(&mut rng, c)).collect();
        for (c, f) in coarse.iter().zip(&pool) {
            assert_eq!(skeleton(c), skeleton(f), "sample_fine changed the skeleton");
        }
        let mut changed = 0;
        for i in 0..3000 {
            let a = pool[i % pool.len()].clone();
            let b = &pool[(i * 7 + 3) % pool.len()];
            let crossed = s.crossover(&mut rng, &a, b, true);
            let child = s.mutate(&mut rng, &crossed, true);
            assert_eq!(
                skeleton(&child),
                skeleton(&a),
                "child {i} left its skeleton"
            );
            validate(&child).unwrap();
            changed += usize::from(child != a);
            pool[i % 30] = child;
        }
        assert!(
            changed > 2500,
            "fine children should differ ({changed} of 3000 did)"
        );
    }

    #[test]
    fn sampling_mutation_and_crossover_always_give_valid_archs() {
        let s = small();
        let mut rng = StdRng::seed_from_u64(1);
        let mut pool = Vec::new();
        for _ in 0..50 {
            let c = s.sample_coarse(&mut rng);
            validate(&c).unwrap();
            for b in c.stages.iter().flat_map(|st| &st.blocks) {
                if let Block::Uib { .. } = b {
                    assert_eq!(
                        UibChoice::of(b),
                        Some(COARSE_IB),
                        "coarse stage uses the fixed IB"
                    );
                }
            }
            let f = s.sample_fine(&mut rng, &c);
            validate(&f).unwrap();
            pool.push(c);
            pool.push(f);
        }
        for i in 0..300 {
            let a = &pool[i % pool.len()];
            let b = &pool[(i * 7 + 3) % pool.len()];
            let m = s.mutate(&mut rng, a, i % 2 == 0);
            validate(&m).unwrap();
            let x = s.crossover(&mut rng, a, b, i % 3 == 0);
            validate(&x).unwrap();
        }
        let distinct: std::collections::HashSet<String> =
            pool.iter().map(|a| a.hash_hex()).collect();
        assert!(
            distinct.len() > 40,
            "sampling should explore ({} distinct)",
            distinct.len()
        );
    }

    #[test]
    fn invalid_spaces_name_the_entry() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/search_spaces/small.toml"
        ))
        .unwrap();
        let bad = |from: &str, to: &str, want: &str| {
            let t = text.replacen(from, to, 1);
            assert_ne!(t, text, "pattern {from} not found");
            let s: Result<SearchSpace> = toml::from_str::<SearchSpace>(&t)
                .map_err(anyhow::Error::from)
                .and_then(|s| s.check().map(|_| s));
            let e = format!("{:#}", s.unwrap_err());
            assert!(e.contains(want), "{e} should mention {want}");
        };
        bad(
            "start_dw = [0, 3, 5]",
            "start_dw = [0, 4]",
            "stage 1: start_dw choice 4",
        );
        bad("widths = [16, 24, 32]", "widths = []", "stage 0: widths");
        bad("depth = [1, 2]", "depth = [3, 2]", "stage 0: depth");
        bad("stride = 2\nstart_dw", "stride = 3\nstart_dw", "stride 3");
        bad("key_dim = [16, 32]", "key_dim = [128]", "key_dim 128");
        bad("kind = \"conv\"", "kind = \"dense\"", "dense");
    }
}
