"""The package's rooms and the direction of their imports (``docs/architecture.md``, "Layout").

Rooms, lowest first. A module imports from its own room and from the rooms below it, never from a room above:

    vocabulary   tcdcn.errors, config, schemes, attributes, geometry, progress, version (the modules on the
                 package's top level)
    io           tcdcn.io          files in and out: images, video, the atomic writer, predict's result files
    data         tcdcn.data        annotation formats, the dataset, crops and augmentation
    models       tcdcn.models      the network, checkpoints, denormal flushing, the shipped models' registry
    evaluation   tcdcn.evaluation  metrics, the evaluation protocol, mirror-axis calibration, the CED figure
    training     tcdcn.training    the alternating algorithm and its trainer
    inference    tcdcn.inference   the test-time pipeline, backends, detectors, export, the Python API
    studies      tcdcn.studies     the paper's study grid and its report
    cli          tcdcn.cli         argument parsing, one module per command, errors into exit statuses
    front door   tcdcn/__init__.py and tcdcn/__main__.py

Every import counts: at module level, inside a function (a lazy import is still a dependency) and under
``TYPE_CHECKING``. Imports inside a room may go either way, but no chain of imports may lead back to where it
started.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "tcdcn"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"
ROOMS = ("vocabulary", "io", "data", "models", "evaluation", "training", "inference", "studies", "cli", "front door")
FRONT_DOOR = ("tcdcn", "tcdcn.__main__")


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = ("tcdcn", *path.relative_to(PACKAGE_DIR).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def room_of(module: str) -> str:
    if module in FRONT_DOOR:
        return "front door"
    parts = module.split(".")
    return "vocabulary" if len(parts) == 2 and module not in _packages() else parts[1]


def _packages() -> set[str]:
    return {name for name, path in MODULES.items() if path.name == "__init__.py"}


def imported_modules(module: str) -> set[str]:
    """The package's modules that ``module`` imports anywhere in its source."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # ``from X import y`` imports module X.y when there is one, else a name of X.
            names = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in MODULES else stem for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # ``import tcdcn.training.trainer`` -> that module
                name = name.rpartition(".")[0]
            if name.startswith("tcdcn") and name != module:
                targets.add(name)
    return targets


def test_every_module_belongs_to_a_room() -> None:
    unknown = {module: room_of(module) for module in MODULES if room_of(module) not in ROOMS}
    assert not unknown, f"modules outside the declared rooms (add the room to ROOMS and the docs): {unknown}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "tcdcn.__main__"))
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_no_room_imports_from_a_room_above_it() -> None:
    upward = []
    for module in MODULES:
        rank = ROOMS.index(room_of(module))
        for target in sorted(imported_modules(module)):
            if ROOMS.index(room_of(target)) > rank:
                upward.append(f"{module} ({room_of(module)}) imports {target} ({room_of(target)})")
    assert not upward, "imports from a room above:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` as the list of modules around it (first repeated last), or []."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return []


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles() -> None:
    cycle = find_cycle({module: imported_modules(module) for module in MODULES})
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=300)


def test_import_and_the_command_line_parser_load_neither_torch_nor_matplotlib() -> None:
    done = _run("""
        import sys
        import tcdcn
        from tcdcn.cli import build_parser
        build_parser()
        print(sorted(m for m in ("torch", "matplotlib") if m in sys.modules))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_predict_runs_without_torch_and_matplotlib(tmp_path: Path) -> None:
    done = _run("""
        import sys
        sys.modules["torch"] = None  # any "import torch" now raises ImportError
        sys.modules["matplotlib"] = None
        from tcdcn.cli import main
        code = main(["-q", "predict", sys.argv[1], "--out", sys.argv[2]])
        print(code, sorted(m for m in ("torch", "matplotlib") if sys.modules.get(m) is not None))
    """, str(EXAMPLE), str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0 []"
    assert (tmp_path / "out" / "astronaut.json").is_file()


def test_commands_that_draw_figures_name_the_extra_when_matplotlib_is_missing(tmp_path: Path) -> None:
    done = _run("""
        import sys
        sys.modules["matplotlib"] = None
        from tcdcn.cli import main
        print(main(["-q", "evaluate", "--data", "absent.txt", "--ced", sys.argv[1]]))
        print(main(["-q", "study", "--report-only", "--results-dir", sys.argv[2], "--report", sys.argv[3]]))
    """, str(tmp_path / "ced.png"), str(tmp_path / "results"), str(tmp_path / "studies.md"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "2"]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and all("pip install 'tcdcn[studies]'" in line for line in lines), done.stderr
    assert not (tmp_path / "ced.png").exists() and not (tmp_path / "studies.md").exists()
