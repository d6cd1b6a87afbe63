"""What this CPU offers: the usable cores, and which of them are the big ones."""
import os


def usable_cpus():
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def big_cores(sysfs="/sys/devices/system/cpu"):
    """The usable CPUs with the highest maximum frequency (all of them when cpufreq says nothing).

    On big.LITTLE parts (RK3588: 4x A76 + 4x A55) decode speed is set by the slowest thread, so the
    default thread count is the number of big cores, not of all cores."""
    cpus = usable_cpus()
    freqs = {}
    for c in cpus:
        try:
            with open(f"{sysfs}/cpu{c}/cpufreq/cpuinfo_max_freq") as f:
                freqs[c] = int(f.read().strip())
        except (OSError, ValueError):
            return cpus
    top = max(freqs.values())
    return [c for c in cpus if freqs[c] == top]


def default_threads():
    return max(1, len(big_cores()))


def rss_bytes():
    """Current resident set size of this process (Linux), 0 where unknown."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss_bytes():
    """Peak resident set size of this process (Linux VmHWM), 0 where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
