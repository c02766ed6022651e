//! The YOLO detection format, as Ultralytics and most labelling tools write it.
//!
//! * One label file per image (`labels/…/NAME.txt` beside `images/…/NAME.png`): one line per
//!   object, `class cx cy w h`, the box centre and size normalized by the image's width and
//!   height. An image without objects has an empty (or no) label file.
//! * A dataset file (`dataset.yaml`): `path` (the root, optional), `train` and `val` (image
//!   folders relative to it), optional `test`, and `names`, as a block list (`- shirt`), a
//!   block mapping (`0: shirt`) or a flow list (`[shirt, bag]`). Only this subset of YAML is
//!   read; anything else is an error naming the line.

use super::error::DataError;
use std::path::{Path, PathBuf};

/// Tolerance for boxes that reach past the image edge by rounding.
const EDGE_TOLERANCE: f32 = 1e-3;

/// One labelled object: class and normalized centre / size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YoloBox {
    pub class: usize,
    pub cx: f32,
    pub cy: f32,
    pub w: f32,
    pub h: f32,
}

/// Parses a label file's text; `path` is for messages. Every error names the line.
pub fn parse_labels(
    path: &Path,
    text: &str,
    num_classes: usize,
) -> Result<Vec<YoloBox>, DataError> {
    let mut boxes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let bad = |message: String| DataError::BadLine {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        if fields.len() != 5 {
            return Err(bad(format!(
                "expected 5 fields `class cx cy w h`, found {}: '{line}'",
                fields.len()
            )));
        }
        let class: usize = fields[0].parse().map_err(|_| {
            bad(format!(
                "class '{}' is not a non-negative integer",
                fields[0]
            ))
        })?;
        if class >= num_classes {
            return Err(bad(format!(
                "class {class} is out of range: the dataset has {num_classes} names (0..{num_classes})"
            )));
        }
        let mut v = [0f32; 4];
        for (slot, (name, field)) in v
            .iter_mut()
            .zip(["cx", "cy", "w", "h"].iter().zip(&fields[1..]))
        {
            *slot = field
                .parse::<f32>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(format!("{name} '{field}' is not a number")))?;
        }
        let b = YoloBox {
            class,
            cx: v[0],
            cy: v[1],
            w: v[2],
            h: v[3],
        };
        check_box(&b).map_err(bad)?;
        boxes.push(b);
    }
    Ok(boxes)
}

/// A box must have a positive size and lie inside the image (normalized coordinates).
fn check_box(b: &YoloBox) -> Result<(), String> {
    if b.w <= 0.0 || b.h <= 0.0 {
        return Err(format!("box size {}×{} must be positive", b.w, b.h));
    }
    let (x0, x1) = (b.cx - b.w / 2.0, b.cx + b.w / 2.0);
    let (y0, y1) = (b.cy - b.h / 2.0, b.cy + b.h / 2.0);
    let inside = |lo: f32, hi: f32| lo >= -EDGE_TOLERANCE && hi <= 1.0 + EDGE_TOLERANCE;
    if !inside(x0, x1) || !inside(y0, y1) {
        return Err(format!(
            "box x {x0:.4}..{x1:.4}, y {y0:.4}..{y1:.4} leaves the image: coordinates are \
             normalized to 0..1 by the image size"
        ));
    }
    Ok(())
}

/// A label file's text for `boxes` (six decimals, as Ultralytics writes them).
pub fn format_labels(boxes: &[YoloBox]) -> String {
    boxes
        .iter()
        .map(|b| {
            format!(
                "{} {:.6} {:.6} {:.6} {:.6}\n",
                b.class, b.cx, b.cy, b.w, b.h
            )
        })
        .collect()
}

/// A detection dataset file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DetectDatasetFile {
    /// The dataset root; relative paths below are under it (default: the file's folder).
    pub path: Option<PathBuf>,
    pub train: PathBuf,
    pub val: PathBuf,
    pub test: Option<PathBuf>,
    /// Class names in label order.
    pub names: Vec<String>,
}

impl DetectDatasetFile {
    /// Parses the YAML subset described in the module docs; `file` is for messages.
    pub fn parse(file: &Path, text: &str) -> Result<Self, DataError> {
        let mut out = DetectDatasetFile::default();
        let (mut train, mut val) = (None, None);
        let mut in_names = false;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split(" #").next().unwrap_or("").trim_end();
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let bad = |message: String| DataError::BadLine {
                path: file.to_path_buf(),
                line: i + 1,
                message,
            };
            if in_names && line.starts_with([' ', '\t', '-']) {
                out.names
                    .push(name_entry(line.trim(), out.names.len()).map_err(bad)?);
                continue;
            }
            in_names = false;
            let (key, value) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("expected `key: value`, found '{line}'")))?;
            let value = unquote(value.trim());
            match key.trim() {
                "path" => out.path = Some(PathBuf::from(value)),
                "train" => train = Some(PathBuf::from(value)),
                "val" => val = Some(PathBuf::from(value)),
                "test" if !value.is_empty() => out.test = Some(PathBuf::from(value)),
                "test" => {}
                "names" if value.is_empty() => in_names = true,
                "names" => out.names = flow_list(value).map_err(bad)?,
                "nc" | "download" => {}
                other => {
                    return Err(bad(format!(
                        "unknown key '{other}' (path, train, val, test, names)"
                    )))
                }
            }
        }
        let missing =
            |what: &str| DataError::Invalid(format!("{}: no `{what}:` entry", file.display()));
        out.train = train.ok_or_else(|| missing("train"))?;
        out.val = val.ok_or_else(|| missing("val"))?;
        if out.names.is_empty() {
            return Err(missing("names"));
        }
        Ok(out)
    }

    /// The file's text (block list of names).
    pub fn format(&self) -> String {
        let mut s = String::new();
        if let Some(p) = &self.path {
            s += &format!("path: {}\n", p.display());
        }
        s += &format!(
            "train: {}\nval: {}\n",
            self.train.display(),
            self.val.display()
        );
        if let Some(t) = &self.test {
            s += &format!("test: {}\n", t.display());
        }
        s += "names:\n";
        for (i, n) in self.names.iter().enumerate() {
            s += &format!("  {i}: {n}\n");
        }
        s
    }
}

