"""int8 products exact on every CPU: VNNI read from the CPU flags, onnxruntime's exact path switched on without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcdcn.cpu import cpu_flags, int8_pays, int8_products_exact
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


@pytest.mark.parametrize(("machine", "extra", "pays"), [("x86_64", "", False), ("x86_64", " avx512f", False),
                                                        ("x86_64", " avx512f avx512_vnni", True),
                                                        ("x86_64", " avx_vnni", True), ("aarch64", "", True)])
def test_int8_pays_except_on_x86_without_vnni(tmp_path: Path, machine: str, extra: str, pays: bool) -> None:
    assert int8_pays(machine, write_cpuinfo(tmp_path, 25, extra)) is pays
    assert int8_pays("x86_64", tmp_path / "no-cpuinfo") is True  # unknown flags: int8, as before the rule


@pytest.mark.parametrize("pays", [True, False])
def test_auto_runs_the_shipped_int8_graph_only_where_it_pays(monkeypatch: pytest.MonkeyPatch, pays: bool) -> None:
    from tcdcn.inference.loading import load_landmark_model
    from tcdcn.models.registry import SHIPPED

    monkeypatch.setattr("tcdcn.inference.loading.this_cpu_int8_pays", lambda: pays)
    card = SHIPPED["mtfl-5pt"]
    assert card.auto_backend == "int8"
    expected = card.int8_onnx_file if pays else card.onnx_file
    assert load_landmark_model("mtfl-5pt").describe_backend() == f"onnxruntime, {expected}"
    # An explicit backend is never overridden.
    assert load_landmark_model("mtfl-5pt", "int8").describe_backend() == f"onnxruntime, {card.int8_onnx_file}"
