"""What machine a run sampled on: CPU model, usable cores, system and load, as the manifest records it.

Timings mean little without the machine behind them (a board's wall time is quoted beside it), and
nothing here can identify a user: no host name, user name or path.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """The machine as a manifest records it: CPU model, usable cores, system, and the load average now."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on this system
        load = None
    return {"cpu": cpu_model(), "cores": usable_cores(), "system": f"{platform.system()} {platform.machine()}",
            "python": platform.python_version(), "load_average": load}
