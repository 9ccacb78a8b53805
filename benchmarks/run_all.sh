#!/usr/bin/env bash
# Rerun every benchmark that feeds docs/benchmarks.md, after `diffuspeech demo`.
# Extra arguments (e.g. --checkpoint PATH --data-dir PATH) go to both scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
python benchmarks/training.py "$@"
python benchmarks/sampling.py "$@"
