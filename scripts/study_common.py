"""Helpers shared by the study scripts."""
import os


def cpu_model():
    """The CPU model name from /proc/cpuinfo, for every speed figure a report gives."""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def publish(path, lines):
    """Writes a report's lines to `path` atomically (a temporary file renamed), then prints them."""
    text = "\n".join(lines)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
    print(text)
