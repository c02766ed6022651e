//! A throw-away PostgreSQL server for one test: `initdb` and `pg_ctl` in a temporary folder,
//! listening only on a unix socket there. PostgreSQL refuses to run as root, so under root the
//! server runs as the `postgres` user (`runuser`), which then owns the folder.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running server; stopped and deleted on drop.
pub struct Pg {
    dir: PathBuf,
    bin: PathBuf,
    /// A URL for `--storage`.
    pub url: String,
}

/// The newest PostgreSQL binaries folder: `MNV4_PG_BIN`, else `/usr/lib/postgresql/N/bin`.
fn bin_dir() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("MNV4_PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("/usr/lib/postgresql: {e} (install Debian's postgresql)"))?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no /usr/lib/postgresql/*/bin/initdb (install Debian's postgresql)".into())
}

/// Whether this process runs as root (`/proc/self` belongs to the effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `bin/tool args…`, as the `postgres` user under root.
fn pg_command(bin: &Path, tool: &str) -> Command {
    let exe = bin.join(tool);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

fn run(mut c: Command, what: &str) -> Result<(), String> {
    let o = c.output().map_err(|e| format!("{what}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(55432, |a| a.port())
}

/// Starts a server in a new temporary folder named after `tag`.
pub fn start(tag: &str) -> Result<Pg, String> {
    let bin = bin_dir()?;
    let dir = std::env::temp_dir().join(format!("mnv4-pg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if is_root() {
        let mut c = Command::new("chown");
        c.args(["-R", "postgres:"]).arg(&dir);
        run(c, "chown to the postgres user")?;
    }
    let data = dir.join("data");
    let mut c = pg_command(&bin, "initdb");
    c.args([
        "-A",
        "trust",
        "-U",
        "postgres",
        "--no-sync",
        "-E",
        "UTF8",
        "-D",
    ])
    .arg(&data);
    run(c, "initdb")?;
    let port = free_port();
    let pg = Pg {
        url: format!(
            "postgres:///postgres?host={}&port={port}&user=postgres",
            dir.display()
        ),
        dir,
        bin,
    };
    let mut c = pg_command(&pg.bin, "pg_ctl");
    c.arg("-D")
        .arg(&data)
        .arg("-o")
        .arg(format!(
            "-p {port} -k {} -c listen_addresses=''",
            pg.dir.display()
        ))
        .arg("-l")
        .arg(pg.dir.join("log"))
        .args(["-w", "start"]);
    run(c, "pg_ctl start")?;
    Ok(pg)
}

impl Drop for Pg {
    fn drop(&mut self) {
        let mut c = pg_command(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"]);
        let _ = c.output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
