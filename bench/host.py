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


# Instruction-set extensions that change how fast int8 and float32 convolutions run (onnxruntime and oneDNN
# pick kernels by them).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_signature(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """Family, model and stepping numbers and the ISA_FLAGS present, from ``cpuinfo``: a hypervisor may
    report one model name ("AMD EPYC") for several CPU generations, which these tell apart."""
    if not cpuinfo.is_file():
        return "unknown"
    fields: dict[str, str] = {}
    for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            break  # the first logical CPU's block is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    present = [flag for flag in ISA_FLAGS if flag in flags]
    return (f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')} stepping "
            f"{fields.get('stepping', '?')}; {' '.join(present) or 'none of ' + ' '.join(ISA_FLAGS)}")


def flush_to_zero_enabled() -> bool:
    """Whether torch's flush-to-zero is on in this process (tcdcn turns it on when it loads a model):
    a denormal times one gives zero only then."""
    import torch

    return bool((torch.tensor([1e-40], dtype=torch.float32) * 1.0).item() == 0.0)


def host_facts() -> dict[str, Any]:
    """CPU model and signature, logical CPUs, machine, load average and flush-to-zero state, for a benchmark's
    JSON."""
    return {"cpu_model": cpu_model_name(), "cpu_signature": cpu_signature(), "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "load_average": list(os.getloadavg()), "flush_to_zero": flush_to_zero_enabled()}


def write_report(path: str | Path, report: dict[str, Any]) -> Path:
    """A benchmark's JSON report at ``path`` (folders made as needed)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return out
