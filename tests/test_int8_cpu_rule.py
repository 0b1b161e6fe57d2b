"""int8 products exact on every CPU: VNNI read from the CPU flags, onnxruntime's exact path switched on without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcdcn.cpu import cpu_flags, int8_products_exact
from tcdcn.models.denormals import cpu_session_options

# Two processors of one host: only the first block is read.
CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: {family}
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 fma{extra}

processor\t: 1
flags\t\t: fpu sse2 avx2 fma avx512_vnni
"""


def write_cpuinfo(tmp_path: Path, family: int, extra: str) -> Path:
    path = tmp_path / f"cpuinfo-{family}"
    path.write_text(CPUINFO.format(family=family, extra=extra))
    return path


@pytest.mark.parametrize(("extra", "exact"), [("", False), (" avx512f avx512_vnni", True), (" avx_vnni", True),
                                              (" avx512f", False)])
def test_x86_int8_is_exact_only_with_vnni(tmp_path: Path, extra: str, exact: bool) -> None:
    cpuinfo = write_cpuinfo(tmp_path, 23 if not exact else 25, extra)
    assert int8_products_exact("x86_64", cpuinfo) is exact
    assert int8_products_exact("AMD64", cpuinfo) is exact  # Windows spells the machine so


def test_flags_come_from_the_first_processor(tmp_path: Path) -> None:
    flags = cpu_flags(write_cpuinfo(tmp_path, 23, ""))
    assert flags == frozenset({"fpu", "sse2", "avx2", "fma"})


def test_unreadable_flags_are_unknown_on_x86_and_other_machines_count_as_exact(tmp_path: Path) -> None:
    missing = tmp_path / "no-cpuinfo"
    assert cpu_flags(missing) is None
    assert int8_products_exact("x86_64", missing) is None
    no_flags = tmp_path / "cpuinfo-without-flags"
    no_flags.write_text("processor\t: 0\nmodel name\t: something\n")
    assert int8_products_exact("x86_64", no_flags) is None
    assert int8_products_exact("aarch64", missing) is True


@pytest.mark.parametrize(("exact", "option"), [(False, "1"), (True, None), (None, None)])
def test_sessions_take_the_exact_int8_path_only_where_products_saturate(
        monkeypatch: pytest.MonkeyPatch, exact: bool | None, option: str | None) -> None:
    monkeypatch.setattr("tcdcn.models.denormals.this_cpu_int8_exact", lambda: exact)
    entries = cpu_session_options().get_session_config_entry
    assert entries("session.set_denormal_as_zero") == "1"
    if option is None:
        with pytest.raises(Exception, match="x64quantprecision"):
            entries("session.x64quantprecision")
    else:
        assert entries("session.x64quantprecision") == option
