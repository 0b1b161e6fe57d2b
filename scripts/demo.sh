#!/usr/bin/env bash
# Set up, then run the shipped model on the bundled example photo: writes out/astronaut.{jpg,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/tcdcn predict examples/astronaut.jpg --out out
echo "wrote out/astronaut.jpg (landmarks drawn) and out/astronaut.json"
