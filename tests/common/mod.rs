//! Helpers shared by the integration tests: one rule for inputs that live outside the test.
//!
//! A test whose input (a dataset, a font, a fixture) is missing must not pass by accident. Under
//! `CI` (`.ci/run` installs the inputs and sets it) a missing input fails the test; elsewhere the
//! test is skipped and says why on stdout (`cargo test -- --nocapture` shows it).

// Each test crate compiles this module and uses only some of the helpers.
#![allow(dead_code)]

pub mod deploy;
pub mod pg;

use std::fmt::Display;
use std::path::Path;

/// The rule: `found` is returned when Ok; an Err fails the test under `CI`, else skips it with
/// `why` and the error printed (None).
pub fn require<T, E: Display>(found: Result<T, E>, why: &str) -> Option<T> {
    match found {
        Ok(v) => Some(v),
        Err(e) if std::env::var_os("CI").is_none() => {
            println!("skipped: needs {why}: {e}");
            None
        }
        Err(e) => panic!("CI needs {why}: {e}"),
    }
}

/// Whether `path` exists, by [`require`]'s rule.
pub fn require_input(path: &Path, why: &str) -> bool {
    let found = if path.exists() {
        Ok(())
    } else {
        Err(format!("{} is missing", path.display()))
    };
    require(found, why).is_some()
}

/// Whether Fashion-MNIST is available, by [`require`]'s rule.
pub fn have_fashion_mnist() -> bool {
    require(mnv4_lab::data::locate_fashion_mnist(None), "Fashion-MNIST").is_some()
}

/// Whether a font for the PNG plots of training and search runs exists, by [`require`]'s rule.
pub fn have_plot_font() -> bool {
    let paths = mnv4_lab::report::plot::font_candidates();
    let found = paths.iter().find(|p| p.is_file()).ok_or_else(|| {
        let tried: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
        format!(
            "none of {} exists (install fonts-dejavu-core or set MNV4_FONT)",
            tried.join(", ")
        )
    });
    require(found, "a TrueType font for plots").is_some()
}

/// Fashion-MNIST and a plot font: what every end-to-end training test needs.
pub fn have_training_inputs() -> bool {
    have_fashion_mnist() && have_plot_font()
}

/// Writes a teacher experiment for tests into `out` (conv-small ×0.25, one epoch on 256
/// training images, 1,000 held out, its run under `out`) and returns the `--set` that makes it
/// the teacher of `experiments/quick.toml`.
pub fn tiny_teacher(out: &Path) -> String {
    let text = format!(
        "name = \"teacher_tiny\"\n\
         [data]\nval_size = 1000\ntrain_limit = 256\neval_limit = 300\n\
         augment = {{ input_size = 32, channels = 1, pad = 2 }}\n\
         [model]\narch = \"conv-small\"\nwidth = 0.25\n\
         [train]\nepochs = 1\nbatch_size = 64\nlr = 0.004\n\
         optimizer = {{ kind = \"adamw\", weight_decay = 0.01 }}\n\
         [output]\ndir = \"{}\"\n",
        out.display()
    );
    std::fs::create_dir_all(out).unwrap();
    let path = out.join("teacher_tiny.toml");
    std::fs::write(&path, text).unwrap();
    format!("distill.teacher_experiment=\"{}\"", path.display())
}
