"""The graph "auto" runs by CPU: int8 only where onnxruntime's uint8 x int8 products cannot saturate."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tcdcn.inference.cpu import cpu_flags, int8_products_exact
from tcdcn.inference.loading import load_landmark_model
from tcdcn.models.registry import SHIPPED

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


def test_auto_runs_the_float_graph_where_int8_saturates(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    record = SHIPPED["mtfl-5pt"]
    assert record.auto_backend == "int8"  # the case the rule changes
    monkeypatch.setattr("tcdcn.inference.loading.this_cpu_int8_exact", lambda: False)
    with caplog.at_level(logging.INFO, logger="tcdcn"):
        model = load_landmark_model("mtfl-5pt")
    assert model.describe_backend() == f"onnxruntime, {record.onnx_file}"
    assert "mtfl-5pt: runs the float32 graph; this CPU has no VNNI" in caplog.text
    # asked for by name, the int8 graph still runs
    assert load_landmark_model("mtfl-5pt", "int8").describe_backend() == f"onnxruntime, {record.int8_onnx_file}"


@pytest.mark.parametrize("exact", [True, None])
def test_auto_runs_the_cards_graph_where_int8_is_exact_or_unknown(monkeypatch: pytest.MonkeyPatch,
                                                                   exact: bool | None) -> None:
    record = SHIPPED["mtfl-5pt"]
    monkeypatch.setattr("tcdcn.inference.loading.this_cpu_int8_exact", lambda: exact)
    assert load_landmark_model("mtfl-5pt").describe_backend() == f"onnxruntime, {record.int8_onnx_file}"
