//! The one-line block-string form of an `Arch`, in the spirit of timm's `uir_r1_a3_k5_s2_e4_c96`.
//!
//! Grammar (whitespace separates tokens, `|` separates the header and the stages):
//!
//! ```text
//! arch    := header ( "|" stage )+
//! header  := [ "@" NAME ] "in" N "nc" N ACT "stem" N [ "stemk" K ] [ "stems" S ]
//!            "feat" N "head" N [ "ls" F ] [ "drop" F ]          (tokens in any order)
//! ACT     := "relu" | "gelu"
//! stage   := block+
//! block   := "cn"  [ "_r" R ] "_k" K "_s" S "_c" C            ConvBn
//!          | "er"  [ "_r" R ] "_k" K "_s" S "_e" E "_c" C     FusedIB
//!          | "uir" [ "_r" R ] "_a" A "_k" K "_s" S "_e" E "_c" C
//!                                         UIB: a = start DW kernel, k = middle DW kernel, 0 = absent
//!          | "mqa" [ "_r" R ] "_k" K "_h" H "_s1" [ "_v" V ] "_d" D [ "_dv" DV ] "_c" C
//!                                         MQA: k = K/V down-sampling kernel, v = K/V stride,
//!                                         d = key dim, dv = value dim (default d), c = width (= input)
//! ```
//!
//! Options inside a block may come in any order. `rR` repeats a block R times; only the first copy
//! keeps its stride (timm's rule). Printing folds runs of identical blocks into `rR` the same way,
//! so `parse(print(a)) == a` for every valid `Arch`.

use super::arch::{Activation, Arch, Block, Stage};
use std::collections::BTreeMap;
use std::fmt::Write;

/// A block string that could not be parsed: which token and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("block string: {at}: {what}")]
pub struct BlockStrError {
    pub at: String,
    pub what: String,
}

fn err(at: impl Into<String>, what: impl Into<String>) -> BlockStrError {
    BlockStrError {
        at: at.into(),
        what: what.into(),
    }
}

fn fmt_f64(v: f64) -> String {
    format!("{v}")
}

fn block_token(block: &Block, in_ch: usize, repeat: usize) -> String {
    let r = if repeat > 1 {
        format!("_r{repeat}")
    } else {
        String::new()
    };
    match *block {
        Block::ConvBn { k, stride, out } => format!("cn{r}_k{k}_s{stride}_c{out}"),
        Block::FusedIb {
            k,
            stride,
            expansion,
            out,
        } => format!("er{r}_k{k}_s{stride}_e{}_c{out}", fmt_f64(expansion)),
        Block::Uib {
            start_dw,
            mid_dw,
            stride,
            expansion,
            out,
        } => format!(
            "uir{r}_a{start_dw}_k{mid_dw}_s{stride}_e{}_c{out}",
            fmt_f64(expansion)
        ),
        Block::Mqa {
            heads,
            key_dim,
            value_dim,
            kv_stride,
            kv_kernel,
        } => {
            let mut s = format!("mqa{r}_k{kv_kernel}_h{heads}_s1");
            if kv_stride != 1 {
                let _ = write!(s, "_v{kv_stride}");
            }
            let _ = write!(s, "_d{key_dim}");
            if value_dim != key_dim {
                let _ = write!(s, "_dv{value_dim}");
            }
            let _ = write!(s, "_c{in_ch}");
            s
        }
    }
}

/// `block` with stride 1: what a repeat of it looks like.
fn as_repeat(block: &Block) -> Block {
    let mut b = block.clone();
    match &mut b {
        Block::ConvBn { stride, .. }
        | Block::FusedIb { stride, .. }
        | Block::Uib { stride, .. } => *stride = 1,
        Block::Mqa { .. } => {}
    }
    b
}

