"""Memory readings from /proc/self/status, shared by the benchmark references."""


def rss(field):
    """A /proc/self/status field in MiB (VmRSS, VmHWM, ...)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


def reset_peak():
    """Resets VmHWM to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
