#!/usr/bin/env bash
# The GPU check of the scale-out issue: run it only on a machine with a CUDA GPU (never in CI).
#   bash scripts/gpu_check.sh          # from the repository root, lmadapt installed, models pulled
# 1. the SFT benchmark on CUDA: lmadapt (bf16 autocast, SDPA) against the plain Trainer + PEFT script (bf16, SDPA)
# 2. a one-GPU smoke run through torchrun (NCCL process group, rank-0 run folder) of a shipped recipe
# Output: gpu-check/*.txt, for docs/performance.md.
set -euo pipefail
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA GPU here: this check is for a GPU machine"
print(torch.cuda.get_device_name(0), "torch", torch.__version__)
PY
mkdir -p gpu-check
python bench/train_throughput.py --part sft --rounds 2 --steps 20 2>&1 | tee gpu-check/bench-sft.txt
torchrun --standalone --nproc-per-node 1 -m lmadapt train src/lmadapt/recipes/pubmed-mesh-sft.yaml \
  train.max_steps=20 output=gpu-check/ddp-smoke 2>&1 | tee gpu-check/ddp-smoke.txt
python -c "import json; print(json.load(open('gpu-check/ddp-smoke/status.json')))" | tee -a gpu-check/ddp-smoke.txt