/// Prints the one-line form.
pub fn to_block_string(arch: &Arch) -> String {
    let mut s = String::new();
    if let Some(name) = &arch.name {
        let _ = write!(s, "@{name} ");
    }
    let _ = write!(
        s,
        "in{} nc{} {} stem{}",
        arch.in_chans,
        arch.num_classes,
        arch.act.name(),
        arch.stem
    );
    if arch.stem_kernel != 3 {
        let _ = write!(s, " stemk{}", arch.stem_kernel);
    }
    if arch.stem_stride != 2 {
        let _ = write!(s, " stems{}", arch.stem_stride);
    }
    let _ = write!(s, " feat{} head{}", arch.features, arch.head);
    if let Some(ls) = arch.layer_scale {
        let _ = write!(s, " ls{}", fmt_f64(ls));
    }
    if arch.dropout != 0.0 {
        let _ = write!(s, " drop{}", fmt_f64(arch.dropout));
    }
    let mut ch = arch.stem;
    for stage in &arch.stages {
        s.push_str(" |");
        let blocks = &stage.blocks;
        let mut i = 0;
        while i < blocks.len() {
            let first = &blocks[i];
            let rep = as_repeat(first);
            let mut j = i + 1;
            let out = first.out_channels(ch);
            // A repeat must see the same input width as the block it copies.
            let repeatable = out == first.out_channels(out);
            while repeatable && j < blocks.len() && blocks[j] == rep {
                j += 1;
            }
            let _ = write!(s, " {}", block_token(first, ch, j - i));
            for b in &blocks[i..j] {
                ch = b.out_channels(ch);
            }
            i = j;
        }
    }
    s
}

fn parse_usize(at: &str, key: &str, v: &str) -> Result<usize, BlockStrError> {
    v.parse::<usize>().map_err(|_| {
        err(
            at,
            format!("option '{key}' needs a whole number, got '{v}'"),
        )
    })
}

fn parse_f64(at: &str, key: &str, v: &str) -> Result<f64, BlockStrError> {
    v.parse::<f64>()
        .map_err(|_| err(at, format!("option '{key}' needs a number, got '{v}'")))
}

/// Splits `k5` into (`k`, `5`): the letters up to the first digit, '.', or '-'.
fn split_opt(opt: &str) -> (&str, &str) {
    let pos = opt
        .find(|c: char| c.is_ascii_digit() || c == '.' || c == '-')
        .unwrap_or(opt.len());
    opt.split_at(pos)
}

/// The largest repeat count `rR` accepted: far above any real stage, low enough that a typo
/// cannot exhaust memory.
pub const MAX_REPEAT: usize = 1000;

fn parse_block(tok: &str, in_ch: usize) -> Result<(Block, usize), BlockStrError> {
    let mut parts = tok.split('_');
    let kind = parts.next().unwrap_or_default();
    let mut opts: BTreeMap<&str, &str> = BTreeMap::new();
    for p in parts {
        let (k, v) = split_opt(p);
        if k.is_empty() || v.is_empty() {
            return Err(err(tok, format!("malformed option '{p}'")));
        }
        if opts.insert(k, v).is_some() {
            return Err(err(tok, format!("option '{k}' given twice")));
        }
    }
    let allowed: &[&str] = match kind {
        "cn" => &["r", "k", "s", "c"],
        "er" => &["r", "k", "s", "e", "c"],
        "uir" => &["r", "a", "k", "s", "e", "c"],
        "mqa" => &["r", "k", "h", "s", "v", "d", "dv", "c"],
        _ => {
            return Err(err(
                tok,
                format!("unknown block type '{kind}' (use cn, er, uir or mqa)"),
            ))
        }
    };
    if let Some(bad) = opts.keys().find(|k| !allowed.contains(k)) {
        return Err(err(
            tok,
            format!(
                "option '{bad}' is not valid for '{kind}' (valid: {})",
                allowed.join(", ")
            ),
        ));
    }
    let get = |key: &str| -> Result<usize, BlockStrError> {
        let v = opts
            .get(key)
            .ok_or_else(|| err(tok, format!("missing option '{key}'")))?;
        parse_usize(tok, key, v)
    };
    let get_e = || -> Result<f64, BlockStrError> {
        let v = opts
            .get("e")
            .ok_or_else(|| err(tok, "missing option 'e'"))?;
        parse_f64(tok, "e", v)
    };
    let repeat = match opts.get("r") {
        Some(v) => parse_usize(tok, "r", v)?,
        None => 1,
    };
    if repeat == 0 || repeat > MAX_REPEAT {
        return Err(err(
            tok,
            format!("repeat count 'r' must be 1 to {MAX_REPEAT}, got {repeat}"),
        ));
    }
    let block = match kind {
        "cn" => Block::ConvBn {
            k: get("k")?,
            stride: get("s")?,
            out: get("c")?,
        },
        "er" => Block::FusedIb {
            k: get("k")?,
            stride: get("s")?,
            expansion: get_e()?,
            out: get("c")?,
        },
        "uir" => Block::Uib {
            start_dw: get("a")?,
            mid_dw: get("k")?,
            stride: get("s")?,
            expansion: get_e()?,
            out: get("c")?,
        },
        _ => {
            let key_dim = get("d")?;
            let stride = match opts.get("s") {
                Some(v) => parse_usize(tok, "s", v)?,
                None => 1,
            };
            if stride != 1 {
                return Err(err(
                    tok,
                    "MQA blocks only support s1 (no query down-sampling)",
                ));
            }
            if let Some(c) = opts.get("c") {
                let c = parse_usize(tok, "c", c)?;
                if c != in_ch {
                    return Err(err(
                        tok,
                        format!("MQA keeps its input width: c{c} given but the input has {in_ch} channels"),
                    ));
                }
            }
            Block::Mqa {
                heads: get("h")?,
                key_dim,
                value_dim: match opts.get("dv") {
                    Some(v) => parse_usize(tok, "dv", v)?,
                    None => key_dim,
                },
                kv_stride: match opts.get("v") {
                    Some(v) => parse_usize(tok, "v", v)?,
                    None => 1,
                },
                kv_kernel: match opts.get("k") {
                    Some(v) => parse_usize(tok, "k", v)?,
                    None => 3,
                },
            }
        }
    };
    Ok((block, repeat))
}

