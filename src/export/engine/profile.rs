//! Where a pass's time goes: the wall time of each kernel, by kind and shape.

use std::time::Instant;

/// One timed kernel.
#[derive(Debug, Clone)]
pub struct Entry {
    /// `depthwise`, `pointwise`, `dense`, `attention`, `pool`, `classifier`.
    pub kind: &'static str,
    /// Input size and channels, e.g. `112×112 32→64 k3 s2`.
    pub shape: String,
    pub seconds: f64,
}

/// The kernels of passes run with profiling, in order.
#[derive(Debug, Default)]
pub struct Profile {
    enabled: bool,
    pub entries: Vec<Entry>,
}

impl Profile {
    /// A profile that records.
    pub fn recording() -> Self {
        Self {
            enabled: true,
            entries: Vec::new(),
        }
    }

    /// Runs `f`, recording its time under `kind` and the shape `describe` gives when enabled.
    pub(super) fn time<R>(
        &mut self,
        kind: &'static str,
        describe: impl FnOnce() -> String,
        f: impl FnOnce() -> R,
    ) -> R {
        if !self.enabled {
            return f();
        }
        let t0 = Instant::now();
        let r = f();
        let seconds = t0.elapsed().as_secs_f64();
        self.entries.push(Entry {
            kind,
            shape: describe(),
            seconds,
        });
        r
    }

    /// Total seconds and count per kind, largest first.
    pub fn by_kind(&self) -> Vec<(&'static str, f64, usize)> {
        let mut out: Vec<(&'static str, f64, usize)> = Vec::new();
        for e in &self.entries {
            match out.iter_mut().find(|(k, _, _)| *k == e.kind) {
                Some(row) => {
                    row.1 += e.seconds;
                    row.2 += 1;
                }
                None => out.push((e.kind, e.seconds, 1)),
            }
        }
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out
    }
}
