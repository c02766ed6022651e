//! Property tests over every parser and loader: random bytes, random strings and mutated valid
//! inputs (bit flips, truncations, insertions, deletions, duplicated ranges, extreme numbers) must
//! give Ok or an error, never a panic. Architectures that parse must also print and parse back
//! unchanged. Seeded, so a failure reproduces; the failing input is printed.

use mnv4_lab::data::idx::{write_idx_images, write_idx_labels};
use mnv4_lab::data::{
    load_cifar_bin, load_idx_pair, load_image_file, load_image_folder, read_idx_images,
    read_idx_labels,
};
use mnv4_lab::search::space::SearchSpace;
use mnv4_lab::space::presets::{preset, PRESETS};
use mnv4_lab::space::{validate, Arch};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

const SEED: u64 = 20_240_611;

/// Numbers that break naive arithmetic, spliced over digit runs of text inputs.
const EXTREME_TEXT: [&str; 16] = [
    "0",
    "1",
    "2",
    "-1",
    "255",
    "65536",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "nan",
    "inf",
    "-0",
    "0.5",
];

/// Big-endian u32 values written over binary inputs (sizes, counts and magics).
const EXTREME_U32: [u32; 9] = [
    0,
    1,
    2,
    28,
    2049,
    2051,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
];

/// Runs `f`; a panic fails the test naming the parser, the case and the (escaped) input.
fn no_panic<T>(what: &str, case: usize, input: &[u8], f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "{what} panicked on case {case} ({msg}); input of {} bytes: \"{}\"",
                input.len(),
                input.escape_ascii()
            )
        }
    }
}

/// Replaces a run of ASCII digits at a random digit with an extreme number.
fn splice_number(rng: &mut StdRng, b: &mut Vec<u8>) {
    let digits: Vec<usize> = (0..b.len()).filter(|&i| b[i].is_ascii_digit()).collect();
    let Some(&at) = digits.get(rng.random_range(0..digits.len().max(1))) else {
        return;
    };
    let (mut lo, mut hi) = (at, at);
    while lo > 0 && b[lo - 1].is_ascii_digit() {
        lo -= 1;
    }
    while hi < b.len() && b[hi].is_ascii_digit() {
        hi += 1;
    }
    let n = EXTREME_TEXT[rng.random_range(0..EXTREME_TEXT.len())];
    b.splice(lo..hi, n.bytes());
}

/// Applies one random edit to `b`.
fn mutate_once(rng: &mut StdRng, b: &mut Vec<u8>) {
    let len = b.len();
    let pos = rng.random_range(0..=len);
    match rng.random_range(0..9) {
        0 if len > 0 => b[pos.min(len - 1)] ^= 1 << rng.random_range(0..8),
        1 if len > 0 => b[pos.min(len - 1)] = rng.random(),
        2 => b.truncate(pos),
        3 => {
            let extra: Vec<u8> = (0..rng.random_range(1..9)).map(|_| rng.random()).collect();
            b.splice(pos..pos, extra);
        }
        4 => {
            let end = rng.random_range(pos..=len);
            b.drain(pos..end);
        }
        5 => {
            let end = rng.random_range(pos..=len.min(pos + 64));
            let copy = b[pos..end].to_vec();
            let to = rng.random_range(0..=len);
            b.splice(to..to, copy);
        }
        6 | 7 => splice_number(rng, b),
        _ if len >= 4 => {
            let at = rng.random_range(0..=(len - 4) / 4) * 4;
            let v = EXTREME_U32[rng.random_range(0..EXTREME_U32.len())];
            b[at..at + 4].copy_from_slice(&v.to_be_bytes());
        }
        _ => b.push(rng.random()),
    }
}

/// `seed` with random edits: one, then each further one with probability ½, so most inputs stay
/// close to valid and reach deep into the parser.
fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    loop {
        mutate_once(rng, &mut b);
        if !rng.random_bool(0.5) {
            return b;
        }
    }
}

/// Up to `max_len` uniformly random bytes.
fn random_bytes(rng: &mut StdRng, max_len: usize) -> Vec<u8> {
    (0..rng.random_range(0..=max_len))
        .map(|_| rng.random())
        .collect()
}

/// Words of the valid inputs, punctuation and extreme numbers: material for random strings.
fn vocabulary(seeds: &[String]) -> Vec<String> {
    let mut v: Vec<String> = seeds
        .iter()
        .flat_map(|s| s.split(|c: char| c.is_whitespace() || "_=,[]{}".contains(c)))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    v.extend(" \n_=,[]{}|@\".-#".chars().map(String::from));
    v.extend(EXTREME_TEXT.iter().map(|s| s.to_string()));
    v.sort();
    v.dedup();
    v
}

