#!/usr/bin/env bash
# GPU check (≤ 8 minutes on one modern GPU): the tests that need CUDA, then the method and
# training benchmarks at 224 px with DeiT-S/B, written as one Markdown report.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      # default OUT_DIR: results/gpu_check
#
# Needs a CUDA build of torch and a visible GPU; nothing is downloaded (random weights:
# speed does not depend on them).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-results/gpu_check}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TQDM_DISABLE=1
REPORT="$OUT/gpu_check.md"

python - <<'PY' || { echo "no CUDA device visible: nothing to check"; exit 1; }
import torch, sys
sys.exit(0 if torch.cuda.is_available() else 1)
PY

{
  echo "# wsolbench GPU check"
  echo
  echo "- date: $(date -u +%FT%TZ)"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  python -c "import torch; print(f'- torch {torch.__version__}, CUDA {torch.version.cuda}, '
                                  f'{torch.cuda.get_device_name(0)}')"
  echo
} > "$REPORT"

echo "## CUDA tests" >> "$REPORT"
timeout 240 python -m pytest -q -m cuda tests 2>&1 | tail -3 | sed 's/^/    /' >> "$REPORT" || true
echo >> "$REPORT"

echo "## Inference: TS-CAM / TRT vs plain DeiT (bench_methods.py)" >> "$REPORT"
for model in deit_small_patch16_224 deit_base_patch16_224; do
  timeout 90 python benchmarks/bench_methods.py --model "$model" --batch 64 --iters 10 \
      --device cuda 2>&1 | sed 's/^/    /' >> "$REPORT" || echo "    ($model: failed)" >> "$REPORT"
done
echo >> "$REPORT"

echo "## Training step: wsolbench vs official recipe (bench_train.py)" >> "$REPORT"
for vit in deit_small_patch16_224 deit_base_patch16_224; do
  timeout 150 python benchmarks/bench_train.py --device cuda --batch 64 --size 224 \
      --vit "$vit" --steps 10 --warmup 3 --markdown "$OUT/bench_train_$vit.md" \
      > /dev/null 2>&1 && cat "$OUT/bench_train_$vit.md" >> "$REPORT" \
      || echo "($vit: failed)" >> "$REPORT"
  echo >> "$REPORT"
done
cat "$REPORT"
