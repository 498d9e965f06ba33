#!/usr/bin/env bash
# GPU inference check for bigvol's SegNet (issue 4). Run from the repository root on a
# machine with a CUDA GPU and PyTorch:
#
#     bash benchmarks/gpu_check.sh            # (100, 2000, 3000) stack, slim and paper SegNet
#     SHAPE="20 2000 3000" bash benchmarks/gpu_check.sh
#
# Needs python3 with torch and numpy only: benchmarks/gpu_check.py imports bigvol's model
# and block-inference modules without the package __init__ (which needs dask and zarr).
# If dask is importable it also times bigvol.segment.predict (the Dask graph). Nothing is
# installed or downloaded. Prints MPx/s and the projected time for 1000 slices of
# 3000 x 2000 (target: under 2 minutes on one H100) and writes gpu_check.json in $OUT (or .).
set -euo pipefail
cd "$(dirname "$0")/.."
SHAPE=${SHAPE:-"100 2000 3000"}
OUTDIR=${OUT:-.}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
python3 benchmarks/gpu_check.py --shape $SHAPE --device cuda --presets slim,paper \
    --tile 512 --overlap 128 --batch 16 --block 4 --json "$OUTDIR/gpu_check.json"