/// One entry under `names:`: `- name`, or `K: name` where K must be the next index.
fn name_entry(entry: &str, next: usize) -> Result<String, String> {
    if let Some(name) = entry.strip_prefix('-') {
        return Ok(unquote(name.trim()).to_string());
    }
    let (k, name) = entry
        .split_once(':')
        .ok_or_else(|| format!("expected `- name` or `{next}: name`, found '{entry}'"))?;
    match k.trim().parse::<usize>() {
        Ok(k) if k == next => Ok(unquote(name.trim()).to_string()),
        _ => Err(format!("expected class index {next}, found '{}'", k.trim())),
    }
}

/// `[a, 'b c', "d"]` → its items.
fn flow_list(value: &str) -> Result<Vec<String>, String> {
    let inner = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .ok_or_else(|| {
            format!("names: expected a list `[a, b]` or entries on the next lines, found '{value}'")
        })?;
    Ok(inner
        .split(',')
        .map(|n| unquote(n.trim()).to_string())
        .filter(|n| !n.is_empty())
        .collect())
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
        .unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(text: &str) -> Result<Vec<YoloBox>, String> {
        parse_labels(Path::new("l/a.txt"), text, 3).map_err(|e| e.to_string())
    }

    #[test]
    fn labels_round_trip_and_blank_lines_are_skipped() {
        let b = vec![
            YoloBox {
                class: 2,
                cx: 0.5,
                cy: 0.25,
                w: 0.5,
                h: 0.5,
            },
            YoloBox {
                class: 0,
                cx: 0.1,
                cy: 0.9,
                w: 0.2,
                h: 0.2,
            },
        ];
        let text = format_labels(&b);
        assert_eq!(labels(&format!("\n{text}\n")).unwrap(), b);
        assert!(labels("").unwrap().is_empty());
    }

    #[test]
    fn bad_label_lines_name_the_file_and_line() {
        let cases = [
            ("0 0.5 0.5 0.2\n", "l/a.txt:1: expected 5 fields"),
            (
                "0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n",
                "l/a.txt:2: class 3 is out of range",
            ),
            ("-1 0.5 0.5 0.2 0.2", "l/a.txt:1: class '-1'"),
            ("1 0.5 x 0.2 0.2", "l/a.txt:1: cy 'x' is not a number"),
            ("1 0.5 0.5 NaN 0.2", "l/a.txt:1: w 'NaN' is not a number"),
            ("1 0.95 0.5 0.2 0.2", "leaves the image"),
            ("1 0.5 0.5 0 0.2", "must be positive"),
        ];
        for (text, want) in cases {
            let e = labels(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn dataset_files_in_every_names_form() {
        let block = "path: ../det  # root\ntrain: images/train\nval: images/val\nnames:\n  0: shirt\n  1: 'ankle boot'\n";
        let list =
            "train: images/train\nval: images/val\ntest:\nnames:\n  - shirt\n  - \"ankle boot\"\n";
        let flow = "train: a\nval: b\nnc: 2\nnames: [shirt, 'ankle boot']\n";
        for text in [block, list, flow] {
            let d = DetectDatasetFile::parse(Path::new("d.yaml"), text).unwrap();
            assert_eq!(d.names, ["shirt", "ankle boot"], "{text}");
            assert_eq!(
                DetectDatasetFile::parse(Path::new("d.yaml"), &d.format()).unwrap(),
                d
            );
        }
        let parsed = DetectDatasetFile::parse(Path::new("d.yaml"), block).unwrap();
        assert_eq!(parsed.path, Some(PathBuf::from("../det")));
        let bad = [
            (
                "train: a\nval: b\nnames:\n  1: shirt\n",
                "d.yaml:4: expected class index 0",
            ),
            (
                "train: a\nvall: b\nnames: [a]\n",
                "d.yaml:2: unknown key 'vall'",
            ),
            ("train: a\nnames: [a]\n", "no `val:` entry"),
            ("train a\n", "d.yaml:1: expected `key: value`"),
        ];
        for (text, want) in bad {
            let e = DetectDatasetFile::parse(Path::new("d.yaml"), text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
