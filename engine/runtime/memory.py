"""How much memory one device of this machine can give a process: the GPU's total memory, or
the host RAM (the smaller of /proc/meminfo's MemTotal and this process's cgroup limit, since a
container is killed at its cgroup limit long before the machine runs out)."""
from __future__ import annotations

from pathlib import Path

import os

import torch

# cgroup v2 states its limit in memory.max ("max" when unlimited), v1 in memory.limit_in_bytes
# (a huge number when unlimited).
CGROUP_LIMIT_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _meminfo_total(path: str = "/proc/meminfo") -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # stated in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_limit(files: tuple[str, ...] = CGROUP_LIMIT_FILES) -> int | None:
    for name in files:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


def machine_memory(device: torch.device) -> tuple[int | None, str]:
    """(bytes a process may use on `device`, where that number comes from); None when unknown."""
    if device.type == "cuda":
        _, total = torch.cuda.mem_get_info(device)
        return total, f"{torch.cuda.get_device_name(device)} memory (torch.cuda.mem_get_info)"
    total, cgroup = _meminfo_total(), _cgroup_limit()
    if cgroup is not None and (total is None or cgroup < total):
        return cgroup, "the cgroup memory limit of this process"
    if total is not None:
        return total, "host RAM (MemTotal in /proc/meminfo)"
    return None, "unknown (no /proc/meminfo)"


def process_resident_bytes() -> int | None:
    """This process's resident memory now (interpreter, libraries, data, tensors); None off Linux."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
