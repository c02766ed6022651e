//! `mnv4-lab data fetch NAME`, and the fetch that the run commands do when the default dataset is
//! missing. Downloading and installing are system side effects, so they live here, at the edge;
//! the library only looks data up and says how to get it.

use crate::data::config::{DataConfig, DatasetKind};
use crate::data::mnist::{
    fashion_mnist_how_to_get, FASHION_MNIST_BASE_URL, LOCAL_FASHION_MNIST_DIR, MNIST_FILES,
};
use crate::data::synth_detect::{write_synthetic_detection, SynthDetectConfig};
use crate::data::{load_fashion_mnist, locate_fashion_mnist, DataError};
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Arguments of `mnv4-lab data`.
#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub action: DataAction,
}

/// What `mnv4-lab data` does.
#[derive(Debug, Subcommand)]
pub enum DataAction {
    /// Download a dataset (only `fashion-mnist` can be fetched; without internet, on Debian as
    /// root, installs the `dataset-fashion-mnist` package).
    Fetch {
        /// Dataset name, as in `data.dataset`.
        name: String,
    },
    /// Make the default detection set: Fashion-MNIST items at several scales on larger canvases
    /// (1–4 per image, some overlapping, with faint clutter), in the YOLO format.
    MakeDetect {
        /// Output folder (must not exist).
        #[arg(long, default_value = "data/fashion-mnist-det")]
        out: PathBuf,
        /// Training images.
        #[arg(long, default_value_t = 4000)]
        train: usize,
        /// Validation images (items from the first half of Fashion-MNIST's test split).
        #[arg(long, default_value_t = 1000)]
        val: usize,
        /// Test images (items from the second half of Fashion-MNIST's test split).
        #[arg(long, default_value_t = 1000)]
        test: usize,
        /// Canvas side, pixels.
        #[arg(long, default_value_t = 96)]
        canvas: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

/// Runs `mnv4-lab data …`.
pub fn run(args: &DataArgs) -> Result<()> {
    match &args.action {
        DataAction::Fetch { name } => {
            let kind: DatasetKind = toml::Value::String(name.clone()).try_into().map_err(|_| {
                anyhow::anyhow!(
                    "unknown dataset '{name}' (fashion-mnist, mnist, cifar10, cifar100, folder)"
                )
            })?;
            anyhow::ensure!(
                kind == DatasetKind::FashionMnist,
                "only fashion-mnist can be fetched; put the {kind} files in a folder and set data.path"
            );
            let dir = fetch_fashion_mnist(None)?;
            println!("Fashion-MNIST is in {}", dir.display());
            Ok(())
        }
        DataAction::MakeDetect {
            out,
            train,
            val,
            test,
            canvas,
            seed,
        } => {
            let cfg = SynthDetectConfig {
                canvas: *canvas,
                train: *train,
                val: *val,
                test: *test,
                seed: *seed,
                ..Default::default()
            };
            make_detection_set(&cfg, out)?;
            println!(
                "{}: {train} + {val} + {test} images (train, val, test), {canvas}×{canvas}, dataset.yaml",
                out.display()
            );
            Ok(())
        }
    }
}

/// Writes the default-style detection set `cfg` describes into `out` from Fashion-MNIST items
/// (fetched when missing).
pub fn make_detection_set(cfg: &SynthDetectConfig, out: &Path) -> Result<()> {
    let (train_src, test_src) = load_fashion_mnist(&fetch_fashion_mnist(None)?)?;
    write_synthetic_detection(&train_src, &test_src, cfg, out)?;
    Ok(())
}

/// Makes sure the experiment's dataset is on this machine: the default dataset is fetched when
/// it is nowhere to be found; the others must be where `data.path` says.
pub fn ensure_dataset(cfg: &DataConfig) -> Result<()> {
    if cfg.dataset == DatasetKind::FashionMnist {
        fetch_fashion_mnist(cfg.path.as_deref())?;
    }
    Ok(())
}

/// Finds Fashion-MNIST; when it is nowhere, downloads it into `data/fashion-mnist/` and, if that
/// fails (no internet) on a Debian machine where we are root, installs `dataset-fashion-mnist`.
/// When every route fails the error says how to get the data.
pub fn fetch_fashion_mnist(configured: Option<&Path>) -> Result<PathBuf> {
    let missing = match locate_fashion_mnist(configured) {
        Ok(dir) => return Ok(dir),
        Err(e) => e,
    };
    tracing::warn!("Fashion-MNIST not found; downloading it into {LOCAL_FASHION_MNIST_DIR}/");
    let download = download_mnist_files_from(
        Path::new(LOCAL_FASHION_MNIST_DIR),
        FASHION_MNIST_BASE_URL,
        &fashion_mnist_how_to_get(),
    );
    if download.is_ok() || install_debian_package() {
        return Ok(locate_fashion_mnist(configured)?);
    }
    let why = download.err().map(|e| e.to_string()).unwrap_or_default();
    Err(anyhow::Error::new(missing).context(format!(
        "Fashion-MNIST is not on this machine and could not be fetched ({})",
        why.lines().next().unwrap_or("")
    )))
}

/// Installs Debian's `dataset-fashion-mnist` when we are root on a Debian machine.
fn install_debian_package() -> bool {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    if !is_root || !Path::new("/usr/bin/apt-get").exists() {
        return false;
    }
    tracing::warn!("download failed; installing Debian's dataset-fashion-mnist with apt-get");
    Command::new("apt-get")
        .args(["install", "-y", "-q", "dataset-fashion-mnist"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Downloads the four `.gz` files from `base_url` (ending in `/`; any URL curl accepts,
/// including `file://`) into `dir`. Each file is written to `NAME.gz.part` then renamed, and
/// must start with the gzip magic.
pub fn download_mnist_files_from(
    dir: &Path,
    base_url: &str,
    how_to_get: &str,
) -> Result<(), DataError> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    for base in MNIST_FILES {
        let name = format!("{base}.gz");
        let dest = dir.join(&name);
        if dest.is_file() || dir.join(base).is_file() {
            continue;
        }
        let url = format!("{base_url}{name}");
        let part = dir.join(format!("{name}.part"));
        let fail = |reason: String| {
            let _ = std::fs::remove_file(&part);
            DataError::DownloadFailed {
                url: url.clone(),
                dest: dest.clone(),
                reason,
                how_to_get: how_to_get.to_string(),
            }
        };
        let out = Command::new("curl")
            .args(["-fsSL", "--retry", "2", "--connect-timeout", "20", "-o"])
            .arg(&part)
            .arg(&url)
            .output()
            .map_err(|e| fail(format!("could not run curl ({e}); is curl installed?")))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(fail(format!(
                "curl failed with exit code {} ({}); no internet access, or the server refused",
                out.status
                    .code()
                    .map_or_else(|| "none (killed)".to_string(), |c| c.to_string()),
                if stderr.is_empty() {
                    "no message"
                } else {
                    &stderr
                }
            )));
        }
        let head =
            std::fs::read(&part).map_err(|e| fail(format!("reading {}: {e}", part.display())))?;
        if head.len() < 2 || head[..2] != [0x1f, 0x8b] {
            return Err(fail(
                "the downloaded file is not gzip data (proxy or error page?)".into(),
            ));
        }
        std::fs::rename(&part, &dest)
            .map_err(|e| fail(format!("renaming {}: {e}", part.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mnv4-fetch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn download_from_local_url_and_failure_message() {
        let src = temp("src");
        for f in MNIST_FILES {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), Default::default());
            gz.write_all(f.as_bytes()).unwrap();
            std::fs::write(src.join(format!("{f}.gz")), gz.finish().unwrap()).unwrap();
        }
        let dst = temp("dst");
        let base = format!("file://{}/", src.display());
        match download_mnist_files_from(&dst.join("fm"), &base, "HOW") {
            Ok(()) => {
                for f in MNIST_FILES {
                    assert!(dst.join("fm").join(format!("{f}.gz")).is_file(), "{f}");
                }
            }
            Err(DataError::DownloadFailed { reason, .. })
                if reason.contains("could not run curl") =>
            {
                println!("curl not installed; skipping download success check");
            }
            Err(e) => panic!("{e}"),
        }
        let missing = format!("file://{}/nothing-here/", src.display());
        let e = download_mnist_files_from(&dst.join("fm2"), &missing, &fashion_mnist_how_to_get())
            .unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, DataError::DownloadFailed { .. }));
        assert!(m.contains("failed") && m.contains("no internet"), "{m}");
        assert!(m.contains("apt-get install dataset-fashion-mnist"), "{m}");
        assert!(!dst
            .join("fm2")
            .join("train-images-idx3-ubyte.gz.part")
            .exists());
        std::fs::remove_dir_all(&src).unwrap();
        std::fs::remove_dir_all(&dst).unwrap();
    }
}
