//! `search --workers N`: N local `mnv4-lab worker` processes on the study's database store, for
//! one big machine. They are this executable, started with `--exit-with-parent`, so they stop
//! claiming trials once the search that started them is gone; the pool kills them when it is
//! dropped before the search finished (an error).

use anyhow::{bail, Context, Result};
use std::process::{Child, Command, Stdio};

/// Local worker processes.
pub struct LocalWorkers {
    children: Vec<Child>,
}

impl LocalWorkers {
    /// Starts `n` workers with `threads` math threads each on `study` in `storage`.
    pub fn start(n: usize, threads: usize, storage: &str, study: &str) -> Result<Self> {
        let exe = std::env::current_exe().context("finding this executable to start workers")?;
        let mut children = Vec::with_capacity(n);
        for k in 0..n {
            let child = Command::new(&exe)
                .args(["worker", "--storage", storage, "--study", study])
                .args(["--threads", &threads.to_string(), "--quiet"])
                .arg("--exit-with-parent")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("starting local worker {k} ({})", exe.display()))?;
            children.push(child);
        }
        tracing::info!("started {n} local workers, {threads} threads each");
        Ok(Self { children })
    }

    /// An error when a worker has exited with a failure (it logged why).
    pub fn check(&mut self) -> Result<()> {
        for (k, c) in self.children.iter_mut().enumerate() {
            if let Some(status) = c.try_wait()? {
                if !status.success() {
                    bail!(
                        "local worker {k} (pid {}) stopped with {status}; its messages above say why",
                        c.id()
                    );
                }
            }
        }
        Ok(())
    }

    /// Waits for every worker to exit (the study is closed and drained).
    pub fn finish(mut self) -> Result<()> {
        for (k, c) in self.children.iter_mut().enumerate() {
            let status = c.wait()?;
            if !status.success() {
                bail!("local worker {k} stopped with {status}");
            }
        }
        self.children.clear();
        Ok(())
    }
}

impl Drop for LocalWorkers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
