"""What the peer measurements share: resident-size probes and the timed loop with its JSON record
(the fields of `mnv4-lab bench --json`)."""
import json
import resource
import time


def rss_bytes():
    """Resident size now (Linux `VmRSS`), or None where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def time_and_print(step, a, idle, **fields):
    """Runs `step` a.warmup times untimed and a.steps times timed, then prints one JSON object:
    the median, min and max step time, images/s, peak and idle resident size, and `fields`."""
    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    print(json.dumps({
        "res": [a.res, a.res],
        "batch": a.batch,
        "in_chans": a.in_chans,
        "steps": a.steps,
        "images_per_sec": a.batch / med,
        "ms_per_step": med * 1e3,
        "ms_min": times[0] * 1e3,
        "ms_max": times[-1] * 1e3,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "idle_rss_bytes": idle,
        "threads": a.threads,
        **fields,
    }))
