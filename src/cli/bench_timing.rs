//! What a benchmark measures of itself: timed steps after warm-up, and this process's resident
//! memory (Linux `/proc/self/status`).

use anyhow::Result;
use std::time::Instant;

/// Runs `step` `warmup` times untimed, then `steps` times timed; the times in seconds, sorted.
pub fn time_steps(
    warmup: usize,
    steps: usize,
    mut step: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        step()?;
    }
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t0 = Instant::now();
        step()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times)
}

/// This process's resident size now and its peak so far, in bytes.
pub fn idle_and_peak_rss() -> (Option<u64>, Option<u64>) {
    (rss_bytes(), peak_rss_bytes())
}

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// Resident set size of this process now (Linux `VmRSS`), in bytes.
pub fn rss_bytes() -> Option<u64> {
    proc_status_bytes("VmRSS:")
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
