"""Whether this CPU computes onnxruntime's int8 products exactly, which decides how int8 graphs are run and
whether ``auto`` runs them at all (``int8_pays``).

On x86-64 CPUs without VNNI, onnxruntime multiplies uint8 activations by int8 weights with VPMADDUBSW, which
adds each pair of products into a 16-bit lane and saturates there (onnxruntime names the overflow in its
session option ``session.x64quantprecision``). An int8 graph's answers then depend on the CPU: on an
AVX2-only AMD EPYC (family 23) the shipped 5-point graph scored 7.69% and 12.85% failures on AFLW where it
had scored 7.67% and 12.55% on a CPU with VNNI. ``tcdcn.models.denormals.cpu_session_options`` switches that
option on where this module finds no VNNI, so the products run exactly (uint8 x uint8) and the same graph
gives the same answers on every CPU (measured: the same 7.67% and 12.55%; ``bench/int8_exactness.py``).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})
# Instructions that accumulate uint8 x int8 products in 32 bits without a saturating 16-bit step.
EXACT_INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str] | None:
    """The first processor's feature flags in ``cpuinfo`` (Linux), or None where the file cannot be read."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def int8_products_exact(machine: str | None = None, cpuinfo: Path = CPUINFO) -> bool | None:
    """True where onnxruntime's uint8 x int8 products cannot saturate on this CPU, False where they can (x86-64
    without VNNI), None where the CPU's flags cannot be read (an x86 host without ``/proc/cpuinfo``).

    Machines other than x86 count as exact: the saturating instruction is x86's (not measured elsewhere)."""
    if (machine or platform.machine()).lower() not in X86_MACHINES:
        return True
    flags = cpu_flags(cpuinfo)
    if flags is None:
        return None
    return any(flag in flags for flag in EXACT_INT8_FLAGS)


@functools.lru_cache(maxsize=1)
def this_cpu_int8_exact() -> bool | None:
    """``int8_products_exact()`` for this process's CPU, read once."""
    return int8_products_exact()


def int8_pays(machine: str | None = None, cpuinfo: Path = CPUINFO) -> bool:
    """Whether an int8 graph is the faster choice here: everywhere but on x86-64 without VNNI.

    With VNNI, onnxruntime's int8 graph of the shipped 5-point network ran faster than float32 (0.083 against
    0.114 ms per crop on an AMD EPYC family 26 model 2, ``bench/speed.py``). Without it the package runs int8
    exactly, through the slower uint8 x uint8 products (``int8_products_exact``), and on an AVX2-only AMD EPYC
    (family 25 model 1) the int8 graph took 0.271 ms per crop against float32's 0.220 (the default inference
    1.68 ms per face against 1.46). On an older AVX2-only core (family 23 model 1) the int8 default was 4%
    faster than float32's (7.51 against 7.83 ms per face): there this rule costs that much.
    Where the flags cannot be read, int8 (as before the rule)."""
    return int8_products_exact(machine, cpuinfo) is not False


@functools.lru_cache(maxsize=1)
def this_cpu_int8_pays() -> bool:
    """``int8_pays()`` for this process's CPU, read once."""
    return int8_pays()
