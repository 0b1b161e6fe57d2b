"""bench/host.py: the CPU signature that tells apart hosts a hypervisor names alike."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from repo_scripts import REPO, load_file_module

HOST = REPO / "bench" / "host.py"

# Two logical CPUs of one host; only the first block is read.
ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 49
model name\t: AMD EPYC
stepping\t: 0
flags\t\t: fpu sse2 avx2 fma
"""
OLD_CORE = """processor\t: 0
cpu family\t: 6
model\t\t: 62
model name\t: Intel(R) Xeon(R) CPU E5-2650 v2
stepping\t: 4
flags\t\t: fpu sse2 avx
"""


@pytest.fixture(scope="module")
def host() -> ModuleType:
    return load_file_module(HOST, "bench_host")


def test_signature_names_family_model_stepping_and_isa_flags(host: ModuleType, tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(ZEN4)
    assert host.cpu_signature(cpuinfo) == "family 25 model 17 stepping 1; avx2 fma avx512f avx512_vnni"


def test_signature_without_the_listed_extensions_says_so(host: ModuleType, tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(OLD_CORE)
    assert host.cpu_signature(cpuinfo).startswith("family 6 model 62 stepping 4; none of avx2 fma")
    assert host.cpu_signature(tmp_path / "missing") == "unknown"
