#!/usr/bin/env bash
# Score a 5-point candidate against the shipped mtfl-5pt by the replacement rule of docs/models.md:
# the default test-time plan on its int8 graph, on the MTFL validation split with ground-truth and detector
# boxes, the same split with the whole photo as the box on the int8 and the float32 graph, and the 1,207 300-W
# faces at five points (box alone, mirror-averaged, float32); both models by the same commands in one run.
# Writes runs/score-NAME.jsonl.
#     bash scripts/score_candidate.sh RUN/averaged.pt NAME
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: bash scripts/score_candidate.sh CHECKPOINT NAME" >&2; exit 2; }
checkpoint=$1
name=$2
py=.venv/bin/python
tcdcn=.venv/bin/tcdcn
out=runs/score-$name.jsonl
mkdir -p runs
rm -f "$out"
$py scripts/ship_model.py "$checkpoint" candidate --mirror-calibration configs/mtfl-5pt.yaml --to "runs/$name.pt"
$tcdcn -q export --model "runs/$name.pt" --int8 --out "runs/$name.int8.onnx"
for model in mtfl-5pt "runs/$name.int8.onnx"; do
    $py bench/test_time_plans.py --model "$model" --config configs/mtfl-5pt.yaml --plans diagonal --out "$out" | tail -n 1
done
# The whole photo as the box (the AFLW test protocol's framing, on validation faces), int8 and float32 graphs.
$tcdcn -q export --model "runs/$name.pt" --out "runs/$name.onnx"
for model in "mtfl-5pt --backend int8" "runs/$name.int8.onnx --backend int8" "mtfl-5pt --backend onnx" \
    "runs/$name.onnx --backend onnx"; do
    # shellcheck disable=SC2086  # the model and its backend are two words
    $py bench/test_time_plans.py --model $model --config configs/mtfl-5pt.yaml --plans diagonal --boxes image \
        --out "$out" | tail -n 1
done
for model in mtfl-5pt "runs/$name.pt"; do
    printf '%s on the 300-W faces, five points: ' "$model"
    $tcdcn evaluate --model "$model" --data ../shared/data/300w --box gt --flip --no-multi-crop --box-refinements 0 \
        --backend torch 2>/dev/null | grep "mean error"
done
