#!/usr/bin/env bash
# Evaluate the shipped models as the README reports them; writes reports/eval/*.json and CED curves.
# mtfl-5pt's default inference: one box refinement on the plain crop, then two diagonal crops,
# each mirror-averaged, on the int8 graph (README, Use; pinned with --backend int8, which `auto` runs only on
# CPUs with VNNI). The *-grid rows run --grid (the 3x3 grid), the
# *-mirror rows the box alone, mirror-averaged; the *-single rows one pass on the box.
set -euo pipefail
cd "$(dirname "$0")/.."
T=.venv/bin/tcdcn
OUT=reports/eval
mkdir -p "$OUT"
MTFL=../shared/data/mtfl/testing.txt
BOX_ALONE="--box-refinements 0 --no-multi-crop"
for box in image gt detect; do
    $T evaluate --backend int8 --model mtfl-5pt --data $MTFL --box $box --json --ced "$OUT/aflw-mtfl-5pt-$box.png" > "$OUT/aflw-mtfl-5pt-$box.json"
done
$T evaluate --backend int8 --model mtfl-5pt --data $MTFL --box image --grid --json > "$OUT/aflw-mtfl-5pt-image-grid.json"
$T evaluate --backend int8 --model mtfl-5pt --data $MTFL --box image $BOX_ALONE --json > "$OUT/aflw-mtfl-5pt-image-mirror.json"
$T evaluate --backend int8 --model mtfl-5pt --data $MTFL --box image $BOX_ALONE --no-flip --json > "$OUT/aflw-mtfl-5pt-image-single.json"
rm -f "$OUT/aflw-mtfl-5pt-image-flip.json"  # older runs wrote it
for box in gt detect; do
    $T evaluate --backend int8 --model mtfl-5pt --data ../shared/data/300w --box $box --json > "$OUT/300w-all-mtfl-5pt-$box.json"
done
$T evaluate --backend int8 --model mtfl-5pt --data ../shared/data/300w --box gt $BOX_ALONE --json > "$OUT/300w-all-mtfl-5pt-gt-mirror.json"
.venv/bin/python bench/error_analysis.py > "$OUT/aflw-mtfl-5pt-error-analysis.json"  # by pose; the AFLW label offset
.venv/bin/python bench/error_analysis.py --validation configs/mtfl-5pt.yaml --box gt > "$OUT/val-mtfl-5pt-error-analysis.json"
.venv/bin/python bench/error_analysis.py --data ../shared/data/300w --box gt $BOX_ALONE --no-flip > "$OUT/300w-mtfl-5pt-error-analysis.json"