/// Up to 40 words of `vocab`, concatenated.
fn random_text(rng: &mut StdRng, vocab: &[String]) -> Vec<u8> {
    let n = rng.random_range(0..40);
    (0..n)
        .flat_map(|_| {
            vocab[rng.random_range(0..vocab.len())]
                .bytes()
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `count` inputs: 60 % mutated seeds, 25 % random text from `vocab` (random bytes when it is
/// empty), 15 % random bytes.
fn inputs(rng: &mut StdRng, seeds: &[Vec<u8>], vocab: &[String], count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|_| match rng.random_range(0..20) {
            0..12 => {
                let seed = &seeds[rng.random_range(0..seeds.len())];
                mutate(rng, seed)
            }
            12..17 if !vocab.is_empty() => random_text(rng, vocab),
            _ => random_bytes(rng, 256),
        })
        .collect()
}

/// Every digit run of every seed replaced, one at a time, by every extreme number.
fn number_sweep(seeds: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for s in seeds {
        let mut i = 0;
        while i < s.len() {
            if !s[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let end = (i..s.len())
                .find(|&j| !s[j].is_ascii_digit())
                .unwrap_or(s.len());
            for n in EXTREME_TEXT {
                out.push([&s[..i], n.as_bytes(), &s[end..]].concat());
            }
            i = end;
        }
    }
    out
}

/// Every one of the first `words` big-endian u32 words of every seed replaced, one at a time, by
/// every extreme value.
fn u32_sweep(seeds: &[Vec<u8>], words: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for s in seeds {
        for w in 0..words.min(s.len() / 4) {
            for v in EXTREME_U32 {
                let mut b = s.clone();
                b[4 * w..4 * w + 4].copy_from_slice(&v.to_be_bytes());
                out.push(b);
            }
        }
    }
    out
}

/// A parsed architecture prints (block string and TOML) and parses back unchanged.
fn round_trips(what: &str, case: usize, input: &[u8], arch: &Arch) {
    no_panic(what, case, input, || {
        let line = arch.to_block_string();
        let back = Arch::from_block_string(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(&back, arch, "block string {line}");
        let toml = arch.to_toml_string();
        let back = Arch::from_toml_str(&toml).unwrap_or_else(|e| panic!("{toml}: {e}"));
        assert_eq!(&back, arch, "TOML {toml}");
    });
}

fn preset_archs() -> Vec<Arch> {
    let mut v: Vec<Arch> = PRESETS.iter().map(|p| preset(p, 1.0).unwrap()).collect();
    v.push(preset(PRESETS[0], 0.5).unwrap().with_io(1, 10));
    v
}

#[test]
fn block_string_parser_never_panics() {
    let seeds: Vec<String> = preset_archs().iter().map(Arch::to_block_string).collect();
    let vocab = vocabulary(&seeds);
    let seeds: Vec<Vec<u8>> = seeds.into_iter().map(String::into_bytes).collect();
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut parsed = 0;
    let cases = 10_000;
    let mut all = inputs(&mut rng, &seeds, &vocab, cases);
    all.extend(number_sweep(&seeds));
    for (case, input) in all.iter().enumerate() {
        let text = String::from_utf8_lossy(input);
        let what = "Arch::from_block_string";
        if let Ok(arch) = no_panic(what, case, input, || Arch::from_block_string(&text)) {
            round_trips(what, case, input, &arch);
            parsed += 1;
        }
    }
    println!("block strings: {parsed} of {} parsed", all.len());
}

#[test]
fn arch_toml_parser_never_panics() {
    let seeds: Vec<String> = preset_archs().iter().map(Arch::to_toml_string).collect();
    let vocab = vocabulary(&seeds);
    let seeds: Vec<Vec<u8>> = seeds.into_iter().map(String::into_bytes).collect();
    let mut rng = StdRng::seed_from_u64(SEED + 1);
    let mut parsed = 0;
    let cases = 5000;
    let mut all = inputs(&mut rng, &seeds, &vocab, cases);
    all.extend(number_sweep(&seeds));
    for (case, input) in all.iter().enumerate() {
        let text = String::from_utf8_lossy(input);
        let what = "Arch::from_toml_str";
        if let Ok(arch) = no_panic(what, case, input, || Arch::from_toml_str(&text)) {
            round_trips(what, case, input, &arch);
            parsed += 1;
        }
    }
    println!("arch TOML: {parsed} of {} parsed", all.len());
}

/// A fresh folder for one test, in memory (`/dev/shm`) where the system has it: thousands of
/// small files are written.
fn temp_dir(tag: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("mnv4-props-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Loads a space from text as `SearchSpace::load` does; spaces that load must sample, mutate and
/// cross over into valid architectures.
fn load_and_use_space(path: &Path, rng: &mut StdRng) -> Result<(), String> {
    let space = SearchSpace::load(path).map_err(|e| format!("{e:#}"))?;
    let a = space.sample_coarse(rng);
    let b = space.sample_fine(rng, &a);
    let c = space.mutate(rng, &b, true);
    let d = space.crossover(rng, &a, &c, false);
    for arch in [space.corner(false), space.corner(true), a, b, c, d] {
        validate(&arch).unwrap_or_else(|e| panic!("space made an invalid arch: {e}"));
    }
    Ok(())
}

#[test]
fn search_space_parser_never_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("search_spaces");
    let mut seeds = Vec::new();
    for e in std::fs::read_dir(&root).unwrap() {
        seeds.push(std::fs::read_to_string(e.unwrap().path()).unwrap());
    }
    let vocab = vocabulary(&seeds);
    let seeds: Vec<Vec<u8>> = seeds.into_iter().map(String::into_bytes).collect();
    let dir = temp_dir("space");
    let path = dir.join("space.toml");
    let mut rng = StdRng::seed_from_u64(SEED + 2);
    let mut loaded = 0;
    let cases = 3000;
    let mut all = inputs(&mut rng, &seeds, &vocab, cases);
    all.extend(number_sweep(&seeds));
    for (case, input) in all.iter().enumerate() {
        std::fs::write(&path, input).unwrap();
        let what = "SearchSpace::load";
        if no_panic(what, case, input, || load_and_use_space(&path, &mut rng)).is_ok() {
            loaded += 1;
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    println!("search spaces: {loaded} of {} loaded", all.len());
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn idx_loaders_never_panic() {
    let dir = temp_dir("idx");
    let (img, lab) = (dir.join("images"), dir.join("labels"));
    let pixels: Vec<u8> = (0..3 * 4 * 5).map(|i| i as u8).collect();
    write_idx_images(&img, 4, 5, &pixels, false).unwrap();
    write_idx_labels(&lab, &[0, 9, 3], false).unwrap();
    let good_labels = dir.join("good-labels");
    std::fs::copy(&lab, &good_labels).unwrap();
    let seeds = vec![std::fs::read(&img).unwrap(), std::fs::read(&lab).unwrap()];
    let mut rng = StdRng::seed_from_u64(SEED + 3);
    let mut all = inputs(&mut rng, &seeds, &[], 3000);
    all.extend(u32_sweep(&seeds, 4));
    for (case, input) in all.iter().enumerate() {
        // Raw, gzip of the mutated bytes, and the mutated bytes behind a gzip magic.
        let bytes = match case % 3 {
            0 => input.clone(),
            1 => gzip(input),
            _ => [&[0x1f, 0x8b][..], input].concat(),
        };
        std::fs::write(&img, &bytes).unwrap();
        std::fs::write(&lab, &bytes).unwrap();
        no_panic("idx loaders", case, &bytes, || {
            let _ = read_idx_images(&img);
            let _ = read_idx_labels(&lab);
            let _ = load_idx_pair(&img, &good_labels, 10);
        });
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cifar_loader_never_panics() {
    let dir = temp_dir("cifar");
    let path = dir.join("batch.bin");
    let record = |label: &[u8], i: usize| -> Vec<u8> {
        let px = (0..3072).map(|p| ((p + i) % 256) as u8);
        label.iter().copied().chain(px).collect()
    };
    let seeds = vec![
        [record(&[3], 0), record(&[9], 1)].concat(),
        [record(&[1, 42], 0), record(&[0, 99], 2)].concat(),
    ];
    let mut rng = StdRng::seed_from_u64(SEED + 4);
    for (case, input) in inputs(&mut rng, &seeds, &[], 1500).iter().enumerate() {
        std::fs::write(&path, input).unwrap();
        no_panic("load_cifar_bin", case, input, || {
            let _ = load_cifar_bin(&path, 1, 0, 10, "cifar10/train");
            let _ = load_cifar_bin(&path, 2, 1, 100, "cifar100/train");
        });
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Encodes a small image as PNG (RGB or gray) or JPEG.
fn encoded(format: image::ImageFormat, gray: bool) -> Vec<u8> {
    let img = image::RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8 * 30, y as u8 * 40, 99]));
    let img = if gray {
        image::DynamicImage::ImageLuma8(image::DynamicImage::ImageRgb8(img).to_luma8())
    } else {
        image::DynamicImage::ImageRgb8(img)
    };
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[test]
fn image_loaders_never_panic() {
    use image::ImageFormat::{Jpeg, Png};
    let root = temp_dir("folder");
    for class in ["a", "b"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
    }
    let seeds = vec![
        encoded(Png, false),
        encoded(Png, true),
        encoded(Jpeg, false),
    ];
    std::fs::write(root.join("a/good.png"), &seeds[0]).unwrap();
    let file = root.join("b/x.png");
    let mut rng = StdRng::seed_from_u64(SEED + 5);
    for (case, input) in inputs(&mut rng, &seeds, &[], 2000).iter().enumerate() {
        std::fs::write(&file, input).unwrap();
        no_panic("image loaders", case, input, || {
            let _ = load_image_file(&file, 3, 4, 6);
            let _ = load_image_file(&file, 1, 9, 2);
            if case % 8 == 0 {
                let _ = load_image_folder(&root, 3, 5, 5);
            }
        });
    }
    std::fs::remove_dir_all(&root).unwrap();
}
