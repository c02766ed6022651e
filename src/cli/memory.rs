//! Refusing, before any work, configurations whose training step cannot fit in this machine's
//! memory, with the cost model's estimate in the message (instead of an allocation abort after
//! a minute of work).

use crate::cost::{cost, training_bytes};
use crate::space::Arch;
use anyhow::{bail, Result};

/// This machine's memory in bytes (`MemTotal`), when it can be read.
fn machine_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}

/// Fails when training `arch` (named `what`) at `size`² with `batch` images per step needs more
/// memory than the machine has.
pub fn check_fits(arch: &Arch, what: &str, size: usize, batch: usize) -> Result<()> {
    let Some(have) = machine_bytes() else {
        return Ok(());
    };
    let need = training_bytes(&cost(arch, size, size, &[]), batch);
    if need > have {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        bail!(
            "{what}: a training step at {size}×{size} with batch {batch} needs at least {:.1} GiB (estimated from the architecture), more than this machine's {:.1} GiB; lower train.batch_size, data.augment.input_size or the model's width",
            gib(need),
            gib(have)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absurd_resolution_is_refused_with_the_estimate() {
        let arch = crate::space::presets::preset("conv-small", 1.0).unwrap();
        check_fits(&arch, "[model]", 32, 128).unwrap();
        let e = check_fits(&arch, "[model]", 20_000, 128)
            .unwrap_err()
            .to_string();
        assert!(e.contains("GiB") && e.contains("[model]"), "{e}");
    }
}
