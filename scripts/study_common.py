"""Helpers shared by the study scripts."""
import math
import os
import statistics
import subprocess
import sys

# Two-sided 95 % Student-t quantiles by degrees of freedom (tables, not results).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101,
        19: 2.093}


def study_binary():
    """The mnv4-lab binary a study runs: $MNV4_BIN, else a copy of target/release/mnv4-lab in
    runs/.bin/ named by its content hash, so that rebuilding during a long study neither pulls
    the file away from a run about to start nor mixes builds within the study."""
    if "MNV4_BIN" in os.environ:
        return os.environ["MNV4_BIN"]
    import hashlib
    import shutil
    src = "./target/release/mnv4-lab"
    if not os.path.exists(src):
        sys.exit(f"{src} is missing: run `cargo build --release` first (or set MNV4_BIN)")
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    dst = os.path.join("runs", ".bin", f"mnv4-lab-{digest}")
    if not os.path.exists(dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst + ".tmp")
        os.replace(dst + ".tmp", dst)
    return dst


def sh(cmd, env=None):
    """Runs a command (echoed to stderr) and returns its standard output; fails on a non-zero exit."""
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout


def paired(a, b, scale=1.0):
    """Mean difference scale·(a − b) over paired values with its 95 % t interval (None when n < 2)."""
    d = [scale * (x - y) for x, y in zip(a, b)]
    if len(d) < 2:
        return statistics.mean(d), None
    half = T975[len(d) - 1] * statistics.stdev(d) / math.sqrt(len(d))
    return statistics.mean(d), (statistics.mean(d) - half, statistics.mean(d) + half)


def verdict(ci):
    """How a paired difference reads: better, worse, or no significant difference (the interval holds 0)."""
    if ci is None:
        return "one seed: no interval"
    if ci[0] > 0:
        return "better"
    if ci[1] < 0:
        return "worse"
    return "no significant difference"


def cpu_model():
    """The CPU model from /proc/cpuinfo, for every speed figure a report gives: its name, and its
    family and model number (a name such as "AMD EPYC" alone covers several generations)."""
    name, ids = "unknown CPU", {}
    for line in open("/proc/cpuinfo"):
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name":
            name = value.strip()
        elif key in ("cpu family", "model"):
            ids[key] = value.strip()
        if key == "flags":
            break
    if len(ids) == 2:
        name += f", family {ids['cpu family']} model {ids['model']}"
    return name


def publish(path, lines):
    """Writes a report's lines to `path` atomically (a temporary file renamed), then prints them."""
    text = "\n".join(lines)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    print(text)


def run_parallel(tasks, jobs):
    """Calls every `task(threads)`, `jobs` at a time, the cores split evenly between them
    (`threads` = 0, all cores, when one at a time). Raises the first failure once all are done."""
    import concurrent.futures

    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for done in [pool.submit(task, threads) for task in tasks]:
            done.result()


def thread_env(threads):
    """The environment for a child process limited to `threads` math threads (None: inherit)."""
    return dict(os.environ, RAYON_NUM_THREADS=str(threads)) if threads else None
