"""Helpers shared by the study scripts."""


def cpu_model():
    """The CPU model name from /proc/cpuinfo, for every speed figure a report gives."""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"
