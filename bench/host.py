"""Facts about the machine a benchmark ran on, recorded with every figure: speed differs between hosts
of the same kind (an Intel core pays heavily for denormal floats where an AMD core does not)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what the platform module knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def flush_to_zero_enabled() -> bool:
    """Whether torch's flush-to-zero is on in this process (tcdcn turns it on when it loads a model):
    a denormal times one gives zero only then."""
    import torch

    return bool((torch.tensor([1e-40], dtype=torch.float32) * 1.0).item() == 0.0)


def host_facts() -> dict[str, Any]:
    """CPU model, logical CPUs, machine, load average and flush-to-zero state, for a benchmark's JSON."""
    return {"cpu_model": cpu_model_name(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "load_average": list(os.getloadavg()), "flush_to_zero": flush_to_zero_enabled()}


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    """A benchmark's JSON report at ``path`` (folders made as needed)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return out
