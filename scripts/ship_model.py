"""Copy a trained checkpoint into the package as a shipped model: slim weights + ONNX twin + checksums.

    python scripts/ship_model.py runs/mtfl-5pt/best.pt mtfl-5pt

Writes ``src/tcdcn/weights/NAME.pt`` (model, config, scheme, tasks and the learned task covariance and
coefficients; no optimiser or RNG state) and ``NAME.onnx``, and prints their sha256 for
``tcdcn.weights.SHIPPED``, which must then be edited by hand with the figures the model reached.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tcdcn.checkpoint import atomic_save, read_checkpoint
from tcdcn.export import export_onnx
from tcdcn.inference import LandmarkModel
from tcdcn.weights import sha256_of

# What a shipped file keeps from a training checkpoint.
# (best_val_nme is left out: a last-epoch file would carry another epoch's figure; SHIPPED records the metrics.)
SHIPPED_KEYS = ("model", "config", "scheme", "tasks", "task_covariance", "task_coefficients")
WEIGHTS_DIR = Path("src/tcdcn/weights")  # run from the repository root (the ONNX metadata keeps this path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a training checkpoint (RUN/best.pt or RUN/last.pt)")
    p.add_argument("name", help="shipped model name, e.g. mtfl-5pt")
    args = p.parse_args(argv)
    if not WEIGHTS_DIR.is_dir():
        p.error(f"{WEIGHTS_DIR}: not found; run from the repository root")
    state = read_checkpoint(args.checkpoint)
    slim = {k: state[k] for k in SHIPPED_KEYS if k in state}
    pt_file = WEIGHTS_DIR / f"{args.name}.pt"
    atomic_save(slim, pt_file)
    onnx_file = export_onnx(LandmarkModel.load(pt_file), WEIGHTS_DIR / f"{args.name}.onnx")
    print(f"{pt_file}: sha256={sha256_of(pt_file)}")
    print(f"{onnx_file}: onnx_sha256={sha256_of(onnx_file)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