/// Parses the one-line form. The result is not validated; call `validate` (or `Arch::from_block_string`).
pub fn parse_block_string(s: &str) -> Result<Arch, BlockStrError> {
    let mut sections = s.split('|');
    let header = sections.next().unwrap_or_default();
    let mut name = None;
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    let mut act = None;
    for tok in header.split_whitespace() {
        if let Some(n) = tok.strip_prefix('@') {
            name = Some(n.to_string());
            continue;
        }
        if let Some(a) = Activation::parse(tok) {
            act = Some(a);
            continue;
        }
        let (k, v) = split_opt(tok);
        const KEYS: [&str; 8] = ["in", "nc", "stem", "stemk", "stems", "feat", "head", "ls"];
        if !(KEYS.contains(&k) || k == "drop") || v.is_empty() {
            return Err(err(
                "header",
                format!("unknown token '{tok}' (expected in, nc, relu|gelu, stem, stemk, stems, feat, head, ls, drop)"),
            ));
        }
        if fields.insert(k, v).is_some() {
            return Err(err("header", format!("'{k}' given twice")));
        }
    }
    let need = |k: &str| -> Result<usize, BlockStrError> {
        let v = fields
            .get(k)
            .ok_or_else(|| err("header", format!("missing '{k}'")))?;
        parse_usize("header", k, v)
    };
    let opt_usize = |k: &str, d: usize| -> Result<usize, BlockStrError> {
        fields
            .get(k)
            .map(|v| parse_usize("header", k, v))
            .unwrap_or(Ok(d))
    };
    let stem = need("stem")?;
    let mut ch = stem;
    let mut stages = Vec::new();
    for (si, sec) in sections.enumerate() {
        let mut blocks = Vec::new();
        for tok in sec.split_whitespace() {
            let (block, repeat) =
                parse_block(tok, ch).map_err(|e| err(format!("stage {si}: {}", e.at), e.what))?;
            ch = block.out_channels(ch);
            let rep = as_repeat(&block);
            blocks.push(block);
            for _ in 1..repeat {
                ch = rep.out_channels(ch);
                blocks.push(rep.clone());
            }
        }
        stages.push(Stage { blocks });
    }
    Ok(Arch {
        name,
        in_chans: need("in")?,
        num_classes: need("nc")?,
        act: act.ok_or_else(|| err("header", "missing activation (relu or gelu)"))?,
        layer_scale: fields
            .get("ls")
            .map(|v| parse_f64("header", "ls", v))
            .transpose()?,
        stem,
        stem_kernel: opt_usize("stemk", 3)?,
        stem_stride: opt_usize("stems", 2)?,
        stages,
        features: need("feat")?,
        head: need("head")?,
        dropout: fields
            .get("drop")
            .map(|v| parse_f64("header", "drop", v))
            .transpose()?
            .unwrap_or(0.0),
    })
}
