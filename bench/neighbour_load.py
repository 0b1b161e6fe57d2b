"""How the per-face times of tcdcn's default inference and dlib's predictor move with load on the other core.

    python bench/neighbour_load.py [--model mtfl-5pt] [--backend auto] [--limit 300] [--rounds 3]
        [--loads idle,memory,compute] [--out bench/results/neighbour_load.json]

dlib's 68-point predictor walks regression trees of about 100 MB, touching megabytes of them per face; the
landmark network's weights are a few hundred kilobytes. On a shared host the ratio of the two times, the
reference of every speed figure in docs/results.md, may then depend on what else runs. This bench holds the
benchmark on one CPU and runs a controlled load on another, switching it in every round:

- ``idle``: nothing;
- ``memory``: a process copying 256 MB arrays over and over (memory traffic far beyond the shared L3 cache);
- ``compute``: a process multiplying a 256x256 float32 matrix held in its core's own cache (execution units,
  no memory traffic: what a sibling hyperthread or a busy neighbour core costs without cache contention).

In every round each load is started, given half a second, and both predictors are timed on the same faces
(the first ``--limit`` AFLW test faces framed by their whole image, one face per call, one thread, as
``bench/speed.py``'s default-inference row), alternating, twice each. Reported per load: the median ms per
face of each and the median over passes of tcdcn's time over dlib's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from host import host_facts, write_report

# The loads, as Python programs run in a child process on the other CPU; each loops until killed.
LOAD_PROGRAMS: dict[str, str | None] = {
    "idle": None,
    "memory": ("import numpy as np\n"
               "source = np.ones(256 * 2**20 // 8); target = np.empty_like(source)\n"
               "while True:\n    np.copyto(target, source)\n"),
    "compute": ("import numpy as np\n"
                "a = np.ones((256, 256), np.float32)\n"
                "while True:\n    a @ a\n"),
}
SETTLE_S = 0.5  # a started load runs this long before the timing starts
PASSES_PER_ROUND = 2  # alternating passes of each predictor per load and round


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mtfl-5pt")
    p.add_argument("--backend", default="auto", help="tcdcn backend (auto: what the package runs on this CPU)")
    p.add_argument("--data", default="../shared/data/mtfl/testing.txt")
    p.add_argument("--limit", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--loads", default="idle,memory,compute", help=f"comma-separated, of {', '.join(LOAD_PROGRAMS)}")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    loads = [name for name in args.loads.split(",") if name]
    unknown = [name for name in loads if name not in LOAD_PROGRAMS]
    if unknown:
        p.error(f"--loads: unknown load {', '.join(unknown)} (known: {', '.join(LOAD_PROGRAMS)})")
    bench_cpu, load_cpu = cpu_pair()
    os.sched_setaffinity(0, {bench_cpu})
    sys.path.insert(0, str(Path(__file__).parent))
    from speed import dlib_predictor_on_boxes, whole_image_faces

    from tcdcn.inference.api import load_backend

    greys, boxes = whole_image_faces(args.data, args.limit)
    predictor, rects = dlib_predictor_on_boxes(boxes, "bench/neighbour_load.py")
    model = load_backend(args.model, backend=args.backend)
    calls: dict[str, Callable[[int], Any]] = {
        "tcdcn": lambda i: model.predict([greys[i]], [boxes[i]]),
        "dlib": lambda i: predictor(greys[i], rects[i]),
    }
    times = measure(calls, len(greys), loads, args.rounds, load_cpu)
    rows = summarise(times)
    for row in rows:
        print(f"{row['load']:>8}: tcdcn {row['tcdcn_ms_per_face']:.3f} ms per face, "
              f"dlib {row['dlib_ms_per_face']:.3f} ms, {row['x_dlib_median']:.2f}x dlib")
    report = {"model": args.model, "backend": model.describe_backend(), "data": args.data, "faces": len(greys),
              "rounds": args.rounds, "passes_per_round": PASSES_PER_ROUND, "box": "whole image",
              "inference": "the model's default, one face per call, 1 thread", "bench_cpu": bench_cpu,
              "load_cpu": load_cpu, "loads": {name: LOAD_PROGRAMS[name] for name in loads}, "rows": rows,
              **host_facts()}
    if args.out:
        print(f"written: {write_report(args.out, report)}")
    return 0


def cpu_pair() -> tuple[int, int]:
    """The CPU the timing runs on and another for the load; a one-CPU process cannot run this bench."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("bench/neighbour_load.py needs two CPUs (one for the timing, one for the load)")
    return cpus[0], cpus[1]


def measure(calls: dict[str, Callable[[int], Any]], n: int, loads: list[str], rounds: int,
            load_cpu: int) -> dict[str, dict[str, list[float]]]:
    """ms per face of every pass: times[load][predictor], PASSES_PER_ROUND * rounds values each."""

    def pass_ms(call: Callable[[int], Any]) -> float:
        start = time.perf_counter()
        for i in range(n):
            call(i)
        return 1000.0 * (time.perf_counter() - start) / n

    for call in calls.values():
        pass_ms(call)  # warm-up: sessions, caches, the predictor's trees
    times: dict[str, dict[str, list[float]]] = {load: {name: [] for name in calls} for load in loads}
    for _ in range(rounds):
        for load in loads:
            with LoadProcess(LOAD_PROGRAMS[load], load_cpu):
                for _ in range(PASSES_PER_ROUND):
                    for name, call in calls.items():
                        times[load][name].append(pass_ms(call))
    return times


class LoadProcess:
    """Context manager: ``program`` (Python source, or None for no load) running on ``cpu`` in a child process."""

    def __init__(self, program: str | None, cpu: int) -> None:
        self.program, self.cpu = program, cpu
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> LoadProcess:
        if self.program is not None:
            self.process = subprocess.Popen([sys.executable, "-c", self.program])
            os.sched_setaffinity(self.process.pid, {self.cpu})
            time.sleep(SETTLE_S)
            if self.process.poll() is not None:
                raise RuntimeError(f"the load process ended at once (exit status {self.process.returncode})")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def summarise(times: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """Per load: median ms per face of tcdcn and dlib, and the median of tcdcn's pass time over dlib's next pass."""
    rows = []
    for load, by_name in times.items():
        ratios = [t / d for t, d in zip(by_name["tcdcn"], by_name["dlib"])]
        rows.append({"load": load, "tcdcn_ms_per_face": round(statistics.median(by_name["tcdcn"]), 4),
                     "dlib_ms_per_face": round(statistics.median(by_name["dlib"]), 4),
                     "x_dlib_median": round(statistics.median(ratios), 3),
                     "tcdcn_ms_range": [round(min(by_name["tcdcn"]), 4), round(max(by_name["tcdcn"]), 4)],
                     "dlib_ms_range": [round(min(by_name["dlib"]), 4), round(max(by_name["dlib"]), 4)]})
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
